"""How far the mode competition's capped iteration leaves the ring from its steady state.

Scans the operating grid (drive 2.0-2.3 GHz, -40..0 dBm, bias 0-2.5 A: the default
SettingBounds; RF on, remanence -1, no drift) and solves the competition of every
setting three ways with sim.competition.solve_competition (float64):

- fixed: the default cap, RingParams.competition_iterations (48) with the tolerance
  off: what the ring model computes (before the tolerance solver it always ran exactly
  these 48 iterations);
- tolerance: the default tolerance (RingParams.competition_tolerance) with a cap of
  --cap iterations: how many iterations each setting needs;
- reference: a tolerance of --reference-tolerance with a cap of --reference-cap.

It prints the error in dB of the mode powers at the analyzer against the reference:
per setting the largest error over the modes above the analyzer's noise floor (default
grid, 300 kHz RBW) in either solution, then the maximum, 95th percentile and median
over the settings. Run: .venv/bin/python benchmarks/competition_convergence.py
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from labpgt.sim import dispersion  # noqa: E402
from labpgt.sim.competition import Competition, solve_competition  # noqa: E402
from labpgt.sim.grid import AnalyzerGrid  # noqa: E402
from labpgt.sim.params import RingParams  # noqa: E402
from labpgt.sim.ring_lines import Modes, RingConditions, ring_modes  # noqa: E402
from labpgt.sim.spectrum import noise_floor_mw  # noqa: E402


def operating_grid(points: tuple[int, int, int], params: RingParams) -> Modes:
    """The competition's inputs on a regular grid of (drive_hz, drive_dbm, bias_a)."""
    axes = (
        torch.linspace(2.0e9, 2.3e9, points[0], dtype=torch.float64),
        torch.linspace(-40.0, 0.0, points[1], dtype=torch.float64),
        torch.linspace(0.0, 2.5, points[2], dtype=torch.float64),
    )
    drive_hz, drive_dbm, bias_a = (a.reshape(-1) for a in torch.meshgrid(*axes, indexing="ij"))
    field = dispersion.field_oe(bias_a, -1.0, params)
    zero, rf = torch.zeros_like(field), torch.ones_like(field)
    return ring_modes(params, RingConditions(drive_hz, drive_dbm, field, zero, rf))


def solve(modes: Modes, params: RingParams, tolerance: float, cap: int) -> Competition:
    with torch.no_grad():
        return solve_competition(
            modes.growth,
            modes.drive_separation,
            modes.drive_saturation,
            params,
            tolerance=tolerance,
            max_iterations=cap,
        )


def error_db(power: torch.Tensor, reference: torch.Tensor, params: RingParams) -> torch.Tensor:
    """(N,) largest |dB| error per setting over the modes visible above the noise floor."""
    to_dbm = params.saturation_power_dbm
    got, want = 10 * torch.log10(power) + to_dbm, 10 * torch.log10(reference) + to_dbm
    floor_dbm = 10 * math.log10(noise_floor_mw(AnalyzerGrid(), params))
    visible = (got > floor_dbm) | (want > floor_dbm)
    return torch.where(visible, (got - want).abs(), torch.zeros_like(got)).amax(-1)


def describe(name: str, error: torch.Tensor) -> str:
    p95, above = float(error.quantile(0.95)), float((error > 2).double().mean())
    return (
        f"{name:<34} max {float(error.max()):7.2f} dB   p95 {p95:7.2f} dB"
        f"   median {float(error.median()):7.3f} dB   > 2 dB: {above:6.1%}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, nargs=3, default=(21, 5, 26), help="f, dBm, A")
    parser.add_argument("--cap", type=int, default=20_000, help="tolerance solver's cap")
    parser.add_argument("--reference-tolerance", type=float, default=1e-10)
    parser.add_argument("--reference-cap", type=int, default=40_000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    params = RingParams(noise=False, drift=False)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    print(
        f"competition convergence, commit {commit or '?'}, "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, torch {torch.__version__}"
    )
    modes = operating_grid(tuple(args.points), params)
    n = modes.growth.shape[0]
    print(f"{n} settings ({' x '.join(map(str, args.points))}), {params.mode_count} modes each")
    start = time.perf_counter()
    reference = solve(modes, params, args.reference_tolerance, args.reference_cap)
    fixed = solve(modes, params, 0.0, params.competition_iterations)
    tolerance = solve(modes, params, params.competition_tolerance, args.cap)
    done = reference.converged
    print(
        f"reference: tolerance {args.reference_tolerance:g}, cap {args.reference_cap}: "
        f"{int(done.sum())}/{n} settings converged ({time.perf_counter() - start:.0f} s in all)"
    )
    fixed_error = error_db(fixed.power, reference.power, params)
    tolerance_error = error_db(tolerance.power, reference.power, params)
    print("error against the reference, settings whose reference converged:")
    print(describe(f"fixed {params.competition_iterations} iterations", fixed_error[done]))
    label = f"tolerance {params.competition_tolerance:g} (cap {args.cap})"
    print(describe(label, tolerance_error[done]))
    needed = tolerance.iterations.double()
    print(
        f"iterations the tolerance solver needs: median {float(needed.median()):.0f}, "
        f"p95 {float(needed.quantile(0.95)):.0f}, max {float(needed.max()):.0f}; "
        f"{int(tolerance.converged.sum())}/{n} converged within {args.cap}, "
        f"{int((needed <= params.competition_iterations).sum())}/{n} within "
        f"{params.competition_iterations}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
