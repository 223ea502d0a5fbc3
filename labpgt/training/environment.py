"""Open the backend a run trains against: fast-sim, embedded virtual bench, or a bench file.

All three end in the same scheduler; only what sits behind it differs:
- fast-sim: the in-process `SimulatedReservoir` (differentiable; backprop allowed),
- embedded (default): a virtual bench on loopback sockets driven through the real
  instrument drivers (`labpgt.embedded`),
- bench: the instruments named in a bench file.

Embedded benches and bench files open through `labpgt.benches.open_bench`, the bench files
from the configs the run's checks loaded (`labpgt.benches.load_bench_files`: read once).
Several of them (--benches N, --bench given more than once, --ray) sit behind one
`MultiBenchScheduler`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from labpgt.benches import load_bench_files, open_bench
from labpgt.features import FeatureSpec
from labpgt.instruments.bench_file import BenchConfig
from labpgt.training.config import TrainConfig
from labpgt.training.reservoir_layer import MeasurementBackend


def _scheduler(reservoir: object) -> object:
    from labpgt.scheduler import PerturbationScheduler

    return PerturbationScheduler(reservoir)


@contextmanager
def open_backend(
    config: TrainConfig, benches: Sequence[BenchConfig] | None = None
) -> Iterator[MeasurementBackend]:
    """Yield a backend for the configured bench; the bench is left safe on exit.

    ``benches``: the configs of ``config``'s bench files as the run's checks loaded them
    (`labpgt.runner.check_run`); None loads them here.
    """
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
    configs = load_bench_files(config.bench_files()) if benches is None else list(benches)
    if config.benches > 1 or config.ray or len(configs) > 1:
        with _several_benches(config, spec, configs) as backend:
            yield backend
        return
    bench = configs[0] if configs else None
    with open_bench(
        bench, spec, seed=config.seed, noise=config.noise, drift=config.drift
    ) as reservoir:
        yield MeasurementBackend(_scheduler(reservoir), reservoir, bench_kind=kind)


@contextmanager
def _several_benches(
    config: TrainConfig, spec: FeatureSpec, configs: list[BenchConfig]
) -> Iterator[MeasurementBackend]:
    """Several benches behind one `MultiBenchScheduler`: the bench files given (--bench more
    than once), or ``config.benches`` embedded virtual benches (seeds seed, seed+1 ...) in this
    process or (--ray) each in a Ray actor. On exit each bench's queries and instrument time
    go to <out>/benches.json."""
    import json

    from labpgt.multibench import LocalBench, MultiBenchScheduler

    with ExitStack() as stack:
        workers = (
            _ray_benches(config, spec, stack, configs)
            if config.ray
            else _local_benches(config, spec, stack, configs)
        )
        scheduler = MultiBenchScheduler(workers)
        first = workers[0]
        reservoir = first.reservoir if isinstance(first, LocalBench) else first
        try:
            yield MeasurementBackend(scheduler, reservoir, bench_kind=config.bench_kind())
        finally:
            stats = [s.as_dict() for s in scheduler.bench_stats.values()]
            out = Path(config.out)
            if out.is_dir():
                (out / "benches.json").write_text(json.dumps(stats, indent=2))


def _local_benches(
    config: TrainConfig, spec: FeatureSpec, stack: ExitStack, configs: list[BenchConfig]
) -> list[Any]:
    """A `LocalBench` per bench file (named by its path, opened from its loaded config), else
    per embedded virtual bench (bench0, bench1 ...), each opened through `open_bench` and
    closed by `stack`."""
    from labpgt.multibench import LocalBench

    files = config.bench_files()
    named: list[tuple[str, BenchConfig | None]] = list(zip(files, configs, strict=True)) or [
        (f"bench{i}", None) for i in range(config.benches)
    ]
    return [
        LocalBench(
            name,
            stack.enter_context(
                open_bench(path, spec, seed=config.seed + i, noise=config.noise, drift=config.drift)
            ),
        )
        for i, (name, path) in enumerate(named)
    ]


def _ray_benches(
    config: TrainConfig, spec: FeatureSpec, stack: ExitStack, configs: list[BenchConfig]
) -> list[Any]:
    """A Ray actor (`RayBench`) per bench file, each opening that file's instruments (from
    its config, loaded before Ray starts), else ``config.benches`` actors each owning an
    embedded virtual bench; on a local Ray or the cluster at ``config.address``. Ray is
    stopped on exit if started here."""
    from labpgt.multibench import RayBench, check_offered, start_ray

    files = config.bench_files()
    if start_ray(config.address):
        import ray

        stack.callback(ray.shutdown)
    places = config.bench_resources
    check_offered(places)
    workers = []
    for i, name in enumerate(files or [f"bench{i}" for i in range(config.benches)]):
        where = {"resources": {places[i]: 1.0}} if places else {}
        if files:
            worker = RayBench.bench_file(name, configs[i], spec, **where)
        else:
            worker = RayBench.embedded(
                name,
                seed=config.seed + i,
                features=spec,
                noise=config.noise,
                drift=config.drift,
                **where,
            )
        stack.callback(worker.close)
        workers.append(worker)
    return workers
