"""The `PhysicalReservoir` protocol: the only thing training code knows about hardware.

A *setting* is one row ``[drive_hz, drive_dbm, bias_a]`` (float64): the signal
generator's drive frequency in Hz, its power in dBm, and the bias supply's
current in A. A reservoir measures a batch of settings *in the order given*
(order matters on a bench: the magnet settles slowly, the field has
hysteresis, the ring drifts) and returns one feature vector per setting.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from labpgt.errors import UserError
from labpgt.features import FeatureExtractor, FeatureSpec
from labpgt.sim.grid import AnalyzerGrid

if TYPE_CHECKING:
    from labpgt.sim.ring import RingModel

SETTING_NAMES: tuple[str, ...] = ("drive_hz", "drive_dbm", "bias_a")
SETTING_UNITS: dict[str, str] = {"drive_hz": "Hz", "drive_dbm": "dBm", "bias_a": "A"}


class SettingBounds(BaseModel):
    """Allowed range and instrument resolution of each setting (units in the names)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    drive_hz: tuple[float, float] = Field((2.0e9, 2.3e9), description="Drive frequency range, Hz.")
    drive_dbm: tuple[float, float] = Field((-40.0, 0.0), description="Drive power range, dBm.")
    bias_a: tuple[float, float] = Field((0.0, 2.5), description="Bias current range, A.")
    resolution: tuple[float, float, float] = Field(
        (1.0, 0.01, 1e-4),
        description="Smallest step each instrument resolves: Hz, dB, A (used to de-duplicate).",
    )

    @model_validator(mode="after")
    def _ordered(self) -> SettingBounds:
        for name in SETTING_NAMES:
            lo, hi = getattr(self, name)
            if not lo <= hi:
                raise ValueError(f"{name}: lower bound {lo} exceeds upper bound {hi}")
        return self

    def lower(self) -> torch.Tensor:
        return torch.tensor([getattr(self, n)[0] for n in SETTING_NAMES], dtype=torch.float64)

    def upper(self) -> torch.Tensor:
        return torch.tensor([getattr(self, n)[1] for n in SETTING_NAMES], dtype=torch.float64)

    def check(self, settings: torch.Tensor) -> None:
        """Raise `UserError` naming the first row and setting outside the bounds."""
        if settings.ndim != 2 or settings.shape[1] != len(SETTING_NAMES):
            raise UserError(
                f"settings must have shape (N, {len(SETTING_NAMES)}) with columns "
                f"{', '.join(SETTING_NAMES)}; got {tuple(settings.shape)}"
            )
        if not torch.isfinite(settings).all():
            row = int((~torch.isfinite(settings)).any(dim=1).nonzero()[0])
            raise UserError(f"setting row {row} is not finite: {settings[row].tolist()}")
        lo, hi = self.lower(), self.upper()
        bad = (settings < lo) | (settings > hi)
        if bad.any():
            row, col = (int(i) for i in bad.nonzero()[0])
            name = SETTING_NAMES[col]
            raise UserError(
                f"setting row {row}: {name}={settings[row, col].item():.6g} "
                f"{SETTING_UNITS[name]} is outside the allowed range "
                f"[{lo[col].item():.6g}, {hi[col].item():.6g}] {SETTING_UNITS[name]}"
            )


class SettleTimes(BaseModel):
    """How long to wait after changing a setting before sweeping, in seconds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bias_s: float = Field(0.3, ge=0, le=60, description="Magnet settle after a bias change, s.")
    drive_s: float = Field(0.01, ge=0, le=10, description="Generator settle after a change, s.")


@dataclass
class ReservoirOutput:
    """What one `measure` call returns, row i belonging to settings row i."""

    features: torch.Tensor
    """(N, F) feature vectors (see the reservoir's ``feature_names``)."""
    instrument_time_s: torch.Tensor
    """(N,) float64 instrument time spent on each shot: settle plus sweep, in s."""
    timestamps_s: torch.Tensor
    """(N,) float64 Unix time at which each shot's trace was read, in s."""
    traces_dbm: torch.Tensor | None = None
    """(N, P) analyzer traces in dBm on ``frequency_hz``, when the reservoir keeps them."""


@runtime_checkable
class PhysicalReservoir(Protocol):
    """Anything that turns drive settings into measured features.

    Implementations: `SimulatedReservoir` (in-process ring) and
    `InstrumentReservoir` (three drivers, real or virtual bench).
    """

    bounds: SettingBounds
    settle: SettleTimes

    @property
    def frequency_hz(self) -> torch.Tensor:
        """(P,) analyzer frequency axis in Hz."""
        ...

    @property
    def feature_names(self) -> list[str]:
        """One label (with unit) per feature column."""
        ...

    @property
    def feature_dim(self) -> int: ...

    def measure(self, settings: torch.Tensor) -> ReservoirOutput:
        """Measure (N, 3) float64 settings in the order given; raises on failure."""
        ...

    def reconnect(self) -> None:
        """Re-establish the link after a failure (no-op when there is none)."""
        ...

    def snapshot(self) -> dict[str, Any]:
        """JSON-serialisable identity and every setting, stored with all data."""
        ...

    def close(self) -> None:
        """Leave the hardware safe (RF off, bias ramped to zero) and release it."""
        ...


# --- shared by every reservoir and the scheduler (additions below the protocol) -------------


def setting_keys(settings: torch.Tensor, bounds: SettingBounds) -> torch.Tensor:
    """(N, 3) settings -> (N, 3) int64 keys: two settings are the same when their keys are.

    A key is the setting in units of the instrument's resolution, rounded; so
    settings closer than half a resolution step (usually) share a key.
    """
    resolution = torch.tensor(bounds.resolution, dtype=torch.float64)
    return torch.round(settings.to(torch.float64) / resolution).to(torch.int64)


def transitions(
    keys: torch.Tensor, previous: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which shots change the bias, and which change only the drive, given the shot before.

    ``keys`` (N, 3) from `setting_keys` in measurement order; ``previous`` (3,)
    is the key of the last shot before them, or None when unknown (then the
    first shot counts as a bias change: the magnet state is not known).
    Returns boolean (N,) tensors ``bias_changed`` and ``drive_changed``
    (drive_changed is False where bias_changed is True).
    """
    bias_col = SETTING_NAMES.index("bias_a")
    drive_cols = [i for i, n in enumerate(SETTING_NAMES) if n != "bias_a"]
    if previous is None:
        before = torch.cat([keys[:1], keys[:-1]])
    else:
        before = torch.cat([previous.reshape(1, -1), keys[:-1]])
    bias_changed = keys[:, bias_col] != before[:, bias_col]
    if previous is None and keys.shape[0] > 0:
        bias_changed[0] = True
    drive_changed = (keys[:, drive_cols] != before[:, drive_cols]).any(dim=1) & ~bias_changed
    return bias_changed, drive_changed


def settle_times_s(
    keys: torch.Tensor, previous: torch.Tensor | None, settle: SettleTimes
) -> torch.Tensor:
    """(N,) settle time before each shot, s: bias change -> bias_s, else drive change -> drive_s.

    The two settles overlap in time (the generator settles while the magnet
    does), so a shot that changes both waits bias_s only.
    """
    bias_changed, drive_changed = transitions(keys, previous)
    zero = torch.zeros(keys.shape[0], dtype=torch.float64)
    return torch.where(
        bias_changed,
        torch.full_like(zero, settle.bias_s),
        torch.where(drive_changed, torch.full_like(zero, settle.drive_s), zero),
    )


def describe_setting(setting: torch.Tensor) -> str:
    """One setting row as 'drive_hz=2.1e+09 Hz, drive_dbm=-10 dBm, bias_a=1.8 A'."""
    values = setting.reshape(-1).tolist()
    return ", ".join(
        f"{n}={v:.10g} {SETTING_UNITS[n]}" for n, v in zip(SETTING_NAMES, values, strict=True)
    )


class PartialMeasurementError(RuntimeError):
    """A shot failed part-way through a `measure` call; the shots before it succeeded.

    The scheduler keeps ``completed`` (the first ``len(completed.features)``
    shots) and retries from ``setting``, the one that failed.
    """

    def __init__(self, completed: ReservoirOutput, setting: torch.Tensor, cause: BaseException):
        super().__init__(f"shot at {describe_setting(setting)} failed: {cause}")
        self.completed = completed
        self.setting = setting
        self.cause = cause


class SimulatedReservoir:
    """`PhysicalReservoir` over an in-process `sim.ring.RingModel`.

    ``measure`` runs the ring's stateful bench path (drift, hysteresis, noise,
    simulated clock) in the order given, with the same settle rule and
    instrument-time accounting as `InstrumentReservoir`: settle (bias change ->
    bias_s, else drive change -> drive_s) plus the grid's sweep time per shot.
    Timestamps are the Unix time of the call plus the simulated instrument
    time elapsed up to each shot's trace.
    """

    def __init__(
        self,
        ring: RingModel,
        grid: AnalyzerGrid = AnalyzerGrid(),
        features: FeatureSpec = FeatureSpec(),
        bounds: SettingBounds = SettingBounds(),
        settle: SettleTimes = SettleTimes(),
        keep_traces: bool = False,
    ) -> None:
        self.ring = ring
        self.grid = grid
        self.feature_spec = features
        self.bounds = bounds
        self.settle = settle
        self.keep_traces = keep_traces
        self._frequency_hz = grid.frequencies_hz()
        self.extractor = FeatureExtractor(features, self._frequency_hz)
        self._previous: torch.Tensor | None = None

    @property
    def frequency_hz(self) -> torch.Tensor:
        return self._frequency_hz

    @property
    def feature_names(self) -> list[str]:
        return self.extractor.names

    @property
    def feature_dim(self) -> int:
        return self.extractor.dim

    def measure(self, settings: torch.Tensor) -> ReservoirOutput:
        settings = settings.detach().to(torch.float64)
        self.bounds.check(settings)
        t0 = time.time()
        keys = setting_keys(settings, self.bounds)
        settle_s = settle_times_s(keys, self._previous, self.settle)
        trace = self.ring.measure(
            settings[:, 0], settings[:, 1], settings[:, 2], self.grid, settle_s=settle_s
        )
        if keys.shape[0]:
            self._previous = keys[-1].clone()
        instrument_s = settle_s + float(trace.sweep_time_s)
        traces = trace.power_dbm.to(torch.float64)
        return ReservoirOutput(
            features=self.extractor(traces),
            instrument_time_s=instrument_s,
            timestamps_s=t0 + torch.cumsum(instrument_s, dim=0),
            traces_dbm=traces if self.keep_traces else None,
        )

    def differentiable_features(self, settings: torch.Tensor) -> torch.Tensor:
        """(N, 3) settings -> (N, F) features of the noise-free ring; autograd flows to settings.

        Pure (no drift, hysteresis state, clock or RNG is touched): the backprop
        reference and gradient checks use it.
        """
        s = settings.to(torch.float64)
        traces = self.ring.evaluate(s[:, 0], s[:, 1], s[:, 2], self.grid)
        return self.extractor(traces)

    def reconnect(self) -> None:
        """Nothing to reconnect in-process; the next shot re-settles everything."""
        self._previous = None

    def snapshot(self) -> dict[str, Any]:
        return {
            "reservoir": "simulated",
            "ring_params": self.ring.params.model_dump(),
            "grid": self.grid.model_dump(),
            "features": self.feature_spec.model_dump(),
            "bounds": self.bounds.model_dump(),
            "settle": self.settle.model_dump(),
        }

    def close(self) -> None:
        """Nothing to make safe in-process."""

    def state_dict(self) -> dict[str, Any]:
        """Ring state (clock, drift, hysteresis, RNG) and the last shot: resume bit-identically."""
        previous = self._previous.clone() if self._previous is not None else None
        return {"ring": self.ring.state_dict(), "previous_key": previous}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ring.load_state_dict(state["ring"])
        previous = state.get("previous_key")
        self._previous = previous.clone() if previous is not None else None
