"""The foundation: analyzer grid, setting bounds, CLI root."""

import subprocess
import sys

import pytest
import torch
from labpgt.sim.grid import AnalyzerGrid
from pydantic import ValidationError

from labpgt import __version__
from labpgt.errors import UserError
from labpgt.setting_bounds import SETTING_NAMES, SettingBounds


def test_grid_sweep_time_follows_span_over_rbw_squared():
    # 50 MHz span at 100 kHz RBW ≈ 12.5 ms; 5 MHz at 2 kHz ≈ 3 s (docs/ring-physics.md)
    assert AnalyzerGrid(center_hz=2.1e9, span_hz=50e6, rbw_hz=100e3).sweep_time_s == pytest.approx(
        12.5e-3
    )
    assert AnalyzerGrid(center_hz=2.068e9, span_hz=5e6, rbw_hz=2e3).sweep_time_s == pytest.approx(
        3.125
    )


def test_grid_axis_and_start_stop():
    grid = AnalyzerGrid.from_start_stop(2.0e9, 2.3e9, rbw_hz=300e3, points=1001)
    f = grid.frequencies_hz()
    assert f.shape == (1001,)
    assert f[0].item() == pytest.approx(2.0e9) and f[-1].item() == pytest.approx(2.3e9)
    assert grid.bin_hz == pytest.approx(300e3)


def test_grid_rejects_bad_values_naming_the_field():
    with pytest.raises(ValidationError, match="rbw_hz"):
        AnalyzerGrid(rbw_hz=0)
    with pytest.raises(ValidationError, match="span_hz/2"):
        AnalyzerGrid(center_hz=1e6, span_hz=10e6)


def test_bounds_check_names_row_setting_and_range():
    bounds = SettingBounds()
    ok = torch.tensor([[2.1e9, -10.0, 1.8]], dtype=torch.float64)
    bounds.check(ok)
    bad = torch.tensor([[2.1e9, -10.0, 1.8], [2.1e9, 5.0, 1.8]], dtype=torch.float64)
    with pytest.raises(UserError, match=r"row 1: drive_dbm=5 dBm is outside .*\[-40, 0\] dBm"):
        bounds.check(bad)
    with pytest.raises(UserError, match="shape"):
        bounds.check(torch.zeros(4, 2, dtype=torch.float64))
    with pytest.raises(UserError, match="not finite"):
        bounds.check(torch.tensor([[float("nan"), -10.0, 1.8]], dtype=torch.float64))
    assert bounds.lower().shape == (len(SETTING_NAMES),)


def test_bounds_must_be_ordered():
    with pytest.raises(ValidationError, match="bias_a"):
        SettingBounds(bias_a=(2.0, 1.0))


def _labpgt(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "labpgt", *args], capture_output=True, text=True, timeout=120
    )


def test_cli_version_and_help():
    out = _labpgt("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"labpgt {__version__}"
    out = _labpgt("--help")
    assert out.returncode == 0 and "sim" in out.stdout


def test_cli_unknown_command_is_a_usage_error():
    out = _labpgt("no-such-command")
    assert out.returncode == 2
    assert "No such command" in out.stderr and "Traceback" not in out.stderr
