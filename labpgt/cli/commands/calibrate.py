"""`labpgt calibrate`: response curves, operating point, noise, drift check and surrogate."""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from labpgt.benches import open_bench
from labpgt.cli.options import META_OPTION, NOTES_OPTION, OPERATOR_OPTION, SAMPLE_OPTION
from labpgt.cli.tables import print_table
from labpgt.errors import MeasurementError, UserError
from labpgt.features import FeatureSpec
from labpgt.instruments.bench_file import BenchConfig
from labpgt.live.launch import LIVE_OPTION, start_live_view
from labpgt.progress import advance_to, make_progress, new_task
from labpgt.reservoir import PhysicalReservoir

if TYPE_CHECKING:
    from labpgt.calibration.measured import CalibrationWriter

console = Console(stderr=True)

GRIDS = ("default", "small")
SURROGATE_KINDS = ("grey-box", "twin")  # calibration.run.SURROGATE_KINDS (not imported: slow)
WINDOWS = ("calm", "sensitivity")  # calibration.run.WINDOWS


@contextmanager
def _open_reservoir(
    bench: Path | BenchConfig | None,
    *,
    seed: int,
    features: FeatureSpec,
    noise: bool,
    hysteresis: bool,
    inject_drift_oe: float,
    inject_drift_db: float,
    fast_sim: bool = False,
) -> Iterator[PhysicalReservoir]:
    """`open_reservoir`, with a drift injected into the embedded ring when asked (tests).

    ``fast_sim``: the in-process simulated ring that `labpgt train --fast-sim` and the
    study train on (no instruments), so a calibration of it serves their runs.
    """
    if bench is not None and (inject_drift_oe or inject_drift_db):
        raise UserError("--inject-drift-oe/--inject-drift-db need the embedded virtual bench")
    if fast_sim:
        if bench is not None:
            raise UserError("--fast-sim and --bench exclude each other: choose one ring")
        if inject_drift_oe or inject_drift_db:
            raise UserError("--inject-drift-oe/--inject-drift-db need the embedded virtual bench")
        from labpgt.sim.params import RingParams
        from labpgt.sim.ring import RingModel
        from labpgt.simulated_reservoir import SimulatedReservoir

        params = RingParams(noise=noise, drift=noise, hysteresis=hysteresis)
        yield SimulatedReservoir(RingModel(params, seed=seed), features=features)
        return

    def inject(reservoir: PhysicalReservoir) -> None:
        if inject_drift_oe or inject_drift_db:
            reservoir.virtual_bench.ring.inject_drift(  # type: ignore[attr-defined]
                field_oe=inject_drift_oe, gain_db=inject_drift_db
            )

    with open_bench(
        bench,
        features,
        seed=seed,
        noise=noise,
        hysteresis=hysteresis,
        prepare_embedded=inject,
    ) as reservoir:
        yield reservoir


FIT_STAGES = ("surrogate fit",)
"""Stages that count fit steps on this computer, not shots on the bench."""


# The options of `labpgt calibrate`.
OUT_OPTION = typer.Option(None, "--out", help="Calibration file to write (calib.h5).")
BENCH_OPTION = typer.Option(
    None, "--bench", help="Bench file (TOML); default: the embedded virtual bench."
)
CHECK_OPTION = typer.Option(
    None,
    "--check",
    help="Re-measure the reference settings of this calibration file and report drift.",
)
TOLERANCE_MHZ_OPTION = typer.Option(
    1.0, "--tolerance-mhz", help="--check: allowed frequency drift, MHz."
)
TOLERANCE_DB_OPTION = typer.Option(1.0, "--tolerance-db", help="--check: allowed level drift, dB.")
GRID_OPTION = typer.Option(
    "default", "--grid", help="Calibration grid: 'default' or 'small' (≈1/5 of the shots)."
)
BINS_OPTION = typer.Option(
    16, "--bins", min=1, help="Features over the analyzer span (as labpgt train --bins)."
)
FEATURES_OPTION = typer.Option(
    "kernel", "--features", help="Feature map: kernel | bins (as labpgt train --features)."
)
SEED_OPTION = typer.Option(0, "--seed", help="Seed of the embedded bench's ring and the fit.")
PLOTS_OPTION = typer.Option(True, "--plots/--no-plots", help="Write the calibration plots.")
SURROGATE_STEPS_OPTION = typer.Option(
    3000, "--surrogate-steps", min=10, help="Adam steps of the surrogate fit."
)
SURROGATE_OPTION = typer.Option(
    "grey-box",
    "--surrogate",
    help="Surrogate kind: 'grey-box' (drive line + MLP) or 'twin' (ring model, fitted).",
)
WINDOW_OPTION = typer.Option(
    "calm",
    "--window",
    help="Drive window: 'calm' (drive leaves the comb alone) or 'sensitivity' (locking zone).",
)
FAST_SIM_OPTION = typer.Option(
    False,
    "--fast-sim",
    help="Calibrate the in-process simulated ring (as labpgt train --fast-sim).",
)
NO_NOISE_OPTION = typer.Option(
    False, "--no-noise", hidden=True, help="Embedded bench: no noise and no drift."
)
NO_HYSTERESIS_OPTION = typer.Option(
    False, "--no-hysteresis", hidden=True, help="Embedded bench: magnet without remanence."
)
INJECT_DRIFT_OE_OPTION = typer.Option(
    0.0,
    "--inject-drift-oe",
    hidden=True,
    help="Embedded bench: field step before measuring, Oe.",
)
INJECT_DRIFT_DB_OPTION = typer.Option(
    0.0,
    "--inject-drift-db",
    hidden=True,
    help="Embedded bench: gain step before measuring, dB.",
)


def calibrate_command(
    out: Path | None = OUT_OPTION,
    bench: Path | None = BENCH_OPTION,
    check: Path | None = CHECK_OPTION,
    tolerance_mhz: float = TOLERANCE_MHZ_OPTION,
    tolerance_db: float = TOLERANCE_DB_OPTION,
    grid: str = GRID_OPTION,
    bins: int = BINS_OPTION,
    features: str = FEATURES_OPTION,
    seed: int = SEED_OPTION,
    plots: bool = PLOTS_OPTION,
    surrogate_steps: int = SURROGATE_STEPS_OPTION,
    surrogate: str = SURROGATE_OPTION,
    window: str = WINDOW_OPTION,
    fast_sim: bool = FAST_SIM_OPTION,
    no_noise: bool = NO_NOISE_OPTION,
    no_hysteresis: bool = NO_HYSTERESIS_OPTION,
    inject_drift_oe: float = INJECT_DRIFT_OE_OPTION,
    inject_drift_db: float = INJECT_DRIFT_DB_OPTION,
    live: bool = LIVE_OPTION,
    sample: str | None = SAMPLE_OPTION,
    operator: str | None = OPERATOR_OPTION,
    notes: str | None = NOTES_OPTION,
    meta: list[str] = META_OPTION,
) -> None:
    """Calibrate the ring (--out), or check a calibration for drift (--check)."""
    from labpgt.storage import parse_metadata

    metadata = parse_metadata(sample, operator, notes, meta)
    if (out is None) == (check is None):
        raise UserError("give exactly one of --out calib.h5 (calibrate) or --check calib.h5")
    _check_choices(grid, tolerance_mhz, tolerance_db, surrogate, window)
    sim = {
        "seed": seed,
        "noise": not no_noise,
        "hysteresis": not no_hysteresis,
        "inject_drift_oe": inject_drift_oe,
        "inject_drift_db": inject_drift_db,
        "fast_sim": fast_sim,
    }
    if check is not None:
        if sample or operator or notes or meta:
            raise UserError("--sample/--operator/--notes/--meta go with --out (a new calibration)")
        _check(check, bench, tolerance_mhz, tolerance_db, sim)
        return
    assert out is not None
    if live and not out.exists():  # (an existing --out is refused by _calibrate)
        start_live_view(out, "calibration")
    _calibrate(
        out,
        bench,
        grid,
        _feature_spec(features, bins),
        plots,
        surrogate_steps,
        sim,
        surrogate,
        window,
        metadata,
    )


def _check_choices(
    grid: str, tolerance_mhz: float, tolerance_db: float, surrogate: str, window: str
) -> None:
    """Refuse, in one line, a choice the options do not offer."""
    if grid not in GRIDS:
        raise UserError(f"--grid must be one of {', '.join(GRIDS)}; got {grid!r}")
    if tolerance_mhz <= 0 or tolerance_db <= 0:
        raise UserError("--tolerance-mhz and --tolerance-db must be > 0")
    if surrogate not in SURROGATE_KINDS:
        raise UserError(
            f"--surrogate must be one of {', '.join(SURROGATE_KINDS)}; got {surrogate!r}"
        )
    if window not in WINDOWS:
        raise UserError(f"--window must be one of {', '.join(WINDOWS)}; got {window!r}")


def _feature_spec(kind: str, bins: int) -> FeatureSpec:
    if kind not in ("kernel", "bins"):
        raise UserError(f"--features {kind!r}: valid maps are kernel, bins")
    return FeatureSpec(kind=kind, bins=bins)


def _calibrate(
    out: Path,
    bench: Path | None,
    grid: str,
    features: FeatureSpec,
    plots: bool,
    surrogate_steps: int,
    sim: dict,
    surrogate_kind: str = "grey-box",
    window: str = "calm",
    metadata: object = None,
) -> None:
    from labpgt.calibration.measured import CalibrationWriter
    from labpgt.calibration.plan import CalibrationPlan
    from labpgt.calibration.surrogate import SurrogateConfig
    from labpgt.records import RunMetadata

    if out.exists():
        raise UserError(f"--out {out} already exists: choose another file or delete it")
    bench_cfg = None
    if bench is not None:  # loaded once: its metadata here, its instruments below
        from labpgt.benches import check_bench_file
        from labpgt.storage import with_bench_metadata

        bench_cfg = check_bench_file(bench)
        if isinstance(metadata, RunMetadata):
            metadata = with_bench_metadata(metadata, dict(bench_cfg.metadata))
    if not out.parent.is_dir():
        raise UserError(f"--out: directory {out.parent} does not exist")
    plan = CalibrationPlan() if grid == "default" else CalibrationPlan.reduced()
    cfg = SurrogateConfig(steps=surrogate_steps, seed=sim["seed"])
    provenance = {
        "command_line": shlex.join(["labpgt", *sys.argv[1:]]),
        "bench_file": str(bench) if bench else None,
        "bench_file_text": bench.read_text() if bench and bench.is_file() else None,
        "embedded": sim if bench is None else None,
        "grid": grid,
        "surrogate_kind": surrogate_kind,
        "window": window,
    }
    meta = metadata if isinstance(metadata, RunMetadata) else RunMetadata()
    with _open_reservoir(bench_cfg, features=features, **_sim_kwargs(sim)) as reservoir:
        writer = CalibrationWriter.create(
            out,
            plan,
            frequency_hz=reservoir.frequency_hz,
            feature_names=list(reservoir.feature_names),
            snapshot=reservoir.snapshot(),
            provenance=provenance,
            metadata=meta,
        )
        with _stopping(writer):
            result, maps = _measure(reservoir, features, plan, cfg, surrogate_kind, window, writer)
    with _stopping(writer):
        writer.finish(result, provenance, meta)
    _store_maps(out, maps, features)
    _print_summary(out, result, maps, features, window)
    if plots:
        _write_plots(result, out)


@contextmanager
def _stopping(writer: CalibrationWriter) -> Iterator[None]:
    """On any failure (Ctrl-C included), mark the calibration file stopped and say so; a file
    with no shot measured is removed."""
    try:
        yield
    except BaseException as exc:
        why = "interrupted (Ctrl-C)" if isinstance(exc, KeyboardInterrupt) else str(exc)
        why = " ".join(why.split())[:300] or type(exc).__name__
        done = writer.shots_done if writer.h5.id.valid else 0
        writer.stop(why)
        if done == 0:
            writer.path.unlink(missing_ok=True)
        else:
            console.print(
                Text(
                    f"calibration stopped: {writer.path} keeps the {done} shots measured, "
                    "marked incomplete (labpgt runs / view / show read it)"
                ),
                highlight=False,
            )
        raise


def _measure(
    reservoir: PhysicalReservoir,
    features: FeatureSpec,
    plan: object,
    cfg: object,
    surrogate_kind: str,
    window: str,
    writer: CalibrationWriter,
) -> tuple:
    """The calibration stages (each chunk of shots written to ``writer`` as it is
    measured) and the feature-map walk, under one progress display."""
    from labpgt.calibration.run import run_calibration

    progress = make_progress(console)
    tasks: dict[str, int] = {}

    def report(stage: str, done: int, total: int, instrument_s: float) -> None:
        fit = stage in FIT_STAGES
        if stage not in tasks:
            tasks[stage] = new_task(
                progress,
                f"{stage:<18}",
                total,
                unit="steps" if fit else "shots",
                instrument_s=None if fit else 0.0,
            )
        advance_to(
            progress, tasks[stage], done, total, **({} if fit else {"instrument_s": instrument_s})
        )

    try:
        with progress:
            result = run_calibration(
                reservoir,
                plan,  # type: ignore[arg-type]
                surrogate_config=cfg,  # type: ignore[arg-type]
                progress=report,
                surrogate_kind=surrogate_kind,
                window=window,
                recorder=writer,
            )
            maps_task = new_task(
                progress, f"{'feature maps':<18}", 1, unit="walk", instrument_s=None
            )
            maps = _assess_maps(reservoir, features)
            advance_to(progress, maps_task, 1)
    except MeasurementError as exc:
        raise UserError(f"calibration failed: {exc}") from None
    return result, maps


def _print_summary(
    out: Path, result: object, maps: list, features: FeatureSpec, window: str
) -> None:
    """The figures of the calibration, then the feature maps measured."""
    from labpgt.calibration.feature_maps import choose_map
    from labpgt.calibration.store import summary_of

    table = Table(title=f"calibration → {out}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    chosen = choose_map(maps, features)
    rows = _summary_rows(summary_of(result), result.operating, window)  # type: ignore[arg-type, attr-defined]
    rows.append(("feature map in use", features.describe()))
    rows.append(("feature map chosen by the measurements", chosen.name))
    for k, v in rows:
        table.add_row(k, v)
    print_table(Console(), table)
    maps_table = Table(title="feature maps, measured on one walk of the drive frequency")
    for col in ("map", "smoothness", "SNR dB", "rank", "diversity"):
        maps_table.add_column(col, justify="left" if col == "map" else "right")
    for a in maps:
        maps_table.add_row(
            a.name + (" (chosen)" if a is chosen else ""),
            f"{a.smoothness:.3f}",
            f"{a.snr_db:.1f}",
            f"{a.rank}/{a.features}",
            f"{a.diversity:.2f}",
        )
    print_table(Console(), maps_table)


def _summary_rows(s: dict, op: object, window: str) -> list[tuple[str, str]]:
    """(figure, value) rows of the summary table."""
    rows = [
        (
            "field per ampere",
            f"{s['field_per_ampere_oe_per_a']:.2f} ± {s['field_per_ampere_std_oe_per_a']:.2f} Oe/A",
        ),
        (
            "hysteresis (falling − rising)",
            f"{s['hysteresis_offset_oe']:+.2f} Oe "
            f"({'detected' if s['hysteresis_detected'] else 'not detected'})",
        ),
        ("mode spacing", f"{s['mode_spacing_hz'] / 1e6:.3f} MHz"),
        ("noise floor", f"{s['noise_floor_dbm']:.1f} dBm"),
        ("shot-to-shot noise (RMS over features)", f"{s['noise_rms_db']:.3f} dB"),
        ("operating bias", f"{op.bias_a:.3f} A"),
        (
            "drive range",
            f"{op.drive_hz[0] / 1e9:.4f}–{op.drive_hz[1] / 1e9:.4f} GHz, "
            f"{op.drive_dbm[0]:.1f}–{op.drive_dbm[1]:.1f} dBm",
        ),
        (
            f"sensitivity / noise (maximised in the {op.window} window"
            + (")" if op.window == window else f"; the {window} window needs --features bins)"),
            f"{op.sensitivity_to_noise:.2f} noise std per step",
        ),
        (
            "surrogate",
            (
                "twin: ring model, fitted parameters"
                if s.get("surrogate_kind") == "twin"
                else f"grey-box: drive line (σ {s['surrogate_line_sigma_hz'] / 1e3:.0f} kHz) + MLP"
                if s["surrogate_grey_box"]
                else "MLP"
            )
            + f", {s['surrogate_rows_train']} window shots fitted "
            + (
                "(grid rows only scored), "
                if s.get("surrogate_kind") == "twin"
                else "(+ grid rows), "
            )
            + f"{s['surrogate_rows_validation']} held out",
        ),
        (
            "surrogate held-out error",
            f"{s['surrogate_validation_db']:.3f} dB = "
            f"{s['surrogate_validation_over_noise']:.2f} × noise",
        ),
        (
            "surrogate error, whole drive grid at the operating bias (held-out grid rows)",
            f"{s['surrogate_grid_validation_db']:.3f} dB = "
            f"{s['surrogate_grid_validation_over_noise']:.2f} × noise",
        ),
        ("instrument time", f"{s['instrument_time_s']:.1f} s"),
        ("wall time", f"{s['wall_s']:.1f} s"),
    ]
    return rows


def _write_plots(result: object, out: Path) -> None:
    from labpgt.calibration.figures import write_plots

    with make_progress(console) as plot_progress:  # about 2 s: matplotlib, three figures
        task = new_task(plot_progress, "plots", None, unit="", instrument_s=None)
        paths = write_plots(result, out.with_name(out.stem + "_plots"))  # type: ignore[arg-type]
        advance_to(plot_progress, task, len(paths), len(paths))
    console.print(Text("plots: " + ", ".join(str(p) for p in paths)), highlight=False)


def _assess_maps(reservoir: object, in_use: FeatureSpec) -> list:
    """Measure the candidate feature maps (and the one in use) on one drive-frequency walk."""
    from labpgt.calibration.feature_maps import CANDIDATES, assess, plan_settings
    from labpgt.training.estimators.boundary import BoundaryEstimator

    # Judged at the step boundary perturbation probes with: its default δ in u, which the
    # affine encoding maps onto δ · span / 2 of the drive range.
    step_u = float(BoundaryEstimator.defaults["delta"])
    lo, hi = reservoir.bounds.drive_hz  # type: ignore[attr-defined]
    settings = plan_settings((lo, hi), power_dbm=-10.0, bias_a=1.8, step_hz=step_u * (hi - lo) / 2)
    keep = reservoir.keep_traces  # type: ignore[attr-defined]
    reservoir.keep_traces = True  # type: ignore[attr-defined]
    try:
        out = reservoir.measure(settings)  # type: ignore[attr-defined]
    finally:
        reservoir.keep_traces = keep  # type: ignore[attr-defined]
    specs = list(CANDIDATES) + ([in_use] if in_use not in CANDIDATES else [])
    freq = reservoir.frequency_hz  # type: ignore[attr-defined]
    return [
        assess(out.traces_dbm, freq, settings, spec, base_points=40, repeats=3) for spec in specs
    ]


def _store_maps(path: Path, maps: list, in_use: FeatureSpec) -> None:
    import h5py

    from labpgt.calibration.feature_maps import choose_map
    from labpgt.records import to_json

    with h5py.File(path, "a") as h5:
        h5.attrs["feature_maps"] = to_json([a.as_dict() for a in maps])
        h5.attrs["feature_map_chosen"] = to_json(choose_map(maps, in_use).spec)


def _sim_kwargs(sim: dict) -> dict:
    return {
        k: sim[k]
        for k in ("seed", "noise", "hysteresis", "inject_drift_oe", "inject_drift_db", "fast_sim")
    }


def _check(path: Path, bench: Path | None, tol_mhz: float, tol_db: float, sim: dict) -> None:
    from labpgt.calibration import load_calibration
    from labpgt.runner import check_calibration_file

    check_calibration_file(path, "--check")
    cal = load_calibration(path)
    with _open_reservoir(bench, features=cal.feature_spec, **_sim_kwargs(sim)) as reservoir:
        try:
            report = cal.check_drift(reservoir, tolerance_mhz=tol_mhz, tolerance_db=tol_db)
        except MeasurementError as exc:
            raise UserError(f"drift check failed: {exc}") from None
    print(json.dumps(report.as_dict()))
    colour = "green" if report.within_tolerance else "red"
    console.print(f"[{colour}]{report.summary()}[/{colour}]")
    if not report.within_tolerance:
        raise SystemExit(1)  # click would swallow typer.Exit with standalone_mode=False


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate_command)
