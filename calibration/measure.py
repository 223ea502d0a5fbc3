"""The measure stage of a calibration: shots on any `PhysicalReservoir`, through the
`PerturbationScheduler`, one scheduler per stage (its own statistics and progress).

`run_calibration` measures its stages with a `StageMeasurer`; a drift check re-measures
the reference passes with `measure_references`; any caller that needs the analyzer traces
of its shots (not only the features) measures them with `measure_with_traces`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from labpgt.errors import UserError
from labpgt.reservoir import PhysicalReservoir, ReservoirOutput
from labpgt.scheduler import PerturbationScheduler

StageProgress = Callable[[str, int, int, float], None]
"""progress(stage, done_shots, total_shots, instrument_time_s of the stage so far)."""

PRESET_DROP_A = 0.3
"""A reference pass starts this far below the operating bias, so every pass reaches the
operating bias rising: the magnet's remanence is then the same on every pass and at --check."""


class StageMeasurer:
    """Measures the named stages of a calibration on one reservoir and keeps the
    instrument time of each (``stage_s``, s)."""

    def __init__(
        self, reservoir: PhysicalReservoir, progress: StageProgress | None = None, retries: int = 2
    ) -> None:
        self.reservoir = reservoir
        self.progress = progress
        self.retries = retries
        self.stage_s: dict[str, float] = {}

    def scheduler(self, stage: str) -> PerturbationScheduler:
        """A fresh scheduler whose progress reports under ``stage``."""
        cb = None
        if self.progress is not None:
            report = self.progress

            def cb(done: int, total: int, instrument_s: float) -> None:
                report(stage, done, total, instrument_s)

        return PerturbationScheduler(self.reservoir, retries=self.retries, progress=cb)

    def features(self, stage: str, settings: torch.Tensor) -> torch.Tensor:
        """Features of ``settings`` (any order on the bench, back in the caller's order)."""
        sched = self.scheduler(stage)
        out = sched.run(settings)
        self.stage_s[stage] = sched.stats.instrument_time_s
        return out

    def traces(self, stage: str, shots: torch.Tensor) -> ReservoirOutput:
        """Features and traces of ``shots``, measured in the order given."""
        sched = self.scheduler(stage)
        out = measure_with_traces(sched, shots)
        self.stage_s[stage] = sched.stats.instrument_time_s
        return out

    def references(
        self, stage: str, reference_settings: torch.Tensor, repeats: int, low_bias_a: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """(features (R, S, F), traces (R, S, P)) of ``repeats`` reference passes."""
        sched = self.scheduler(stage)
        out = measure_references(sched, reference_settings, repeats, low_bias_a)
        self.stage_s[stage] = sched.stats.instrument_time_s
        return out


def reference_passes(
    reference_settings: torch.Tensor, repeats: int, low_bias_a: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shots of ``repeats`` passes over the references, each behind one preset shot.

    The preset shot sits at ``low_bias_a`` (same drive as the first reference), so the
    bias always rises into the operating bias. Returns (shots (repeats·(S+1), 3),
    boolean mask of the reference shots).
    """
    ref = reference_settings.to(torch.float64)
    preset = ref[:1].clone()
    preset[0, 2] = low_bias_a
    one = torch.cat([preset, ref])
    mask_one = torch.ones(one.shape[0], dtype=torch.bool)
    mask_one[0] = False
    return one.repeat(repeats, 1), mask_one.repeat(repeats)


def measure_references(
    scheduler: PerturbationScheduler,
    reference_settings: torch.Tensor,
    repeats: int,
    low_bias_a: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(features (R, S, F), traces (R, S, P)) of the reference passes."""
    shots, mask = reference_passes(reference_settings, repeats, low_bias_a)
    out = measure_with_traces(scheduler, shots)
    s = reference_settings.shape[0]
    feats = out.features[mask].reshape(repeats, s, -1).numpy()
    assert out.traces_dbm is not None
    traces = out.traces_dbm[mask].reshape(repeats, s, -1).numpy()
    return feats, traces


def measure_with_traces(scheduler: PerturbationScheduler, shots: torch.Tensor) -> ReservoirOutput:
    """Measure ``shots`` in order with the reservoir keeping traces (restored afterwards)."""
    reservoir = scheduler.reservoir
    if not hasattr(reservoir, "keep_traces"):
        raise UserError(
            "calibration needs the analyzer traces: the reservoir must support keep_traces "
            "(SimulatedReservoir or InstrumentReservoir)"
        )
    before = reservoir.keep_traces
    reservoir.keep_traces = True
    try:
        out = scheduler.measure_shots(shots)
    finally:
        reservoir.keep_traces = before
    if out.traces_dbm is None:
        raise UserError("the reservoir returned no traces although keep_traces was set")
    return out
