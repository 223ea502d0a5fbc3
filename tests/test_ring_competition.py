"""sim.competition: one solver with a stated tolerance and a capped iteration count."""

from __future__ import annotations

import numpy as np
import torch
from labpgt.sim import competition
from labpgt.sim.params import RingParams

PARAMS = RingParams()


def inputs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    m = PARAMS.mode_count
    growth = 1.0 + 0.5 * torch.randn(n, m, generator=gen, dtype=torch.float64)
    separation = 40.0 * torch.rand(n, m, generator=gen, dtype=torch.float64) - 20.0
    saturation = 0.3 * torch.rand(n, generator=gen, dtype=torch.float64)
    return growth, separation, saturation


def test_converged_rows_meet_the_tolerance_and_say_so() -> None:
    growth, separation, saturation = inputs(16, seed=1)
    solved = competition.solve_competition(
        growth, separation, saturation, PARAMS, tolerance=1e-6, max_iterations=3000
    )
    done = solved.converged
    assert int(done.sum()) >= 12
    assert bool((solved.iterations[done] % competition.CHECK_EVERY == 0).all())
    assert bool((solved.iterations[~done] == 3000).all())
    power = solved.power
    coupling = competition.coupling_matrix(PARAMS)
    drive = competition.cross_saturation(separation, PARAMS) * saturation[:, None]
    rate = growth - drive - power @ coupling.T  # dP/dt = 2 P rate + s = 0 at the steady state
    strong = (power > 1e-3) & done[:, None]
    assert float(rate[strong].abs().max()) < 1e-4


def test_at_the_cap_a_row_keeps_its_last_iterate_and_is_not_converged() -> None:
    growth, separation, saturation = inputs(8, seed=2)
    capped = competition.solve_competition(
        growth, separation, saturation, PARAMS, tolerance=0.0, max_iterations=37
    )
    assert not bool(capped.converged.any())
    assert bool((capped.iterations == 37).all())
    longer = competition.solve_competition(
        growth, separation, saturation, PARAMS, tolerance=0.0, max_iterations=38
    )
    assert not torch.equal(capped.power, longer.power)


def test_a_rows_result_does_not_depend_on_its_batch() -> None:
    growth, separation, saturation = inputs(40, seed=3)
    kwargs = {"tolerance": 1e-5, "max_iterations": 2000}
    whole = competition.solve_competition(growth, separation, saturation, PARAMS, **kwargs)
    assert int(whole.converged.sum()) > 0  # rows stop at different checks
    assert len(set(whole.iterations.tolist())) > 1
    for start, size in ((0, 1), (5, 7), (39, 1)):
        rows = slice(start, start + size)
        part = competition.solve_competition(
            growth[rows], separation[rows], saturation[rows], PARAMS, **kwargs
        )
        assert torch.equal(part.iterations, whole.iterations[rows])
        torch.testing.assert_close(part.power, whole.power[rows], rtol=1e-13, atol=0)


def test_numpy_and_torch_converge_alike() -> None:
    """A row of a torch batch, that row alone ((M,) and a scalar, as the one-shot path
    hands it over) and the same on NumPy, also as a (1, M) batch: one result."""
    growth, separation, saturation = inputs(4, seed=4)
    kwargs = {"tolerance": 1e-6, "max_iterations": 3000}
    with torch.no_grad():
        expected = competition.solve_competition(growth, separation, saturation, PARAMS, **kwargs)
        for row in range(4):
            alone = competition.solve_competition(
                growth[row], separation[row], saturation[row], PARAMS, **kwargs
            )
            assert alone.power.shape == (PARAMS.mode_count,)
            assert int(alone.iterations) == int(expected.iterations[row])
            torch.testing.assert_close(alone.power, expected.power[row], rtol=1e-10, atol=0)
            g, d, s = growth[row].numpy(), separation[row].numpy(), saturation[row].numpy()
            for one in ((g, d, np.float64(s)), (g[None], d[None], s[None])):
                got = competition.solve_competition(*one, PARAMS, **kwargs)
                assert int(np.reshape(got.iterations, -1)[0]) == int(expected.iterations[row])
                np.testing.assert_allclose(
                    np.reshape(got.power, -1), expected.power[row].numpy(), rtol=1e-8
                )


def test_the_solver_is_differentiable_in_the_growth() -> None:
    growth, separation, saturation = inputs(2, seed=5)
    leaf = growth.clone().requires_grad_(True)
    power = competition.steady_state(leaf, separation, saturation, PARAMS)
    (gradient,) = torch.autograd.grad(power.sum(), leaf)
    assert bool(torch.isfinite(gradient).all()) and float(gradient.abs().max()) > 0
