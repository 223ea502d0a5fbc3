"""sim.ring with a drive: injection locking, pulling, idlers, analyzer display, gradients."""

from __future__ import annotations

import math

import pytest
import torch
from labpgt.sim.grid import AnalyzerGrid
from labpgt.sim.params import RingParams
from labpgt.sim.ring import RingModel
from labpgt.sim.spectrum import noise_floor_mw
from test_ring_bench import shots

GRID = AnalyzerGrid()
QUIET = RingParams(noise=False, drift=False)


def quiet_ring(**changes: object) -> RingModel:
    return RingModel(QUIET.model_copy(update=changes) if changes else QUIET)


def main_mode(ring: RingModel) -> tuple[float, float]:
    """Frequency (Hz) and power (dBm) of the strongest free-running mode at 1.8 A."""
    with torch.no_grad():
        lines = ring.lines(2.0e9, -40.0, 1.8, rf_on=False, remanence_sign=-1.0)
    i = int(lines.power_dbm[0].argmax())
    return float(lines.frequency_hz[0, i]), float(lines.power_dbm[0, i])


def trace_at(trace: torch.Tensor, frequency_hz: float) -> float:
    """Largest trace value within one RBW of a frequency, dBm."""
    axis = GRID.frequencies_hz()
    near = (axis - frequency_hz).abs() <= GRID.rbw_hz
    return float(trace[0, near].max())


def locking_half_range_hz(ring: RingModel, drive_dbm: float) -> float:
    """Largest detuning from the main mode at which the drive line carries its power."""
    f0, p0 = main_mode(ring)
    detuning = torch.linspace(-60e6, 60e6, 4801, dtype=torch.float64)
    with torch.no_grad():
        lines = ring.lines(f0 + detuning, drive_dbm, 1.8, remanence_sign=-1.0)
    locked = lines.power_dbm[:, 0] > p0 - 3.0
    return float(detuning[locked].abs().max())


# ---------------------------------------------------------------- injection locking


def test_drive_inside_locking_range_pulls_the_mode_onto_the_drive() -> None:
    ring = quiet_ring()
    f0, p0 = main_mode(ring)
    drive_hz = f0 + 4e6
    with torch.no_grad():
        trace = ring.evaluate(drive_hz, -10.0, 1.8, GRID, remanence_sign=-1.0)
        lines = ring.lines(drive_hz, -10.0, 1.8, remanence_sign=-1.0)
    assert lines.kind[int(lines.power_dbm[0].argmax())] == "drive"
    assert float(lines.power_dbm[0, 0]) > p0 - 3.0
    assert trace_at(trace, drive_hz) > p0 - 3.0
    floor_dbm = 10 * math.log10(noise_floor_mw(GRID, ring.params))
    assert trace_at(trace, f0) < floor_dbm + 6.0  # the free-running line is gone


def test_drive_outside_locking_range_gives_drive_pulled_mode_and_idler() -> None:
    ring = quiet_ring()
    f0, p0 = main_mode(ring)
    drive_hz = f0 - 15e6
    with torch.no_grad():
        lines = ring.lines(drive_hz, -20.0, 1.8, remanence_sign=-1.0)
        trace = ring.evaluate(drive_hz, -20.0, 1.8, GRID, remanence_sign=-1.0)
    modes = lines.power_dbm[0, 1 : ring.params.mode_count + 1]
    j = int(modes.argmax())
    pulled_hz = float(lines.frequency_hz[0, 1 + j])
    assert float(modes[j]) > p0 - 1.0  # still free-running
    assert drive_hz < pulled_hz < f0  # pulled toward the drive
    assert f0 - pulled_hz < 1e6
    idler_hz = float(lines.frequency_hz[0, 1 + ring.params.mode_count + j])
    assert idler_hz == pytest.approx(2 * pulled_hz - drive_hz, abs=1.0)
    floor_dbm = 10 * math.log10(noise_floor_mw(GRID, ring.params))
    for f in (drive_hz, pulled_hz, idler_hz):
        assert trace_at(trace, f) > floor_dbm + 15.0
    # the idler weakens as the drive is detuned further
    with torch.no_grad():
        far = ring.lines(f0 - 40e6, -20.0, 1.8, remanence_sign=-1.0)
    far_idler = float(far.power_dbm[0, 1 + ring.params.mode_count + j])
    assert far_idler < float(lines.power_dbm[0, 1 + ring.params.mode_count + j]) - 6.0


def test_locking_range_is_11_mhz_at_minus_10_dbm_and_grows_as_sqrt_power() -> None:
    ring = quiet_ring()
    at_minus_10 = locking_half_range_hz(ring, -10.0)
    assert at_minus_10 == pytest.approx(11e6, rel=0.1)
    at_minus_30 = locking_half_range_hz(ring, -30.0)
    assert at_minus_10 / at_minus_30 == pytest.approx(10.0, rel=0.15)
    assert locking_half_range_hz(ring, 0.0) > at_minus_10


def test_rf_off_removes_every_trace_of_the_drive() -> None:
    ring = quiet_ring()
    with torch.no_grad():
        on = ring.lines(2.15e9, -10.0, 1.8, rf_on=False, remanence_sign=-1.0)
        other = ring.lines(2.25e9, 0.0, 1.8, rf_on=False, remanence_sign=-1.0)
    m = ring.params.mode_count
    torch.testing.assert_close(on.power_dbm[:, 1:], other.power_dbm[:, 1:])
    torch.testing.assert_close(on.frequency_hz[:, 1 : m + 1], other.frequency_hz[:, 1 : m + 1])
    assert float(on.power_dbm[0, 0]) < -200


# ---------------------------------------------------------------- analyzer display


@pytest.mark.parametrize("rbw_hz", [100e3, 1e6])
def test_noise_floor_scales_with_rbw(rbw_hz: float) -> None:
    grid = AnalyzerGrid(rbw_hz=rbw_hz)
    expected = -95.0 + 10 * math.log10(rbw_hz / 100e3)
    # At 0.5 A the whole MSSW band (and every line) sits near 1 GHz, far below the grid,
    # so the trace is the analyzer's own floor.
    quiet = quiet_ring()
    with torch.no_grad():
        trace = quiet.evaluate(2.1e9, -40.0, 0.5, grid, rf_on=False)
    torch.testing.assert_close(trace, torch.full_like(trace, expected), rtol=0, atol=0.01)
    # With the amplifier off, the modes' spontaneous emission (~-115 dBm) is a comb far
    # below even the 100 kHz floor: it lifts no point by more than 0.1 dB.
    off = quiet_ring(amplifier_gain_db=0.0)
    with torch.no_grad():
        unlit = off.evaluate(2.1e9, -40.0, 1.8, grid, rf_on=False)
    assert float((unlit - expected).abs().max()) < 0.1
    noisy = RingModel(RingParams())
    with torch.no_grad():
        sampled = noisy.evaluate(
            2.1e9, -40.0, 0.5, grid, rf_on=False, generator=torch.Generator().manual_seed(3)
        )
    assert float(sampled.mean()) == pytest.approx(expected, abs=0.5)
    assert float(sampled.std()) == pytest.approx(noisy.params.noise_floor_std_db, rel=0.2)


def test_line_between_points_still_shows_its_peak() -> None:
    ring = quiet_ring()
    f0, p0 = main_mode(ring)
    grid = AnalyzerGrid(center_hz=2.15e9, span_hz=300e6, rbw_hz=3e3, points=1001)
    with torch.no_grad():
        trace = ring.evaluate(2.0e9, -40.0, 1.8, grid, rf_on=False, remanence_sign=-1.0)
    assert float(trace.max()) == pytest.approx(p0, abs=2.0)
    # with a fine grid the peak sits where the line is, at its power
    fine = AnalyzerGrid(center_hz=f0, span_hz=5e6, rbw_hz=20e3, points=4001)
    with torch.no_grad():
        trace = ring.evaluate(2.0e9, -40.0, 1.8, fine, rf_on=False, remanence_sign=-1.0)
    peak = int(trace[0].argmax())
    assert float(fine.frequencies_hz()[peak]) == pytest.approx(f0, abs=fine.bin_hz)
    assert float(trace[0, peak]) == pytest.approx(p0, abs=0.05)
    half = trace[0] > p0 - 3.0103
    width_hz = float(half.sum()) * fine.bin_hz
    assert width_hz == pytest.approx(fine.rbw_hz, rel=0.1)


def test_line_jitter_is_0p2_db() -> None:
    ring = RingModel(RingParams(noise_floor_std_db=0.0))
    f0, p0 = main_mode(ring)
    fine = AnalyzerGrid(center_hz=f0, span_hz=5e6, rbw_hz=20e3, points=501)
    gen = torch.Generator().manual_seed(11)
    n = 400
    with torch.no_grad():
        traces = ring.evaluate(
            torch.full((n,), 2.0e9, dtype=torch.float64),
            -40.0,
            1.8,
            fine,
            rf_on=False,
            remanence_sign=-1.0,
            generator=gen,
        )
    peaks = traces.max(dim=1).values
    assert float(peaks.std()) == pytest.approx(0.2, rel=0.2)
    assert float(peaks.mean()) == pytest.approx(p0, abs=0.1)


def test_evaluate_is_batched_and_rows_are_independent() -> None:
    ring = quiet_ring()
    n = 1024
    drive_hz, drive_dbm, bias_a = shots(n, seed=0)
    with torch.no_grad():
        full = ring.evaluate(drive_hz, drive_dbm, bias_a, GRID)
        part = ring.evaluate(drive_hz[100:110], drive_dbm[100:110], bias_a[100:110], GRID)
    assert full.shape == (n, GRID.points) and full.dtype == torch.float64
    torch.testing.assert_close(full[100:110], part, rtol=0, atol=1e-4)


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize(
    ("drive_hz", "drive_dbm", "bias_a"),
    [(2.118e9, -10.0, 1.8), (2.2e9, -25.0, 1.75), (2.131e9, -3.0, 1.85), (2.05e9, -15.0, 1.7)],
)
def test_gradients_match_central_finite_differences(
    drive_hz: float, drive_dbm: float, bias_a: float
) -> None:
    ring = quiet_ring()
    weights = torch.randn(
        GRID.points, generator=torch.Generator().manual_seed(5), dtype=torch.float64
    )

    def objective(values: list[torch.Tensor]) -> torch.Tensor:
        trace = ring.evaluate(*values, GRID, remanence_sign=-1.0, dtype=torch.float64)
        return (trace[0] * weights).sum()

    point = [torch.tensor([v], dtype=torch.float64) for v in (drive_hz, drive_dbm, bias_a)]
    leaves = [p.clone().requires_grad_(True) for p in point]
    objective(leaves).backward()
    steps = (20.0, 1e-4, 1e-7)
    for i, step in enumerate(steps):
        up = [p.clone() for p in point]
        down = [p.clone() for p in point]
        up[i] += step
        down[i] -= step
        with torch.no_grad():
            fd = float((objective(up) - objective(down)) / (2 * step))
        grad = float(leaves[i].grad)
        assert abs(grad - fd) <= 1e-3 * max(abs(fd), 1e-9), (i, grad, fd)


def test_drive_map_is_rich_in_the_default_grid() -> None:
    """Mean dB in 32 bins over the default grid varies strongly and non-linearly with the drive."""
    ring = quiet_ring()
    drive_hz = torch.linspace(2.0e9, 2.3e9, 301, dtype=torch.float64)
    features = {}
    for dbm in (-40.0, -10.0, 0.0):
        with torch.no_grad():
            trace = ring.evaluate(drive_hz, dbm, 1.8, GRID, remanence_sign=-1.0)
        features[dbm] = trace[:, :992].reshape(len(drive_hz), 32, 31).mean(-1)
    assert float(features[-10.0].std(0).mean()) > 1.0
    assert float(features[0.0].std(0).mean()) > float(features[-40.0].std(0).mean())
    # far from affine in the drive frequency: a straight-line fit leaves most variance
    x = torch.stack([drive_hz / 1e9, torch.ones_like(drive_hz)], dim=1)
    y = features[-10.0]
    residual = y - x @ torch.linalg.lstsq(x, y).solution
    assert float(residual.var(0).sum() / y.var(0).sum()) > 0.5
