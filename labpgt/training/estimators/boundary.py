"""Boundary perturbation: perturb the reservoir's few inputs u, back-propagate exactly upstream.

Each sample's k channels each take m encoded numbers (u has k·m columns). For
every sample and channel we measure y(u ± ε v_i), i = 1..q, in the same
scheduler batch as the clean y(u). The Jacobian–vector products
J v_i ≈ (y+ − y−)/(2ε) are kept from forward; backward turns the incoming
∂L/∂y into g_u = (1/q) Σ_i ⟨∂L/∂y, J v_i⟩ v_i (random v with E[v vᵀ] = I), or
into the central-difference Jacobian product Jᵀ ∂L/∂y when v_i are the m
coordinate directions. Upstream layers then get g_u by ordinary autograd, and
downstream layers their exact gradients: only the ring is estimated, and the
estimate's variance scales with m, not with the number of upstream parameters.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from labpgt.training.estimators.base import GradientEstimator, LossFn, register_estimator
from labpgt.training.models import ReservoirModel
from labpgt.training.reservoir_layer import ProbedMeasure, draw_directions

BoundaryMeasure = ProbedMeasure
"""The boundary estimator's measurement: the autograd Function `ReservoirLayer.forward` uses."""


@register_estimator
class BoundaryEstimator(GradientEstimator):
    """Perturb the encoded drive u per sample; exact autograd everywhere else."""

    name: ClassVar[str] = "boundary"
    summary: ClassVar[str] = "perturb the reservoir input u (m dims), exact backprop upstream"
    defaults: ClassVar[dict[str, Any]] = {"probes": 4, "delta": 0.05}

    def mode(self, m: int) -> str:
        kind = self.options.directions
        if kind == "auto":
            return "coordinate" if m <= int(self.opt("probes")) else "rademacher"
        return kind

    def probes_for(self, m: int) -> int:
        return m if self.mode(m) == "coordinate" else int(self.opt("probes"))

    def passes_per_step(self, dims_per_channel: int) -> int:
        return 1 + 2 * self.probes_for(dims_per_channel)

    def draw(self, q: int, b: int, k: int, m: int, mode: str) -> torch.Tensor:
        return draw_directions(q, b, k, m, mode, self.generator)

    def _estimate(
        self, model: ReservoirModel, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn
    ) -> tuple[float, torch.Tensor, dict[str, float]]:
        layer = model.reservoir
        m, k = layer.dims_per_channel, layer.channels
        mode = self.mode(m)
        q = self.probes_for(m)
        directions = self.draw(q, x.shape[0], k, m, mode)
        u, ctx = model.run_upstream(x)
        raw = BoundaryMeasure.apply(
            u, layer, directions, float(self.opt("delta")), mode != "coordinate"
        )
        logits = model.run_downstream(raw, ctx)
        loss = loss_fn(logits, y)
        loss.backward()
        return float(loss.detach()), logits, {}
