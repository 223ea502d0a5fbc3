"""Throughput of the simulated ring: analyzer spectra per second at several batch sizes.

Each call evaluates a batch of random drive settings (drive 2.0-2.3 GHz, -40..0 dBm,
bias 1.6-2.0 A) on the default 1001-point grid with noise on (line jitter and floor
scatter from a seeded generator), as `RingModel.measure` does, without autograd.
A last line gives the latency of `RingModel.measure` for ONE setting (plain numbers,
noise, drift and hysteresis on), as the virtual analyzer calls it once per sweep.

On a shared machine wall-clock figures move with the load, so each figure is also
printed as a ratio to a fixed baseline workload timed in the same repeats (a plain
torch float32 workload for the batches, a loop of small NumPy operations for the one
setting): compare those ratios across commits, measured back to back.
Run: .venv/bin/python benchmarks/sim_throughput.py [--threads N] [--seconds S]
For a before/after comparison, --tree DIR times the code of another checkout (e.g.
`git worktree add --detach /tmp/before <commit>`) with this script and this environment.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

if TYPE_CHECKING:
    from labpgt.sim.grid import AnalyzerGrid
    from labpgt.sim.ring import RingModel

BATCHES = (1, 64, 1024)
TARGET_AT_1024 = 20_000.0
TARGET_MEASURE_MS = 1.0


def settings(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    drive_hz = 2.0e9 + 3e8 * torch.rand(n, generator=gen, dtype=torch.float64)
    drive_dbm = -40.0 + 40.0 * torch.rand(n, generator=gen, dtype=torch.float64)
    bias_a = 1.6 + 0.4 * torch.rand(n, generator=gen, dtype=torch.float64)
    return drive_hz, drive_dbm, bias_a


def timed(call: Callable[[int], object], seconds: float) -> tuple[float, float]:
    """(wall s, CPU s) per call: the mean over >= `seconds` of calls call(0), call(1), ..."""
    calls, start, start_cpu = 0, time.perf_counter(), time.process_time()
    while True:
        call(calls)
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            break
    return elapsed / calls, max(time.process_time() - start_cpu, 1e-9) / calls


def best_of_five(
    call: Callable[[int], object], baseline: Callable[[int], object], seconds: float
) -> tuple[float, float, float]:
    """Best of 5 repeats of (wall s per call, CPU s per call, ratio to the baseline).

    Each repeat times the call for seconds/10 and the baseline for seconds/10 right
    after, so both see the same load; the ratio is the best repeat's wall time over
    the best baseline's.
    """
    for i in range(3):  # warm-up
        call(i)
        baseline(i)
    wall, cpu, base = math.inf, math.inf, math.inf
    for _ in range(5):
        call_wall, call_cpu = timed(call, seconds / 10)
        wall, cpu = min(wall, call_wall), min(cpu, call_cpu)
        base = min(base, timed(baseline, seconds / 10)[0])
    return wall, cpu, wall / base


def batch_baseline(batch: int) -> Callable[[int], object]:
    """A fixed torch float32 workload of the size of a batch: a GEMM and an exp."""
    a = torch.rand(batch, 256, generator=torch.Generator().manual_seed(0))
    b = torch.rand(256, 1024, generator=torch.Generator().manual_seed(1))
    return lambda _: torch.exp(-(a @ b))


def small_ops_baseline(_: int, values: np.ndarray = np.linspace(0.0, 1.0, 32)) -> object:
    """A fixed loop of 1000 NumPy operations on 32 values (the one-shot path's kind of work)."""
    x = values
    for _ in range(250):
        x = np.exp(-x) * 0.5 + np.sqrt(x)
    return x


def spectra_per_s(
    ring: RingModel, grid: AnalyzerGrid, batch: int, seconds: float
) -> tuple[float, float, float]:
    """Evaluate at this batch size: (spectra per wall-clock second, spectra per CPU-second
    of this process (all threads summed), wall time over the batch baseline's).

    On a machine shared with other jobs the wall figure drops with the load, the CPU
    figure and the ratio much less.
    """
    args = settings(batch, seed=batch)
    noise = torch.Generator().manual_seed(1)
    with torch.no_grad():
        wall, cpu, ratio = best_of_five(
            lambda _: ring.evaluate(*args, grid, remanence_sign=-1.0, generator=noise),
            batch_baseline(batch),
            seconds,
        )
    return batch / wall, batch / cpu, ratio


def measure_latency_ms(ring: RingModel, grid: AnalyzerGrid, seconds: float) -> tuple[float, float]:
    """One-setting measure of a fresh ring: (ms per call, ratio to the small-operations
    baseline)."""
    for i in range(20):  # warm-up
        ring.measure(2.1e9 + 1e5 * i, -10.0, 1.8, grid)

    def call(i: int) -> object:
        # a new drive frequency each sweep, as in a scan: nothing can be reused
        return ring.measure(2.0e9 + 1e5 * (i % 3000), -10.0, 1.8, grid)

    wall, _, ratio = best_of_five(call, small_ops_baseline, seconds)
    return 1e3 * wall, ratio


def use_checkout(tree: Path) -> None:
    """Import labpgt from the checkout `tree` instead of this one: its labpgt/ with its sim/,
    instruments/ and calibration/ linked in, as the installed package maps them."""
    package = Path(tempfile.mkdtemp(prefix="labpgt-checkout-")) / "labpgt"
    package.mkdir()
    for entry in (tree / "labpgt").iterdir():
        (package / entry.name).symlink_to(entry.resolve())
    for folder in ("sim", "instruments", "calibration"):
        (package / folder).symlink_to((tree / folder).resolve())
    sys.path.insert(0, str(package.parent))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (count)")
    parser.add_argument("--seconds", type=float, default=5.0, help="time per batch size, s")
    parser.add_argument("--tree", type=Path, help="time the code of this checkout (folder)")
    args = parser.parse_args()
    if args.tree is not None:
        if not (args.tree / "labpgt").is_dir():
            parser.error(f"--tree {args.tree}: no labpgt/ there")
        use_checkout(args.tree)
    from labpgt.sim.grid import AnalyzerGrid
    from labpgt.sim.params import RingParams
    from labpgt.sim.ring import RingModel

    torch.set_num_threads(args.threads)
    ring = RingModel(RingParams(noise=True), seed=0)
    grid = AnalyzerGrid(points=1001)
    print(
        f"sim throughput: RingModel.evaluate, {grid.points} points, noise on, no autograd; "
        f"torch {torch.__version__}, {args.threads} threads, {platform.processor() or 'cpu'}"
    )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{os.cpu_count()} CPUs, load average {load:.1f} (1 min) at start")
    print(f"code: {Path(sys.modules['labpgt.sim.ring'].__file__).parent.parent}")
    print(f"{'batch':>6}  {'spectra/s':>12}  {'ms/call':>9}  {'spectra/CPU-s':>14}  {'ratio':>6}")
    results = {}
    for batch in BATCHES:
        rate, cpu_rate, ratio = spectra_per_s(ring, grid, batch, args.seconds)
        results[batch] = rate
        print(
            f"{batch:>6}  {rate:>12,.0f}  {1e3 * batch / rate:>9.3f}  {cpu_rate:>14,.0f}"
            f"  {ratio:>6.2f}"
        )
    verdict = "meets" if results[1024] >= TARGET_AT_1024 else "MISSES"
    print(f"batch 1024: {results[1024]:,.0f} spectra/s {verdict} the target {TARGET_AT_1024:,.0f}")
    latency, ratio = measure_latency_ms(RingModel(RingParams(), seed=0), grid, args.seconds)
    verdict = "meets" if latency <= TARGET_MEASURE_MS else "MISSES"
    print(
        f"measure, 1 setting: {latency:.3f} ms per call {verdict} the target "
        f"{TARGET_MEASURE_MS:.1f} ms; ratio {ratio:.2f} to the small-operations baseline"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
