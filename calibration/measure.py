"""The measure stage: shots on any `PhysicalReservoir`, chunk by chunk through a
`PerturbationScheduler`, each chunk handed on (written to a file) as soon as it is measured.

`measure_into` is the one loop that measures a shot list and passes every chunk on: `labpgt
acquire` writes each chunk into its run file with it, and `run_calibration` measures its
stages with a `StageMeasurer` built on it, which hands each chunk to a `ShotRecorder` (the
calibration file's /measured part, `calibration.measured`). A drift check re-measures the
reference passes with `StageMeasurer.references` too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Protocol

import numpy as np
import torch

from labpgt.errors import UserError
from labpgt.reservoir import PhysicalReservoir, ReservoirOutput
from labpgt.scheduler import PerturbationScheduler

StageProgress = Callable[[str, int, int, float], None]
"""progress(stage, done_shots, total_shots, instrument_time_s of the stage so far)."""

Progress = Callable[[int, int, float], None]
"""progress(shots_done, shots_total, instrument_time_s so far in this call)."""

ChunkSink = Callable[[np.ndarray, ReservoirOutput], None]
"""sink(index, output): the chunk of shots ``index`` (rows of the shot list) was measured."""

PRESET_DROP_A = 0.3
"""A reference pass starts this far below the operating bias, so every pass reaches the
operating bias rising: the magnet's remanence is then the same on every pass and at --check."""

CHUNK_SHOTS = 32
"""Shots per chunk: each is written (and flushed) before the next is measured."""


def measure_into(
    scheduler: PerturbationScheduler,
    settings: torch.Tensor,
    index: np.ndarray,
    sink: ChunkSink,
    *,
    chunk_shots: int = CHUNK_SHOTS,
    progress: Progress | None = None,
    done: int = 0,
    total: int | None = None,
) -> float:
    """Measure the shots ``settings[index]`` in that order, ``chunk_shots`` at a time, and
    hand each chunk to ``sink`` before the next is measured; returns the instrument time, s.

    ``progress`` is told ``done`` (shots done before this call) plus the shots measured,
    out of ``total`` (default ``done + len(index)``), first before anything is measured.
    """
    total = done + index.size if total is None else total
    instrument_s = 0.0
    if progress is not None:
        progress(done, total, instrument_s)
    for start in range(0, index.size, chunk_shots):
        chunk = index[start : start + chunk_shots]
        out = scheduler.measure_shots(settings[torch.from_numpy(chunk)])
        sink(chunk, out)
        done += chunk.size
        instrument_s += float(out.instrument_time_s.sum())
        if progress is not None:
            progress(done, total, instrument_s)
    return instrument_s


class ShotRecorder(Protocol):
    """Where a `StageMeasurer` writes each measured chunk (`calibration.measured`)."""

    def write(self, stage: str, rows: np.ndarray, settings: torch.Tensor, out: ReservoirOutput):
        """Store the shots ``rows`` of ``stage`` (measuring order) with their ``settings``."""


class StageMeasurer:
    """Measures the named stages of a calibration on one reservoir, hands every chunk to
    ``recorder`` (if any) as it is measured, and keeps the instrument time of each stage
    (``stage_s``, s)."""

    def __init__(
        self,
        reservoir: PhysicalReservoir,
        progress: StageProgress | None = None,
        retries: int = 2,
        recorder: ShotRecorder | None = None,
    ) -> None:
        self.reservoir = reservoir
        self.progress = progress
        self.retries = retries
        self.recorder = recorder
        self.stage_s: dict[str, float] = {}

    def shots(
        self, stage: str, shots: torch.Tensor, *, traces: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(features (N, F), traces (N, P) with ``traces``, else None) of ``shots``, measured
        in the order given."""
        sched = PerturbationScheduler(self.reservoir, retries=self.retries, chunk_size=CHUNK_SHOTS)
        shots = shots.detach().to(torch.float64)
        self.reservoir.bounds.check(shots)  # every shot, before anything moves
        n = shots.shape[0]
        feats = torch.full((n, self.reservoir.feature_dim), torch.nan, dtype=torch.float64)
        points = self.reservoir.frequency_hz.numel()
        rows_dbm = torch.full((n, points), torch.nan, dtype=torch.float64) if traces else None

        def sink(rows: np.ndarray, out: ReservoirOutput) -> None:
            at = torch.from_numpy(rows)
            feats[at] = out.features.to(torch.float64)
            if rows_dbm is not None:
                if out.traces_dbm is None:
                    raise UserError("the reservoir returned no traces although keep_traces was set")
                rows_dbm[at] = out.traces_dbm.to(torch.float64)
            if self.recorder is not None:
                self.recorder.write(stage, rows, shots[at], out)

        report = self.progress
        tell = None if report is None else lambda d, t, s: report(stage, d, t, s)
        with _keeping_traces(self.reservoir, traces):
            measure_into(sched, shots, np.arange(n), sink, progress=tell)
        self.stage_s[stage] = sched.stats.instrument_time_s
        return feats, rows_dbm

    def features(self, stage: str, settings: torch.Tensor) -> torch.Tensor:
        """Features of ``settings``, measured once each in the scheduler's order (bias
        first, equal settings once) and returned in the caller's order."""
        flat = settings.detach().to(torch.float64)
        plan = PerturbationScheduler(self.reservoir).plan(flat)
        return self.shots(stage, flat[plan.rows])[0][plan.result_index]

    def traces(self, stage: str, shots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features (N, F), traces (N, P)) of ``shots``, measured in the order given."""
        feats, traces = self.shots(stage, shots, traces=True)
        assert traces is not None
        return feats, traces

    def references(
        self, stage: str, reference_settings: torch.Tensor, repeats: int, low_bias_a: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """(features (R, S, F), traces (R, S, P)) of ``repeats`` reference passes."""
        shots, mask = reference_passes(reference_settings, repeats, low_bias_a)
        feats, traces = self.traces(stage, shots)
        s = reference_settings.shape[0]
        return (
            feats[mask].reshape(repeats, s, -1).numpy(),
            traces[mask].reshape(repeats, s, -1).numpy(),
        )


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


@contextlib.contextmanager
def _keeping_traces(reservoir: PhysicalReservoir, on: bool) -> Iterator[None]:
    """The reservoir's ``keep_traces`` switched on (when ``on``), restored afterwards."""
    if not on:
        yield
        return
    if not hasattr(reservoir, "keep_traces"):
        raise UserError(
            "calibration needs the analyzer traces: the reservoir must support keep_traces "
            "(SimulatedReservoir or InstrumentReservoir)"
        )
    before = reservoir.keep_traces
    reservoir.keep_traces = True
    try:
        yield
    finally:
        reservoir.keep_traces = before
