"""`labpgt show run.h5`: what an acquisition file holds, and a heat map of its traces."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from labpgt.catalog import inspect_run
from labpgt.cli.tables import print_table
from labpgt.errors import UserError
from labpgt.setting_bounds import SETTING_NAMES
from labpgt.storage import RunFile, write_failure

console = Console()

_MAX_PANELS = 6
_DISPLAY = {"drive_hz": (1e-9, "GHz"), "drive_dbm": (1.0, "dBm"), "bias_a": (1.0, "A")}
"""Scale and unit each setting is shown in."""
_LABEL = {"drive_hz": "drive frequency", "drive_dbm": "drive power", "bias_a": "bias current"}
_MAX_CURVES = 6
"""At most this many settings on a panel: one curve each; more make a heat map."""


def _fmt(name: str, value: float) -> str:
    scale, unit = _DISPLAY[name]
    return f"{value * scale:.6g} {unit}"


def _ranges(runs: list[int]) -> str:
    """[3, 4, 5, 9] -> '3-5, 9' (at most 8 ranges)."""
    out: list[str] = []
    start = prev = runs[0]
    for i in [*runs[1:], None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return ", ".join(out[:8]) + (f", ... ({len(out)} ranges)" if len(out) > 8 else "")


def _dict(value: object) -> dict:
    """`value` if it is a dict, else {} (a snapshot written by another version)."""
    return value if isinstance(value, dict) else {}


def summarise(run: RunFile) -> None:
    snap = run.snapshot
    table = Table(title=Text(str(run.path)), show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value")
    table.add_row("shots done", f"{run.shots_done} / {run.shots_total}")
    repeats = int(run.repeat_index.max()) + 1 if run.repeat_index.numel() else 0
    table.add_row("inputs x repeats", f"{run.inputs.shape[0]} x {repeats}")
    inputs = run.inputs.numpy()
    for col, name in enumerate(SETTING_NAMES):
        values = np.unique(inputs[:, col])
        text = (
            _fmt(name, values[0])
            if values.size == 1
            else f"{_fmt(name, values[0])} .. {_fmt(name, values[-1])} ({values.size} values)"
        )
        table.add_row(name, text)
    f = run.frequency_hz.numpy()
    table.add_row("analyzer axis", f"{f[0] / 1e9:.6g} .. {f[-1] / 1e9:.6g} GHz, {f.size} points")
    times = np.asarray(run.h5["shots/instrument_time_s"][...])
    table.add_row("instrument time", f"{np.nansum(times):.2f} s (shots done)")
    bench = _dict(_dict(snap.get("reservoir")).get("bench"))
    for role in ("generator", "analyzer", "supply"):
        ident = _dict(_dict(bench.get(role)).get("identity"))
        if ident:
            table.add_row(
                role,
                Text(
                    f"{ident.get('vendor')} {ident.get('model')} serial {ident.get('serial')} "
                    f"fw {ident.get('firmware')} ({bench[role].get('resource')})"
                ),
            )
    for key in ("labpgt_version", "seed", "command_line", "time_utc", "bench_file"):
        if snap.get(key) is not None:
            table.add_row(key, Text(str(snap[key])))
    meta = run.metadata
    for key in ("sample", "operator", "notes"):
        if meta.get(key):
            table.add_row(key, Text(str(meta[key])))
    extra = _dict(meta.get("extra"))
    if extra:
        table.add_row("metadata", Text(", ".join(f"{k}={v}" for k, v in extra.items())))
    if run.has_nexus:
        snaps = run.snapshots()
        changes = [s for s in snaps if s["reason"] == "change"]
        text = f"{len(snaps)} ({', '.join(s['reason'] for s in snaps)})"
        if changes:
            text += "; a fixed setting changed after shot " + ", ".join(
                str(s["shots_done"]) for s in changes
            )
        table.add_row("settings snapshots", Text(text))
    resumes = run.resumes
    if resumes:
        table.add_row("resumed", Text(json.dumps(resumes)[:2000]))
    failures = run.h5.attrs.get("shutdown_failures")
    if failures:
        table.add_row(Text("SHUTDOWN FAILED", style="bold red"), Text(str(failures)[:2000]))
    todo = run.todo()
    table.add_row("missing shots", "none" if todo.size == 0 else _ranges(todo.tolist()))
    print_table(console, table)


def _axes(run: RunFile) -> tuple[int, int | None]:
    """The swept settings: (y axis column, panel column or None), most values first."""
    counts = [np.unique(run.inputs[:, c].numpy()).size for c in range(len(SETTING_NAMES))]
    order = sorted(range(len(counts)), key=lambda c: -counts[c])
    panel = order[1] if counts[order[1]] > 1 else None
    return order[0], panel


def plot(run: RunFile, path: Path) -> None:
    """The mean spectrum of every setting against the most-swept setting (a heat map, or
    curves for a few settings), one panel per value of the next-most-swept one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mean = _mean_per_input(run)
    y_col, panel_col = _axes(run)
    inputs = run.inputs.numpy()
    panels = [None] if panel_col is None else list(np.unique(inputs[:, panel_col]))
    shown = panels[:_MAX_PANELS]
    fig, axes = plt.subplots(
        1, len(shown), figsize=(max(7.0, 5 * len(shown)), 5), squeeze=False, constrained_layout=True
    )
    finite = mean[np.isfinite(mean)]
    vmin, vmax = np.percentile(finite, [1, 99.9]) if finite.size else (-100.0, 0.0)
    image = None
    for ax, value in zip(axes[0], shown, strict=True):
        rows = (
            np.arange(inputs.shape[0])
            if value is None
            else np.flatnonzero(inputs[:, panel_col] == value)
        )
        rows = rows[np.argsort(inputs[rows, y_col], kind="stable")]
        panel_image = _plot_panel(ax, run, mean, rows, y_col, (vmin, vmax))
        image = panel_image if panel_image is not None else image
        if value is not None:
            name = SETTING_NAMES[panel_col]
            ax.set_title(f"{_LABEL[name]} {_fmt(name, value)}")
    if image is not None:
        fig.colorbar(image, ax=axes[0].tolist(), label="analyzer power (dBm)")
    title = (
        f"{run.path.name}: mean spectrum per setting\n(repeats averaged in dB; "
        f"{run.shots_done}/{run.shots_total} shots measured)"
    )
    if len(panels) > len(shown):
        title += f" (first {len(shown)} of {len(panels)} panels)"
    fig.suptitle(title)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _mean_per_input(run: RunFile) -> np.ndarray:
    """(inputs, points): the mean over repeats (in dB) per input; shots not yet done: NaN."""
    traces = run.traces().numpy().astype(np.float64)
    n_inputs = run.inputs.shape[0]
    sums = np.zeros((n_inputs, traces.shape[1]))
    counts = np.zeros(n_inputs)
    done = run.done
    idx = run.input_index.numpy()
    np.add.at(sums, idx[done], traces[done])
    np.add.at(counts, idx[done], 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums / counts[:, None]
    mean[counts == 0] = np.nan
    return mean


def _plot_panel(
    ax: Any,
    run: RunFile,
    mean: np.ndarray,
    rows: np.ndarray,
    y_col: int,
    limits: tuple[float, float],
) -> Any:
    """One panel: the `rows`' spectra as curves (a handful) or a heat map against the
    setting `y_col`; the heat map's image (for the colour bar), else None."""
    f_ghz = run.frequency_hz.numpy() / 1e9
    y_name = SETTING_NAMES[y_col]
    y_scale, y_unit = _DISPLAY[y_name]
    y = run.inputs.numpy()[rows, y_col] * y_scale
    image = None
    if rows.size <= _MAX_CURVES:
        # a handful of settings: their spectra as curves (a heat map would be a strip)
        for i, row in enumerate(rows):
            ax.plot(f_ghz, mean[row], lw=0.9, label=f"{_LABEL[y_name]} {y[i]:.6g} {y_unit}")
        ax.set_ylabel("analyzer power (dBm)")
        ax.legend(fontsize=8, loc="upper right")
        ax.grid(alpha=0.3)
    else:
        vmin, vmax = limits
        image = ax.pcolormesh(
            f_ghz, y, mean[rows], shading="nearest", cmap="magma", vmin=vmin, vmax=vmax
        )
        ax.set_ylabel(f"{_LABEL[y_name]} ({y_unit})")
    ax.set_xlabel("analyzer frequency (GHz)")
    return image


def show_command(
    path: Path = typer.Argument(..., help="Acquisition file (HDF5) written by labpgt acquire."),
    plot_path: Path | None = typer.Option(
        None,
        "--plot",
        help="Where to write the heat map of the traces against the swept setting "
        "(PNG; default: next to the run file, <run>.png).",
    ),
    no_plot: bool = typer.Option(False, "--no-plot", help="Print the summary only."),
) -> None:
    """Summarise an acquisition file and plot its traces as a heat map."""
    if no_plot and plot_path is not None:
        raise UserError("--plot and --no-plot exclude each other: give one")
    target = None
    if not no_plot:
        target = plot_path if plot_path is not None else Path(path).with_suffix(".png")
        _check_plot_target(target)
    _refuse_incomplete_calibration(path)
    with RunFile.open(path) as run:
        summarise(run)
        if target is not None:
            try:
                plot(run, target)
            except OSError as exc:
                raise UserError(f"--plot {target}: cannot write: {write_failure(exc)}") from None
            except ValueError as exc:
                raise UserError(f"--plot {target}: {' '.join(str(exc).split())}") from None
            console.print(Text(f"plot written to {target}"), highlight=False)


def _refuse_incomplete_calibration(path: Path) -> None:
    """A calibration that calibrate did not finish: say so (and how far it got) in one line."""
    entry = inspect_run(path)
    if entry.command == "calibrate" and entry.status in ("incomplete", "being written"):
        raise UserError(
            f"{path} is an incomplete calibration file ({entry.shots_done} of "
            f"{entry.shots_planned} shots measured; {entry.detail}): `labpgt view` shows them"
        )


def _check_plot_target(target: Path) -> None:
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise UserError(f"--plot {target}: folder {folder} does not exist")
    if target.is_dir():
        raise UserError(f"--plot {target} is a folder; give a file name such as run.png")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"--plot {target}: cannot write in {folder}: permission denied")


def register(app: typer.Typer) -> None:
    app.command("show")(show_command)
