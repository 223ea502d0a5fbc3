"""benchmarks/calibration.py measures what its rows say: its grey-box rows are grey-box fits on
hard bins, whatever the library's default feature map (it moved to kernel windows at
89b5dd1 and the benchmark, which took the default, silently compared a plain MLP with itself
and reported the sensitivity window as the calm one).

On the embedded virtual bench (SCPI over loopback): a bias-sweep leg and a few window shots.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from labpgt.calibration.measure import StageMeasurer
from labpgt.calibration.plan import CalibrationPlan
from labpgt.calibration.spectra import noise_floor_dbm
from labpgt.calibration.surrogate import SurrogateConfig

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "calibration.py"


@pytest.fixture(scope="module")
def bench_script():
    spec = importlib.util.spec_from_file_location("calibration_benchmark_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    path = list(sys.path)
    try:
        spec.loader.exec_module(module)  # (it drops its own folder from sys.path)
    finally:
        sys.path[:] = path
    return module


def _sweep_leg(res) -> tuple[np.ndarray, np.ndarray, float]:
    """(axis Hz, traces dBm, floor dBm) of the small plan's rising bias-sweep leg."""
    up, _ = CalibrationPlan.reduced().bias_legs()
    traces = StageMeasurer(res).traces("bias sweep", up)[1].numpy()
    return res.frequency_hz.to(torch.float64).numpy(), traces, noise_floor_dbm(traces)


def test_rows_are_measured_on_hard_bins(bench_script):
    assert bench_script.BENCH_FEATURES.kind == "bins"
    for name, (_, features) in bench_script.GRIDS.items():
        assert (features.kind == "bins") == ("kernel" not in name), name


def test_grey_box_and_plain_rows_fit_their_own_model(bench_script):
    """On the benchmark's bench the sweep gives a line geometry; the grey-box row fits a
    grey-box, the plain row a plain MLP, on the same shots, with different errors."""
    with bench_script.open_bench(0) as res:
        assert res.feature_spec == bench_script.BENCH_FEATURES
        geometry = bench_script.grey_box_geometry(res, *_sweep_leg(res))
        gen = torch.Generator().manual_seed(0)
        u = torch.rand(60, 2, generator=gen, dtype=torch.float64)
        shots = torch.stack(
            [2.0e9 + 0.05e9 * u[:, 0], -30.0 + 30.0 * u[:, 1], torch.full((60,), 1.8)], dim=1
        )
        features = StageMeasurer(res).features("window", shots)
    ranges = torch.tensor([[2.0e9, 2.05e9], [-30.0, 0.0], [1.8, 1.8]], dtype=torch.float64)
    cfg = SurrogateConfig(steps=60)
    grey = bench_script.fit_row("grey", shots, features, ranges, geometry, cfg)
    plain = bench_script.fit_row("plain", shots, features, ranges, None, cfg)
    assert grey[1] == plain[1] == 60
    assert grey[2] != pytest.approx(plain[2], rel=1e-3)


def test_grey_box_rows_refused_without_bins(bench_script):
    """On calibrate's default map (kernel windows) there is no line geometry: the benchmark
    stops with one line instead of labelling a plain MLP 'grey-box'."""
    with bench_script.open_bench(0, bench_script.CLI_FEATURES) as res:
        assert res.feature_spec.kind == "kernel"
        with pytest.raises(SystemExit, match="no grey-box surrogate on features kernel"):
            bench_script.grey_box_geometry(res, *_sweep_leg(res))
