"""Benchmark: study throughput against Ray workers, probe throughput against virtual benches.

Study. The final jobs of the ``short`` preset (iris) at 20 000 queries a run on four
seeds: 16 independent jobs. They run four ways, each into a fresh folder: the serial
runner in this process (the baseline), the process pool of 2 workers, then `RayRunner` on
a local Ray of 1 and of 2 CPUs. The
figure is jobs/hour from the first job submitted to the last row recorded, so it includes
starting the Ray worker processes (each imports torch once) but not `ray.init` itself,
which is printed apart. Ratios are against the serial run measured in the same process.
The median time of one job inside its worker is printed too: when it grows with the
workers, the cores were not free (a shared machine), and the ratio shows the load, not
the engine.

Probes. 256 distinct random settings (each a new bias current) measured through
`MultiBenchScheduler` on 1, 2, 4 and 8 embedded virtual benches, each in real time: its
analyzer takes its true sweep time (RBW 100 kHz over 300 MHz: 75 ms a sweep), as a real
one would, so a bench is I/O-bound. Settle times are accounted but not slept (the
embedded bench's magnet has nothing to settle). Ratios are against one bench.

The same probes on 1, 2 and 4 Ray actors, each owning a real-time virtual bench in its
own process (what a bench PC in a cluster runs), on a local Ray of 2 CPUs.

    .venv/bin/python benchmarks/scale.py              # all parts (about 6 minutes)
    .venv/bin/python benchmarks/scale.py --part probes
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from labpgt.sim.grid import AnalyzerGrid

from labpgt.embedded import embedded_bench
from labpgt.multibench import LocalBench, MultiBenchScheduler
from labpgt.setting_bounds import SettingBounds
from labpgt.studies.presets import short_study
from labpgt.studies.protocol import STARTED, final_jobs, run_jobs

STUDY_SEEDS = (0, 1, 2, 3)
STUDY_QUERIES = 20_000
PROBES = 256
BENCHES = (1, 2, 4, 8)
RAY_BENCHES = (1, 2, 4)
GRID = AnalyzerGrid(rbw_hz=100e3)
T = TypeVar("T")


def study_throughput(root: Path, queries: int = STUDY_QUERIES) -> None:
    import dataclasses

    import ray

    from labpgt.runner import run_training  # noqa: F401  (imported, not timed)
    from labpgt.studies.ray_runner import RayRunner

    short = short_study()
    spec = dataclasses.replace(
        short, base={**short.base, "max_queries": queries}, final_seeds=STUDY_SEEDS
    )
    jobs = final_jobs(spec, {})
    print(
        f"study: {len(jobs)} jobs (short preset at {queries} queries a run, final "
        f"seeds {list(STUDY_SEEDS)})"
    )
    for folder in ("serial", "process2", "ray1", "ray2"):
        (root / folder).mkdir()
    rows, serial_s = _timed(run_jobs, jobs, root / "serial", workers=1, done={})
    base = len(jobs) / serial_s * 3600
    print(_study_line("serial (this process)", len(jobs), serial_s, base, rows))
    rows, wall_s = _timed(run_jobs, jobs, root / "process2", workers=2, done={})
    print(_study_line("process pool, 2 workers", len(jobs), wall_s, base, rows))
    for workers in (1, 2):
        _, init_s = _timed(
            ray.init, num_cpus=workers, include_dashboard=False, logging_level=logging.WARNING
        )
        try:
            rows, wall_s = _timed(
                RayRunner(), jobs, root / f"ray{workers}", workers=workers, done={}
            )
        finally:
            ray.shutdown()
        line = _study_line(f"ray, {workers} worker(s)", len(jobs), wall_s, base, rows)
        print(f"{line[:-1]}; ray.init {init_s:.1f} s)")


def _timed(run: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[T, float]:
    """What `run(*args, **kwargs)` returns, and the wall time it took, s."""
    t = time.perf_counter()
    result = run(*args, **kwargs)
    return result, time.perf_counter() - t


def _study_line(
    label: str, n_jobs: int, wall_s: float, base_per_h: float, rows: dict[str, dict]
) -> str:
    """One engine's figures: wall time, jobs/hour, ratio to the serial run, median job."""
    rate = n_jobs / wall_s * 3600
    return (
        f"  {label:<24}{wall_s:6.1f} s  {rate:7.0f} jobs/h  {rate / base_per_h:.2f}x   "
        f"(median job {_median_job_s(rows):.1f} s)"
    )


def _median_job_s(rows: dict[str, dict]) -> float:
    """Median wall time of one job inside its worker: it grows when the cores are busy."""
    return statistics.median(r["seconds"] for r in rows.values())


def _random_settings(bounds: SettingBounds) -> torch.Tensor:
    """PROBES settings drawn uniformly within the bench's bounds (seed 0: every run alike)."""
    gen = torch.Generator().manual_seed(0)
    return bounds.lower() + (bounds.upper() - bounds.lower()) * torch.rand(
        PROBES, 3, generator=gen, dtype=torch.float64
    )


def probe_throughput() -> None:
    print(
        f"probes: {PROBES} distinct settings, real-time virtual benches "
        f"(sweep {GRID.sweep_time_s * 1e3:.0f} ms)"
    )
    base = None
    for n in BENCHES:
        with contextlib.ExitStack() as stack:
            reservoirs = [
                stack.enter_context(
                    embedded_bench(seed=i, realtime=True, grid=GRID, handle_signals=False)
                )
                for i in range(n)
            ]
            settings = _random_settings(reservoirs[0].bounds)
            multi = MultiBenchScheduler(
                [LocalBench(f"bench{i}", r) for i, r in enumerate(reservoirs)], chunk_size=16
            )
            _, wall_s = _timed(multi.run, settings)
        rate = PROBES / wall_s
        base = base or rate
        per_bench = [s.stats.queries for s in multi.bench_stats.values()]
        inst_s = multi.stats.instrument_time_s
        print(
            f"  {n} bench(es)  {wall_s:6.2f} s  {rate:6.1f} probes/s  {rate / base:.2f}x   "
            f"queries per bench {per_bench}, instrument time {inst_s:.1f} s"
        )


def ray_probe_throughput() -> None:
    import ray

    from labpgt.multibench import RayBench

    print(f"probes on Ray actors (each owns a real-time virtual bench), {PROBES} settings")
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    try:
        base = None
        for n in RAY_BENCHES:
            actors = [
                RayBench.embedded(f"actor{i}", seed=i, realtime=True, grid=GRID) for i in range(n)
            ]
            settings = _random_settings(actors[0].bounds)
            multi = MultiBenchScheduler(actors, chunk_size=16)
            _, wall_s = _timed(multi.run, settings)
            for actor in actors:
                actor.close()
            rate = PROBES / wall_s
            base = base or rate
            per_bench = [s.stats.queries for s in multi.bench_stats.values()]
            print(
                f"  {n} actor(s)   {wall_s:6.2f} s  {rate:6.1f} probes/s  {rate / base:.2f}x   "
                f"queries per bench {per_bench}"
            )
    finally:
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("all", "study", "probes", "ray-probes"), default="all")
    parser.add_argument(
        "--study-queries",
        type=int,
        default=STUDY_QUERIES,
        help="training queries per study job (a longer job spreads the workers' start-up)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(
        f"commit {STARTED['commit']}{' (dirty)' if STARTED['dirty'] else ''}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, torch {torch.__version__}, "
        f"load average {os.getloadavg()[0]:.1f} at start"
    )
    if args.part in ("all", "study"):
        root = Path(tempfile.mkdtemp(prefix="labpgt-scale-"))
        try:
            study_throughput(root, args.study_queries)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    if args.part in ("all", "probes"):
        probe_throughput()
    if args.part in ("all", "ray-probes"):
        ray_probe_throughput()
    print(f"load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
