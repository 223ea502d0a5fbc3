"""The search on Ray Tune (Optuna TPE + ASHA): choices inside the grid's range, final seeds
at the chosen rate as the serial runner computes them, a rerun that tunes nothing, and a
trial whose worker process dies retried without changing the search."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("optuna")
ray = pytest.importorskip("ray")

from test_study_ray import jsonl_rows, tiny_study  # noqa: E402

from labpgt.studies.protocol import _slug, final_jobs, run_job  # noqa: E402
from labpgt.studies.ray_runner import RayRunner, WorkerFault, comparable  # noqa: E402
from labpgt.studies.tune_runner import run_study_tune, trial_key  # noqa: E402


@pytest.mark.slow  # two Tune experiments and 8 final jobs: about 90 s on 2 busy cores
def test_a_tpe_search_with_asha_chooses_in_range_and_resumes(tmp_path: Path) -> None:
    spec = tiny_study()
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    try:
        summary = run_study_tune(spec, tmp_path, trials=3, workers=2)
        chosen = {}
        for entry in spec.entries:
            if not entry.lrs:
                continue
            record = json.loads((tmp_path / "tune" / f"{_slug(entry.label)}.json").read_text())
            assert len(record["trials"]) == 3
            assert all(min(entry.lrs) <= t["lr"] <= max(entry.lrs) for t in record["trials"])
            assert all(t["epochs"] >= 1 for t in record["trials"])
            best = max(t["best_val_acc"] for t in record["trials"])
            assert record["best_val_acc"] == best
            chosen[entry.label] = (record["lr"], record["variant"])
        by_label = {e["label"]: e for e in summary["entries"]}
        assert by_label["boundary"]["lr"] == chosen["boundary"][0]
        rows = {r["key"]: r for r in jsonl_rows(tmp_path / "results.jsonl")}
        final = final_jobs(spec, chosen)
        assert set(rows) == {j.key for j in final}  # 8 final rows, each once
        # A final row at the chosen rate is the serial runner's row for that job.
        job = next(j for j in final if j.entry == "boundary")
        serial = run_job(job, tmp_path / "serial")
        assert json.dumps(comparable(rows[job.key]), sort_keys=True) == json.dumps(
            comparable(serial), sort_keys=True
        )
        # A rerun tunes nothing and runs no job.
        stamp = (tmp_path / "tune" / "boundary.json").stat().st_mtime_ns
        runner = RayRunner()
        run_study_tune(spec, tmp_path, trials=3, workers=2, runner=runner)
        assert runner.submitted == []
        assert (tmp_path / "tune" / "boundary.json").stat().st_mtime_ns == stamp
    finally:
        ray.shutdown()


def record_of(out: Path) -> dict:
    """The stored search of the entry "boundary": its choice and its trials."""
    return json.loads((out / "tune" / "boundary.json").read_text())


def test_a_tune_trial_whose_worker_dies_is_retried_and_the_search_unchanged(
    tmp_path: Path,
) -> None:
    """One entry, 2 trials one at a time (TPE's seeded proposals, ASHA's stops and the
    training runs are then deterministic): the first trial's worker process exits at the
    trial's start; Tune runs the trial again, and the search goes on and ends as the
    undisturbed one (the second trial proposed and run as before)."""
    tiny = tiny_study()
    boundary = tuple(e for e in tiny.entries if e.label == "boundary")
    spec = replace(tiny, entries=boundary, final_seeds=(0,))
    (entry,) = spec.entries
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    try:
        calm = tmp_path / "undisturbed"
        run_study_tune(spec, calm, trials=2, workers=1)
        victim = record_of(calm)["trials"][0]
        key = trial_key(entry.label, victim["lr"], entry.variants.index(victim["variant"]))
        marker = tmp_path / "trial-worker-died"
        hit = tmp_path / "disturbed"
        run_study_tune(
            spec, hit, trials=2, workers=1, runner=RayRunner(fault=WorkerFault(key, str(marker)))
        )
    finally:
        ray.shutdown()
    assert len(marker.read_text().split()) == 1  # the first attempt's worker process exited
    # Tune recorded the failure of one trial (once) and restarted it.
    errors = sorted((hit / "tune" / "ray").rglob("error.txt"))
    assert len(errors) == 1 and "Failure # 1 " in errors[0].read_text()
    assert "Failure # 2 " not in errors[0].read_text()
    # Every trial reported once (its epochs not doubled by the retry), the same trials and
    # the same choice as the undisturbed search; the final rows bit-identical.
    assert record_of(hit) == record_of(calm)
    assert len(record_of(hit)["trials"]) == 2
    hit_rows, calm_rows = (jsonl_rows(out / "results.jsonl") for out in (hit, calm))
    assert len(hit_rows) == len({r["key"] for r in hit_rows}) == len(spec.final_seeds)
    assert sorted(json.dumps(comparable(r), sort_keys=True) for r in hit_rows) == sorted(
        json.dumps(comparable(r), sort_keys=True) for r in calm_rows
    )


def test_a_tpe_search_off_ray_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from labpgt.cli.app import main

    with pytest.raises(SystemExit) as exit_info:
        main(["study", "--preset", "short", "--engine", "process", "--search", "tpe"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "error: --search tpe runs on Ray Tune: it needs --engine ray and the [scale] extra"
    )
