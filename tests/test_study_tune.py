"""The search on Ray Tune (Optuna TPE + ASHA): choices inside the grid's range, final seeds
at the chosen rate as the serial runner computes them, and a rerun that tunes nothing."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

pytest.importorskip("optuna")
ray = pytest.importorskip("ray")

from test_study_ray import jsonl_rows, tiny_study  # noqa: E402

from labpgt.studies.protocol import _slug, final_jobs, run_job  # noqa: E402
from labpgt.studies.ray_runner import RayRunner, comparable  # noqa: E402
from labpgt.studies.tune_runner import run_study_tune  # noqa: E402


@pytest.mark.slow  # two Tune experiments and 8 final jobs: about 90 s on 2 busy cores
def test_a_tpe_search_with_asha_chooses_in_range_and_resumes(tmp_path: Path) -> None:
    spec = tiny_study()
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
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


def test_a_tpe_search_off_ray_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from labpgt.cli.app import main

    with pytest.raises(SystemExit) as exit_info:
        main(["study", "--preset", "short", "--engine", "process", "--search", "tpe"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "error: --search tpe runs on Ray Tune: it needs --engine ray and the [scale] extra"
    )
