"""`labpgt sim spectrum`: one simulated analyzer sweep of the ring, as a table and a plot."""

from __future__ import annotations

from pathlib import Path

import torch
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from labpgt.cli.tables import print_table
from labpgt.errors import UserError
from labpgt.setting_bounds import SettingBounds
from labpgt.sim.grid import AnalyzerGrid
from labpgt.sim.params import RingParams
from labpgt.sim.ring import RingModel
from labpgt.sim.spectrum import noise_floor_mw

_MAX_DRIVE_HZ = 50e9
_LINE_ABOVE_FLOOR_DB = 3.0


def spectrum(
    bias_a: float = typer.Option(1.8, "--bias-a", help="Bias current of the magnet, A."),
    drive_hz: float = typer.Option(2.07e9, "--drive-hz", help="Drive (generator) frequency, Hz."),
    drive_dbm: float = typer.Option(-10.0, "--drive-dbm", help="Drive (generator) power, dBm."),
    rf_off: bool = typer.Option(False, "--rf-off", help="Switch the drive off (free-running)."),
    center_hz: float = typer.Option(2.15e9, "--center-hz", help="Analyzer centre, Hz."),
    span_hz: float = typer.Option(300e6, "--span-hz", help="Analyzer span, Hz."),
    rbw_hz: float = typer.Option(300e3, "--rbw-hz", help="Analyzer resolution bandwidth, Hz."),
    points: int = typer.Option(1001, "--points", help="Trace points."),
    seed: int = typer.Option(0, "--seed", help="Seed of the ring's noise and drift."),
    no_noise: bool = typer.Option(False, "--no-noise", help="Noise-free trace (no jitter)."),
    top: int = typer.Option(10, "--top", min=1, max=100, help="How many lines to list."),
    plot: Path | None = typer.Option(None, "--plot", help="Write a plot of the trace (PNG)."),
) -> None:
    """Simulate one sweep of the ring and list its strongest lines."""
    _check_setting(bias_a, drive_hz, drive_dbm)
    try:
        grid = AnalyzerGrid(center_hz=center_hz, span_hz=span_hz, rbw_hz=rbw_hz, points=points)
    except ValidationError as exc:
        raise UserError(_first_error("analyzer", exc)) from None
    ring = RingModel(RingParams(noise=not no_noise), seed=seed)
    trace = ring.measure(drive_hz, drive_dbm, bias_a, grid, rf_on=not rf_off, settle_s=0.3)
    field_offset_oe, gain_offset_db = ring.drift_state
    with torch.no_grad():
        lines = ring.lines(
            drive_hz,
            drive_dbm,
            bias_a,
            rf_on=not rf_off,
            field_offset_oe=field_offset_oe,
            gain_offset_db=gain_offset_db,
        )
    floor_dbm = 10.0 * float(torch.log10(torch.tensor(noise_floor_mw(grid, ring.params))))
    console = Console()
    console.print(
        f"bias {bias_a:.4f} A -> field {float(ring.field_oe(bias_a)):.2f} Oe, "
        f"f_FMR {ring.fmr_hz(bias_a) / 1e9:.4f} GHz, mode spacing "
        f"{ring.mode_spacing_hz(bias_a) / 1e6:.3f} MHz; noise floor {floor_dbm:.1f} dBm; "
        f"sweep {trace.sweep_time_s * 1e3:.2f} ms"
    )
    print_table(console, _line_table(lines, drive_hz, rf_off, floor_dbm, top))
    if plot is not None:
        _plot(trace.frequency_hz, trace.power_dbm[0], drive_hz, rf_off, bias_a, drive_dbm, plot)
        console.print(f"plot written to {plot}")


def _check_setting(bias_a: float, drive_hz: float, drive_dbm: float) -> None:
    bounds = SettingBounds()
    lo, hi = bounds.bias_a
    if not lo <= bias_a <= hi:
        raise UserError(f"--bias-a {bias_a:g} A is outside the allowed range [{lo:g}, {hi:g}] A")
    if not 0 < drive_hz <= _MAX_DRIVE_HZ:
        raise UserError(
            f"--drive-hz {drive_hz:g} Hz must be positive and at most {_MAX_DRIVE_HZ:g} Hz"
        )
    lo, hi = bounds.drive_dbm
    if not lo <= drive_dbm <= hi:
        raise UserError(
            f"--drive-dbm {drive_dbm:g} dBm is outside the allowed range [{lo:g}, {hi:g}] dBm"
        )


def _first_error(what: str, exc: ValidationError) -> str:
    err = exc.errors()[0]
    field = ".".join(str(part) for part in err["loc"]) or what
    return f"{what} setting {field}: {err['msg']}"


def _line_table(lines, drive_hz: float, rf_off: bool, floor_dbm: float, top: int) -> Table:
    power = lines.power_dbm[0]
    order = torch.argsort(power, descending=True)
    table = Table(title="Strongest lines at the analyzer input")
    table.add_column("#", justify="right")
    table.add_column("kind")
    table.add_column("frequency (GHz)", justify="right")
    table.add_column("from drive (MHz)", justify="right")
    table.add_column("power (dBm)", justify="right")
    shown = 0
    for index in order.tolist():
        if shown >= top or float(power[index]) < floor_dbm + _LINE_ABOVE_FLOOR_DB:
            break
        kind = lines.kind[index]
        if kind == "drive" and rf_off:
            continue
        f_hz = float(lines.frequency_hz[0, index])
        shown += 1
        table.add_row(
            str(shown),
            kind,
            f"{f_hz / 1e9:.6f}",
            "-" if rf_off else f"{(f_hz - drive_hz) / 1e6:+.3f}",
            f"{float(power[index]):.2f}",
        )
    if shown == 0:
        table.caption = "no line above the noise floor (ring below threshold)"
    return table


def _plot(
    frequency_hz: torch.Tensor,
    power_dbm: torch.Tensor,
    drive_hz: float,
    rf_off: bool,
    bias_a: float,
    drive_dbm: float,
    path: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.plot(frequency_hz.numpy() / 1e9, power_dbm.numpy(), lw=0.8, label="analyzer trace")
    if not rf_off:
        ax.axvline(drive_hz / 1e9, color="tab:red", ls="--", lw=0.8, label="drive")
    drive_text = "RF off" if rf_off else f"drive {drive_hz / 1e9:.4f} GHz at {drive_dbm:g} dBm"
    ax.set_title(f"Simulated ring spectrum: bias {bias_a:g} A, {drive_text}")
    ax.set_xlabel("frequency (GHz)")
    ax.set_ylabel("power (dBm)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=120)
    except OSError as exc:
        raise UserError(f"cannot write plot {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)


def register(app: typer.Typer) -> None:
    from labpgt.cli.commands.sim import sim_app

    sim_app.command("spectrum")(spectrum)
