"""Acquisition: settings (a CSV or a grid of sweeps) -> traces in an HDF5 run file.

The shot list (every input x repeat, in the scheduler's bias-first order) is
fixed when the file is created; measuring walks it chunk by chunk through a
`PerturbationScheduler` (retries after reconnect) with the measure stage of a calibration
(`calibration.measure.measure_into`) and flushes each chunk, so a killed run is finished
exactly by `acquire(..., resume=True)`.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import io
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from labpgt import __version__
from labpgt.calibration.measure import Progress, measure_into
from labpgt.csv_text import read_csv_text
from labpgt.encoding import DEFAULT_SETTING
from labpgt.errors import UserError
from labpgt.records import INSTRUMENT_ROLES, BenchIdentity, RunMetadata, SettingsSnapshot
from labpgt.reservoir import PhysicalReservoir, ReservoirOutput
from labpgt.scheduler import PerturbationScheduler, plan_order
from labpgt.setting_bounds import SETTING_NAMES, SETTING_UNITS, SettingBounds
from labpgt.storage import RunFile, RunFileWriteError, ShotPlan, fixed_settings

SNAPSHOT_INTERVAL_S = 10.0
"""Wall time between two checks of the fixed settings during a run (a snapshot queries every
control of every instrument, so not after every chunk)."""

MAX_SWEEP_COUNT = 10**9
"""More points than this on one axis is certainly a typo (and would not fit anywhere)."""


@dataclass(frozen=True)
class Sweep:
    """One swept setting: name and values (in the setting's unit).

    A range (``start:stop:count``) keeps only its three numbers until ``values``
    is asked for, so a typo such as ``count=1e10`` is refused by the pre-flight
    size check before anything that large is allocated.
    """

    name: str
    listed: tuple[float, ...] = ()
    span: tuple[float, float, int] | None = None
    """(start, stop, count) of a range; None for a listed sweep."""

    @property
    def count(self) -> int:
        return self.span[2] if self.span is not None else len(self.listed)

    @property
    def values(self) -> tuple[float, ...]:
        if self.span is None:
            return self.listed
        start, stop, count = self.span
        return tuple(torch.linspace(start, stop, count, dtype=torch.float64).tolist())

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "values": list(self.values)}


def parse_sweep(text: str) -> Sweep:
    """'drive_hz=2.0e9:2.3e9:301' (start:stop:count) or 'bias_a=1.6,1.8,2.0' (a list)."""
    name, sep, spec = text.partition("=")
    name = name.strip()
    if not sep or not spec.strip():
        raise UserError(
            f"--sweep {text!r}: expected name=start:stop:count or name=v1,v2,...; "
            f"names: {', '.join(SETTING_NAMES)}"
        )
    _check_name(name, f"--sweep {text!r}")
    try:
        if ":" in spec:
            parts = spec.split(":")
            if len(parts) != 3:
                raise ValueError("need exactly start:stop:count")
            start, stop, count_f = float(parts[0]), float(parts[1]), float(parts[2])
            if not math.isfinite(count_f) or count_f != int(count_f) or count_f < 1:
                raise ValueError("count must be a whole number >= 1")
            count = int(count_f)
            if count > MAX_SWEEP_COUNT:
                raise ValueError(f"count {count} is more than {MAX_SWEEP_COUNT} points")
            if not (math.isfinite(start) and math.isfinite(stop)):
                raise ValueError("values must be finite numbers")
            return Sweep(name, span=(start, stop, count))
        values = [float(v) for v in spec.split(",")]
    except ValueError as exc:
        raise UserError(f"--sweep {text!r}: {exc}") from None
    if not all(math.isfinite(v) for v in values):
        raise UserError(f"--sweep {text!r}: values must be finite numbers")
    return Sweep(name, listed=tuple(values))


def _check_name(name: str, where: str) -> None:
    if name not in SETTING_NAMES:
        raise UserError(
            f"{where}: unknown setting {name!r}; valid settings: {', '.join(SETTING_NAMES)}"
        )


def grid_inputs(sweeps: list[Sweep]) -> torch.Tensor:
    """Cartesian product of the sweeps (the first sweep varies slowest); others at defaults."""
    names = [s.name for s in sweeps]
    if len(set(names)) != len(names):
        raise UserError(f"--sweep: a setting is swept twice ({', '.join(names)})")
    axes = [torch.tensor(s.values, dtype=torch.float64) for s in sweeps]
    mesh = torch.meshgrid(*axes, indexing="ij") if axes else ()
    n = math.prod(len(a) for a in axes) if axes else 1
    inputs = torch.empty(n, len(SETTING_NAMES), dtype=torch.float64)
    for col, name in enumerate(SETTING_NAMES):
        inputs[:, col] = DEFAULT_SETTING[name]
    for sweep, values in zip(sweeps, mesh, strict=True):
        inputs[:, SETTING_NAMES.index(sweep.name)] = values.reshape(-1)
    return inputs


def read_inputs_csv(path: str | Path, bounds: SettingBounds | None = None) -> torch.Tensor:
    """Settings from a CSV with a header of setting names; missing columns take defaults.

    Errors name the line and column; with ``bounds``, values outside are refused too.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--inputs: file {path} does not exist")
    text = read_csv_text(path, "--inputs")
    try:
        return _parse_inputs_csv(path, text, bounds)
    except csv.Error as exc:
        raise UserError(f"{path}: not a readable CSV file: {exc}") from None


def _parse_inputs_csv(path: Path, text: str, bounds: SettingBounds | None) -> torch.Tensor:
    if "\0" in text:
        raise UserError(f"{path}: holds NUL bytes; not a text CSV file")
    with io.StringIO(text, newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise UserError(f"{path}: empty file; expected a header of {', '.join(SETTING_NAMES)}")
        header = [h.strip() for h in header]
        for name in header:
            _check_name(name, f"{path} line 1")
        if len(set(header)) != len(header):
            raise UserError(f"{path} line 1: a column is listed twice ({', '.join(header)})")
        rows: list[list[float]] = []
        for record in reader:
            line = reader.line_num
            if not record or all(not v.strip() for v in record):
                continue
            if len(record) != len(header):
                raise UserError(
                    f"{path} line {line}: {len(record)} values, but the header has "
                    f"{len(header)} columns ({', '.join(header)})"
                )
            row = dict(DEFAULT_SETTING)
            for name, text in zip(header, record, strict=True):
                try:
                    value = float(text)
                except ValueError:
                    raise UserError(
                        f"{path} line {line}, column {name}: {text.strip()!r} is not a number"
                    ) from None
                if not math.isfinite(value):
                    raise UserError(f"{path} line {line}, column {name}: {text!r} is not finite")
                if bounds is not None:
                    lo, hi = getattr(bounds, name)
                    if not lo <= value <= hi:
                        raise UserError(
                            f"{path} line {line}, column {name}: {value:.6g} {SETTING_UNITS[name]}"
                            f" is outside the bench limits [{lo:.6g}, {hi:.6g}]"
                        )
                row[name] = value
            rows.append([row[n] for n in SETTING_NAMES])
    if not rows:
        raise UserError(f"{path}: no settings after the header")
    return torch.tensor(rows, dtype=torch.float64)


@dataclass(frozen=True)
class Preflight:
    """What a run will take, estimated before anything is allocated or moved."""

    shots: int
    points: int
    file_bytes: int
    memory_bytes: int
    instrument_time_s: float
    free_disk_bytes: int | None
    """Free space where the run file goes (None: not a new file, or unknown)."""
    available_memory_bytes: int | None

    def describe(self) -> str:
        disk = "" if self.free_disk_bytes is None else f" (free {_size(self.free_disk_bytes)})"
        mem = (
            ""
            if self.available_memory_bytes is None
            else f" (available {_size(self.available_memory_bytes)})"
        )
        return (
            f"pre-flight: {self.shots} shots x {self.points} points: file {_size(self.file_bytes)}"
            f"{disk}, memory about {_size(self.memory_bytes)}{mem}, instrument time about "
            f"{_duration(self.instrument_time_s)}"
        )

    def check(self) -> None:
        """Refuse (UserError, with the numbers) a run that cannot fit on disk or in memory."""
        if self.free_disk_bytes is not None and self.file_bytes > self.free_disk_bytes:
            raise UserError(
                f"the run file would need {_size(self.file_bytes)} ({self.shots} shots x "
                f"{self.points} points) but only {_size(self.free_disk_bytes)} is free there; "
                "sweep fewer points or write elsewhere (--out)"
            )
        if self.available_memory_bytes is not None and (
            self.memory_bytes > self.available_memory_bytes
        ):
            raise UserError(
                f"the shot list of {self.shots} shots would need about "
                f"{_size(self.memory_bytes)} of memory but only "
                f"{_size(self.available_memory_bytes)} is available; sweep fewer points"
            )


# Bytes per shot in the file besides its trace: settings (3 x 8), two indices (2 x 8),
# done (1), timestamp and instrument time (2 x 8), and the NeXus view's shot index and
# per-shot settings (4 x 8). Per input: its settings (3 x 8). Overhead: the structure,
# plus the 16 settings-snapshot slots and the resume records (about 256 kB at most).
_FILE_BYTES_PER_SHOT = 24 + 16 + 1 + 16 + 32
_FILE_BYTES_PER_INPUT = 24
_FILE_OVERHEAD_BYTES = 64 * 1024 + 256 * 1024
# In memory the shot list is built (plan) and then loaded back (run file): twice its
# settings and indices, plus the sort keys of the inputs while planning.
_MEMORY_BYTES_PER_SHOT = 2 * (24 + 16) + 1 + 16
_MEMORY_BYTES_PER_INPUT = 24 + 8 * 12


def preflight(
    n_inputs: int,
    repeats: int,
    points: int,
    *,
    sweep_time_s: float,
    bias_s: float,
    drive_s: float,
    bias_values: int,
    out: Path | None,
) -> Preflight:
    """Size of the file and of the shot list in memory, and the instrument time, of a run.

    ``out`` is where a new run file goes (its folder's free space is checked);
    None for a resume (the file is already allocated). Instrument time counts a
    sweep and a drive settle per shot and a bias settle per bias value.
    """
    shots = n_inputs * repeats
    file_bytes = (
        shots * (4 * points + _FILE_BYTES_PER_SHOT)
        + n_inputs * _FILE_BYTES_PER_INPUT
        + 8 * points
        + _FILE_OVERHEAD_BYTES
    )
    memory_bytes = shots * _MEMORY_BYTES_PER_SHOT + n_inputs * _MEMORY_BYTES_PER_INPUT
    free = None
    if out is not None:
        folder = out.parent if str(out.parent) else Path(".")
        try:
            free = shutil.disk_usage(folder).free
        except OSError:
            free = None
    return Preflight(
        shots=shots,
        points=points,
        file_bytes=file_bytes,
        memory_bytes=memory_bytes,
        instrument_time_s=shots * (sweep_time_s + drive_s) + bias_values * bias_s,
        free_disk_bytes=free,
        available_memory_bytes=available_memory_bytes(),
    )


def available_memory_bytes() -> int | None:
    """MemAvailable of /proc/meminfo (Linux), else free physical pages; None if unknown."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _size(n_bytes: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.3g} {unit}"
    return f"{int(n_bytes)} B"


def _duration(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.3g} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.3g} h"
    if seconds >= 60:
        return f"{seconds / 60:.3g} min"
    return f"{seconds:.3g} s"


def plan_shots(inputs: torch.Tensor, repeats: int, bounds: SettingBounds) -> ShotPlan:
    """Every input x repeat, bias first then frequency then power; repeats back to back."""
    if repeats < 1:
        raise UserError(f"--repeats must be >= 1, got {repeats}")
    rows = plan_order(inputs, bounds, deduplicate=False).rows
    index = rows.repeat_interleave(repeats)
    return ShotPlan(
        inputs=inputs,
        settings=inputs[index],
        input_index=index,
        repeat_index=torch.arange(repeats).repeat(rows.numel()),
    )


def acquire(
    reservoir: PhysicalReservoir,
    out: str | Path,
    inputs: torch.Tensor | None,
    *,
    repeats: int = 1,
    resume: bool = False,
    provenance: dict[str, Any] | None = None,
    sweeps: list[Sweep] | None = None,
    chunk_shots: int = 32,
    retries: int = 2,
    progress: Progress | None = None,
    identity: BenchIdentity | None = None,
    allow_bench_change: bool = False,
    metadata: RunMetadata | None = None,
    snapshot_interval_s: float = SNAPSHOT_INTERVAL_S,
) -> RunFile:
    """Measure every shot not yet done into ``out``; returns the (closed) run file.

    ``metadata`` (sample, operator, notes, key=values) goes into a new file. The settings
    are snapshot at the start, every ``snapshot_interval_s`` of wall time (stored only when
    a fixed setting changed) and at the end, also of an interrupted run.

    ``provenance`` (seed, command line, bench file, ...) joins the reservoir's
    snapshot in the file. ``identity`` (`resume_identity`) is recorded in a new
    file; a resume on a bench of another identity is refused unless
    ``allow_bench_change``, and then the change is recorded. On Ctrl-C the
    current chunk is dropped, the file is closed valid and resumable, and
    KeyboardInterrupt propagates. A new file that holds no shot when the run
    stops (any error) is removed.
    """
    if hasattr(reservoir, "keep_traces"):
        reservoir.keep_traces = True  # type: ignore[attr-defined]
    stamp = {"time_utc": _now_utc(), **(provenance or {})}
    if resume:
        run = _reopen(out, inputs, repeats, stamp, identity, allow_bench_change)
    else:
        run = _create(reservoir, out, inputs, repeats, stamp, identity, sweeps, metadata)
    try:
        _measure(run, reservoir, chunk_shots, retries, progress, snapshot_interval_s)
    except BaseException as exc:
        # The settings at the end of a run cut short (Ctrl-C, an instrument fault); never
        # after a failed write: HDF5 may no longer write metadata safely then.
        if run.shots_done and not isinstance(exc, RunFileWriteError):
            with contextlib.suppress(Exception):  # best effort: the failure matters more
                _store_end(run, reservoir)
        _close_after_failure(run)
        if not resume and run.shots_done == 0:
            Path(out).unlink(missing_ok=True)
        raise
    try:
        _store_end(run, reservoir)
    except BaseException:
        _close_after_failure(run)
        raise
    run.close()
    return run


def _create(
    reservoir: PhysicalReservoir,
    out: str | Path,
    inputs: torch.Tensor | None,
    repeats: int,
    stamp: dict[str, Any],
    identity: BenchIdentity | None,
    sweeps: list[Sweep] | None,
    metadata: RunMetadata | None,
) -> RunFile:
    """A new run file holding the shot plan and the snapshot of the bench, nothing measured."""
    if inputs is None:
        raise UserError("give the settings: --inputs settings.csv or --sweep name=a:b:n")
    reservoir.bounds.check(inputs)  # before the file exists and before anything moves
    snapshot = {
        "labpgt_version": __version__,
        "repeats": repeats,
        **stamp,
        "identity": identity,
        "reservoir": reservoir.snapshot(),
    }
    return RunFile.create(
        out,
        plan_shots(inputs, repeats, reservoir.bounds),
        reservoir.frequency_hz,
        snapshot,
        [s.as_dict() for s in sweeps or []],
        metadata,
    )


def _reopen(
    out: str | Path,
    inputs: torch.Tensor | None,
    repeats: int,
    stamp: dict[str, Any],
    identity: BenchIdentity | None,
    allow_bench_change: bool,
) -> RunFile:
    """The run file to finish, checked against the settings, repeats and bench, with this
    resume recorded in it (and any shot whose data did not survive marked to measure)."""
    run = RunFile.open(out, writable=True)
    try:
        check_resume(run, inputs, repeats)
        entry = dict(stamp)
        if identity is not None:
            change = check_identity(run, identity, allow_bench_change)
            entry["bench_identity"] = identity
            if change:
                entry["bench_change"] = change
        redo = run.check_done_shots()
        if redo:
            entry["shots_marked_again"] = redo
        run.add_resume(entry)
    except BaseException:
        _close_after_failure(run)
        raise
    return run


def _close_after_failure(run: RunFile) -> None:
    """Close the file while a failure propagates; a second failure in closing is dropped
    (the first one is the one to report)."""
    with contextlib.suppress(UserError):
        run.close()


def _now_utc() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _snapshot(reservoir: PhysicalReservoir) -> SettingsSnapshot:
    return SettingsSnapshot(time_utc=_now_utc(), reservoir=reservoir.snapshot())


def _settings_or_none(reservoir: PhysicalReservoir) -> SettingsSnapshot | None:
    """`_snapshot`, or None when an instrument does not answer (the run goes on)."""
    try:
        return _snapshot(reservoir)
    except Exception:  # any instrument or transport error: the snapshot is skipped
        return None


def _store_end(run: RunFile, reservoir: PhysicalReservoir) -> None:
    snapshot = _settings_or_none(reservoir)
    if snapshot is not None:
        run.add_snapshot("end", snapshot)


class _SettingsWatch:
    """Re-reads the settings every ``interval_s`` and stores a snapshot when a fixed one moved."""

    def __init__(self, run: RunFile, reservoir: PhysicalReservoir, interval_s: float) -> None:
        self.run, self.reservoir, self.interval_s = run, reservoir, interval_s
        last = run.snapshots()[-1]["snapshot"]
        self.fixed = fixed_settings(last.get("reservoir", {}))
        self.checked = time.monotonic()

    def check(self, force: bool = False) -> bool:
        """Snapshot if due (or ``force``); True when a change was stored.

        Reading the settings is an observation, never a reason to stop: an instrument that
        does not answer it is left to the next shot (which has its own retries).
        """
        if not force and time.monotonic() - self.checked < self.interval_s:
            return False
        snapshot = _settings_or_none(self.reservoir)
        self.checked = time.monotonic()
        if snapshot is None:
            return False
        fixed = fixed_settings(snapshot.reservoir)
        if fixed == self.fixed:
            return False
        self.run.add_snapshot("change", snapshot)
        self.fixed = fixed
        return True


def resume_identity(
    snapshot: dict[str, Any] | None,
    *,
    bench_cfg: Any = None,
    embedded: dict[str, Any] | None = None,
    calibration_sha256: str | None = None,
) -> BenchIdentity:
    """Who measures: resources, families, each instrument's *IDN?, sim seed, calibration.

    From an opened bench's reservoir ``snapshot()`` (full), or from a bench config only
    (``bench_cfg``; no identities yet, for the check before opening). The embedded bench's
    resources are ephemeral loopback ports, recorded as "embedded"; its ring (seed, noise)
    identifies it instead.
    """
    label = "embedded virtual bench" if embedded is not None else "bench file"
    if snapshot is not None:
        return BenchIdentity.of_snapshot(
            snapshot, bench=label, embedded=embedded, calibration_sha256=calibration_sha256
        )
    ident = BenchIdentity(bench=label, sim=embedded, calibration_sha256=calibration_sha256)
    if bench_cfg is not None:
        roles = [(r, getattr(bench_cfg, r)) for r in INSTRUMENT_ROLES]
        ident.resources = {
            r: "embedded" if embedded is not None else cfg.resource for r, cfg in roles
        }
        ident.families = {r: cfg.family for r, cfg in roles}
    return ident


def check_identity(
    run: RunFile, current: BenchIdentity, allow_change: bool
) -> dict[str, Any] | None:
    """Refuse a resume on another bench; with ``allow_change``, return the change to record.

    The identity the file recorded is read as it was stored, also by a labpgt from before
    `BenchIdentity` (`BenchIdentity.read`)."""
    recorded = BenchIdentity.read(run.snapshot.get("identity") or None)
    differs = ["identity"] if recorded is None else recorded.resume_differences(current)
    if not differs:
        return None
    if not allow_change:
        raise UserError(
            f"--resume: {run.path} was recorded on another bench ({', '.join(differs)} differ): "
            f"recorded: {recorded.describe() if recorded else 'no bench identity recorded'} | "
            f"now: {current.describe()}; "
            "resume on the recorded bench, or pass --allow-bench-change to continue on this "
            "one (the change is recorded in the file)"
        )
    return {"from": recorded, "to": current, "differs": differs}


def check_resume(run: RunFile, inputs: torch.Tensor | None, repeats: int) -> None:
    """Refuse a resume with other settings or repeats than the file was created with."""
    stored_repeats = int(run.repeat_index.max()) + 1 if run.repeat_index.numel() else 1
    if inputs is not None and (
        inputs.shape != run.inputs.shape or not torch.equal(inputs, run.inputs)
    ):
        raise UserError(
            f"--resume: {run.path} was created for other settings ({run.inputs.shape[0]} inputs); "
            "give the same --inputs/--sweep as the first run, or none"
        )
    if repeats != stored_repeats and repeats != 1:
        raise UserError(f"--resume: {run.path} was created with --repeats {stored_repeats}")


def _measure(
    run: RunFile,
    reservoir: PhysicalReservoir,
    chunk_shots: int,
    retries: int,
    progress: Progress | None,
    snapshot_interval_s: float = SNAPSHOT_INTERVAL_S,
) -> None:
    if reservoir.frequency_hz.numel() != run.frequency_hz.numel() or not torch.allclose(
        reservoir.frequency_hz, run.frequency_hz, rtol=0, atol=1.0
    ):
        raise UserError(
            f"{run.path} was recorded on another analyzer grid "
            f"({run.frequency_hz.numel()} points); set the analyzer as in the first run"
        )
    scheduler = PerturbationScheduler(reservoir, retries=retries, chunk_size=chunk_shots)
    watch = _SettingsWatch(run, reservoir, snapshot_interval_s) if run.has_nexus else None
    if watch is not None and run.resumes:
        watch.check(force=True)  # a resume: the bench may have been touched meanwhile

    def store(index: np.ndarray, out: ReservoirOutput) -> None:
        if out.traces_dbm is None:
            raise UserError("this reservoir does not return traces; acquire needs them")
        run.write(index, out.traces_dbm, out.timestamps_s, out.instrument_time_s)
        if watch is not None:
            watch.check()

    measure_into(
        scheduler,
        run.settings,
        run.todo(),
        store,
        chunk_shots=chunk_shots,
        progress=progress,
        done=run.shots_done,
        total=run.shots_total,
    )
