"""Backprop reference: autograd straight through the differentiable ring simulation.

Only possible in simulation (`SimulatedReservoir.differentiable_features`, noise
off); the backend refuses it on a real or virtual bench. It is the yardstick the
perturbative estimators are compared against.

Two forms (``--method-opt forward=...``):

* ``sim`` (the default): the forward pass is the noise-free, drift-free simulation
  itself, so the readout is trained on features the measured ring never shows;
* ``ring``: the forward pass measures the ring (noise and drift, one query per
  sample and channel, as PAT), and the backward pass is the simulation's exact
  Jacobian at the measured settings. This is PAT with a perfect twin: the loss is
  the one the network is judged on, the gradient direction the model's own.
  ``--method-opt jacobian=difference`` takes that Jacobian as central differences
  of the simulation at the probing step δ (``--delta``, default 0.05 of the drive
  range, as boundary) instead of autograd: the ring's response smoothed at the
  scale the perturbative estimators see it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch

from labpgt.errors import UserError
from labpgt.training.estimators.base import GradientEstimator, LossFn, register_estimator
from labpgt.training.estimators.pat import model_backward
from labpgt.training.models import ReservoirModel


@register_estimator
class BackpropEstimator(GradientEstimator):
    name: ClassVar[str] = "backprop"
    summary: ClassVar[str] = "exact autograd through the differentiable simulation (sim only)"
    needs_differentiable: ClassVar[bool] = True
    defaults: ClassVar[dict[str, Any]] = {"delta": 0.05}
    extra_options: ClassVar[dict[str, Any]] = {"forward": "sim", "jacobian": "autograd"}
    FORWARDS: ClassVar[tuple[str, ...]] = ("sim", "ring")

    def passes_per_step(self, dims_per_channel: int) -> int:
        return 1

    def _estimate(
        self, model: ReservoirModel, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn
    ) -> tuple[float, torch.Tensor, dict[str, float]]:
        layer = model.reservoir
        backend = layer.require_backend()
        forward = str(self.extra["forward"])
        if forward not in self.FORWARDS:
            raise UserError(
                f"--method-opt forward={forward}: backprop's forward is one of "
                f"{', '.join(self.FORWARDS)}"
            )
        if forward == "sim":
            if self.extra["jacobian"] != "autograd":
                raise UserError(
                    f"--method-opt jacobian={self.extra['jacobian']} needs forward=ring "
                    "(the noise-free forward is differentiated by autograd)"
                )
            return autograd_step(
                model, x, y, loss_fn, lambda u: backend.differentiable(layer.settings(u))
            )

        backend.require_differentiable("backprop")

        def sim(flat: torch.Tensor) -> torch.Tensor:
            # The model's Jacobian at the measured point, as PAT's surrogate: not a
            # measurement, so it adds no query (the ring's shot in forward does).
            return backend.reservoir.differentiable_features(flat)

        jacobian = str(self.extra["jacobian"])
        eps = float(self.opt("delta"))

        def ring(u: torch.Tensor) -> torch.Tensor:
            settings = layer.settings(u)
            measured = backend.measure(settings)
            return model_backward(layer, u, settings, measured, sim, jacobian, eps)

        return autograd_step(model, x, y, loss_fn, ring)


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
