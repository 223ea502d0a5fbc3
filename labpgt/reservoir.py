"""The `PhysicalReservoir` protocol: the only thing training code knows about hardware.

A *setting* is one row ``[drive_hz, drive_dbm, bias_a]`` (float64): the signal
generator's drive frequency in Hz, its power in dBm, and the bias supply's
current in A. A reservoir measures a batch of settings *in the order given*
(order matters on a bench: the magnet settles slowly, the field has
hysteresis, the ring drifts) and returns one feature vector per setting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from labpgt.features import FeatureExtractor, FeatureSpec
from labpgt.setting_bounds import (
    SettingBounds,
    SettleTimes,
    describe_setting,
    setting_keys,
    settle_times_s,
)


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


class FeatureReservoir:
    """What every reservoir shares: bounds, settle rule, trace axis and feature extractor.

    Subclasses measure; this class plans a batch (`_plan`: bounds check, keys, settle
    times after the previous shot) and turns traces into a `ReservoirOutput`.
    """

    def __init__(
        self,
        frequency_hz: torch.Tensor,
        features: FeatureSpec,
        bounds: SettingBounds,
        settle: SettleTimes,
        keep_traces: bool,
    ) -> None:
        self.feature_spec = features
        self.bounds = bounds
        self.settle = settle
        self.keep_traces = keep_traces
        self._frequency_hz = frequency_hz
        self.extractor = FeatureExtractor(features, frequency_hz)
        self._previous_key: torch.Tensor | None = None
        """The key of the last shot measured (None: unknown, the next one settles fully)."""

    @property
    def frequency_hz(self) -> torch.Tensor:
        return self._frequency_hz

    @property
    def feature_names(self) -> list[str]:
        return self.extractor.names

    @property
    def feature_dim(self) -> int:
        return self.extractor.dim

    def _plan(self, settings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(settings float64, their keys, the settle time before each), bounds checked."""
        settings = settings.detach().to(torch.float64)
        self.bounds.check(settings)
        keys = setting_keys(settings, self.bounds)
        return settings, keys, settle_times_s(keys, self._previous_key, self.settle)

    def _output(
        self, traces: torch.Tensor, instrument_time_s: torch.Tensor, timestamps_s: torch.Tensor
    ) -> ReservoirOutput:
        return ReservoirOutput(
            features=self.extractor(traces),
            instrument_time_s=instrument_time_s,
            timestamps_s=timestamps_s,
            traces_dbm=traces if self.keep_traces else None,
        )
