"""Drift checks between epochs (`labpgt train --calibration CAL --drift-every N`).

Every N epochs the trainer re-measures the calibration's reference settings on the bench it
trains on, through the calibration's own drift stage (`Calibration.check_drift`: the
reference passes exactly as calibrate measured them, ``keep_traces`` restored afterwards).
The shots are counted here, apart from the training budget: the check measures through its
own scheduler, straight on the reservoir, so the training scheduler's counters never see
them. `ShotCounter` is the thin wrapper that counts what reaches the reservoir.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from labpgt.errors import MeasurementError
from labpgt.reservoir import PartialMeasurementError, ReservoirOutput

if TYPE_CHECKING:
    from labpgt.calibration.drift import DriftReport
    from labpgt.training.config import TrainConfig
    from labpgt.training.reservoir_layer import MeasurementBackend


class ShotCounter:
    """A reservoir seen through a counter: every shot that `measure` returns (also the
    completed ones of a failed call) and their instrument time; all else is the reservoir's."""

    def __init__(self, reservoir: Any) -> None:
        object.__setattr__(self, "_reservoir", reservoir)
        object.__setattr__(self, "shots", 0)
        object.__setattr__(self, "instrument_s", 0.0)

    def measure(self, settings: torch.Tensor) -> ReservoirOutput:
        try:
            out = self._reservoir.measure(settings)
        except PartialMeasurementError as exc:
            self._count(exc.completed)
            raise
        self._count(out)
        return out

    def _count(self, out: ReservoirOutput) -> None:
        object.__setattr__(self, "shots", self.shots + int(out.features.shape[0]))
        spent = self.instrument_s + float(out.instrument_time_s.sum())
        object.__setattr__(self, "instrument_s", spent)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reservoir, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._reservoir, name, value)  # keep_traces: switched on the reservoir itself


@dataclass(frozen=True)
class DriftCheck:
    """One drift check after an epoch: its report (None: the check could not measure, see
    ``failure``), the shots it measured and their instrument time."""

    epoch: int
    report: DriftReport | None
    shots: int
    instrument_s: float
    failure: str = ""

    @property
    def within_tolerance(self) -> bool:
        return self.report is not None and self.report.within_tolerance

    def figures(self) -> dict[str, float]:
        """The metrics.csv figures of this check (`EpochMetrics` drift fields but the count)."""
        r = self.report
        return {
            "drift_frequency_mhz": math.nan if r is None else r.frequency_drift_mhz,
            "drift_level_db": math.nan if r is None else r.level_drift_db,
            "drift_within_tolerance": 1.0 if self.within_tolerance else 0.0,
        }

    def line(self) -> str:
        """One line for the screen: the figures against their tolerances, and the cost."""
        cost = f"{self.shots} shots, {self.instrument_s:.1f} s instrument"
        if self.report is None:
            return f"drift check after epoch {self.epoch} failed: {self.failure} ({cost})"
        return f"drift check after epoch {self.epoch}: {self.report.summary()} ({cost})"

    def stop_reason(self) -> str:
        """Why a run with --on-drift stop ends after this check (one line)."""
        r = self.report
        if r is None:
            return f"drift check failed after epoch {self.epoch}: {self.failure}"
        return (
            f"drift beyond tolerance after epoch {self.epoch}: frequency "
            f"{r.frequency_drift_mhz:+.3f} MHz (±{r.tolerance_mhz:g}), level "
            f"{r.level_drift_db:+.3f} dB (±{r.tolerance_db:g})"
        )


def due(config: TrainConfig, epoch: int) -> bool:
    """Whether a drift check follows ``epoch`` (every ``drift_every`` epochs; 0: never)."""
    return config.drift_every > 0 and epoch % config.drift_every == 0


def check_after_epoch(
    backend: MeasurementBackend, calibration: Any, config: TrainConfig, epoch: int
) -> DriftCheck:
    """Re-measure the calibration's references on the backend's reservoir (its drift stage).

    A check that cannot measure the comb (`MeasurementError`) is returned as failed rather
    than ending the run: --on-drift decides. Afterwards the training scheduler forgets its
    last shot (the bench now sits where the check left it), as after a reconnect.
    """
    counter = ShotCounter(backend.reservoir)
    report, failure = None, ""
    try:
        report = calibration.check_drift(
            counter,
            tolerance_mhz=config.drift_tolerance_mhz,
            tolerance_db=config.drift_tolerance_db,
        )
    except MeasurementError as exc:
        failure = " ".join(str(exc).split())
    finally:
        backend.forget_last_shot()
    return DriftCheck(epoch, report, counter.shots, counter.instrument_s, failure)
