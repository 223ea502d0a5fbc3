"""`labpgt demo` (what `make demo` runs), end to end on the embedded virtual bench, short."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labpgt.cli.app import main


def test_demo_trains_through_the_virtual_bench_and_writes_its_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    main(["demo", "--max-queries", "1600"])  # returns on success (SystemExit otherwise)
    out = " ".join(capsys.readouterr().out.split())
    run = tmp_path / "runs" / "demo"
    for name in (
        "batches.csv",
        "checkpoint.pt",
        "config.json",
        "curves.png",
        "metrics.csv",
        "summary.json",
    ):
        assert (run / name).stat().st_size > 0, name
    summary = json.loads((run / "summary.json").read_text())
    assert summary["method"] == "boundary"
    assert summary["stop_reason"] == "query budget reached"
    assert 0 < summary["final"]["queries"] <= 1600
    assert summary["final"]["instrument_time_s"] > 0
    # the ridge baseline the demo compares against, on the same bench
    assert summary["readout"]["queries"] > 0 and 0.1 < summary["readout"]["test_acc"] <= 1.0
    assert 0.0 <= summary["selected"]["test_acc"] <= 1.0
    config = json.loads((run / "config.json").read_text())
    assert config["fast_sim"] is False and config["eval_test"] == "final"
    assert (config["channels"], config["driven"], config["features"]) == (8, ["drive_hz"], "kernel")
    # The yardsticks are printed beside the ring's figure.
    for label in ("same-shape digital network", "logistic regression on the raw pixels"):
        assert label in out
    assert (run / "digital" / "summary.json").exists() is False  # the digital run is quiet
    assert (run / "digital" / "metrics.csv").stat().st_size > 0
    assert "demo finished in" in out and "runs/demo/" in out
