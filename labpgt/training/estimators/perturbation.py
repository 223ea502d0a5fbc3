"""Parameter-space estimators: paper-faithful PGT and SPSA (MeZO-style, seed trick).

Both perturb the parameter vector θ along random directions, measure the batch
loss at the perturbed points and project the loss differences back onto the
directions. All passes of a step (clean + every probe ± side) are measured in
one `PerturbationScheduler` batch. Directions are never stored: each probe's
direction is regenerated from a per-step seed when the gradient is assembled.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

import torch

from labpgt.training.estimators.base import (
    GradientEstimator,
    LossFn,
    register_estimator,
)
from labpgt.training.models import ReservoirModel


class ParameterPerturbation(GradientEstimator):
    """Shared loop; subclasses draw directions and give the projection coefficient."""

    def scope(self, model: ReservoirModel) -> list[str]:
        """Names of the perturbed parameters (sorted: the draw order is part of the seed trick)."""
        if self.opt("perturb") == "all":
            return sorted(model.upstream_names() + model.downstream_names())
        return sorted(model.upstream_names())

    def sides(self) -> tuple[float, ...]:
        return (1.0, -1.0)

    def probes(self) -> int:
        return int(self.opt("probes"))

    def eps(self) -> float:
        return float(self.opt("delta"))

    def passes_per_step(self, dims_per_channel: int) -> int:
        return 1 + self.probes() * len(self.sides())

    @abstractmethod
    def direction(self, shapes: dict[str, torch.Size], seed: int) -> dict[str, torch.Tensor]:
        """One probe's direction per parameter, drawn from a generator seeded with `seed`."""

    def coefficient(self, l_plus: float, l_minus: float | None, l0: float) -> float:
        """Projection coefficient of one probe (before averaging over probes)."""
        if l_minus is None:
            return (l_plus - l0) / self.eps()
        return (l_plus - l_minus) / (2.0 * self.eps())

    def scale(self) -> float:
        """Divides the averaged estimate (1 when E[z zᵀ] = I)."""
        return 1.0

    def _estimate(
        self, model: ReservoirModel, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn
    ) -> tuple[float, torch.Tensor, dict[str, float]]:
        names = self.scope(model)
        params = dict(model.named_parameters())
        base = {n: params[n].detach() for n in names}
        shapes = {n: base[n].shape for n in names}
        step_seed = int(torch.randint(0, 2**62, (1,), generator=self.generator))
        eps = self.eps()
        # Pass 0 is clean; then probe k's sides in order. Directions are drawn here to
        # build the perturbed parameters, then dropped (regenerated below from the seed).
        variants: list[dict[str, torch.Tensor] | None] = [None]
        for k in range(self.probes()):
            z = self.direction(shapes, step_seed + k)
            for s in self.sides():
                variants.append({n: base[n] + (s * eps) * z[n] for n in names})
        with torch.no_grad():
            ups = [model.run_upstream(x, v) for v in variants]
            u_all = torch.stack([u for u, _ in ups])
            raw_all = model.reservoir.require_backend().measure(model.reservoir.settings(u_all))
        # Clean pass with autograd through the downstream layers only: exact gradients for
        # them when they are not perturbed (they never need the ring's Jacobian).
        ctx0 = ups[0][1]
        ctx0 = ctx0.detach() if isinstance(ctx0, torch.Tensor) else ctx0
        logits0 = model.run_downstream(raw_all[0], ctx0)
        loss0_t = loss_fn(logits0, y)
        if self.opt("perturb") == "upstream":
            loss0_t.backward()
        loss0 = float(loss0_t.detach())
        with torch.no_grad():
            losses = [
                float(loss_fn(model.run_downstream(raw_all[i], ups[i][1], variants[i]), y))
                for i in range(1, len(variants))
            ]
            grads = {n: torch.zeros_like(base[n]) for n in names}
            n_sides = len(self.sides())
            coefs = []
            for k in range(self.probes()):
                l_plus = losses[k * n_sides]
                l_minus = losses[k * n_sides + 1] if n_sides == 2 else None
                c = self.coefficient(l_plus, l_minus, loss0)
                coefs.append(c)
                z = self.direction(shapes, step_seed + k)
                for n in names:
                    grads[n].add_(z[n], alpha=c)
            denom = self.probes() * self.scale()
            for n in names:
                params[n].grad = grads[n] / denom
        spread = float(torch.tensor(coefs).abs().mean()) if coefs else 0.0
        return loss0, logits0, {"mean_abs_coefficient": spread}


@register_estimator
class PGTEstimator(ParameterPerturbation):
    """Abbott, Elo & Bozhko (arXiv 2506.04523): integer perturbation matrices, ±δ.

    PM has θ's shape with entries uniform in {-r..r}, each zeroed with probability p
    (dropout scale). ĝ = (L+ − L−)/(2δ)·PM, averaged over q matrices and (our
    normalisation, `pgt_normalise`) divided by E[PM_ij²] = (1−p)·r(r+1)/3 so that,
    to first order, E[ĝ] = ∇L whatever r and p are.
    """

    name: ClassVar[str] = "pgt"
    summary: ClassVar[str] = "paper-faithful PGT: integer perturbation matrix, ±δ, 3 passes"
    defaults: ClassVar[dict[str, Any]] = {"probes": 1, "delta": 0.1, "perturb": "all"}

    def direction(self, shapes: dict[str, torch.Size], seed: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        r, p = self.options.pgt_range, self.options.pgt_dropout
        out = {}
        for n, shape in shapes.items():
            pm = torch.randint(-r, r + 1, shape, generator=g).float()
            if p > 0:
                pm = pm * (torch.rand(shape, generator=g) >= p)
            out[n] = pm
        return out

    def scale(self) -> float:
        if not self.options.pgt_normalise:
            return 1.0
        r, p = self.options.pgt_range, self.options.pgt_dropout
        return (1.0 - p) * r * (r + 1) / 3.0


@register_estimator
class SPSAEstimator(ParameterPerturbation):
    """Random directions z (Gaussian or Rademacher), q probes, two- or one-sided.

    ĝ = (1/q) Σ_k (L(θ+εz_k) − L(θ−εz_k))/(2ε) z_k, or (L(θ+εz_k) − L0)/ε z_k against
    the clean pass re-measured in the same batch. Optional gain schedules
    a_k = a/(k+1+A)^0.602 (the learning rate) and c_k = c/(k+1)^0.101 (ε).
    """

    name: ClassVar[str] = "spsa"
    summary: ClassVar[str] = "SPSA / MeZO random directions, q probes, seed trick"
    defaults: ClassVar[dict[str, Any]] = {"probes": 4, "delta": 0.01, "perturb": "upstream"}

    def sides(self) -> tuple[float, ...]:
        return (1.0,) if self.options.one_sided else (1.0, -1.0)

    def eps(self) -> float:
        if not self.options.spsa_gain:
            return float(self.opt("delta"))
        c = self.options.gain_c if self.options.gain_c is not None else float(self.opt("delta"))
        return c / (self.steps + 1) ** 0.101

    def before_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.options.spsa_gain:
            # The estimate for step k was taken with self.steps already advanced.
            k = self.steps - 1
            lr = self.options.gain_a / (k + 1 + self.options.gain_big_a) ** 0.602
            for group in optimizer.param_groups:
                group["lr"] = lr

    def direction(self, shapes: dict[str, torch.Size], seed: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        kind = self.options.directions
        out = {}
        for n, shape in shapes.items():
            if kind == "gaussian":
                out[n] = torch.randn(shape, generator=g)
            else:  # rademacher (also "auto"); "coordinate" is boundary-only, refused at config
                out[n] = torch.randint(0, 2, shape, generator=g).float() * 2 - 1
        return out
