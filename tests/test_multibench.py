"""Several embedded virtual benches behind one scheduler: the one-bench result, per-bench
accounting, and a bench killed mid-run draining to the others (no probe lost or repeated)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import pytest
import torch
from labpgt.instruments.bench import ShutdownError

from labpgt.embedded import embedded_bench
from labpgt.errors import MeasurementError
from labpgt.instrument_reservoir import InstrumentReservoir
from labpgt.multibench import LocalBench, MultiBenchScheduler, RayBench
from labpgt.scheduler import PerturbationScheduler

# A ring without noise, drift or hysteresis: a setting's features do not depend on the
# bench (same seed) or on what was measured before, so any split must give the same result.
EXACT = {"seed": 0, "noise": False, "drift": False, "hysteresis": False, "handle_signals": False}


def _enter(stack: contextlib.ExitStack, **options: object) -> InstrumentReservoir:
    """Open an embedded bench; leaving it, a bench the test killed may report an unsafe
    shutdown (its servers are gone: nothing confirms RF off) -- any other may not."""
    context = embedded_bench(**{**EXACT, **options})
    reservoir = context.__enter__()

    def leave(*exc: object) -> bool:
        try:
            return bool(context.__exit__(*exc))  # type: ignore[arg-type]
        except ShutdownError:
            if reservoir.virtual_bench._started:
                raise
            return False

    stack.push(leave)
    return reservoir


@contextlib.contextmanager
def benches(n: int, **options: object) -> Iterator[list[InstrumentReservoir]]:
    with contextlib.ExitStack() as stack:
        yield [_enter(stack, **options) for _ in range(n)]


def probe_settings(reservoir: InstrumentReservoir, n: int, seed: int = 0) -> torch.Tensor:
    """n random settings inside the bounds, a quarter of them repeated (de-duplication)."""
    lo, hi = reservoir.bounds.lower(), reservoir.bounds.upper()
    gen = torch.Generator().manual_seed(seed)
    base = lo + (hi - lo) * torch.rand(n - n // 4, 3, generator=gen, dtype=torch.float64)
    return torch.cat([base, base[: n // 4]]).reshape(n // 4, 4, 3)  # (batch, probes, 3)


def test_three_benches_give_the_one_bench_features_and_account_each_bench() -> None:
    with benches(4) as (one, *three):
        settings = probe_settings(one, 96)
        reference = PerturbationScheduler(one).run(settings)
        multi = MultiBenchScheduler(
            [LocalBench(f"bench{i}", r) for i, r in enumerate(three)], chunk_size=8
        )
        features = multi.run(settings)
        assert torch.equal(features, reference)
        per_bench = {name: s.stats.queries for name, s in multi.bench_stats.items()}
        assert sum(per_bench.values()) == 72 == multi.stats.unique  # 96 requested, 72 distinct
        assert all(q > 0 for q in per_bench.values())
        time_s = sum(s.stats.instrument_time_s for s in multi.bench_stats.values())
        assert time_s == pytest.approx(multi.stats.instrument_time_s) and time_s > 0


def test_a_bench_killed_mid_run_drains_to_the_others_without_losing_or_repeating_a_probe() -> None:
    with benches(4, realtime=True) as (one, *three):
        settings = probe_settings(one, 160, seed=1)
        reference = PerturbationScheduler(one).run(settings)
        victim = three[1].virtual_bench
        multi = MultiBenchScheduler(
            [LocalBench(f"bench{i}", r) for i, r in enumerate(three)], chunk_size=8
        )

        def kill_after_some_sweeps() -> None:
            while victim.analyzer.sweeps < 12:
                time.sleep(0.002)
            victim.stop()  # every server of that bench closes, mid-chunk

        killer = threading.Thread(target=kill_after_some_sweeps)
        killer.start()
        features = multi.run(settings)
        killer.join()
        assert torch.equal(features, reference)
        failed = multi.bench_stats["bench1"]
        assert failed.failed is not None and failed.chunks >= 1  # died after some chunks
        queries = {name: s.stats.queries for name, s in multi.bench_stats.items()}
        assert sum(queries.values()) == multi.stats.unique == 120  # each probe once
        assert queries["bench1"] == 8 * failed.chunks < 40  # its own share was 40
        # The next batch runs on the two live benches only.
        more = probe_settings(one, 16, seed=2)
        assert torch.equal(multi.run(more), PerturbationScheduler(one).run(more))
        assert multi.bench_stats["bench1"].stats.queries == queries["bench1"]


def test_when_every_bench_fails_the_batch_fails_naming_them() -> None:
    with benches(2) as pair:
        settings = probe_settings(pair[0], 16)
        for reservoir in pair:
            reservoir.virtual_bench.stop()
        multi = MultiBenchScheduler([LocalBench(f"b{i}", r, retries=0) for i, r in enumerate(pair)])
        with pytest.raises(MeasurementError, match="every bench failed with 12 settings left"):
            multi.run(settings)
        with pytest.raises(MeasurementError, match="every bench has failed"):
            multi.run(settings)


def test_ray_actors_that_each_own_a_bench_survive_one_actor_being_killed() -> None:
    ray = pytest.importorskip("ray")
    import logging

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    try:
        actors = [RayBench.embedded(f"actor{i}", realtime=True, **EXACT) for i in range(3)]
        with benches(1) as (one,):
            settings = probe_settings(one, 160, seed=3)
            # Ray runs actors with one torch thread; the feature map's sums are bit-exact
            # only between equal thread counts (with 2 they differ in the last bit).
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                reference = PerturbationScheduler(one).run(settings)
            finally:
                torch.set_num_threads(threads)
        multi = MultiBenchScheduler(actors, chunk_size=8)
        victim = actors[2]

        def kill_after_a_chunk() -> None:
            while multi.bench_stats["actor2"].chunks < 1:
                time.sleep(0.002)
            ray.kill(victim.actor)  # the actor's process, and the bench it owns, are gone

        killer = threading.Thread(target=kill_after_a_chunk)
        killer.start()
        features = multi.run(settings)
        killer.join()
        assert torch.equal(features, reference)
        assert multi.bench_stats["actor2"].failed is not None
        queries = [s.stats.queries for s in multi.bench_stats.values()]
        assert sum(queries) == multi.stats.unique == 120
        for bench in actors:
            bench.close()
    finally:
        ray.shutdown()
