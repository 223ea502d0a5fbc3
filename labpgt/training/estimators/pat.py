"""Physics-aware training (PAT; Wright et al., Nature 2022): ring forward, surrogate backward.

The forward pass measures the ring (virtual or real) once per sample and channel —
the clean pass only. The backward pass replaces the ring's unknown Jacobian with
the calibration surrogate's (``calibration.surrogate``: settings → raw features,
from ``labpgt calibrate``), evaluated *at the measured point*: the incoming
∂L/∂features becomes ∂L/∂settings = vjp(surrogate, settings)(∂L/∂features), then
flows through the differentiable encoding into the upstream layers by autograd.
Downstream layers get their exact gradients from the measured features.

How the surrogate is differentiated (``--method-opt jacobian=...``): ``difference``
(the default) takes its central differences in u at the probing step δ (``--delta``,
0.05 as boundary) — the surrogate is evaluated at u ± δ along each drive dimension,
which costs no query; ``autograd`` takes its exact vector–Jacobian product. A ring
model's exact Jacobian follows the resonance ripple below the probing scale (the
twin's does, like the simulation's), so on digits autograd PAT learns far worse
(docs/study.md).

It can only be as good as the surrogate, so PAT reports, in each step's extras:
``surrogate_val_db`` (the surrogate's held-out RMS error from calibration, dB) and,
every ``compare_every`` steps (``--method-opt compare_every=N``; 0: never), the
cosine between its gradient with respect to the drive inputs u and the `boundary`
estimate from central differences on the ring (2·m extra passes of the batch, whose
queries count in the run's total). Without ``--calibration`` it is refused.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from labpgt.errors import UserError
from labpgt.training.estimators.base import (
    EstimatorOptions,
    GradientEstimator,
    LossFn,
    register_estimator,
)
from labpgt.training.estimators.mgd import init_estimator
from labpgt.training.models import ReservoirModel

NO_CALIBRATION = (
    "method 'pat' needs --calibration FILE (from `labpgt calibrate`): its surrogate carries "
    "the backward pass; without one use boundary, pgt, spsa or mgd"
)


class SurrogateBackward(torch.autograd.Function):
    """settings (..., 3) -> measured raw features; backward through the surrogate's vjp."""

    @staticmethod
    def forward(ctx: Any, settings: torch.Tensor, measured: torch.Tensor, surrogate: Any) -> Any:
        ctx.save_for_backward(settings.detach())
        ctx.surrogate = surrogate
        return measured.detach().clone()

    @staticmethod
    def backward(ctx: Any, grad_raw: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (settings,) = ctx.saved_tensors
        flat = settings.reshape(-1, settings.shape[-1]).to(torch.float64)
        g = grad_raw.reshape(flat.shape[0], -1).to(torch.float64)
        with torch.enable_grad():
            _, vjp = torch.func.vjp(ctx.surrogate, flat)
            (g_settings,) = vjp(g)
        return g_settings.reshape(settings.shape).to(settings.dtype), None, None


class ModelDifferenceBackward(torch.autograd.Function):
    """u (B, k·m) -> measured raw features; backward from a model's central differences.

    The model (a surrogate, or the simulation) is evaluated at u ± ε along each of the
    m drive dimensions of every channel (all channels at once), as the boundary
    estimator probes the ring: J v ≈ (f(u + εv) − f(u − εv)) / 2ε. The backward pass
    turns ∂L/∂y into ∂L/∂u with these slopes. It is the model's response smoothed at
    the probing scale ε, where autograd would follow the model's ripple below it.
    """

    @staticmethod
    def forward(
        ctx: Any, u: torch.Tensor, measured: torch.Tensor, model_u: Any, eps: float, m: int
    ) -> Any:
        km = u.shape[1]

        def evaluate(u_all: torch.Tensor) -> torch.Tensor:  # (2m, B, k·m) -> (2m, B, k, F)
            probes = model_u(u_all.reshape(-1, km))
            return probes.reshape(2 * m, *measured.shape).to(measured.dtype)

        with torch.no_grad():
            ctx.save_for_backward(coordinate_jvps(u.detach(), eps, m, evaluate))
        return measured.detach().clone()

    @staticmethod
    def backward(ctx: Any, grad_raw: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (jvp,) = ctx.saved_tensors
        return jvps_to_u(jvp, grad_raw), None, None, None, None


def coordinate_jvps(u: torch.Tensor, eps: float, m: int, evaluate: Any) -> torch.Tensor:
    """Central differences along each of the m drive dimensions of every channel.

    ``u`` (B, k·m); ``evaluate`` maps the (2m, B, k·m) batch of u ± ε e_j (all channels
    at once: separate shots) to (2m, B, k, F). Returns J e_j ≈ (f(u+εe_j) − f(u−εe_j))/2ε
    as (m, B, k, F).
    """
    dirs = torch.zeros(m, u.shape[1], dtype=u.dtype)
    for j in range(m):
        dirs[j, j::m] = 1.0
    probes = evaluate(torch.cat([u[None] + eps * dirs[:, None], u[None] - eps * dirs[:, None]]))
    return (probes[:m] - probes[m:]) / (2 * eps)


def jvps_to_u(jvp: torch.Tensor, grad_raw: torch.Tensor) -> torch.Tensor:
    """∂L/∂u (B, k·m) from the slopes (m, B, k, F) and ∂L/∂features (B, k, F)."""
    g = torch.einsum("mbkf,bkf->bkm", jvp, grad_raw.to(jvp.dtype))
    return g.reshape(g.shape[0], -1)


JACOBIANS = ("autograd", "difference")
"""How PAT (and ring-forward backprop) differentiate their model: autograd, or central
differences at the probing scale δ (``--method-opt jacobian=difference``)."""


def model_backward(
    layer: Any,
    u: torch.Tensor,
    settings: torch.Tensor,
    measured: torch.Tensor,
    model: Any,
    jacobian: str,
    eps: float,
) -> torch.Tensor:
    """Measured features whose backward pass is ``model``'s Jacobian at the same point.

    ``model`` maps flat settings (N, 3) to raw features (N, F). ``jacobian`` 'autograd'
    takes its vector–Jacobian product at the measured settings; 'difference' its
    central differences in u at step ``eps`` (no query: the model is not the ring).
    """
    if jacobian not in JACOBIANS:
        raise UserError(f"--method-opt jacobian={jacobian}: one of {', '.join(JACOBIANS)}")
    if jacobian == "autograd":
        return SurrogateBackward.apply(settings, measured, model)

    def model_u(u_flat: torch.Tensor) -> torch.Tensor:
        s = layer.settings(u_flat)
        return model(s.reshape(-1, s.shape[-1])).reshape(*s.shape[:-1], -1)

    return ModelDifferenceBackward.apply(u, measured, model_u, eps, layer.dims_per_channel)


class PATEstimator(GradientEstimator):
    """One clean pass on the ring; the surrogate's Jacobian in the backward pass."""

    name: ClassVar[str] = "pat"
    summary: ClassVar[str] = "physics-aware training: ring forward, calibration-surrogate backward"
    defaults: ClassVar[dict[str, Any]] = {"delta": 0.05}
    extra_options: ClassVar[dict[str, Any]] = {"compare_every": 10, "jacobian": "difference"}

    def __init__(
        self,
        options: EstimatorOptions,
        *,
        seed: int,
        extra: dict[str, Any] | None = None,
        context: Any = None,
        calibration: Any = None,
    ) -> None:
        self.calibration = calibration
        self.compare_every = int((extra or {}).get("compare_every", 10))
        if self.compare_every < 0:
            raise UserError(f"--method-opt compare_every={self.compare_every}: must be ≥ 0")
        self.cosines: list[float] = []
        init_estimator(self, options, seed=seed, extra=extra, context=context)
        if context is not None and not hasattr(self, "_bound"):
            self.bind(context)

    def bind(self, context: Any) -> None:
        self.context = context
        self._bound = True
        cal = getattr(context, "calibration", None)
        if cal is not None:
            self.calibration = cal
        self.surrogate()  # refuse now, before any measurement, when there is none

    def surrogate(self) -> Any:
        cal = self.calibration
        model = getattr(cal, "surrogate", None) if cal is not None else None
        if model is None:
            raise UserError(NO_CALIBRATION)
        return model

    def passes_per_step(self, dims_per_channel: int) -> int:
        return 1

    def _estimate(
        self, model: ReservoirModel, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn
    ) -> tuple[float, torch.Tensor, dict[str, float]]:
        surrogate = self.surrogate()
        layer = model.reservoir
        u, ctx = model.run_upstream(x)
        settings = layer.settings(u)  # (B, k, 3) float64, differentiable in u
        measured = layer.require_backend().measure(settings)
        if measured.shape[-1] != int(getattr(surrogate, "feature_dim", measured.shape[-1])):
            raise UserError(
                f"--calibration: its surrogate predicts {surrogate.feature_dim} features but "
                f"the run measures {measured.shape[-1]} (use the calibration's --bins)"
            )
        jacobian = str(self.extra["jacobian"])
        raw = model_backward(
            layer, u, settings, measured, surrogate, jacobian, float(self.opt("delta"))
        )
        logits = model.run_downstream(raw, ctx)
        loss = loss_fn(logits, y)
        extra = {"surrogate_val_db": float(getattr(self.calibration, "surrogate_validation_db", 0))}
        if self.compare_every and self.steps % self.compare_every == 0:
            g_u = torch.autograd.grad(loss, u, retain_graph=True)[0]
            cos = self.boundary_cosine(model, u.detach(), raw.detach(), ctx, y, loss_fn, g_u)
            self.cosines.append(cos)
            extra["cos_to_boundary"] = cos
        loss.backward()
        return float(loss.detach()), logits, extra

    def boundary_cosine(
        self,
        model: ReservoirModel,
        u: torch.Tensor,
        raw: torch.Tensor,
        ctx: Any,
        y: torch.Tensor,
        loss_fn: LossFn,
        g_u: torch.Tensor,
    ) -> float:
        """Cosine of the surrogate's ∂L/∂u to central differences measured on the ring."""
        layer = model.reservoir
        eps = float(self.opt("delta"))
        # the ring's probes in one scheduler batch: (2m, B, k, F)
        jvp = coordinate_jvps(u, eps, layer.dims_per_channel, layer.measure_u)
        raw_req = raw.clone().requires_grad_(True)
        ctx_d = ctx.detach() if isinstance(ctx, torch.Tensor) else ctx
        loss = loss_fn(model.run_downstream(raw_req, ctx_d), y)
        (g_raw,) = torch.autograd.grad(loss, raw_req)
        g_b = jvps_to_u(jvp, g_raw)
        return float(F.cosine_similarity(g_u.flatten(), g_b.flatten(), dim=0))

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "cosines": list(self.cosines)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.cosines = [float(c) for c in state.get("cosines", [])]


def register() -> None:
    """Make ``--method pat`` available (called from ``labpgt/training/__init__.py``)."""
    register_estimator(PATEstimator)
