"""Backprop with the ring's forward pass: measured features, the simulation's Jacobian.

With noise and drift off the measured features are the simulation's own, so the
gradient must be the pathwise one; what it costs is one measurement per sample and
channel, and no differentiable-simulation query.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from labpgt.errors import UserError
from labpgt.training.estimators.backprop import BackpropEstimator, true_gradient
from labpgt.training.estimators.base import EstimatorOptions


def _loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y)


def _flat(grads: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in grads.values()])


def test_ring_forward_gives_the_pathwise_gradient_for_one_query_per_shot(iris_setup) -> None:
    model, task, backend = iris_setup
    x, y = task.x_train[:16], task.y_train[:16]
    truth = _flat(true_gradient(model, x, y, _loss))
    model.zero_grad()
    shots, sim_queries = backend.scheduler.stats.queries, backend.differentiable_queries
    est = BackpropEstimator(EstimatorOptions(), seed=0, extra={"forward": "ring"})
    est.estimate(model, x, y, _loss)
    got = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    cos = float(F.cosine_similarity(got.to(torch.float64), truth.to(torch.float64), dim=0))
    assert cos > 0.999, cos
    assert torch.allclose(got.norm(), truth.norm().to(got.dtype), rtol=1e-2)
    assert backend.scheduler.stats.queries - shots == 16 * model.reservoir.channels
    assert backend.differentiable_queries == sim_queries


def test_unknown_forward_is_refused(iris_setup) -> None:
    model, task, _ = iris_setup
    est = BackpropEstimator(EstimatorOptions(), seed=0, extra={"forward": "twin"})
    with pytest.raises(UserError, match="forward=twin"):
        est.estimate(model, task.x_train[:4], task.y_train[:4], _loss)


def test_difference_jacobian_follows_the_sim_at_the_probing_scale(iris_setup) -> None:
    """jacobian=difference: ∂L/∂u from central differences of the sim at ±δ in u.

    Checked against the same differences computed here by hand, and it must point
    broadly the pathwise way (the sim is smooth at iris's coarse scale)."""
    model, task, backend = iris_setup
    x, y = task.x_train[:16], task.y_train[:16]
    delta = 0.05
    layer = model.reservoir
    u, ctx = model.run_upstream(x)
    u = u.detach().requires_grad_(True)
    raw = layer.measure_u(u.detach())
    raw_req = raw.clone().requires_grad_(True)
    loss = _loss(model.run_downstream(raw_req, ctx.detach() if ctx is not None else ctx), y)
    (g_raw,) = torch.autograd.grad(loss, raw_req)
    by_hand = torch.zeros_like(u)
    with torch.no_grad():
        for i in range(u.shape[1]):
            step = torch.zeros_like(u)
            step[:, i] = delta
            plus = backend.reservoir.differentiable_features(
                layer.settings(u + step).reshape(-1, 3)
            )
            minus = backend.reservoir.differentiable_features(
                layer.settings(u - step).reshape(-1, 3)
            )
            jvp = ((plus - minus) / (2 * delta)).reshape(raw.shape)
            by_hand[:, i] = (jvp * g_raw).sum(dim=(-1, -2))
    model.zero_grad()
    seen: list[torch.Tensor] = []
    est = BackpropEstimator(
        EstimatorOptions(delta=delta), seed=0, extra={"forward": "ring", "jacobian": "difference"}
    )
    orig = model.run_upstream

    def spy(xb):
        out, c = orig(xb)
        out.register_hook(lambda g: seen.append(g.detach().clone()))
        return out, c

    model.run_upstream = spy
    try:
        est.estimate(model, x, y, _loss)
    finally:
        del model.run_upstream
    assert len(seen) == 1
    assert torch.allclose(
        seen[0].to(torch.float64), by_hand.to(torch.float64), rtol=1e-3, atol=1e-6
    )


def test_difference_jacobian_needs_the_ring_forward(iris_setup) -> None:
    model, task, _ = iris_setup
    est = BackpropEstimator(EstimatorOptions(), seed=0, extra={"jacobian": "difference"})
    with pytest.raises(UserError, match="needs forward=ring"):
        est.estimate(model, task.x_train[:4], task.y_train[:4], _loss)
