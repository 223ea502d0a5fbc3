"""`labpgt acquire`: record spectra for a set of settings into an HDF5 run file."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import torch
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from labpgt.cli.bench import open_reservoir
from labpgt.errors import MeasurementError, UserError
from labpgt.features import FeatureSpec
from labpgt.reservoir import SettingBounds

console = Console(stderr=True)


def _bench_bounds(bench_path: Path | None) -> SettingBounds:
    """Limits to check the settings against before any instrument is opened."""
    if bench_path is None:
        return SettingBounds()
    from labpgt.instruments.bench import load_bench
    from labpgt.instruments.errors import InstrumentsError

    if not bench_path.is_file():
        raise UserError(f"--bench: file {bench_path} does not exist")
    try:
        lim = load_bench(bench_path).limits
    except InstrumentsError as exc:
        raise UserError(f"--bench {bench_path}: {exc}") from None
    return SettingBounds(
        drive_hz=(lim.frequency_min_hz, lim.frequency_max_hz),
        drive_dbm=(lim.power_min_dbm, lim.power_max_dbm),
        bias_a=(lim.bias_min_a, lim.bias_max_a),
    )


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
) -> None:
    """Record analyzer traces for every setting (and repeat) into an HDF5 file."""
    from labpgt.acquire import acquire, grid_inputs, parse_sweep, read_inputs_csv

    if inputs is not None and sweep:
        raise UserError("--inputs and --sweep exclude each other: give one")
    if inputs is None and not sweep and not resume:
        raise UserError("give the settings: --inputs settings.csv or --sweep name=start:stop:n")
    if out.exists() and not resume:
        raise UserError(f"{out} already exists: add --resume to finish it, or choose another --out")
    bounds = _bench_bounds(bench)
    sweeps = [parse_sweep(s) for s in sweep]
    settings: torch.Tensor | None = None
    if inputs is not None:
        settings = read_inputs_csv(inputs, bounds)
    elif sweeps:
        settings = grid_inputs(sweeps)
    if settings is not None:
        bounds.check(settings)  # refused here, before any instrument is even opened
    provenance = {
        "seed": seed,
        "command_line": shlex.join(["labpgt", *sys.argv[1:]]),
        "bench_file": str(bench) if bench else None,
        "bench_file_text": bench.read_text() if bench else None,
        "embedded": {"noise": not no_noise, "realtime": realtime} if bench is None else None,
    }
    progress = Progress(
        TextColumn("[bold]acquire"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("shots"),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
    )
    bar = progress.add_task("acquire", total=None, info="")
    state = {"start_done": None}

    def report(done: int, total: int, instrument_s: float) -> None:
        if state["start_done"] is None:
            state["start_done"] = done
        measured = done - state["start_done"]
        eta = (total - done) * instrument_s / measured if measured else float("nan")
        info = f"instrument {instrument_s:7.1f} s  ETA {eta:7.1f} s (instrument time)"
        progress.update(bar, completed=done, total=total, info=info)

    with open_reservoir(
        bench,
        FeatureSpec(bins=1),
        keep_traces=True,
        seed=seed,
        noise=not no_noise,
        hysteresis=not no_noise,
        realtime=realtime,
    ) as reservoir:
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
                )
        except KeyboardInterrupt:
            console.print(f"[yellow]interrupted[/yellow]: {out} is valid; finish it with --resume")
            # SystemExit, not KeyboardInterrupt: typer's non-standalone main turns a
            # KeyboardInterrupt into a *returned* 130 that the entry point drops (exit 0).
            raise SystemExit(130) from None
        except MeasurementError as exc:
            raise UserError(f"{exc}; {out} keeps every shot so far, finish with --resume") from None
    console.print(
        f"wrote {out}: {run.shots_done}/{run.shots_total} shots, "
        f"{run.frequency_hz.numel()} points each"
    )


def register(app: typer.Typer) -> None:
    app.command("acquire")(acquire_command)
