"""sim.ring bench side: hysteresis, drift, seeded noise, measure order, state, batch size."""

from __future__ import annotations

import math

import pytest
import torch
from labpgt.sim.grid import AnalyzerGrid
from labpgt.sim.params import RingParams
from labpgt.sim.ring import RingError, RingModel

GRID = AnalyzerGrid()


def shots(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """N random settings in the ring's working range (2.0-2.3 GHz, -40-0 dBm, 1.6-2.0 A),
    float64, the same for the same seed (the sim tests share them)."""
    gen = torch.Generator().manual_seed(seed)
    drive_hz = 2.0e9 + 3e8 * torch.rand(n, generator=gen, dtype=torch.float64)
    drive_dbm = -40.0 + 40.0 * torch.rand(n, generator=gen, dtype=torch.float64)
    bias_a = 1.6 + 0.4 * torch.rand(n, generator=gen, dtype=torch.float64)
    return drive_hz, drive_dbm, bias_a


# ---------------------------------------------------------------- hysteresis


def test_remanence_lags_the_direction_of_travel() -> None:
    ring = RingModel(RingParams(drift=False))
    ring.set_bias(2.0)  # rising from 0 A: H_rem negative
    assert ring.remanence_sign == -1.0
    assert float(ring.field_oe(1.8)) == pytest.approx(150 * 1.8 - 2.0)
    ring.set_bias(1.95)  # a small reversal (< 0.1 A) leaves it alone
    assert ring.remanence_sign == -1.0
    ring.set_bias(1.8)  # fallen 0.2 A below the top: positive
    assert ring.remanence_sign == 1.0
    assert float(ring.field_oe(1.8)) == pytest.approx(150 * 1.8 + 2.0)
    ring.set_bias(2.0)
    assert ring.remanence_sign == -1.0
    # the same 1.8 A reached from above and from below puts the modes 4 Oe apart
    from_above = RingModel(RingParams(drift=False))
    from_above.set_bias(2.2)
    from_above.set_bias(1.8)
    from_below = RingModel(RingParams(drift=False))
    from_below.set_bias(1.8)
    assert from_above.fmr_hz(1.8) - from_below.fmr_hz(1.8) > 4e6  # ~4 Oe * ~1.5 MHz/Oe


def test_hysteresis_switch_off_removes_the_remanence() -> None:
    ring = RingModel(RingParams(hysteresis=False, drift=False))
    for current in (2.2, 1.8, 2.1, 0.5):
        ring.set_bias(current)
        assert ring.remanence_sign == 0.0
        assert float(ring.field_oe(1.8)) == pytest.approx(270.0)


def test_measure_walks_the_shots_in_order_through_the_hysteresis() -> None:
    params = RingParams(noise=False, drift=False)
    ring = RingModel(params)
    bias = torch.tensor([2.2, 1.8, 1.8], dtype=torch.float64)
    trace = ring.measure(2.0e9, -40.0, bias, GRID, rf_on=False)
    # shot 1 (1.8 A after 2.2 A) equals the pure core with H_rem positive
    with torch.no_grad():
        expected = ring.evaluate(2.0e9, -40.0, 1.8, GRID, rf_on=False, remanence_sign=1.0)
        rising = ring.evaluate(2.0e9, -40.0, 1.8, GRID, rf_on=False, remanence_sign=-1.0)
    torch.testing.assert_close(trace.power_dbm[1:2], expected, rtol=0, atol=1e-4)
    assert float((trace.power_dbm[1:2] - rising).abs().max()) > 10.0


# ---------------------------------------------------------------- drift and clock


def test_drift_random_walks_at_the_configured_rates() -> None:
    n_rings, minutes = 400, 10.0
    field, gain = [], []
    for seed in range(n_rings):
        ring = RingModel(RingParams(), seed=seed)
        ring.advance(minutes * 60.0)
        field.append(ring.drift_state[0])
        gain.append(ring.drift_state[1])
    field_std = float(torch.tensor(field).std())
    gain_std = float(torch.tensor(gain).std())
    assert field_std == pytest.approx(0.05 * math.sqrt(minutes), rel=0.15)
    assert gain_std == pytest.approx(0.1 * math.sqrt(minutes / 60.0), rel=0.15)
    still = RingModel(RingParams(drift=False), seed=0)
    still.advance(3600.0)
    assert still.drift_state == (0.0, 0.0) and still.time_s == 3600.0


def test_field_drift_moves_the_modes_and_gain_drift_the_power() -> None:
    params = RingParams(noise=False, drift=False, hysteresis=False)
    ring = RingModel(params)
    before = ring.mode_frequencies_hz(1.8)
    ring.inject_drift(field_oe=0.2)  # ~0.8 MHz: well under one mode spacing
    after = ring.mode_frequencies_hz(1.8)
    nearest = after[torch.argmin((after.unsqueeze(0) - before.unsqueeze(1)).abs(), dim=1)]
    assert torch.all(nearest > before)
    with torch.no_grad():
        low = ring.lines(2.0e9, -40.0, 1.8, rf_on=False, gain_offset_db=0.0)
        high = ring.lines(2.0e9, -40.0, 1.8, rf_on=False, gain_offset_db=1.0)
    assert float(high.power_dbm.max()) > float(low.power_dbm.max())


def test_measure_reports_sweep_time_and_advances_the_clock() -> None:
    ring = RingModel(RingParams(noise=False, drift=False))
    grid = AnalyzerGrid(center_hz=2.068e9, span_hz=5e6, rbw_hz=2e3, points=4001)
    assert grid.sweep_time_s == pytest.approx(2.5 * 5e6 / 2e3**2)  # ~3.1 s
    trace = ring.measure(2.07e9, -10.0, torch.full((3,), 1.8), grid, settle_s=0.3)
    assert trace.sweep_time_s == pytest.approx(3.125)
    assert trace.power_dbm.shape == (3, 4001) and trace.frequency_hz.shape == (4001,)
    torch.testing.assert_close(
        trace.time_s, torch.tensor([0.3, 3.725, 7.15], dtype=torch.float64), rtol=0, atol=1e-9
    )
    assert ring.time_s == pytest.approx(3 * (0.3 + 3.125))
    with pytest.raises(RingError, match="settle_s"):
        ring.measure(2.07e9, -10.0, 1.8, grid, settle_s=-1.0)
    with pytest.raises(RingError, match="dt_s"):
        ring.advance(float("nan"))


# ---------------------------------------------------------------- seeds and batch


def test_same_seed_gives_bit_identical_traces_for_1024_settings() -> None:
    settings = shots(1024)
    first = RingModel(RingParams(), seed=7).measure(*settings, GRID, settle_s=0.01)
    second = RingModel(RingParams(), seed=7).measure(*settings, GRID, settle_s=0.01)
    other = RingModel(RingParams(), seed=8).measure(*settings, GRID, settle_s=0.01)
    assert first.power_dbm.shape == (1024, GRID.points)
    assert torch.equal(first.power_dbm, second.power_dbm)
    assert torch.equal(first.time_s, second.time_s)
    assert not torch.equal(first.power_dbm, other.power_dbm)
    # one call of the pure core with a seeded generator is reproducible too
    with torch.no_grad():
        a = RingModel().evaluate(*settings, GRID, generator=torch.Generator().manual_seed(1))
        b = RingModel().evaluate(*settings, GRID, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_large_batches_match_row_by_row_evaluation() -> None:
    """A big batch gives the same lines as the same settings in small pieces."""
    ring = RingModel(RingParams(noise=False, drift=False))
    settings = shots(600, seed=3)
    with torch.no_grad():
        whole = ring.lines(*settings)
        pieces = [ring.lines(*(s[i : i + 100] for s in settings)) for i in range(0, 600, 100)]
    torch.testing.assert_close(
        whole.power_dbm, torch.cat([p.power_dbm for p in pieces]), rtol=0, atol=1e-9
    )
    with torch.no_grad():
        traces = ring.evaluate(*settings, GRID)
        first = ring.evaluate(*(s[:5] for s in settings), GRID)
    torch.testing.assert_close(traces[:5], first, rtol=0, atol=1e-4)


def test_noise_switch_makes_measure_deterministic() -> None:
    settings = shots(8)
    quiet = [
        RingModel(RingParams(noise=False, drift=False), seed=s).measure(*settings, GRID)
        for s in (1, 2)
    ]
    assert torch.equal(quiet[0].power_dbm, quiet[1].power_dbm)
    noisy = [RingModel(RingParams(drift=False), seed=s).measure(*settings, GRID) for s in (1, 2)]
    assert not torch.equal(noisy[0].power_dbm, noisy[1].power_dbm)


def test_state_dict_resumes_bit_identically() -> None:
    settings = shots(16)
    ring = RingModel(RingParams(), seed=5)
    ring.measure(*settings, GRID, settle_s=0.3)
    ring.advance(120.0)
    saved = ring.state_dict()
    first = ring.measure(*settings, GRID, settle_s=0.3)
    twin = RingModel(RingParams(), seed=99)
    twin.load_state_dict(saved)
    second = twin.measure(*settings, GRID, settle_s=0.3)
    assert torch.equal(first.power_dbm, second.power_dbm)
    assert twin.state_dict()["time_s"] == ring.state_dict()["time_s"]
    with pytest.raises(RingError, match="rng_state"):
        twin.load_state_dict({k: v for k, v in saved.items() if k != "rng_state"})
