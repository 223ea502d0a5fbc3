"""Backprop reference: autograd straight through the differentiable ring simulation.

Only possible in simulation (`SimulatedReservoir.differentiable_features`, noise
off); the backend refuses it on a real or virtual bench. It is the yardstick the
perturbative estimators are compared against.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch

from labpgt.training.estimators.base import GradientEstimator, LossFn, register_estimator
from labpgt.training.models import ReservoirModel


@register_estimator
class BackpropEstimator(GradientEstimator):
    name: ClassVar[str] = "backprop"
    summary: ClassVar[str] = "exact autograd through the differentiable simulation (sim only)"
    needs_differentiable: ClassVar[bool] = True
    defaults: ClassVar[dict[str, Any]] = {}

    def passes_per_step(self, dims_per_channel: int) -> int:
        return 1

    def _estimate(
        self, model: ReservoirModel, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn
    ) -> tuple[float, torch.Tensor, dict[str, float]]:
        backend = model.reservoir.require_backend()
        return autograd_step(
            model, x, y, loss_fn, lambda u: backend.differentiable(model.reservoir.settings(u))
        )


def autograd_step(
    model: ReservoirModel,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn,
    features: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[float, torch.Tensor, dict[str, float]]:
    """One exact-gradient step: raw features = features(u) with autograd, loss, backward."""
    u, ctx = model.run_upstream(x)
    logits = model.run_downstream(features(u), ctx)
    loss = loss_fn(logits, y)
    loss.backward()
    return float(loss.detach()), logits, {}


def true_gradient(
    model: ReservoirModel, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn
) -> dict[str, torch.Tensor]:
    """∇L through the differentiable simulation, without touching ``.grad`` or counters."""
    params = dict(model.named_parameters())
    u, ctx = model.run_upstream(x)
    raw = model.reservoir.require_backend().differentiable(model.reservoir.settings(u))
    loss = loss_fn(model.run_downstream(raw, ctx), y)
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return {
        n: (g if g is not None else torch.zeros_like(p))
        for (n, p), g in zip(params.items(), grads, strict=True)
    }
