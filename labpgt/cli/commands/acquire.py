"""`labpgt acquire`: record spectra for a set of settings into an HDF5 run file."""

from __future__ import annotations

import datetime as _dt
import math
import os
import shlex
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import torch
import typer
from rich.console import Console
from rich.text import Text

from labpgt.benches import check_bench_file, open_bench
from labpgt.cli.options import (
    META_OPTION,
    NOTES_OPTION,
    OPERATOR_OPTION,
    SAMPLE_OPTION,
    takes_options,
)
from labpgt.encoding import DEFAULT_SETTING
from labpgt.errors import MeasurementError, UserError
from labpgt.features import FeatureSpec
from labpgt.live.launch import LIVE_OPTION, start_live_view
from labpgt.progress import advance_to, make_progress, new_task
from labpgt.setting_bounds import SETTING_UNITS, SettingBounds

console = Console(stderr=True)
_UNSWEPT = ", ".join(
    f"{name} {value:g} {SETTING_UNITS[name]}" for name, value in DEFAULT_SETTING.items()
)


def _bench_bounds(cfg: Any) -> SettingBounds:
    """Limits to check the settings against before any instrument is opened."""
    if cfg is None:
        return SettingBounds()
    return SettingBounds.from_limits(cfg.limits)


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


@dataclass(frozen=True)
class AcquireOptions:
    """The options of `labpgt acquire` (each field's default is its typer declaration)."""

    out: Path = typer.Option(..., "--out", help="HDF5 run file to write (run.h5).")
    bench: Path | None = typer.Option(
        None, "--bench", help="Bench file (TOML); default: the embedded virtual bench."
    )
    inputs: Path | None = typer.Option(
        None, "--inputs", help="CSV of settings; header: any of drive_hz, drive_dbm, bias_a."
    )
    sweep: list[str] = typer.Option(
        [],
        "--sweep",
        help='Swept setting, e.g. "drive_hz=2.0e9:2.3e9:301" (start:stop:count) or '
        f'"bias_a=1.6,1.8"; several form a grid. Unswept: {_UNSWEPT}.',
    )
    repeats: int = typer.Option(1, "--repeats", min=1, help="Shots per setting (back to back).")
    seed: int = typer.Option(0, "--seed", help="Seed of the embedded virtual bench's ring.")
    resume: bool = typer.Option(False, "--resume", help="Finish an interrupted run in --out.")
    allow_bench_change: bool = typer.Option(
        False,
        "--allow-bench-change",
        help="With --resume: continue on a bench other than the one the file was recorded on "
        "(the change is recorded in the file).",
    )
    no_noise: bool = typer.Option(
        False,
        "--no-noise",
        hidden=True,
        help="Embedded bench: deterministic ring (noise, drift, hysteresis off).",
    )
    realtime: bool = typer.Option(
        False, "--realtime", hidden=True, help="Embedded bench: take the true sweep time."
    )
    chunk: int = typer.Option(32, "--chunk", min=1, hidden=True, help="Shots per flush.")
    live: bool = LIVE_OPTION
    sample: str | None = SAMPLE_OPTION
    operator: str | None = OPERATOR_OPTION
    notes: str | None = NOTES_OPTION
    meta: list[str] = META_OPTION


@dataclass
class _ShotPlan:
    """The shots a run will take, checked before any instrument is opened."""

    settings: torch.Tensor | None
    """Every input setting (None on --resume without --inputs: the file has them)."""
    sweeps: list[Any]
    shots_total: int
    shots_done: int
    embedded: dict[str, Any] | None
    """The embedded bench's seed and noise switch (None with --bench)."""
    metadata: Any
    """The new run's RunMetadata: the command line's, completed by the bench file's table."""
    bench_config: Any
    """The bench file as loaded for the checks (None: the embedded bench); opened as is."""


@takes_options(AcquireOptions)
def acquire_command(**values: Any) -> None:
    """Record analyzer traces for every setting (and repeat) into an HDF5 file."""
    options = AcquireOptions(**values)
    metadata = _check_flags(options)
    plan = _plan(options, metadata)
    if options.live:
        start_live_view(options.out, "acquire")
    run = _record(options, plan, plan.metadata)
    if run is None:
        _exit_interrupted(options.out)
    console.print(
        Text(
            f"wrote {options.out}: {run.shots_done}/{run.shots_total} shots, "
            f"{run.frequency_hz.numel()} points each"
        ),
        highlight=False,
    )


def _check_flags(options: AcquireOptions) -> dict[str, Any]:
    """Refuse flags that contradict each other or the --out file; the run's metadata."""
    from labpgt.storage import parse_metadata

    o = options
    metadata = parse_metadata(o.sample, o.operator, o.notes, o.meta)
    if o.resume and (o.sample or o.operator or o.notes or o.meta):
        raise UserError(
            "--sample/--operator/--notes/--meta describe a new run; the file being resumed "
            "keeps the metadata it was created with"
        )
    if o.inputs is not None and o.sweep:
        raise UserError("--inputs and --sweep exclude each other: give one")
    if o.inputs is None and not o.sweep and not o.resume:
        raise UserError("give the settings: --inputs settings.csv or --sweep name=start:stop:n")
    if o.allow_bench_change and not o.resume:
        raise UserError("--allow-bench-change goes with --resume")
    if o.out.exists() and not o.resume:
        raise UserError(
            f"{o.out} already exists: add --resume to finish it, or choose another --out"
        )
    if o.out.is_dir():
        raise UserError(f"--out {o.out} is a folder; give a file name such as run.h5")
    if not o.resume:
        _check_out_folder(o.out)
    return metadata


def _plan(options: AcquireOptions, metadata: Any) -> _ShotPlan:
    """Read the bench file, the sweeps and the inputs; plan the run and refuse it, with
    the numbers, when it cannot fit (before anything is allocated or opened)."""
    from labpgt.acquisition import parse_sweep, read_inputs_csv
    from labpgt.storage import with_bench_metadata

    cfg = check_bench_file(options.bench) if options.bench is not None else None
    if cfg is not None and not options.resume:
        metadata = with_bench_metadata(metadata, dict(cfg.metadata))
    bounds = _bench_bounds(cfg)
    sweeps = [parse_sweep(s) for s in options.sweep]
    settings = read_inputs_csv(options.inputs, bounds) if options.inputs is not None else None
    embedded = (
        None if options.bench is not None else {"seed": options.seed, "noise": not options.no_noise}
    )
    plan = _ShotPlan(settings, sweeps, 0, 0, embedded, metadata, cfg)
    if options.resume:
        _plan_resume(options, plan, cfg)
    else:
        _plan_new(options, plan, cfg, bounds)
    return plan


def _plan_resume(options: AcquireOptions, plan: _ShotPlan, cfg: Any) -> None:
    """Everything that can be checked before an instrument is opened: the file, the
    settings and repeats, and the bench as far as its config tells."""
    from labpgt.acquisition import (
        check_identity,
        check_resume,
        grid_inputs,
        preflight,
        resume_identity,
    )
    from labpgt.storage import RunFile

    _, sweep_s, bias_s, drive_s = _grid(cfg)
    with RunFile.open(options.out) as run:
        wanted = plan.settings
        if plan.sweeps:
            if math.prod(s.count for s in plan.sweeps) != run.inputs.shape[0]:
                # refused by its size alone: a typo'd count is never allocated
                wanted = torch.empty(0, 3, dtype=torch.float64)
            else:
                wanted = grid_inputs(plan.sweeps)
        check_resume(run, wanted, options.repeats)
        if not options.allow_bench_change:
            identity = resume_identity(None, bench_cfg=cfg, embedded=plan.embedded)
            check_identity(run, identity, False)
        todo = int(run.todo().size)
        plan.shots_total, plan.shots_done = run.shots_total, run.shots_done
        preflight_plan = preflight(
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
            Text(
                f"resume: {todo} of {run.shots_total} shots to measure; {preflight_plan.describe()}"
            ),
            highlight=False,
            soft_wrap=True,
        )
        preflight_plan.check()


def _plan_new(options: AcquireOptions, plan: _ShotPlan, cfg: Any, bounds: SettingBounds) -> None:
    """The size and duration of a new run, refused with the numbers before anything is
    allocated; then every setting, checked against the bench's limits."""
    from labpgt.acquisition import grid_inputs, preflight

    points, sweep_s, bias_s, drive_s = _grid(cfg)
    if plan.settings is None:
        n_inputs = math.prod(s.count for s in plan.sweeps)
        bias = next((s.count for s in plan.sweeps if s.name == "bias_a"), 1)
    else:
        n_inputs = plan.settings.shape[0]
        bias = int(torch.unique(plan.settings[:, 2]).numel())
    preflight_plan = preflight(
        n_inputs,
        options.repeats,
        points,
        sweep_time_s=sweep_s,
        bias_s=bias_s,
        drive_s=drive_s,
        bias_values=bias,
        out=options.out,
    )
    console.print(Text(preflight_plan.describe()), highlight=False, soft_wrap=True)
    preflight_plan.check()  # refused with the numbers before anything is allocated
    plan.shots_total, plan.shots_done = n_inputs * options.repeats, 0
    if plan.sweeps:
        plan.settings = grid_inputs(plan.sweeps)
    assert plan.settings is not None
    bounds.check(plan.settings)  # refused here, before any instrument is even opened


def _provenance(options: AcquireOptions) -> dict[str, Any]:
    """How the run was made: seed, command line, the bench file and its text."""
    bench = options.bench
    return {
        "seed": options.seed,
        "command_line": shlex.join(["labpgt", *sys.argv[1:]]),
        "bench_file": str(bench) if bench else None,
        "bench_file_text": bench.read_text(encoding="utf-8") if bench else None,
        "embedded": (
            {"noise": not options.no_noise, "realtime": options.realtime} if bench is None else None
        ),
    }


def _record(options: AcquireOptions, plan: _ShotPlan, metadata: dict[str, Any]) -> Any:
    """Open the bench, check it is the file's (on --resume) and measure every shot with a
    progress bar; the run file, or None when Ctrl-C stopped it."""
    from labpgt.acquisition import acquire, check_identity, resume_identity
    from labpgt.instruments.bench import ShutdownError
    from labpgt.storage import RunFile

    o, out = options, options.out
    provenance = _provenance(options)
    progress = make_progress(console)
    # The total is known now (the pre-flight counted it): the bar never shows 0/?.
    bar = new_task(progress, "acquire", plan.shots_total, completed=plan.shots_done)

    def report(done: int, total: int, instrument_s: float) -> None:
        advance_to(progress, bar, done, total, instrument_s=instrument_s)

    try:
        with open_bench(
            plan.bench_config,
            FeatureSpec(bins=1),
            keep_traces=True,
            seed=o.seed,
            noise=not o.no_noise,
            hysteresis=not o.no_noise,
            realtime=o.realtime,
        ) as reservoir:
            identity = resume_identity(reservoir.snapshot(), embedded=plan.embedded)
            if o.resume:  # the instruments' *IDN? too, before the progress bar starts
                with RunFile.open(out) as run:
                    check_identity(run, identity, o.allow_bench_change)
            try:
                with progress:
                    return acquire(
                        reservoir,
                        out,
                        plan.settings,
                        repeats=o.repeats,
                        resume=o.resume,
                        provenance=provenance,
                        sweeps=plan.sweeps,
                        chunk_shots=o.chunk,
                        progress=report,
                        identity=identity,
                        allow_bench_change=o.allow_bench_change,
                        metadata=metadata,
                    )
            except KeyboardInterrupt:
                return None  # the bench's handler has said so on screen already
            except MeasurementError as exc:
                raise UserError(_kept(out, exc)) from None
    except ShutdownError as exc:
        _record_shutdown_failure(out, exc)
        raise


def _exit_interrupted(out: Path) -> NoReturn:
    """Say what an interrupted run left behind; exit 130."""
    if out.exists():
        console.print(
            Text.assemble(("interrupted", "yellow"), f": {out} is valid; finish it with --resume")
        )
    else:
        console.print(
            Text.assemble(("interrupted", "yellow"), ": no shot was measured; no file kept")
        )
    # SystemExit, not KeyboardInterrupt: typer's non-standalone main turns a
    # KeyboardInterrupt into a *returned* 130 that the entry point drops (exit 0).
    raise SystemExit(130)


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
