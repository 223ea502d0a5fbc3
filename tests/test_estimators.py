"""Gradient estimators against the true gradient through the differentiable ring (noise off).

A small dense model on a tiny synthetic task; the in-process `SimulatedReservoir`
(noise and drift off) behind the real scheduler. For each estimator the cosine
similarity of its estimate to the backprop gradient (`true_gradient`) must beat a
stated threshold, and averaging more probes must move towards the true direction.
"""

from __future__ import annotations

import pytest
import torch

from labpgt.errors import UserError
from labpgt.training.config import make_config, parse_options
from labpgt.training.estimators import (
    ESTIMATORS,
    EstimatorContext,
    GradientEstimator,
    make_estimator,
    register_estimator,
)
from labpgt.training.estimators.backprop import true_gradient
from labpgt.training.models import ReservoirModel
from labpgt.training.trainer import _loss

# The ring's features are rough in u: finite differences agree with autograd only for
# steps <~1e-4 of u (at 1e-2 they already differ in sign), so the comparison with the
# pathwise gradient uses a small δ. Noise is off, so a small δ is harmless here.
DELTA = 1e-4

# Thresholds on the mean cosine similarity to the true gradient (noise off).
THRESHOLDS = {
    # boundary with coordinate directions (m = 2 <= probes): a central-difference
    # Jacobian of the ring, exact backprop elsewhere -> essentially the true gradient.
    "boundary": 0.95,
    # parameter-space estimators with 64 probes over ~150 parameters.
    "pgt": 0.4,
    "spsa": 0.4,
}


@pytest.fixture(scope="module")
def setup(toy_setup):
    return toy_setup


def flat(grads: dict[str, torch.Tensor], names: list[str]) -> torch.Tensor:
    return torch.cat([grads[n].reshape(-1) for n in names])


def estimate(model: ReservoirModel, est: GradientEstimator, x, y) -> dict[str, torch.Tensor]:
    est.estimate(model, x, y, _loss)
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


@pytest.mark.parametrize(
    ("method", "opts"),
    [
        ("boundary", {"delta": DELTA}),
        ("pgt", {"probes": 64, "delta": DELTA, "perturb": "all"}),
        ("spsa", {"probes": 64, "delta": DELTA, "perturb": "all", "directions": "gaussian"}),
    ],
)
def test_estimate_points_along_the_true_gradient(setup, method: str, opts: dict) -> None:
    model, x, y, _ = setup
    names = [n for n, _ in model.named_parameters()]
    true = flat(true_gradient(model, x, y, _loss), names)
    config = make_config(method=method, **opts)
    est = make_estimator(method, config.estimator, seed=11)
    cos = [cosine(flat(estimate(model, est, x, y), names), true) for _ in range(2)]
    assert sum(cos) / len(cos) > THRESHOLDS[method], cos


def test_upstream_only_gives_exact_downstream_gradients(setup) -> None:
    model, x, y, _ = setup
    true = true_gradient(model, x, y, _loss)
    config = make_config(method="pgt", perturb="upstream", probes=4)
    got = estimate(model, make_estimator("pgt", config.estimator, seed=2), x, y)
    for n in model.downstream_names():
        assert torch.allclose(got[n], true[n], atol=1e-5), n


@pytest.mark.parametrize("method", ["pgt", "spsa"])
def test_averaging_more_probes_converges_to_the_true_direction(setup, method: str) -> None:
    model, x, y, _ = setup
    names = model.upstream_names()  # perturb="upstream": the estimated part only
    true = flat(true_gradient(model, x, y, _loss), names)
    cos = {}
    for q in (1, 8, 64):
        config = make_config(method=method, perturb="upstream", probes=q, delta=DELTA)
        est = make_estimator(method, config.estimator, seed=5)
        runs = [cosine(flat(estimate(model, est, x, y), names), true) for _ in range(2)]
        cos[q] = sum(runs) / len(runs)
    assert cos[1] < cos[8] < cos[64], cos
    assert cos[64] > 0.5, cos


def test_boundary_random_directions_converge(setup) -> None:
    model, x, y, _ = setup
    names = model.upstream_names()
    true = flat(true_gradient(model, x, y, _loss), names)
    cos = {}
    for q in (1, 32):
        config = make_config(method="boundary", directions="rademacher", probes=q, delta=DELTA)
        est = make_estimator("boundary", config.estimator, seed=5)
        cos[q] = cosine(flat(estimate(model, est, x, y), names), true)
    assert cos[1] < cos[32] and cos[32] > 0.9, cos


def test_counts_queries_and_passes(setup) -> None:
    model, x, y, backend = setup
    for method, opts, passes in (
        ("pgt", {}, 3),
        ("spsa", {"probes": 3, "one_sided": True}, 4),
        ("boundary", {}, 5),
    ):
        config = make_config(method=method, **opts)
        est = make_estimator(method, config.estimator, seed=0)
        calls = backend.calls
        result = est.estimate(model, x, y, _loss)
        assert backend.calls == calls + 1  # every perturbed measurement in one scheduler batch
        assert result.forward_passes == passes
        assert result.queries == passes * x.shape[0] * model.reservoir.channels


def test_extension_point_gets_options_and_context(setup) -> None:
    """A registered estimator receives typed --method-opt values and the run context."""
    model, x, y, backend = setup

    class Probe(ESTIMATORS["boundary"]):  # type: ignore[misc, valid-type]
        name = "test-probe"
        extra_options = {"gain": 1.0, "tag": "a", "twice": False}

    register_estimator(Probe)
    try:
        ctx = EstimatorContext(model=model, backend=backend, real_bench=False)
        extra = parse_options("--method-opt", ["gain=2", "twice=true"])
        est = make_estimator(
            "test-probe", make_config().estimator, seed=0, extra=extra, context=ctx
        )
        assert est.extra == {"gain": 2.0, "tag": "a", "twice": True}
        assert est.context is ctx and ctx.scheduler is backend.scheduler
        with pytest.raises(UserError, match="--method-opt tag=3: method 'test-probe' expects"):
            make_estimator("test-probe", make_config().estimator, seed=0, extra={"tag": 3})
    finally:
        del ESTIMATORS["test-probe"]
