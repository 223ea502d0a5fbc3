"""Benchmark: PerturbationScheduler order vs naive order, and the scheduler's own overhead.

A realistic training step: batch 64 x 3 probes x 4 channels = 768 settings. u is
random; an `Encoding` (4 channels, each its own fixed bias current, drive
frequency and power driven by u) turns it into settings, as in training. The
settings run on a `SimulatedReservoir` twice: in the caller's (naive) order with
no de-duplication, and in the scheduler's order (bias first, then frequency).
Instrument time is what the reservoir accounts: settle (bias change 0.3 s, drive
change 0.01 s) plus the analyzer sweep per shot.

A second scenario drives the bias current from u too (every shot a new bias):
then ordering can only sort the bias sweep monotonically, and the gain is small
-- reported so nobody expects miracles there.

Overhead: wall time in `run()` minus time inside `reservoir.measure`, per query,
median over repetitions.

    .venv/bin/python benchmarks/scheduler.py        # writes to stdout
"""

from __future__ import annotations

import platform
import statistics
import time

import torch
from labpgt.sim.grid import AnalyzerGrid
from labpgt.sim.ring import RingModel

from labpgt.encoding import Encoding, EncodingSpec
from labpgt.features import FeatureSpec
from labpgt.scheduler import PerturbationScheduler
from labpgt.simulated_reservoir import SimulatedReservoir

BATCH, PROBES, CHANNELS = 64, 3, 4
SEED = 0


def _settings(driven: tuple[str, ...], fixed: dict, seed: int) -> torch.Tensor:
    enc = Encoding(EncodingSpec(channels=CHANNELS, driven=driven, fixed=fixed))
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(BATCH, 1, enc.input_dim, generator=gen, dtype=torch.float64) * 2 - 1
    # probes: the unperturbed u and two random perturbations of it (as a PGT step does)
    delta = 0.05 * torch.randn(BATCH, PROBES - 1, enc.input_dim, generator=gen, dtype=torch.float64)
    u = torch.cat([u, u + delta], dim=1)  # (B, probes, k*m)
    with torch.no_grad():
        return enc(u.reshape(BATCH * PROBES, -1)).reshape(BATCH, PROBES, CHANNELS, 3)


def _reservoir() -> SimulatedReservoir:
    return SimulatedReservoir(RingModel(seed=SEED), AnalyzerGrid(), features=FeatureSpec(bins=16))


def _compare(name: str, settings: torch.Tensor) -> float:
    naive = PerturbationScheduler(_reservoir(), reorder=False, deduplicate=False)
    naive.run(settings)
    sched = PerturbationScheduler(_reservoir())
    sched.run(settings)
    a, b = naive.last, sched.last
    ratio = a.instrument_time_s / b.instrument_time_s
    print(f"\n## {name}")
    print(f"settings requested          {b.requested}")
    print(f"{'':28s}{'naive order':>14s}{'scheduler':>14s}")
    print(f"{'shots measured':28s}{a.queries:14d}{b.queries:14d}")
    print(f"{'bias transitions':28s}{a.bias_transitions:14d}{b.bias_transitions:14d}")
    print(f"{'drive-only transitions':28s}{a.drive_transitions:14d}{b.drive_transitions:14d}")
    print(
        f"{'instrument time (s)':28s}{a.instrument_time_s:14.2f}{b.instrument_time_s:14.2f}"
        f"   ratio {ratio:.1f}x less"
    )
    return ratio


def _overhead(settings: torch.Tensor, reps: int = 15) -> tuple[float, float]:
    sched = PerturbationScheduler(_reservoir())
    sched.run(settings)  # warm-up
    per_query = []
    for _ in range(reps):
        sched.run(settings)
        per_query.append(sched.last.overhead_s / sched.last.queries)
    return statistics.median(per_query), max(per_query)


def main() -> None:
    torch.manual_seed(SEED)
    t0 = time.perf_counter()
    print("# labpgt scheduler benchmark")
    print(f"python {platform.python_version()}, torch {torch.__version__}, {platform.machine()}")
    print(f"step: batch {BATCH} x {PROBES} probes x {CHANNELS} channels, random u, seed {SEED}")
    grid = AnalyzerGrid()
    print(f"analyzer sweep {grid.sweep_time_s * 1e3:.2f} ms/shot; settle bias 0.3 s, drive 0.01 s")
    per_channel_bias = _settings(("drive_hz", "drive_dbm"), {"bias_a": (1.6, 1.7, 1.8, 1.9)}, SEED)
    ratio = _compare("A: per-channel bias, u drives frequency and power", per_channel_bias)
    driven_bias = _settings(("drive_hz", "drive_dbm", "bias_a"), {}, SEED)
    ratio_b = _compare("B: u drives bias too (a new bias every shot)", driven_bias)
    median, worst = _overhead(per_channel_bias)
    print("\n## scheduler overhead (wall time outside reservoir.measure)")
    print(f"per query: median {median * 1e3:.4f} ms, worst of 15 runs {worst * 1e3:.4f} ms")
    print("\n## targets")
    verdict = "PASS" if ratio >= 3 else "FAIL"
    print(f"A instrument-time ratio {ratio:.1f}x (target >= 3x): {verdict}")
    print(f"B instrument-time ratio {ratio_b:.2f}x (no target; shows the limit)")
    print(
        f"overhead {median * 1e3:.4f} ms/query (target <= 0.2 ms): "
        f"{'PASS' if median <= 2e-4 else 'FAIL'}"
    )
    print(f"\nbenchmark wall time {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
