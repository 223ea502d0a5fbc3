"""The reservoir layer: encoded drive u -> settings -> measured features -> normalised features.

The layer itself holds no trainable parameters; it owns the encoding (a fixed,
differentiable map u -> settings), the feature normaliser (buffers stored with
the model) and, attached at run time, a `MeasurementBackend` that turns settings
into features through the `PerturbationScheduler` (bench or in-process sim).
How gradients cross the layer is the estimator's business: see
`labpgt.training.estimators`.
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


class ReservoirLayer(nn.Module):
    """k channels of drive settings per sample; encoding from `labpgt.encoding`."""

    def __init__(self, encoding: Any, channels: int, feature_dim: int) -> None:
        super().__init__()
        self.encoding = encoding
        self.channels = channels
        self.feature_dim = feature_dim
        self.normaliser = FeatureNormaliser(feature_dim)
        self.backend: MeasurementBackend | None = None
        self.digital: nn.Module | None = None
        """Set by ``--method digital``: a trainable stand-in that replaces the measurement."""

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
