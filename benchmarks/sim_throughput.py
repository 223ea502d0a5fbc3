"""Throughput of the simulated ring: analyzer spectra per second at several batch sizes.

Each call evaluates a batch of random drive settings (drive 2.0-2.3 GHz, -40..0 dBm,
bias 1.6-2.0 A) on the default 1001-point grid with noise on (line jitter and floor
scatter from a seeded generator), as `RingModel.measure` does, without autograd.
A last line gives the latency of `RingModel.measure` for ONE setting (plain numbers,
noise, drift and hysteresis on), as the virtual analyzer calls it once per sweep.
Run: .venv/bin/python benchmarks/sim_throughput.py [--threads N] [--seconds S]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from labpgt.sim.grid import AnalyzerGrid  # noqa: E402
from labpgt.sim.params import RingParams  # noqa: E402
from labpgt.sim.ring import RingModel  # noqa: E402

BATCHES = (1, 64, 1024)
TARGET_AT_1024 = 20_000.0
TARGET_MEASURE_MS = 1.0


def settings(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    drive_hz = 2.0e9 + 3e8 * torch.rand(n, generator=gen, dtype=torch.float64)
    drive_dbm = -40.0 + 40.0 * torch.rand(n, generator=gen, dtype=torch.float64)
    bias_a = 1.6 + 0.4 * torch.rand(n, generator=gen, dtype=torch.float64)
    return drive_hz, drive_dbm, bias_a


def spectra_per_s(
    ring: RingModel, grid: AnalyzerGrid, batch: int, seconds: float
) -> tuple[float, float]:
    """Best of several timed repeats (each >= seconds/5) of evaluate at this batch size.

    Returns (spectra per wall-clock second, spectra per CPU-second of this process,
    all threads summed): on a machine shared with other jobs the wall figure drops
    with the load, the CPU figure much less.
    """
    args = settings(batch, seed=batch)
    noise = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _ in range(3):  # warm-up
            ring.evaluate(*args, grid, remanence_sign=-1.0, generator=noise)
        best, best_cpu = 0.0, 0.0
        for _ in range(5):
            calls, start, start_cpu = 0, time.perf_counter(), time.process_time()
            while True:
                ring.evaluate(*args, grid, remanence_sign=-1.0, generator=noise)
                calls += 1
                elapsed = time.perf_counter() - start
                if elapsed >= seconds / 5:
                    break
            cpu = max(time.process_time() - start_cpu, 1e-9)
            best = max(best, calls * batch / elapsed)
            best_cpu = max(best_cpu, calls * batch / cpu)
    return best, best_cpu


def measure_latency_ms(grid: AnalyzerGrid, seconds: float) -> float:
    """Best of 5 timed runs (each >= seconds/5) of the mean wall time of one-setting measure."""
    ring = RingModel(RingParams(), seed=0)
    for i in range(20):  # warm-up
        ring.measure(2.1e9 + 1e5 * i, -10.0, 1.8, grid)
    best = math.inf
    for _ in range(5):
        calls, start = 0, time.perf_counter()
        while True:
            # a new drive frequency each sweep, as in a scan: nothing can be reused
            ring.measure(2.0e9 + 1e5 * (calls % 3000), -10.0, 1.8, grid)
            calls += 1
            elapsed = time.perf_counter() - start
            if elapsed >= seconds / 5:
                break
        best = min(best, 1e3 * elapsed / calls)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (count)")
    parser.add_argument("--seconds", type=float, default=5.0, help="time per batch size, s")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ring = RingModel(RingParams(noise=True), seed=0)
    grid = AnalyzerGrid(points=1001)
    print(
        f"sim throughput: RingModel.evaluate, {grid.points} points, noise on, no autograd; "
        f"torch {torch.__version__}, {args.threads} threads, {platform.processor() or 'cpu'}"
    )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{os.cpu_count()} CPUs, load average {load:.1f} (1 min) at start")
    print(f"{'batch':>6}  {'spectra/s':>12}  {'ms/call':>9}  {'spectra/CPU-s':>14}")
    results = {}
    for batch in BATCHES:
        rate, cpu_rate = spectra_per_s(ring, grid, batch, args.seconds)
        results[batch] = rate
        print(f"{batch:>6}  {rate:>12,.0f}  {1e3 * batch / rate:>9.3f}  {cpu_rate:>14,.0f}")
    verdict = "meets" if results[1024] >= TARGET_AT_1024 else "MISSES"
    print(f"batch 1024: {results[1024]:,.0f} spectra/s {verdict} the target {TARGET_AT_1024:,.0f}")
    latency = measure_latency_ms(grid, args.seconds)
    verdict = "meets" if latency <= TARGET_MEASURE_MS else "MISSES"
    print(
        f"measure, 1 setting: {latency:.3f} ms per call {verdict} the target "
        f"{TARGET_MEASURE_MS:.1f} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
