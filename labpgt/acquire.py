"""Acquisition: settings (a CSV or a grid of sweeps) -> traces in an HDF5 run file.

The shot list (every input x repeat, in the scheduler's bias-first order) is
fixed when the file is created; measuring walks it chunk by chunk through a
`PerturbationScheduler` (retries after reconnect) and flushes each chunk, so a
killed run is finished exactly by `acquire(..., resume=True)`.
"""

from __future__ import annotations

import csv
import datetime as _dt
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from labpgt import __version__
from labpgt.encoding import DEFAULT_SETTING
from labpgt.errors import UserError
from labpgt.reservoir import SETTING_NAMES, SETTING_UNITS, PhysicalReservoir, SettingBounds
from labpgt.scheduler import PerturbationScheduler, plan_order
from labpgt.storage import RunFile, ShotPlan

Progress = Callable[[int, int, float], None]
"""progress(shots_done, shots_total, instrument_time_s so far in this session)."""


@dataclass(frozen=True)
class Sweep:
    """One swept setting: name and values (in the setting's unit)."""

    name: str
    values: tuple[float, ...]

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
            count = int(count_f)
            if count != count_f or count < 1:
                raise ValueError("count must be a whole number >= 1")
            values = torch.linspace(start, stop, count, dtype=torch.float64).tolist()
        else:
            values = [float(v) for v in spec.split(",")]
    except ValueError as exc:
        raise UserError(f"--sweep {text!r}: {exc}") from None
    if not all(math.isfinite(v) for v in values):
        raise UserError(f"--sweep {text!r}: values must be finite numbers")
    return Sweep(name, tuple(values))


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
    with path.open(newline="") as handle:
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
) -> RunFile:
    """Measure every shot not yet done into ``out``; returns the (closed) run file.

    ``provenance`` (seed, command line, bench file, ...) joins the reservoir's
    snapshot in the file. On Ctrl-C the current chunk is dropped, the file is
    closed valid and resumable, and KeyboardInterrupt propagates.
    """
    if hasattr(reservoir, "keep_traces"):
        reservoir.keep_traces = True  # type: ignore[attr-defined]
    stamp = {
        "time_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        **(provenance or {}),
    }
    if resume:
        run = RunFile.open(out, writable=True)
        _check_resume(run, inputs, repeats)
        run.add_resume(stamp)
    else:
        if inputs is None:
            raise UserError("give the settings: --inputs settings.csv or --sweep name=a:b:n")
        reservoir.bounds.check(inputs)  # before the file exists and before anything moves
        plan = plan_shots(inputs, repeats, reservoir.bounds)
        snapshot = {
            "labpgt_version": __version__,
            "repeats": repeats,
            **stamp,
            "reservoir": reservoir.snapshot(),
        }
        run = RunFile.create(
            out,
            plan,
            reservoir.frequency_hz,
            snapshot,
            [s.as_dict() for s in sweeps or []],
        )
    try:
        _measure(run, reservoir, chunk_shots, retries, progress)
    finally:
        run.close()
    return run


def _check_resume(run: RunFile, inputs: torch.Tensor | None, repeats: int) -> None:
    stored_repeats = int(run.repeat_index.max()) + 1 if run.repeat_index.numel() else 1
    if inputs is not None and (
        inputs.shape != run.inputs.shape or not torch.equal(inputs, run.inputs)
    ):
        run.close()
        raise UserError(
            f"--resume: {run.path} was created for other settings ({run.inputs.shape[0]} inputs); "
            "give the same --inputs/--sweep as the first run, or none"
        )
    if repeats != stored_repeats and repeats != 1:
        run.close()
        raise UserError(f"--resume: {run.path} was created with --repeats {stored_repeats}")


def _measure(
    run: RunFile,
    reservoir: PhysicalReservoir,
    chunk_shots: int,
    retries: int,
    progress: Progress | None,
) -> None:
    if reservoir.frequency_hz.numel() != run.frequency_hz.numel() or not torch.allclose(
        reservoir.frequency_hz, run.frequency_hz, rtol=0, atol=1.0
    ):
        raise UserError(
            f"{run.path} was recorded on another analyzer grid "
            f"({run.frequency_hz.numel()} points); set the analyzer as in the first run"
        )
    scheduler = PerturbationScheduler(reservoir, retries=retries, chunk_size=chunk_shots)
    todo = run.todo()
    total = run.shots_total
    done = run.shots_done
    instrument_s = 0.0
    if progress is not None:
        progress(done, total, instrument_s)
    for start in range(0, todo.size, chunk_shots):
        index = todo[start : start + chunk_shots]
        out = scheduler.measure_shots(run.settings[torch.from_numpy(index)])
        if out.traces_dbm is None:
            raise UserError("this reservoir does not return traces; acquire needs them")
        run.write(index, out.traces_dbm, out.timestamps_s, out.instrument_time_s)
        done += index.size
        instrument_s += float(out.instrument_time_s.sum())
        if progress is not None:
            progress(done, total, instrument_s)
