"""sim.ring fast paths (no autograd) agree with the float64 / autograd arithmetic they replace.

No timing here: speed is measured by benchmarks/sim_throughput.py.
"""

from __future__ import annotations

import math

import pytest
import torch
from labpgt.sim import dispersion
from labpgt.sim.competition import steady_state
from labpgt.sim.grid import AnalyzerGrid
from labpgt.sim.params import RingParams
from labpgt.sim.ring import RingError, RingModel
from labpgt.sim.ring_lines import RingConditions, ring_modes
from labpgt.sim.spectrum import render_trace
from test_ring_bench import shots

GRID = AnalyzerGrid()
QUIET = RingParams(noise=False, drift=False)


def competition_inputs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Growth, drive separation and drive saturation as the ring computes them."""
    drive_hz, drive_dbm, bias_a = shots(n, seed)
    field = dispersion.field_oe(bias_a, -1.0, QUIET)
    zero, rf = torch.zeros_like(field), torch.ones_like(field)
    modes = ring_modes(QUIET, RingConditions(drive_hz, drive_dbm, field, zero, rf))
    return modes.growth, modes.drive_separation, modes.drive_saturation


def assert_float32_close(fast_db: torch.Tensor, exact_db: torch.Tensor) -> None:
    """The float32 path's dB figures: a median 1e-4 dB from float64, none 0.1 dB off."""
    difference = (fast_db - exact_db).abs()
    assert float(difference.median()) < 1e-4
    assert float(difference.max()) < 0.1


def test_no_grad_competition_is_bit_identical_to_the_autograd_loop() -> None:
    growth, separation, saturation = competition_inputs(256, seed=1)
    params = RingParams()
    with torch.no_grad():
        in_place = steady_state(growth, separation, saturation, params)
    leaf = growth.clone().requires_grad_(True)
    unrolled = steady_state(leaf, separation, saturation, params)
    assert unrolled.requires_grad
    assert torch.equal(in_place, unrolled.detach())


def test_float32_competition_stays_close_to_float64() -> None:
    growth, separation, saturation = competition_inputs(1024, seed=2)
    params = RingParams()
    with torch.no_grad():
        exact = steady_state(growth, separation, saturation, params)
        fast = steady_state(growth, separation, saturation, params, fast=True)
    assert fast.dtype == torch.float64
    exact_dbm = 10 * torch.log10(exact)
    strong = exact_dbm > -60.0
    assert_float32_close(10 * torch.log10(fast)[strong], exact_dbm[strong])


def test_fast_evaluate_matches_float64_evaluate() -> None:
    ring = RingModel(QUIET)
    settings = shots(256, seed=3)
    with torch.no_grad():
        fast = ring.evaluate(*settings, GRID, remanence_sign=-1.0)
        exact = ring.evaluate(*settings, GRID, remanence_sign=-1.0, dtype=torch.float64)
    assert_float32_close(fast, exact)


def test_fast_evaluate_rows_do_not_depend_on_the_batch() -> None:
    ring = RingModel(QUIET)
    settings = shots(300, seed=4)
    with torch.no_grad():
        whole = ring.evaluate(*settings, GRID, remanence_sign=1.0)
        for start, size in ((0, 1), (7, 9), (150, 33), (299, 1)):
            part = ring.evaluate(
                *(s[start : start + size] for s in settings), GRID, remanence_sign=1.0
            )
            torch.testing.assert_close(whole[start : start + size], part, rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    "grid",
    [
        AnalyzerGrid(),
        AnalyzerGrid(center_hz=2.068e9, span_hz=5e6, rbw_hz=2e3, points=4001),
        AnalyzerGrid(rbw_hz=1e6, points=101),
    ],
)
def test_fast_render_draws_the_same_noise_as_the_float64_render(grid: AnalyzerGrid) -> None:
    ring = RingModel(RingParams())
    with torch.no_grad():
        lines = ring.lines(*shots(64, seed=5), remanence_sign=-1.0)
    line_mw = 10 ** (lines.power_dbm / 10)
    first, second = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    with torch.no_grad():
        fast = render_trace(lines.frequency_hz, line_mw, grid, ring.params, first, torch.float32)
        exact = render_trace(lines.frequency_hz, line_mw, grid, ring.params, second, torch.float64)
    assert fast.dtype == torch.float64 and fast.shape == (64, grid.points)
    torch.testing.assert_close(fast, exact, rtol=0, atol=1e-3)
    assert torch.equal(first.get_state(), second.get_state())


def test_mode_solver_is_converged() -> None:
    params = RingParams()
    field = torch.linspace(1.0, 3000.0, 2000, dtype=torch.float64)
    k = dispersion.solve_modes(field, params)
    reference = dispersion.solve_modes(field, params, newton_steps=30)
    torch.testing.assert_close(k, reference, rtol=1e-12, atol=0)
    turns = dispersion.loop_phase_rad(
        k, dispersion.frequency_of_k(k, field[:, None], params), params
    )
    turns = turns / (2 * math.pi)
    torch.testing.assert_close(turns, torch.round(turns), rtol=0, atol=1e-9)


def test_one_setting_measure_equals_the_tensor_form() -> None:
    plain = RingModel(RingParams(), seed=4)
    tensors = RingModel(RingParams(), seed=4)
    for i in range(3):
        drive_hz = 2.1e9 + 1e6 * i
        a = plain.measure(drive_hz, -10.0, 1.8, GRID, rf_on=i != 1, settle_s=0.01)
        b = tensors.measure(
            torch.tensor([drive_hz], dtype=torch.float64),
            torch.tensor([-10.0], dtype=torch.float64),
            torch.tensor([1.8], dtype=torch.float64),
            GRID,
            rf_on=torch.tensor([float(i != 1)], dtype=torch.float64),
            settle_s=torch.tensor([0.01], dtype=torch.float64),
        )
        assert torch.equal(a.power_dbm, b.power_dbm)
        assert torch.equal(a.time_s, b.time_s)
    assert plain.state_dict()["time_s"] == tensors.state_dict()["time_s"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bias_a": float("nan")}, "bias_a contains a non-finite value"),
        ({"drive_dbm": "loud"}, "drive_dbm must be a number"),
        ({"settle_s": float("inf")}, "settle_s contains a non-finite value"),
    ],
)
def test_one_setting_measure_names_a_bad_number(kwargs: dict, message: str) -> None:
    values = {"drive_hz": 2.1e9, "drive_dbm": -10.0, "bias_a": 1.8, "settle_s": 0.0}
    values.update(kwargs)
    ring = RingModel(RingParams(), seed=0)
    settle = values.pop("settle_s")
    with pytest.raises(RingError, match=message):
        ring.measure(
            values["drive_hz"], values["drive_dbm"], values["bias_a"], GRID, settle_s=settle
        )
