"""The study protocol end to end (short preset): search on validation, seeds, CI, resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from labpgt.cli.app import main
from labpgt.studies.presets import short_study
from labpgt.studies.protocol import (
    choose,
    ensure_calibration,
    final_jobs,
    mean_ci95,
    read_rows,
    search_jobs,
)


def test_mean_ci95_is_students_t_over_the_seeds() -> None:
    mean, half, n = mean_ci95([0.90, 0.92, 0.94, 0.96, 0.98])
    assert n == 5 and mean == pytest.approx(0.94)
    # sd = 0.0316, t(0.975, 4) = 2.776: half-width = 2.776 * 0.0316 / sqrt(5)
    assert half == pytest.approx(2.7764 * math.sqrt(0.001) / math.sqrt(5), rel=1e-3)
    assert math.isnan(mean_ci95([0.5])[1])


def test_short_study_runs_the_protocol_and_resumes_without_rerunning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, docs = tmp_path / "study", tmp_path / "results.md"
    argv = ["study", "--preset", "short", "--out", str(out), "--workers", "2", "--docs", str(docs)]
    main(argv)  # returns on success (a failure would exit 2 with a message)
    spec = short_study()
    rows = read_rows(out / "results.jsonl")
    chosen, diverged = choose(spec, rows)
    expected = {j.key for j in search_jobs(spec)} | {j.key for j in final_jobs(spec, chosen)}
    assert set(rows) == expected  # every job once, nothing else
    summary = json.loads((out / "summary.json").read_text())
    by_label = {e["label"]: e for e in summary["entries"]}
    # The chosen rate is the one with the best validation accuracy in the search.
    search = [r for r in rows.values() if r["entry"] == "boundary" and r["phase"] == "search"]
    assert by_label["boundary"]["lr"] == max(search, key=lambda r: r["val_acc"])["lr"]
    for entry in summary["entries"]:
        assert entry["seeds"] == len(spec.final_seeds)
        assert all(0.0 <= acc <= 1.0 for acc in entry["test_per_seed"])
    # Search runs never measure the test part.
    assert all(math.isnan(r["test_acc"]) for r in search)
    page = docs.read_text()
    assert "on commit `" in page and "| boundary |" in page
    assert (tmp_path / "img" / "results_short.png").stat().st_size > 10_000
    # Resume: nothing left to run, same rows.
    lines = (out / "results.jsonl").read_text().count("\n")
    main(argv)
    assert (out / "results.jsonl").read_text().count("\n") == lines


def test_an_unknown_preset_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["study", "--preset", "nope"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert (
        "unknown study preset 'nope'; valid: digits, features, mgd-scaling, pat, pgt-size, short, "
        "transformer" in err
    )


def test_a_job_that_needs_a_calibration_gets_one_made_once(tmp_path: Path) -> None:
    """PAT rows: `labpgt calibrate --fast-sim` of the job's ring, made once per study."""
    from labpgt.calibration import load_calibration

    from labpgt.runner import run_training
    from labpgt.training.config import make_config

    config = {"fast_sim": True, "noise": False, "bins": 8, "features": "kernel"}
    options = ["--grid", "small", "--surrogate-steps", "20"]
    path = ensure_calibration(tmp_path, config, options)
    made = path.stat().st_mtime_ns
    assert ensure_calibration(tmp_path, config, options) == path
    assert path.stat().st_mtime_ns == made  # not made again
    log = path.with_suffix(".log").read_text()
    assert log.startswith("$ labpgt calibrate --fast-sim --seed 0 --features kernel --bins 8")
    cal = load_calibration(path)
    assert cal.snapshot["reservoir"] == "simulated" and cal.feature_spec.bins == 8
    # A PAT run on that ring takes it (another seed: same physics, its own noise stream).
    result = run_training(
        make_config(
            task="iris",
            fast_sim=True,
            noise=False,
            drift=False,
            bins=8,
            channels=2,
            hidden=4,
            method="pat",
            epochs=1,
            seed=3,
            calibration=str(path),
            method_opts={"compare_every": 0, "jacobian": "difference"},
            out=str(tmp_path / "run"),
        ),
        resume=False,
        overwrite=True,
        quiet=True,
    )
    assert result.metrics[-1].queries > 0
    with pytest.raises(Exception, match="needs the in-process sim"):
        ensure_calibration(tmp_path, {"fast_sim": False}, options)
