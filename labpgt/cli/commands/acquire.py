"""`labpgt acquire`: record spectra for a set of settings into an HDF5 run file."""

from __future__ import annotations

import datetime as _dt
import math
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import Any

import torch
import typer
from rich.console import Console
from rich.text import Text

from labpgt.cli.bench_access import check_bench_file, open_reservoir
from labpgt.cli.options import META_OPTION, NOTES_OPTION, OPERATOR_OPTION, SAMPLE_OPTION
from labpgt.cli.progress import advance_to, make_progress, new_task
from labpgt.errors import MeasurementError, UserError
from labpgt.features import FeatureSpec
from labpgt.live.launch import LIVE_OPTION, start_live_view
from labpgt.reservoir import SettingBounds

console = Console(stderr=True)


def _bench_bounds(cfg: Any) -> SettingBounds:
    """Limits to check the settings against before any instrument is opened."""
    if cfg is None:
        return SettingBounds()
    lim = cfg.limits
    return SettingBounds(
        drive_hz=(lim.frequency_min_hz, lim.frequency_max_hz),
        drive_dbm=(lim.power_min_dbm, lim.power_max_dbm),
        bias_a=(lim.bias_min_a, lim.bias_max_a),
    )


def _check_out_folder(out: Path) -> None:
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise UserError(f"--out {out}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"--out {out}: cannot write in {folder}: permission denied")


def _grid(cfg: Any) -> tuple[int, float, float, float]:
    """(points, sweep time s, bias settle s, drive settle s) the run will use."""
    if cfg is None:
        from labpgt.instruments.bench_file import SettleConfig
        from labpgt.sim.grid import AnalyzerGrid

        grid, settle = AnalyzerGrid(), SettleConfig()
        span_hz, rbw_hz, points = grid.span_hz, grid.rbw_hz, grid.points
    else:
        d, settle = cfg.analyzer_defaults, cfg.settle
        span_hz, rbw_hz, points = d.span_hz, d.rbw_hz, d.points
    # A swept analyzer's sweep time, about 2.5 span / RBW^2 (the virtual bench's rule).
    return points, 2.5 * span_hz / rbw_hz**2, settle.bias_s, settle.drive_s


def acquire_command(
    out: Path = typer.Option(..., "--out", help="HDF5 run file to write (run.h5)."),
    bench: Path | None = typer.Option(
        None, "--bench", help="Bench file (TOML); default: the embedded virtual bench."
    ),
    inputs: Path | None = typer.Option(
        None, "--inputs", help="CSV of settings; header: any of drive_hz, drive_dbm, bias_a."
    ),
    sweep: list[str] = typer.Option(
        [],
        "--sweep",
        help='Swept setting, e.g. "drive_hz=2.0e9:2.3e9:301" (start:stop:count) or '
        '"bias_a=1.6,1.8"; several form a grid. Unswept: drive_hz 2.1e9 Hz, drive_dbm -10 dBm, '
        "bias_a 1.8 A.",
    ),
    repeats: int = typer.Option(1, "--repeats", min=1, help="Shots per setting (back to back)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the embedded virtual bench's ring."),
    resume: bool = typer.Option(False, "--resume", help="Finish an interrupted run in --out."),
    allow_bench_change: bool = typer.Option(
        False,
        "--allow-bench-change",
        help="With --resume: continue on a bench other than the one the file was recorded on "
        "(the change is recorded in the file).",
    ),
    no_noise: bool = typer.Option(
        False,
        "--no-noise",
        hidden=True,
        help="Embedded bench: deterministic ring (noise, drift, hysteresis off).",
    ),
    realtime: bool = typer.Option(
        False, "--realtime", hidden=True, help="Embedded bench: take the true sweep time."
    ),
    chunk: int = typer.Option(32, "--chunk", min=1, hidden=True, help="Shots per flush."),
    live: bool = LIVE_OPTION,
    sample: str | None = SAMPLE_OPTION,
    operator: str | None = OPERATOR_OPTION,
    notes: str | None = NOTES_OPTION,
    meta: list[str] = META_OPTION,
) -> None:
    """Record analyzer traces for every setting (and repeat) into an HDF5 file."""
    from labpgt.acquisition import (
        bench_identity,
        check_identity,
        check_resume,
        grid_inputs,
        parse_sweep,
        preflight,
        read_inputs_csv,
    )
    from labpgt.instruments.bench import ShutdownError
    from labpgt.storage import RunFile, parse_metadata

    metadata = parse_metadata(sample, operator, notes, meta)
    if resume and (sample or operator or notes or meta):
        raise UserError(
            "--sample/--operator/--notes/--meta describe a new run; the file being resumed "
            "keeps the metadata it was created with"
        )
    if inputs is not None and sweep:
        raise UserError("--inputs and --sweep exclude each other: give one")
    if inputs is None and not sweep and not resume:
        raise UserError("give the settings: --inputs settings.csv or --sweep name=start:stop:n")
    if allow_bench_change and not resume:
        raise UserError("--allow-bench-change goes with --resume")
    if out.exists() and not resume:
        raise UserError(f"{out} already exists: add --resume to finish it, or choose another --out")
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give a file name such as run.h5")
    if not resume:
        _check_out_folder(out)
    cfg = check_bench_file(bench) if bench is not None else None
    bounds = _bench_bounds(cfg)
    sweeps = [parse_sweep(s) for s in sweep]
    settings: torch.Tensor | None = None
    if inputs is not None:
        settings = read_inputs_csv(inputs, bounds)
    embedded = None if bench is not None else {"seed": seed, "noise": not no_noise}
    points, sweep_s, bias_s, drive_s = _grid(cfg)
    if resume:
        # Everything that can be checked before an instrument is opened: the file, the
        # settings and repeats, and the bench as far as its config tells.
        with RunFile.open(out) as run:
            wanted = settings
            if sweeps:
                if math.prod(s.count for s in sweeps) != run.inputs.shape[0]:
                    # refused by its size alone: a typo'd count is never allocated
                    wanted = torch.empty(0, 3, dtype=torch.float64)
                else:
                    wanted = grid_inputs(sweeps)
            check_resume(run, wanted, repeats)
            if not allow_bench_change:
                check_identity(run, bench_identity(None, bench_cfg=cfg, embedded=embedded), False)
            todo = int(run.todo().size)
            planned_total, planned_done = run.shots_total, run.shots_done
            plan = preflight(
                todo,
                1,
                run.frequency_hz.numel(),
                sweep_time_s=sweep_s,
                bias_s=bias_s,
                drive_s=drive_s,
                bias_values=int(torch.unique(run.settings[:, 2]).numel()),
                out=None,
            )
            console.print(
                Text(f"resume: {todo} of {run.shots_total} shots to measure; {plan.describe()}"),
                highlight=False,
                soft_wrap=True,
            )
            plan.check()
    else:
        if settings is None:
            n_inputs = math.prod(s.count for s in sweeps)
            bias = next((s.count for s in sweeps if s.name == "bias_a"), 1)
        else:
            n_inputs = settings.shape[0]
            bias = int(torch.unique(settings[:, 2]).numel())
        plan = preflight(
            n_inputs,
            repeats,
            points,
            sweep_time_s=sweep_s,
            bias_s=bias_s,
            drive_s=drive_s,
            bias_values=bias,
            out=out,
        )
        console.print(Text(plan.describe()), highlight=False, soft_wrap=True)
        plan.check()  # refused with the numbers before anything is allocated
        planned_total, planned_done = n_inputs * repeats, 0
        if sweeps:
            settings = grid_inputs(sweeps)
        assert settings is not None
        bounds.check(settings)  # refused here, before any instrument is even opened
    provenance = {
        "seed": seed,
        "command_line": shlex.join(["labpgt", *sys.argv[1:]]),
        "bench_file": str(bench) if bench else None,
        "bench_file_text": bench.read_text(encoding="utf-8") if bench else None,
        "embedded": {"noise": not no_noise, "realtime": realtime} if bench is None else None,
    }
    if live:
        start_live_view(out, "acquire")
    progress = make_progress(console)
    # The total is known now (the pre-flight counted it): the bar never shows 0/?.
    bar = new_task(progress, "acquire", planned_total, completed=planned_done)

    def report(done: int, total: int, instrument_s: float) -> None:
        advance_to(progress, bar, done, total, instrument_s=instrument_s)

    from labpgt.acquisition import acquire

    interrupted = False
    try:
        with open_reservoir(
            bench,
            FeatureSpec(bins=1),
            keep_traces=True,
            seed=seed,
            noise=not no_noise,
            hysteresis=not no_noise,
            realtime=realtime,
        ) as reservoir:
            bench_snapshot = reservoir.snapshot().get("bench")
            identity = bench_identity(bench_snapshot, embedded=embedded)
            if resume:  # the instruments' *IDN? too, before the progress bar starts
                with RunFile.open(out) as run:
                    check_identity(run, identity, allow_bench_change)
            try:
                with progress:
                    run = acquire(
                        reservoir,
                        out,
                        settings,
                        repeats=repeats,
                        resume=resume,
                        provenance=provenance,
                        sweeps=sweeps,
                        chunk_shots=chunk,
                        progress=report,
                        identity=identity,
                        allow_bench_change=allow_bench_change,
                        metadata=metadata,
                    )
            except KeyboardInterrupt:
                interrupted = True  # the bench's handler has said so on screen already
            except MeasurementError as exc:
                raise UserError(_kept(out, exc)) from None
    except ShutdownError as exc:
        _record_shutdown_failure(out, exc)
        raise
    if interrupted:
        if out.exists():
            console.print(
                Text.assemble(
                    ("interrupted", "yellow"), f": {out} is valid; finish it with --resume"
                )
            )
        else:
            console.print(
                Text.assemble(("interrupted", "yellow"), ": no shot was measured; no file kept")
            )
        # SystemExit, not KeyboardInterrupt: typer's non-standalone main turns a
        # KeyboardInterrupt into a *returned* 130 that the entry point drops (exit 0).
        raise SystemExit(130)
    console.print(
        Text(
            f"wrote {out}: {run.shots_done}/{run.shots_total} shots, "
            f"{run.frequency_hz.numel()} points each"
        ),
        highlight=False,
    )


def _kept(out: Path, exc: Exception) -> str:
    if out.exists():
        return f"{exc}; {out} keeps every shot so far, finish with --resume"
    return f"{exc}; no shot was measured, so no file was kept"


def _record_shutdown_failure(out: Path, exc: Exception) -> None:
    """Note the failed shutdown in the run file (best effort: the report matters more)."""
    from labpgt.storage import RunFile

    if not out.is_file():
        return
    entry = {
        "time_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "failures": [f.as_dict() for f in getattr(exc, "failures", [])],
        "during": None if exc.__cause__ is None else " ".join(str(exc.__cause__).split()),
    }
    # SIGTERM waits until the record is written (the file must not be cut mid-write).
    blocked = _block_sigterm()
    try:
        with RunFile.open(out, writable=True) as run:
            run.add_record("shutdown_failures", entry)
    except (UserError, OSError) as record_error:
        console.print(Text(f"(could not record the failure in {out}: {record_error})"))
    finally:
        if blocked:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def _block_sigterm() -> bool:
    if not hasattr(signal, "pthread_sigmask"):
        return False
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    return True


def register(app: typer.Typer) -> None:
    app.command("acquire")(acquire_command)
