"""PerturbationScheduler: run every setting a step needs on a reservoir, cheaply and safely.

The scheduler is the engine; estimators and `labpgt acquire` only say *what*
to measure. Per `run`:

1. flatten the caller's settings (..., 3) and refuse any outside the bounds
   before an instrument moves;
2. de-duplicate settings equal within instrument resolution (`setting_keys`);
3. order them bias current first (the magnet settles for hundreds of ms), then
   drive frequency, then power; the bias sweep runs up or down, whichever
   starts nearer the current bias;
4. measure each setting ``repeats`` times back to back (no setting change in
   between, so a repeat costs one sweep and no settle) and average the repeats
   in feature space -- features are dB (and GHz for peaks), so this is the
   mean of dB values, not of linear power;
5. on a failure, call ``reservoir.reconnect()`` and retry up to ``retries``
   times; a setting that still fails raises `MeasurementError` naming it;
6. return features in the caller's order and shape (..., F).

Everything on the hot path is a handful of vectorised torch ops (unique,
argsort, gather); the only Python loop is over chunks of shots, for progress
and retries.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from labpgt.errors import MeasurementError
from labpgt.reservoir import PartialMeasurementError, PhysicalReservoir, ReservoirOutput
from labpgt.setting_bounds import SettingBounds, describe_setting, setting_keys, transitions

ProgressCallback = Callable[[int, int, float], None]
"""progress(done_shots, total_shots, instrument_time_s of this run so far)."""

_BIAS_FIRST = [2, 0, 1]
"""Setting columns in sort priority: bias_a, drive_hz, drive_dbm."""


@dataclass
class ScheduleStats:
    """Counters of what the scheduler did (cumulative in ``.stats``, per run in ``.last``)."""

    runs: int = 0
    requested: int = 0
    """Settings the callers asked for (before de-duplication)."""
    unique: int = 0
    """Distinct settings measured (after de-duplication)."""
    queries: int = 0
    """Shots measured: unique settings x repeats."""
    repeats: int = 0
    """Extra shots taken for averaging (queries - unique)."""
    bias_transitions: int = 0
    drive_transitions: int = 0
    retries: int = 0
    """Failed measure calls that were retried after reconnect()."""
    instrument_time_s: float = 0.0
    """Settle plus sweep time, as the reservoir accounts it, s."""
    wall_s: float = 0.0
    """Wall-clock time inside run()/measure_shots(), s."""
    measure_wall_s: float = 0.0
    """Wall-clock time spent inside reservoir.measure(), s."""

    @property
    def overhead_s(self) -> float:
        """The scheduler's own time: wall time not spent in the reservoir, s."""
        return self.wall_s - self.measure_wall_s

    def add(self, other: ScheduleStats) -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "overhead_s": self.overhead_s}


@dataclass
class Plan:
    """Which rows of the caller's (N, 3) settings to measure, in which order."""

    rows: torch.Tensor
    """(S,) indices into the caller's settings, in measurement order (before repeats)."""
    result_index: torch.Tensor
    """(N,) for each caller row, its position in ``rows`` (whose result it takes)."""
    unique: int
    """Distinct settings among the caller's rows."""


@dataclass
class _ScheduleRun:
    stats: ScheduleStats = field(default_factory=ScheduleStats)
    parts: list[ReservoirOutput] = field(default_factory=list)


def plan_order(
    settings: torch.Tensor,
    bounds: SettingBounds,
    *,
    deduplicate: bool = True,
    reorder: bool = True,
    previous_key: torch.Tensor | None = None,
) -> Plan:
    """Which of the (N, 3) settings to measure, in which order (see the module docstring).

    ``previous_key`` is the `setting_keys` row of the shot before (None: unknown);
    when it is nearer the top of this batch's bias range, the bias sweeps down.
    """
    n = settings.shape[0]
    keys = setting_keys(settings, bounds)
    # unique() sorts rows lexicographically: with bias first that is exactly the order
    # we want, and it de-duplicates in the same pass.
    _, inverse = torch.unique(keys[:, _BIAS_FIRST], dim=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    n_unique = int(inverse.max()) + 1 if n else 0
    first = torch.full((n_unique,), n, dtype=torch.int64)
    first.scatter_reduce_(0, inverse, torch.arange(n), reduce="amin")
    descending = False
    if reorder and previous_key is not None and n:
        bias, now = keys[:, 2], previous_key[2]
        descending = bool((bias.max() - now).abs() < (now - bias.min()).abs())
    if deduplicate:
        seq = torch.arange(n_unique) if reorder else torch.argsort(first)
        if descending:
            seq = seq.flip(0)
        rows = first[seq]
        position = torch.empty(n_unique, dtype=torch.int64)
        position[seq] = torch.arange(n_unique)
        result_index = position[inverse]
    else:
        if reorder:
            rows = torch.argsort(-inverse if descending else inverse, stable=True)
        else:
            rows = torch.arange(n)
        result_index = torch.empty(n, dtype=torch.int64)
        result_index[rows] = torch.arange(n)
    return Plan(rows=rows, result_index=result_index, unique=n_unique)


class PerturbationScheduler:
    """Measures batches of settings on any `PhysicalReservoir` (see the module docstring)."""

    def __init__(
        self,
        reservoir: PhysicalReservoir,
        repeats: int = 1,
        retries: int = 2,
        progress: ProgressCallback | None = None,
        *,
        chunk_size: int = 256,
        reorder: bool = True,
        deduplicate: bool = True,
    ) -> None:
        if repeats < 1 or retries < 0 or chunk_size < 1:
            raise ValueError("repeats >= 1, retries >= 0 and chunk_size >= 1 are required")
        self.reservoir = reservoir
        self.repeats = repeats
        self.retries = retries
        self.progress = progress
        self.chunk_size = chunk_size
        self.reorder = reorder
        self.deduplicate = deduplicate
        self.stats = ScheduleStats()
        self.last = ScheduleStats()
        self._previous_key: torch.Tensor | None = None

    # --- planning ---------------------------------------------------------------------------

    def plan(self, settings: torch.Tensor) -> Plan:
        """Measurement order for (N, 3) settings (de-duplicated and sorted as configured)."""
        return plan_order(
            settings,
            self.reservoir.bounds,
            deduplicate=self.deduplicate,
            reorder=self.reorder,
            previous_key=self._previous_key,
        )

    def state_dict(self) -> dict[str, torch.Tensor | None]:
        """The last shot's key (it picks the next bias sweep direction): for exact resume."""
        previous = self._previous_key
        return {"previous_key": previous.clone() if previous is not None else None}

    def load_state_dict(self, state: dict[str, torch.Tensor | None]) -> None:
        previous = state.get("previous_key")
        self._previous_key = previous.clone() if previous is not None else None

    # --- running ----------------------------------------------------------------------------

    def run(self, settings: torch.Tensor) -> torch.Tensor:
        """Settings (..., 3) -> features (..., F) in the caller's order (float64)."""
        t0 = time.perf_counter()
        shape = settings.shape
        if shape[-1] != 3:
            raise ValueError(f"settings must have a last dimension of 3; got {tuple(shape)}")
        flat = settings.detach().reshape(-1, 3).to(torch.float64)
        self.reservoir.bounds.check(flat)
        plan = self.plan(flat)
        shots = flat[plan.rows].repeat_interleave(self.repeats, dim=0)
        run = _ScheduleRun()
        out = self._measure(shots, run)
        feats = out.features.reshape(plan.rows.numel(), self.repeats, -1).mean(dim=1)
        run.stats.requested = flat.shape[0]
        run.stats.unique = plan.rows.numel()
        run.stats.repeats = shots.shape[0] - plan.rows.numel()
        self._finish(run, t0)
        return feats[plan.result_index].reshape(*shape[:-1], feats.shape[-1])

    def measure_shots(self, shots: torch.Tensor) -> ReservoirOutput:
        """Measure (M, 3) shots exactly in the order given (no de-duplication, no averaging).

        Retries and progress as in `run`; `labpgt acquire` uses this for its fixed shot list.
        """
        t0 = time.perf_counter()
        shots = shots.detach().to(torch.float64)
        self.reservoir.bounds.check(shots)
        run = _ScheduleRun()
        out = self._measure(shots, run)
        run.stats.requested = run.stats.unique = shots.shape[0]
        self._finish(run, t0)
        return out

    def _finish(self, run: _ScheduleRun, t0: float) -> None:
        run.stats.runs = 1
        run.stats.wall_s = time.perf_counter() - t0
        self.last = run.stats
        self.stats.add(run.stats)

    def _measure(self, shots: torch.Tensor, run: _ScheduleRun) -> ReservoirOutput:
        total = shots.shape[0]
        done = 0
        failures = 0
        isolate_until = 0  # after an unexplained chunk failure, go shot by shot up to here
        while done < total:
            size = 1 if done < isolate_until else self.chunk_size
            batch = shots[done : min(done + size, total)]
            t = time.perf_counter()
            try:
                out = self.reservoir.measure(batch)
            except Exception as exc:
                run.stats.measure_wall_s += time.perf_counter() - t
                cause: BaseException = exc
                if isinstance(exc, PartialMeasurementError):
                    cause = exc.cause
                    kept = exc.completed.features.shape[0]
                    if kept:
                        self._accept(batch[:kept], exc.completed, run, total)
                        done += kept
                        failures = 0
                    failing: torch.Tensor | None = exc.setting
                else:
                    failing = batch[0] if batch.shape[0] == 1 else None
                failures += 1
                if failures > self.retries:
                    if failing is None:
                        isolate_until = done + batch.shape[0]
                        failures = 0
                    else:
                        err = MeasurementError(
                            f"measurement at {describe_setting(failing)} failed after "
                            f"{self.retries} retr{'y' if self.retries == 1 else 'ies'} with "
                            f"reconnect: {cause}"
                        )
                        err.setting = failing.clone()  # type: ignore[attr-defined]
                        raise err from cause
                run.stats.retries += 1
                self._reconnect()
                continue
            run.stats.measure_wall_s += time.perf_counter() - t
            if out.features.shape[0] != batch.shape[0]:
                raise MeasurementError(
                    f"reservoir returned {out.features.shape[0]} results for {batch.shape[0]} "
                    f"settings starting at {describe_setting(batch[0])}"
                )
            self._accept(batch, out, run, total)
            done += batch.shape[0]
            failures = 0
        return _concat(run.parts, self.reservoir.feature_dim)

    def _reconnect(self) -> None:
        # The reservoir re-settles after reconnecting, so our view of "the last shot" is void.
        self._previous_key = None
        # A failed reconnect is retried like a failed shot, on the next attempt.
        with contextlib.suppress(Exception):
            self.reservoir.reconnect()

    def _accept(
        self, batch: torch.Tensor, out: ReservoirOutput, run: _ScheduleRun, total: int
    ) -> None:
        keys = setting_keys(batch, self.reservoir.bounds)
        bias_changed, drive_changed = transitions(keys, self._previous_key)
        self._previous_key = keys[-1].clone()
        stats = run.stats
        stats.bias_transitions += int(bias_changed.sum())
        stats.drive_transitions += int(drive_changed.sum())
        stats.queries += batch.shape[0]
        stats.instrument_time_s += float(out.instrument_time_s.sum())
        run.parts.append(out)
        if self.progress is not None:
            self.progress(stats.queries, total, stats.instrument_time_s)


def _concat(parts: list[ReservoirOutput], feature_dim: int) -> ReservoirOutput:
    if not parts:
        empty = torch.zeros(0, dtype=torch.float64)
        return ReservoirOutput(torch.zeros(0, feature_dim, dtype=torch.float64), empty, empty)
    if len(parts) == 1:
        return parts[0]
    traces = None
    if all(p.traces_dbm is not None for p in parts):
        traces = torch.cat([p.traces_dbm for p in parts])  # type: ignore[misc]
    return ReservoirOutput(
        features=torch.cat([p.features for p in parts]),
        instrument_time_s=torch.cat([p.instrument_time_s for p in parts]),
        timestamps_s=torch.cat([p.timestamps_s for p in parts]),
        traces_dbm=traces,
    )
