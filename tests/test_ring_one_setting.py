"""The one-shot path of RingModel.measure (NumPy arrays of one row) against the torch model.

No timing here: the latency is measured by benchmarks/sim_throughput.py and
benchmarks/loop_overhead.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from labpgt.sim import competition
from labpgt.sim.arrays import namespace
from labpgt.sim.grid import AnalyzerGrid
from labpgt.sim.params import RingParams
from labpgt.sim.ring import RingModel
from labpgt.sim.spectrum import render_trace

GRID = AnalyzerGrid(center_hz=2.15e9, span_hz=300e6, rbw_hz=300e3, points=1001)
FINE = AnalyzerGrid(center_hz=2.068e9, span_hz=5e6, rbw_hz=2e3, points=4001)


def shots(n: int, seed: int) -> list[tuple[float, float, float]]:
    gen = torch.Generator().manual_seed(seed)
    drive_hz = 2.0e9 + 3e8 * torch.rand(n, generator=gen, dtype=torch.float64)
    drive_dbm = -40.0 + 40.0 * torch.rand(n, generator=gen, dtype=torch.float64)
    bias_a = 1.5 + 0.5 * torch.rand(n, generator=gen, dtype=torch.float64)
    return list(zip(drive_hz.tolist(), drive_dbm.tolist(), bias_a.tolist(), strict=True))


@pytest.mark.parametrize(("grid", "hysteresis"), [(GRID, True), (FINE, True), (GRID, False)])
def test_one_shot_matches_the_float64_torch_model(grid: AnalyzerGrid, hysteresis: bool) -> None:
    """Noise off: one NumPy shot equals the float64 torch evaluate to rounding."""
    params = RingParams(noise=False, drift=False, hysteresis=hysteresis)
    settings = shots(120, seed=1)
    traces, signs = [], []
    for i, (drive_hz, drive_dbm, bias_a) in enumerate(settings):
        ring = RingModel(params)
        rf_on = i % 7 != 3  # a few shots with the drive off
        traces.append(ring.measure(drive_hz, drive_dbm, bias_a, grid, rf_on=rf_on).power_dbm[0])
        signs.append(ring.remanence_sign)
    one = torch.stack(traces)
    columns = torch.tensor(settings, dtype=torch.float64).T
    rf = torch.tensor([float(i % 7 != 3) for i in range(len(settings))], dtype=torch.float64)
    with torch.no_grad():
        exact = RingModel(params).evaluate(
            *columns,
            grid,
            rf_on=rf,
            remanence_sign=torch.tensor(signs, dtype=torch.float64),
            dtype=torch.float64,
        )
        fast = RingModel(params).evaluate(
            *columns, grid, rf_on=rf, remanence_sign=torch.tensor(signs, dtype=torch.float64)
        )
    assert one.shape == exact.shape and one.dtype == torch.float64
    assert float((one - exact).abs().max()) < 1e-6
    # ... and the float32 batch path stays as close to it as it is to float64
    assert float((one - fast).abs().median()) < 1e-4
    assert float((one - fast).abs().max()) < 0.1
    # the comparison has teeth: the traces hold lines well above the floor
    assert float(one.max()) - float(one.median()) > 30.0


def test_one_shot_and_batch_of_one_draw_the_same_noise_and_drift() -> None:
    """Noise and drift on: the NumPy shot and the torch batch code (N = 1) take the same
    draws in the same order, so seeds, clocks and state_dict carry over."""
    params = RingParams()
    one, batch = RingModel(params, seed=3), RingModel(params, seed=3)
    for i, (drive_hz, drive_dbm, bias_a) in enumerate(shots(6, seed=2)):
        settle = 0.05 * i
        a = one.measure(drive_hz, drive_dbm, bias_a, GRID, settle_s=settle, rf_on=i != 2)
        values = [drive_hz, drive_dbm, bias_a, settle, float(i != 2)]
        fin, dbm, bias, settle_t, rf = (torch.tensor([v], dtype=torch.float64) for v in values)
        b = batch._measure_batch(fin, dbm, bias, settle_t, rf, GRID)
        assert torch.equal(one._generator.get_state(), batch._generator.get_state())
        torch.testing.assert_close(a.power_dbm, b.power_dbm, rtol=0, atol=0.05)
        assert float((a.power_dbm - b.power_dbm).abs().median()) < 1e-3
        torch.testing.assert_close(a.time_s, b.time_s, rtol=0, atol=1e-12)
        torch.testing.assert_close(a.frequency_hz, b.frequency_hz)
        assert a.sweep_time_s == b.sweep_time_s
    for key in ("time_s", "field_drift_oe", "gain_drift_db", "remanence_sign", "bias_a"):
        assert one.state_dict()[key] == pytest.approx(batch.state_dict()[key], abs=1e-12)
    assert one.state_dict()["field_drift_oe"] != 0.0  # drift really moved


def test_noise_draws_match_the_float64_render() -> None:
    """The trace noise of one shot is render_trace's, draw for draw."""
    params = RingParams(drift=False)
    ring = RingModel(params, seed=11)
    shot = ring.measure(2.07e9, -10.0, 1.8, GRID).power_dbm
    reference = RingModel(params, seed=11)
    reference.set_bias(1.8)
    with torch.no_grad():
        lines = reference.lines(2.07e9, -10.0, 1.8, remanence_sign=reference.remanence_sign)
        line_mw = 10.0 ** (lines.power_dbm / 10.0)
        expected = render_trace(
            lines.frequency_hz, line_mw, GRID, params, reference._generator, torch.float64
        )
    torch.testing.assert_close(shot, expected, rtol=0, atol=1e-6)
    assert torch.equal(ring._generator.get_state(), reference._generator.get_state())
    quiet = RingModel(RingParams(drift=False, noise=False)).measure(2.07e9, -10.0, 1.8, GRID)
    assert float((shot - quiet.power_dbm).std()) > 0.1  # there was noise to match


def test_competition_step_where_x_is_exactly_zero() -> None:
    """x = 2 step (net - C P) == 0: the plain step gives a non-finite value there
    (s' / x), so the solver redoes it with the guard, which stays finite (it leaves out
    the seed s' for that step) and agrees with the plain step elsewhere."""
    params = RingParams()
    coupling_t, _ = competition._matrices(params, namespace(np.ones(1)), np.dtype(np.float64))
    power = np.linspace(0.01, 0.5, params.mode_count)[None, :]
    step = np.array([[0.5]])  # 2 step = 1: Q = P
    net = power @ coupling_t  # the first step has x == 0 in every mode
    iteration = competition._Iteration(net, step, coupling_t, params, np.dtype(np.float64))
    q = power
    with np.errstate(divide="ignore", invalid="ignore"):
        plain = iteration.step(q, guard=False)
    assert not np.isfinite(plain).all()
    guarded = iteration.step(q, guard=True)
    np.testing.assert_array_equal(guarded, q)
    moved = q * 1.5  # x != 0: the guard changes nothing but rounding
    np.testing.assert_allclose(
        iteration.step(moved, True), iteration.step(moved, False), rtol=1e-14
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        solved = iteration.run(power, 1e-6, 48, guard=False)
    assert not np.isfinite(solved.power).all()
    assert np.isfinite(iteration.run(power, 1e-6, 48, guard=True).power).all()


def test_competition_is_one_solver_for_numpy_and_torch() -> None:
    """The NumPy one-shot path and the torch model run the same solver lines."""
    params = RingParams()
    gen = torch.Generator().manual_seed(5)
    for _ in range(20):
        growth = 0.5 * torch.randn(1, params.mode_count, generator=gen, dtype=torch.float64)
        separation = 40.0 * torch.rand(1, params.mode_count, generator=gen, dtype=torch.float64)
        saturation = torch.rand(1, generator=gen, dtype=torch.float64)
        with torch.no_grad():
            expected = competition.steady_state(growth, separation, saturation, params)[0]
        got = competition.steady_state(
            growth.numpy(), separation.numpy(), saturation.numpy(), params
        )[0]
        assert isinstance(got, np.ndarray)
        np.testing.assert_allclose(got, expected.numpy(), rtol=1e-9, atol=1e-14)


def test_noise_draws_do_not_follow_torchs_default_dtype() -> None:
    """Both paths draw float32 noise even where a user set float64 as torch's default."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        one, batch = RingModel(RingParams(), seed=4), RingModel(RingParams(), seed=4)
        a = one.measure(2.07e9, -10.0, 1.8, GRID)
        b = batch._measure_batch(*(torch.tensor([v]) for v in (2.07e9, -10.0, 1.8, 0.0, 1.0)), GRID)
    finally:
        torch.set_default_dtype(previous)
    assert torch.equal(one._generator.get_state(), batch._generator.get_state())
    torch.testing.assert_close(a.power_dbm, b.power_dbm, rtol=0, atol=0.05)
