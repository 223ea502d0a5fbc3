"""Open the backend a run trains against: fast-sim, embedded virtual bench, or a bench file.

All three end in the same `PerturbationScheduler`; only what sits behind it differs:
- fast-sim: the in-process `SimulatedReservoir` (differentiable; backprop allowed),
- embedded (default): a virtual bench on loopback sockets driven through the real
  instrument drivers (`labpgt.embedded`),
- bench: the instruments named in a bench file.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from labpgt.benches import open_bench
from labpgt.features import FeatureSpec
from labpgt.training.config import TrainConfig
from labpgt.training.reservoir_layer import MeasurementBackend


def _scheduler(reservoir: object) -> object:
    from labpgt.scheduler import PerturbationScheduler

    return PerturbationScheduler(reservoir)


@contextmanager
def open_backend(config: TrainConfig) -> Iterator[MeasurementBackend]:
    """Yield a backend for the configured bench; the bench is left safe on exit."""
    spec = FeatureSpec(kind=config.features, bins=config.bins, kernel_width=config.kernel_width)
    kind = config.bench_kind()
    if kind == "fast-sim":
        from labpgt.sim.params import RingParams
        from labpgt.sim.ring import RingModel
        from labpgt.simulated_reservoir import SimulatedReservoir

        ring = RingModel(RingParams(noise=config.noise, drift=config.drift), seed=config.seed)
        reservoir = SimulatedReservoir(ring, features=spec)
        yield MeasurementBackend(_scheduler(reservoir), reservoir, bench_kind=kind)
        return
    if kind == "embedded" and config.benches > 1:
        with _embedded_benches(config, spec) as backend:
            yield backend
        return
    bench = None if config.bench is None else Path(config.bench)
    with open_bench(
        bench, spec, seed=config.seed, noise=config.noise, drift=config.drift
    ) as reservoir:
        yield MeasurementBackend(_scheduler(reservoir), reservoir, bench_kind=kind)


@contextmanager
def _embedded_benches(config: TrainConfig, spec: FeatureSpec) -> Iterator[MeasurementBackend]:
    """``config.benches`` embedded virtual benches behind one `MultiBenchScheduler`; on exit
    each bench's queries and instrument time go to <out>/benches.json."""
    import json
    from contextlib import ExitStack

    from labpgt.multibench import LocalBench, MultiBenchScheduler

    with ExitStack() as stack:
        reservoirs = [
            stack.enter_context(
                open_bench(None, spec, seed=config.seed + i, noise=config.noise, drift=config.drift)
            )
            for i in range(config.benches)
        ]
        scheduler = MultiBenchScheduler(
            [LocalBench(f"bench{i}", r) for i, r in enumerate(reservoirs)]
        )
        try:
            yield MeasurementBackend(scheduler, reservoirs[0], bench_kind="embedded")
        finally:
            stats = [s.as_dict() for s in scheduler.bench_stats.values()]
            out = Path(config.out)
            if out.is_dir():
                (out / "benches.json").write_text(json.dumps(stats, indent=2))
