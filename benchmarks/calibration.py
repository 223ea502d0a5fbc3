"""Benchmark of `labpgt calibrate` on the embedded virtual bench.

1. The default grid: shots, instrument time (settle + sweep, what a real bench would take)
   and wall time (what the virtual bench took), per stage.
2. What a user can trade: grid size against the surrogate's held-out error (dB and in units
   of the measured shot-to-shot noise).

Run:  .venv/bin/python benchmarks/calibration.py [--quick]
(writes benchmarks/results/calibration.txt)
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and its name would shadow the
# `calibration` package: drop the folder.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import torch  # noqa: E402

from calibration.plan import CalibrationPlan  # noqa: E402
from calibration.run import run_calibration  # noqa: E402
from calibration.surrogate import SurrogateConfig  # noqa: E402
from labpgt.embedded import embedded_bench  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "calibration.txt"

GRIDS: dict[str, CalibrationPlan] = {
    "small": CalibrationPlan.reduced(),
    "default": CalibrationPlan(),
    "dense-frequency": CalibrationPlan(drive_points=49),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small and default grids only")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    names = ["small", "default"] if args.quick else list(GRIDS)
    lines = [
        "labpgt calibrate benchmark (embedded virtual bench, realtime off, settle counted)",
        f"host: {platform.node()} {platform.machine()}, torch threads {torch.get_num_threads()},"
        f" python {platform.python_version()}",
        "",
    ]
    rows = []
    for name in names:
        plan = GRIDS[name]
        t0 = time.perf_counter()
        with embedded_bench(seed=args.seed, handle_signals=False) as res:
            r = run_calibration(res, plan, surrogate_config=SurrogateConfig(seed=args.seed))
        wall = time.perf_counter() - t0
        n_resp = plan.drive_points * plan.power_points * len(plan.response_bias_a)
        rows.append(
            (
                name,
                f"{len(plan.response_bias_a)}x{plan.power_points}x{plan.drive_points}",
                n_resp,
                r.surrogate.n_train + r.surrogate.n_validation,
                r.instrument_time_s,
                wall,
                r.surrogate.validation_rmse,
                r.noise.rms_std,
            )
        )
        if name == "default":
            lines.append("default grid, per stage (instrument time, s):")
            for stage, s in r.stage_instrument_s.items():
                lines.append(f"  {stage:<18} {s:8.2f} s")
            lines.append(
                f"  total instrument time {r.instrument_time_s:.1f} s; wall time {wall:.1f} s "
                f"(of which measuring+analysis {r.wall_s:.1f} s; rest: bench start/stop)"
            )
            lines.append(
                f"  field per ampere {r.field_fit.field_per_ampere_oe_per_a:.2f} Oe/A "
                f"(truth 150), hysteresis {r.hysteresis.offset_oe:+.2f} Oe, mode spacing "
                f"{r.mode_spacing_hz / 1e6:.3f} MHz, noise {r.noise.rms_std:.3f} dB, "
                f"sensitivity/noise {r.operating.sensitivity_to_noise:.2f}"
            )
            lines.append("")
        print(rows[-1], flush=True)
    lines.append(
        f"{'grid':<16} {'B x P x F':>10} {'resp. shots':>11} {'surr. rows':>10} "
        f"{'instr. s':>9} {'wall s':>8} {'surr. err dB':>12} {'noise dB':>9} {'err/noise':>9}"
    )
    for name, shape, n, m, inst, wall, err, noise in rows:
        lines.append(
            f"{name:<16} {shape:>10} {n:>11d} {m:>10d} {inst:>9.1f} {wall:>8.1f} "
            f"{err:>12.3f} {noise:>9.3f} {err / noise:>9.2f}"
        )
    text = "\n".join(lines) + "\n"
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
