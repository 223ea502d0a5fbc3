"""Benchmark of `labpgt calibrate` on the embedded virtual bench.

1. The default grid: shots, instrument time (settle + sweep, what a real bench would take)
   and wall time (what the virtual bench took), per stage.
2. What a user can trade: grid size and surrogate sample size against the surrogate's
   held-out error (dB and in units of the measured shot-to-shot noise).
3. Where the surrogate's accuracy comes from (default grid, same bench, extra shots): the
   grey-box surrogate against a plain MLP, in the calm operating window calibrate picks and
   in the injection-locking window it picked before (sensitivity alone), and the old recipe
   (plain MLP on the response-grid rows of three biases).
4. The same small grid with the feature map `labpgt calibrate` uses by default (kernel
   windows x16): no grey-box surrogate and no calm window there (both need hard bins).

Everything else measures with hard bins x32 (`BENCH_FEATURES`), named on the report's
second line: the grey-box surrogate draws the drive line into hard bins and the calm
window is found from them; with any other map both fall back (plain MLP, sensitivity
window), so the benchmark sets the map itself instead of taking the library default.

Run:  .venv/bin/python benchmarks/calibration.py [--quick]
(writes benchmarks/results/calibration.txt)
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and its name would shadow the
# `calibration` package: drop the folder.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from labpgt.calibration.analysis import choose_operating_point  # noqa: E402
from labpgt.calibration.plan import (  # noqa: E402
    CalibrationPlan,
    encoding_ranges,
    surrogate_sample,
)
from labpgt.calibration.run import CalibrationResult, line_geometry, run_calibration  # noqa: E402
from labpgt.calibration.surrogate import SurrogateConfig, fit_surrogate  # noqa: E402

from labpgt.embedded import embedded_bench  # noqa: E402
from labpgt.features import FeatureSpec  # noqa: E402
from labpgt.scheduler import PerturbationScheduler  # noqa: E402
from labpgt.setting_bounds import SETTING_NAMES  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "calibration.txt"
BENCH_FEATURES = FeatureSpec(kind="bins", bins=32)
"""The map every row but the last measures with (the grey-box and the calm window need bins)."""
CLI_FEATURES = FeatureSpec(kind="kernel", bins=16)
"""`labpgt calibrate`'s default map (--features kernel --bins 16): the last row."""

GRIDS: dict[str, tuple[CalibrationPlan, FeatureSpec]] = {
    "small": (CalibrationPlan.reduced(), BENCH_FEATURES),
    "default": (CalibrationPlan(), BENCH_FEATURES),
    "default, 100 surr.": (CalibrationPlan(surrogate_points=100), BENCH_FEATURES),
    "default, 1000 surr.": (CalibrationPlan(surrogate_points=1000), BENCH_FEATURES),
    "dense-frequency": (CalibrationPlan(drive_points=49), BENCH_FEATURES),
    "small, kernel x16": (CalibrationPlan.reduced(), CLI_FEATURES),
}
QUICK = ("small", "default", "small, kernel x16")


def _load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def open_bench(seed: int, features: FeatureSpec = BENCH_FEATURES):
    """The embedded bench every row measures on (``features``: the map, set here)."""
    return embedded_bench(seed=seed, handle_signals=False, features=features)


def grey_box_geometry(res, frequency_hz: np.ndarray, traces_dbm: np.ndarray, floor_dbm: float):
    """The grey-box surrogate's line geometry from bias-sweep traces; SystemExit when there is
    none (features not hard bins, or no line to measure): its rows would be plain MLPs."""
    geo = line_geometry(res, frequency_hz, traces_dbm, floor_dbm)
    if geo is None:
        spec = getattr(res, "feature_spec", None)
        raise SystemExit(
            f"no grey-box surrogate on features {spec.describe() if spec else '?'}: the "
            "grey-box rows need hard bins with a measurable line (BENCH_FEATURES)"
        )
    return geo


def fit_row(
    label: str,
    settings: torch.Tensor,
    features: torch.Tensor,
    ranges: torch.Tensor,
    geometry,
    config: SurrogateConfig,
) -> tuple[str, int, float, float]:
    """(label, rows, held-out error dB, seconds) of one surrogate fit: grey-box with
    ``geometry``, plain MLP without; the model fitted is checked to be that kind."""
    t0 = time.perf_counter()
    f = fit_surrogate(settings, features, ranges=ranges, config=config, geometry=geometry)
    secs = time.perf_counter() - t0
    if f.model.grey_box != (geometry is not None):
        raise SystemExit(f"{label}: fitted a {'grey-box' if f.model.grey_box else 'plain MLP'}")
    print(f"  fitted {label}: {f.validation_rmse:.3f} dB held out ({secs:.1f} s)", flush=True)
    return label, settings.shape[0], f.validation_rmse, secs


def ablations(res, r: CalibrationResult, seed: int) -> list[tuple[str, int, float, float]]:
    """(what, rows, held-out error dB, seconds to fit) on the default calibration's bench."""
    cfg = SurrogateConfig(seed=seed)
    sweep = r.bias_sweep
    stored = sweep.traces_dbm.astype(np.float32).astype(np.float64)  # as the file holds them
    geo = grey_box_geometry(res, r.frequency_hz, stored, sweep.floor_dbm)
    out = []

    def fit(label: str, s: torch.Tensor, y: torch.Tensor, ranges: torch.Tensor, g) -> None:
        out.append(fit_row(label, s, y, ranges, g, cfg))

    # calm window (what calibrate fits): plain MLP on the same shots
    s, y = torch.from_numpy(r.surrogate_settings), torch.from_numpy(r.surrogate_features)
    rng = torch.tensor([list(r.encoding_ranges[n]) for n in SETTING_NAMES], dtype=torch.float64)
    fit("calm window only (no grid rows), grey-box", s, y, rng, geo)
    fit("calm window only (no grid rows), plain MLP", s, y, rng, None)
    # the window sensitivity alone picks (inside the locking zone), 300 random shots there
    noise = r.references.noise.feature_std
    axes = (r.response_bias_a, r.drive_dbm, r.drive_hz)
    op = choose_operating_point(r.response_features, noise, *axes)
    enc = encoding_ranges(op, r.response_bias_a)
    s = surrogate_sample(enc, r.plan.surrogate_points, seed=seed)
    y = PerturbationScheduler(res).run(s).to(torch.float64)
    rng = torch.tensor([list(enc[n]) for n in SETTING_NAMES], dtype=torch.float64)
    lock = (
        f"locking window {op.drive_hz[0] / 1e9:.4f}-{op.drive_hz[1] / 1e9:.4f} GHz, "
        f"{op.drive_dbm[0]:.0f}..{op.drive_dbm[1]:.0f} dBm"
    )
    fit(f"{lock}, grey-box", s, y, rng, geo)
    fit(f"{lock}, plain MLP", s, y, rng, None)
    # the old recipe: response-grid rows at the sensitivity bias and its neighbours
    b = np.sort(r.response_bias_a)
    i = int(np.argmin(np.abs(b - op.bias_a)))
    lo, hi = b[max(0, i - 1)], b[min(len(b) - 1, i + 1)]
    s = torch.from_numpy(r.response_settings)
    keep = (s[:, 2] >= lo - 1e-9) & (s[:, 2] <= hi + 1e-9)
    y = torch.from_numpy(r.response_features.reshape(s.shape[0], -1))
    rng = torch.tensor(
        [list(r.plan.drive_hz), list(r.plan.drive_dbm), [lo, hi]], dtype=torch.float64
    )
    fit("old: grid rows of 3 biases, plain MLP", s[keep], y[keep], rng, None)
    fit("old: grid rows of 3 biases, grey-box", s[keep], y[keep], rng, geo)
    return out


def _window(r: CalibrationResult) -> str:
    op = r.operating
    return (
        f"bias {op.bias_a:.3f} A, drive {op.drive_hz[0] / 1e9:.4f}-{op.drive_hz[1] / 1e9:.4f} GHz, "
        f"{op.drive_dbm[0]:.0f}..{op.drive_dbm[1]:.0f} dBm"
    )


def _default_lines(r: CalibrationResult, wall: float) -> list[str]:
    """The default grid's stages, figures and operating window."""
    op, sweep = r.operating, r.bias_sweep
    lines = ["default grid, per stage (instrument time, s):"]
    lines += [f"  {stage:<18} {s:8.2f} s" for stage, s in r.stage_instrument_s.items()]
    return lines + [
        f"  total instrument time {r.instrument_time_s:.1f} s; wall time {wall:.1f} s "
        f"(of which measuring+analysis+fit {r.wall_s:.1f} s; rest: bench start/stop); "
        f"{_load()}",
        f"  field per ampere {sweep.field_fit.field_per_ampere_oe_per_a:.2f} Oe/A "
        f"(truth 150), hysteresis {sweep.hysteresis.offset_oe:+.2f} Oe, mode spacing "
        f"{r.mode_spacing_hz / 1e6:.3f} MHz, noise {r.references.noise.rms_std:.3f} dB",
        f"  operating window: {_window(r)}; sensitivity/noise "
        f"{op.sensitivity_to_noise:.2f}; line sigma {r.line_sigma_hz / 1e3:.0f} kHz "
        f"(traces), {r.surrogate.model.line_sigma_hz() / 1e3:.0f} kHz (fitted)",
        "",
    ]


def measure_grid(name: str, seed: int) -> tuple[tuple, CalibrationResult, float, list]:
    """One calibration of grid ``name``: (table row, result, wall s, ablation rows)."""
    plan, features = GRIDS[name]
    t0 = time.perf_counter()
    abl = []
    with open_bench(seed, features) as res:
        r = run_calibration(res, plan, surrogate_config=SurrogateConfig(seed=seed))
        wall = time.perf_counter() - t0
        if name == "default":
            abl = ablations(res, r, seed)
    row = (
        name,
        f"{len(plan.response_bias_a)}x{plan.power_points}x{plan.drive_points}",
        plan.drive_points * plan.power_points * len(plan.response_bias_a),
        r.surrogate.n_train + r.surrogate.n_validation,
        r.instrument_time_s,
        wall,
        r.surrogate.validation_rmse,
        r.references.noise.rms_std,
        r.surrogate.context_validation_rmse,
        _load(),
    )
    print(
        f"grid {name}: surrogate {row[6]:.3f} dB held out, noise {row[7]:.3f} dB, "
        f"window {_window(r)}, wall {wall:.1f} s",
        flush=True,
    )
    return row, r, wall, abl


def _table(rows: list[tuple], results: dict[str, CalibrationResult]) -> list[str]:
    lines = [
        f"{'grid':<20} {'B x P x F':>10} {'resp. shots':>11} {'surr. shots':>11} "
        f"{'instr. s':>9} {'wall s':>8} {'surr. err dB':>12} {'noise dB':>9} {'err/noise':>9}"
        f" {'grid err/noise':>14}  load during run"
    ]
    for name, shape, n, m, inst, wall, err, noise, grid_err, load in rows:
        lines.append(
            f"{name:<20} {shape:>10} {n:>11d} {m:>11d} {inst:>9.1f} {wall:>8.1f} "
            f"{err:>12.3f} {noise:>9.3f} {err / noise:>9.2f} {grid_err / noise:>14.2f}  {load}"
        )
    lines.append("")
    for name, r in results.items():
        kind = "grey-box" if r.surrogate.model.grey_box else "plain MLP"
        lines.append(f"{name + ':':<20} {GRIDS[name][1].describe()}, {kind}, window {_window(r)}")
    return lines


def _ablation_lines(abl: list[tuple[str, int, float, float]], noise: float) -> list[str]:
    lines = [
        "",
        "where the accuracy comes from (default calibration's bench; 20 % of rows held out):",
        f"{'surrogate':<66} {'rows':>5} {'err dB':>7} {'err/noise':>9} {'fit s':>6}",
    ]
    for label, n, err, secs in abl:
        lines.append(f"{label:<66} {n:>5d} {err:>7.3f} {err / noise:>9.2f} {secs:>6.1f}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small, default and kernel rows only")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    names = list(QUICK) if args.quick else list(GRIDS)
    lines = [
        "labpgt calibrate benchmark (embedded virtual bench, realtime off, settle counted)",
        f"features {BENCH_FEATURES.describe()} (last row: {CLI_FEATURES.describe()}, calibrate's "
        f"default); {'--quick' if args.quick else 'full'}; seed {args.seed}",
        f"host: {platform.node()} {platform.machine()}, torch threads {torch.get_num_threads()},"
        f" python {platform.python_version()}; at start: {_load()}",
        "",
    ]
    rows, results, abl = [], {}, []
    for name in names:
        row, r, wall, got = measure_grid(name, args.seed)
        rows.append(row)
        results[name] = r
        abl = abl or got
        if name == "default":
            lines += _default_lines(r, wall)
    lines += _table(rows, results)
    if abl:
        lines += _ablation_lines(abl, next(row[7] for row in rows if row[0] == "default"))
    lines += [
        "",
        "surr. shots: random settings in the operating window (20 % held out); surr. err: on",
        "those held-out shots. grid err: on the held-out 20 % of the response-grid rows at the",
        "operating bias (whole drive range; fitted along so PAT has a surrogate there too).",
        "Without hard bins (kernel row) there is no grey-box and no calm window: plain MLP in",
        "the window sensitivity alone picks (the locking zone).",
        "Instrument time is what a real bench would spend (settle + sweep), independent of",
        "load; wall times taken under load are inflated.",
    ]
    text = "\n".join(lines) + "\n"
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
