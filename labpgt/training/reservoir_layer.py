"""The reservoir layer: encoded drive u -> settings -> measured features -> normalised features.

The layer itself holds no trainable parameters; it owns the encoding (a fixed,
differentiable map u -> settings), the feature normaliser (buffers stored with
the model) and, attached at run time, a `MeasurementBackend` that turns settings
into features through the `PerturbationScheduler` (bench or in-process sim).
How gradients cross the layer is chosen by ``gradient``: ``forward(u)`` measures
the features and, when autograd is recording, backward is the boundary estimate
of `ProbedMeasure` (probes measured in the same batch as the clean shot), exact
autograd through the differentiable simulation (``"backprop"``, in-process sim
only) or nothing (``"none"``). The whole-model estimators (pgt, spsa, mgd, pat)
do not go through ``forward``'s backward; the trainer runs them (see
`labpgt.training.estimators`).
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from labpgt.errors import UserError

STD_FLOOR_DB = 0.1
"""Smallest feature std used for normalisation, dB: a bin that sat on a flat noise
floor during warm-up must not blow up by 1/0 once the ring moves into it."""


class FeatureNormaliser(nn.Module):
    """Per-feature affine normalisation (raw dB - mean) / std, frozen after fitting.

    Statistics are pooled over samples and channels (every channel is the same
    ring, so feature f means the same bin in each) and stored as buffers, so they
    travel in the model's state_dict and hence in every checkpoint.
    """

    def __init__(self, feature_dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(feature_dim))
        self.register_buffer("std", torch.ones(feature_dim))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def fit(self, raw: torch.Tensor) -> None:
        """Fit from raw features (..., F) measured at the initial parameters."""
        flat = raw.reshape(-1, raw.shape[-1]).to(torch.float64)
        self.mean.copy_(flat.mean(dim=0).float())
        self.std.copy_(flat.std(dim=0, unbiased=False).clamp_min(STD_FLOOR_DB).float())
        self.fitted.fill_(True)

    def set(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Use given statistics (e.g. from a calibration file)."""
        if mean.shape != self.mean.shape or std.shape != self.std.shape:
            raise UserError(
                f"normalisation statistics have {tuple(mean.shape)} features; the reservoir "
                f"gives {tuple(self.mean.shape)}"
            )
        self.mean.copy_(mean.float())
        self.std.copy_(std.float().clamp_min(STD_FLOOR_DB))
        self.fitted.fill_(True)

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        return (raw - self.mean) / self.std


class MeasurementBackend:
    """Settings -> features through one scheduler, with counters for the run's report.

    `reservoir` is the scheduler's reservoir; `differentiable_features` is used
    only by the backprop reference and exists only on `SimulatedReservoir`.
    """

    def __init__(self, scheduler: Any, reservoir: Any, *, bench_kind: str) -> None:
        self.scheduler = scheduler
        self.reservoir = reservoir
        self.bench_kind = bench_kind
        """"fast-sim" (in-process SimulatedReservoir), "embedded" or "bench"."""
        self.differentiable_queries = 0
        self.differentiable_time_s = 0.0
        self.calls = 0
        self._close: Any = None
        """Set by `labpgt.open_reservoir`: leaves the bench safe and closes it."""

    def close(self) -> None:
        """Close the bench this backend holds open (a no-op when its opener closes it)."""
        close, self._close = self._close, None
        if close is not None:
            close()

    def __enter__(self) -> MeasurementBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def feature_dim(self) -> int:
        return int(self.reservoir.feature_dim)

    def sim_state(self) -> dict[str, Any] | None:
        """In-process state that decides the next measurement (fast-sim only), for checkpoints.

        The ring's clock, drift, hysteresis and noise RNG, the reservoir's last shot
        and the scheduler's last setting (it picks the bias sweep direction from it).
        """
        if self.bench_kind != "fast-sim" or not hasattr(self.reservoir, "state_dict"):
            return None
        previous = getattr(self.scheduler, "_previous_key", None)
        return {
            "reservoir": self.reservoir.state_dict(),
            "scheduler_previous_key": previous.clone() if previous is not None else None,
        }

    def load_sim_state(self, state: dict[str, Any] | None) -> None:
        if state is None or self.bench_kind != "fast-sim":
            return
        self.reservoir.load_state_dict(state["reservoir"])
        if hasattr(self.scheduler, "_previous_key"):
            self.scheduler._previous_key = state["scheduler_previous_key"]

    def forget_last_shot(self) -> None:
        """The bench was moved behind the scheduler's back (a drift check): its last shot no
        longer tells where the bias is, so the next batch plans as after a reconnect."""
        if hasattr(self.scheduler, "load_state_dict"):
            self.scheduler.load_state_dict({"previous_key": None})

    @property
    def queries(self) -> int:
        """Measurements taken so far: scheduled shots plus differentiable-sim evaluations."""
        return int(self.scheduler.stats.queries) + self.differentiable_queries

    @property
    def instrument_time_s(self) -> float:
        return float(self.scheduler.stats.instrument_time_s)

    def measure(self, settings: torch.Tensor) -> torch.Tensor:
        """Settings (..., 3) float64 -> raw features (..., F) float32, one scheduler batch."""
        self.calls += 1
        with torch.no_grad():
            feats = self.scheduler.run(settings.detach().to(torch.float64))
        return feats.to(torch.float32)

    def require_differentiable(self, method: str) -> None:
        """Refuse methods that differentiate the ring unless it is the in-process simulation."""
        if self.bench_kind != "fast-sim" or not hasattr(self.reservoir, "differentiable_features"):
            where = "a bench file" if self.bench_kind == "bench" else "the embedded virtual bench"
            raise UserError(
                f"method {method!r} differentiates the ring itself, which is only possible in the "
                f"in-process simulation (--fast-sim); on {where} use pgt, spsa or boundary"
            )

    def differentiable(self, settings: torch.Tensor) -> torch.Tensor:
        """Features through the differentiable simulation (autograd works); sim only."""
        self.require_differentiable("backprop")
        shape = settings.shape
        t0 = time.perf_counter()
        feats = self.reservoir.differentiable_features(settings.reshape(-1, shape[-1]))
        self.differentiable_time_s += time.perf_counter() - t0
        self.differentiable_queries += int(settings.reshape(-1, shape[-1]).shape[0])
        return feats.reshape(*shape[:-1], -1).to(torch.float32)


class ProbedMeasure(torch.autograd.Function):
    """u (B, k·m) -> raw features (B, k, F); backward from probes measured in forward.

    For probe directions v_i (q, B, k, m) the clean u and every u ± ε v_i go to the
    reservoir in one scheduler batch. The Jacobian–vector products J v_i ≈
    (y+ − y−)/(2ε) are kept; backward turns the incoming ∂L/∂y into
    g_u = (1/d) Σ_i ⟨∂L/∂y, J v_i⟩ v_i, d = q for random directions (E[v vᵀ] = I)
    and d = 1 for the m coordinate directions (the central-difference Jᵀ ∂L/∂y).
    Used by the boundary estimator and by `ReservoirLayer.forward`.
    """

    @staticmethod
    def forward(
        ctx: Any,
        u: torch.Tensor,
        layer: ReservoirLayer,
        directions: torch.Tensor,
        eps: float,
        divide_by_probes: bool,
    ) -> torch.Tensor:
        # directions: (q, B, k, m). Probe i moves every channel of every sample at once;
        # channels are separate shots, so their features see only their own u.
        q, b, k, m = directions.shape
        v = directions.reshape(q, b, k * m).to(u.dtype)
        u0 = u.detach()
        u_all = torch.cat([u0[None], u0[None] + eps * v, u0[None] - eps * v])  # (1+2q, B, k·m)
        raw = layer.measure_u(u_all)  # one scheduler batch: (1+2q, B, k, F)
        jvp = (raw[1 : 1 + q] - raw[1 + q :]) / (2.0 * eps)  # (q, B, k, F)
        ctx.save_for_backward(jvp, directions.to(u.dtype))
        ctx.divide = q if divide_by_probes else 1
        return raw[0]

    @staticmethod
    def backward(ctx: Any, grad_raw: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        jvp, directions = ctx.saved_tensors
        q, b, k, m = directions.shape
        proj = torch.einsum("qbkf,bkf->qbk", jvp, grad_raw)
        g_u = torch.einsum("qbk,qbkm->bkm", proj, directions) / ctx.divide
        return g_u.reshape(b, k * m), None, None, None, None


def draw_directions(
    q: int, b: int, k: int, m: int, mode: str, generator: torch.Generator
) -> torch.Tensor:
    """Probe directions (q, B, k, m): coordinate (q = m), gaussian or rademacher."""
    if mode == "coordinate":
        return torch.eye(m).reshape(m, 1, 1, m).expand(m, b, k, m).clone()
    if mode == "gaussian":
        return torch.randn(q, b, k, m, generator=generator)
    return torch.randint(0, 2, (q, b, k, m), generator=generator).float() * 2 - 1


LAYER_GRADIENTS = ("boundary", "backprop", "none")


class ReservoirLayer(nn.Module):
    """k channels of drive settings per sample; encoding from `labpgt.encoding`.

    ``layer(u)`` (u (B, k·m) in (-1, 1)) measures and returns normalised features
    (B, k·F). With ``gradient="boundary"`` (default) its backward is the boundary
    estimate (``probes`` random directions, or the m coordinate ones when
    ``directions="coordinate"`` or ``"auto"`` with m ≤ probes, step ``delta`` in u);
    ``"backprop"`` differentiates the in-process simulation; ``"none"`` measures only.
    The normaliser is fitted on the first batch measured in training mode unless it
    was fitted (or set) before.
    """

    def __init__(
        self,
        encoding: Any,
        channels: int,
        feature_dim: int,
        *,
        gradient: str = "boundary",
        probes: int = 4,
        delta: float = 0.05,
        directions: str = "auto",
        seed: int = 0,
    ) -> None:
        super().__init__()
        if gradient not in LAYER_GRADIENTS:
            raise UserError(
                f"ReservoirLayer gradient {gradient!r}: valid: {', '.join(LAYER_GRADIENTS)}"
            )
        if directions not in ("auto", "coordinate", "gaussian", "rademacher"):
            raise UserError(
                f"ReservoirLayer directions {directions!r}: valid: auto, coordinate, gaussian, "
                "rademacher"
            )
        self.encoding = encoding
        self.channels = channels
        self.feature_dim = feature_dim
        self.normaliser = FeatureNormaliser(feature_dim)
        self.backend: MeasurementBackend | None = None
        self.digital: nn.Module | None = None
        """Set by ``--method digital``: a trainable stand-in that replaces the measurement."""
        self.gradient = gradient
        self.probes = int(probes)
        self.delta_u = float(delta)
        self.directions = directions
        self.generator = torch.Generator().manual_seed(seed)
        """Draws the probe directions of ``forward`` (not used by the trainer's estimators)."""

    @classmethod
    def on(
        cls,
        backend: MeasurementBackend,
        *,
        channels: int = 8,
        driven: tuple[str, ...] = ("drive_hz",),
        **options: Any,
    ) -> ReservoirLayer:
        """A layer attached to `backend` (see `labpgt.open_reservoir`); options as __init__."""
        from labpgt.encoding import Encoding, EncodingSpec

        encoding = Encoding(
            EncodingSpec(channels=channels, driven=tuple(driven)), backend.reservoir.bounds
        )
        layer = cls(encoding, channels, backend.feature_dim, **options)
        layer.attach(backend)
        return layer

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """u (..., k·m) -> normalised features (..., k·F); backward per ``self.gradient``."""
        raw = self.raw_features(u)
        return self.features(raw)

    def raw_features(self, u: torch.Tensor) -> torch.Tensor:
        """u (..., k·m) -> raw features (..., k, F) in dB, with this layer's gradient."""
        if self.digital is not None:
            raw = self.digital_features(u)
        elif not (torch.is_grad_enabled() and u.requires_grad) or self.gradient == "none":
            raw = self.measure_u(u)
        elif self.gradient == "backprop":
            raw = self.require_backend().differentiable(self.settings(u))
        else:
            lead, km = u.shape[:-1], u.shape[-1]
            flat = u.reshape(-1, km)
            m, k = self.dims_per_channel, self.channels
            mode = self.directions
            if mode == "auto":
                mode = "coordinate" if m <= self.probes else "rademacher"
            q = m if mode == "coordinate" else self.probes
            dirs = draw_directions(q, flat.shape[0], k, m, mode, self.generator)
            raw = ProbedMeasure.apply(flat, self, dirs, self.delta_u, mode != "coordinate")
            raw = raw.reshape(*lead, k, self.feature_dim)
        if self.training and not bool(self.normaliser.fitted):
            self.normaliser.fit(raw.detach())
        return raw

    @property
    def input_dim(self) -> int:
        """Encoded dimensions per sample, k * m."""
        return self.channels * self.dims_per_channel

    @property
    def dims_per_channel(self) -> int:
        return int(self.encoding.dims_per_channel)

    @property
    def output_dim(self) -> int:
        return self.channels * self.feature_dim

    def attach(self, backend: MeasurementBackend) -> None:
        """Measure through `backend` from now on (feature count must match)."""
        if backend.feature_dim != self.feature_dim:
            raise UserError(
                f"the reservoir gives {backend.feature_dim} features per shot; the model was "
                f"built for {self.feature_dim} (check --bins / the feature spec)"
            )
        self.backend = backend

    def require_backend(self) -> MeasurementBackend:
        if self.backend is None:
            raise RuntimeError("ReservoirLayer has no measurement backend attached")
        return self.backend

    def settings(self, u: torch.Tensor) -> torch.Tensor:
        """Encoded drive u (..., k*m) -> settings (..., k, 3) float64 within the bounds."""
        return self.encoding(u.to(torch.float64))

    def measure_u(self, u: torch.Tensor) -> torch.Tensor:
        """u (..., k*m) -> raw features (..., k, F), measured in one scheduler batch."""
        with torch.no_grad():
            if self.digital is not None:
                return self.digital_features(u)
            return self.require_backend().measure(self.settings(u))

    def digital_features(self, u: torch.Tensor) -> torch.Tensor:
        """The digital stand-in's features (..., k, F), with autograd; counted as queries."""
        if self.digital is None:
            raise RuntimeError("ReservoirLayer has no digital stand-in (method 'digital' only)")
        backend = self.require_backend()
        backend.differentiable_queries += int(u.reshape(-1, u.shape[-1]).shape[0]) * self.channels
        return self.digital(u)

    def features(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw features (..., k, F) -> normalised, flattened (..., k*F)."""
        return self.normaliser(raw).flatten(start_dim=-2)
