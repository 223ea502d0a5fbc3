"""`labpgt show` and the run file in process: interrupted run, summary, heat map, resume."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from labpgt.sim.grid import AnalyzerGrid
from labpgt.sim.params import RingParams
from labpgt.sim.ring import RingModel
from typer.testing import CliRunner

from labpgt.acquisition import acquire, grid_inputs, parse_sweep
from labpgt.cli.app import app
from labpgt.features import FeatureSpec
from labpgt.simulated_reservoir import SimulatedReservoir

QUIET = RingParams(noise=False, drift=False, hysteresis=False)
GRID = AnalyzerGrid(points=201)


def _reservoir() -> SimulatedReservoir:
    return SimulatedReservoir(RingModel(QUIET, seed=5), GRID, features=FeatureSpec(bins=1))


def _inputs() -> torch.Tensor:
    return grid_inputs([parse_sweep("drive_hz=2.05e9:2.25e9:12"), parse_sweep("bias_a=1.7,1.9")])


class _StopAfter:
    """A progress callback that presses Ctrl-C once ``shots`` shots are stored."""

    def __init__(self, shots: int) -> None:
        self.shots = shots

    def __call__(self, done: int, total: int, instrument_s: float) -> None:
        if done >= self.shots:
            raise KeyboardInterrupt


def test_interrupted_run_shows_missing_shots_plots_and_resumes_exactly(tmp_path: Path):
    out, reference = tmp_path / "run.h5", tmp_path / "reference.h5"
    acquire(_reservoir(), reference, _inputs(), repeats=2, chunk_shots=5)
    with pytest.raises(KeyboardInterrupt):
        acquire(_reservoir(), out, _inputs(), repeats=2, chunk_shots=5, progress=_StopAfter(15))
    with h5py.File(out, "r") as f:  # valid, plain h5py, and holds exactly the stored chunks
        done = f["shots/done"][...]
        assert done.sum() == 15 and done[:15].all()
        assert np.isfinite(f["traces_dbm"][:15]).all() and np.isnan(f["traces_dbm"][15:]).all()
    runner = CliRunner()
    shown = runner.invoke(app, ["show", str(out)], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.output.replace("│", " ").split())
    assert "shots done 15 / 48" in text and "missing shots 15-47" in text
    assert "inputs x repeats 24 x 2" in text
    assert "2.05 GHz .. 2.25 GHz (12 values)" in text and "1.7 A .. 1.9 A (2 values)" in text
    png = out.with_suffix(".png")  # the heat map is written by default, next to the run
    assert png.stat().st_size > 5_000
    with pytest.raises(Exception, match="already exists"):
        acquire(_reservoir(), out, _inputs(), repeats=2)  # no silent overwrite
    # resume on a fresh reservoir (same seed, noise off): equal to the uninterrupted run
    acquire(_reservoir(), out, None, resume=True, chunk_shots=7)
    with h5py.File(out, "r") as got, h5py.File(reference, "r") as want:
        for name in ("inputs", "frequency_hz", "traces_dbm", "shots/settings", "shots/done"):
            np.testing.assert_array_equal(got[name][...], want[name][...], err_msg=name)
        assert len(json.loads(got.attrs["resumes"])) == 1
    shown = runner.invoke(app, ["show", str(out), "--no-plot"], env={"COLUMNS": "200"})
    text = " ".join(shown.output.replace("│", " ").split())
    assert shown.exit_code == 0 and "48 / 48" in text and "missing shots none" in text


def test_show_refuses_a_file_that_is_not_a_run(tmp_path: Path):
    bogus = tmp_path / "other.h5"
    with h5py.File(bogus, "w") as f:
        f["x"] = np.arange(3)
    result = CliRunner().invoke(app, ["show", str(bogus)])
    assert result.exit_code != 0
    assert "not a labpgt acquisition file" in str(result.exception)
