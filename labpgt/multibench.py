"""Several benches behind one scheduler: probe batches split across N reservoirs.

`MultiBenchScheduler.run` takes the same (..., 3) settings as
`PerturbationScheduler.run` and returns the same (..., F) features. Per call:

1. refuse any setting outside a bench's bounds before an instrument moves;
2. de-duplicate and order the settings once for all benches (`plan_order`: bias
   first), and cut the ordered list into chunks of ``chunk_size`` settings;
3. give each live bench a contiguous run of chunks (so each sweeps its own bias
   range), one thread per bench; a bench that finishes its run takes chunks from
   the tail of the longest remaining run (work stealing), so a slow bench does not
   hold the batch up;
4. each bench measures its chunks through its own `PerturbationScheduler` (its
   repeats, retries with reconnect, accounting);
5. a bench whose chunk still fails after those retries is retired: the chunk goes
   back to the queue whole and the other benches measure it. A chunk's result is
   stored once, when a bench returns it complete, so no probe is lost or measured
   into the result twice; a batch fails only when every bench has failed.

Accounting per bench (`bench_stats`): the cumulative `ScheduleStats` of its
scheduler (queries, instrument time, retries ...) and, for a retired bench, why.
The instrument time a bench spent on the chunk it failed is not in its stats (its
scheduler discards a run that fails), and that chunk's probes are measured again
elsewhere: the result holds each probe once, the instruments may have swept it twice.

A bench (`BenchWorker`) is anything with ``name``, ``bounds``, ``feature_dim`` and
``run(settings) -> (features, ScheduleStats)``: `LocalBench` (a reservoir in this
process, e.g. an embedded virtual bench) or `RayBench` (a Ray actor that owns a bench
in its own process, on this machine or on a bench PC in a cluster).
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch

from labpgt.errors import MeasurementError, UserError
from labpgt.reservoir import PhysicalReservoir
from labpgt.scheduler import PerturbationScheduler, ScheduleStats, plan_order
from labpgt.setting_bounds import SettingBounds


class BenchWorker(Protocol):
    """One reservoir that measures chunks of settings (see the module docstring)."""

    name: str

    @property
    def bounds(self) -> SettingBounds: ...

    @property
    def feature_dim(self) -> int: ...

    def run(self, settings: torch.Tensor) -> tuple[torch.Tensor, ScheduleStats]: ...


class LocalBench:
    """A reservoir in this process behind its own `PerturbationScheduler`."""

    def __init__(self, name: str, reservoir: PhysicalReservoir, **scheduler_options: Any):
        self.name = name
        self.reservoir = reservoir
        self.scheduler = PerturbationScheduler(reservoir, **scheduler_options)

    @property
    def bounds(self) -> SettingBounds:
        return self.reservoir.bounds

    @property
    def feature_dim(self) -> int:
        return self.reservoir.feature_dim

    def run(self, settings: torch.Tensor) -> tuple[torch.Tensor, ScheduleStats]:
        features = self.scheduler.run(settings)
        return features, self.scheduler.last


@dataclass
class BenchStats:
    """What one bench of a `MultiBenchScheduler` did, cumulative over its runs."""

    name: str
    stats: ScheduleStats = field(default_factory=ScheduleStats)
    chunks: int = 0
    """Chunks this bench returned complete."""
    failed: str | None = None
    """Why the bench was retired (None: it is live)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "chunks": self.chunks,
            "failed": self.failed,
            **asdict(self.stats),
        }


class MultiBenchScheduler:
    """Measures batches of settings on several benches at once (see the module docstring)."""

    def __init__(self, benches: Sequence[BenchWorker], *, chunk_size: int = 16) -> None:
        if not benches:
            raise ValueError("at least one bench is required")
        if chunk_size < 1:
            raise ValueError("chunk_size >= 1 is required")
        names = [b.name for b in benches]
        if len(set(names)) != len(names):
            raise ValueError(f"bench names must be unique; got {names}")
        dims = {b.feature_dim for b in benches}
        if len(dims) != 1:
            raise ValueError(f"benches disagree on the feature dimension: {sorted(dims)}")
        self.benches = list(benches)
        self.chunk_size = chunk_size
        self.bench_stats = {b.name: BenchStats(b.name) for b in benches}
        self.stats = ScheduleStats()
        """All benches together, cumulative (``requested`` and ``unique`` per call)."""

    @property
    def live(self) -> list[BenchWorker]:
        return [b for b in self.benches if self.bench_stats[b.name].failed is None]

    def run(self, settings: torch.Tensor) -> torch.Tensor:
        """Settings (..., 3) -> features (..., F) in the caller's order (float64)."""
        shape = settings.shape
        if shape[-1] != 3:
            raise ValueError(f"settings must have a last dimension of 3; got {tuple(shape)}")
        live = self.live
        if not live:
            raise MeasurementError("every bench has failed; nothing left to measure on")
        flat = settings.detach().reshape(-1, 3).to(torch.float64)
        for bench in live:
            bench.bounds.check(flat)
        plan = plan_order(flat, live[0].bounds)
        unique = flat[plan.rows]
        features = self._dispatch(unique, live)
        self.stats.requested += flat.shape[0]
        self.stats.unique += unique.shape[0]
        self.stats.runs += 1
        return features[plan.result_index].reshape(*shape[:-1], features.shape[-1])

    # --- dispatch ----------------------------------------------------------------------------

    def _dispatch(self, unique: torch.Tensor, live: list[BenchWorker]) -> torch.Tensor:
        """Measure the ordered `unique` settings chunk by chunk on the live benches, one
        thread each; every chunk's features stored once."""
        n = unique.shape[0]
        bounds = [(s, min(s + self.chunk_size, n)) for s in range(0, n, self.chunk_size)]
        out = torch.empty(n, live[0].feature_dim, dtype=torch.float64)
        stored = [False] * len(bounds)
        chunks = _ChunkQueue([b.name for b in live], len(bounds))

        def work(bench: BenchWorker) -> None:
            record = self.bench_stats[bench.name]
            while (index := chunks.take(bench.name)) is not None:
                lo, hi = bounds[index]
                try:
                    features, stats = bench.run(unique[lo:hi])
                    if features.shape != (hi - lo, out.shape[1]):
                        raise MeasurementError(
                            f"returned features of shape {tuple(features.shape)} for "
                            f"{hi - lo} settings"
                        )
                except Exception as exc:
                    with chunks.lock:
                        chunks.give_back(bench.name, index)  # whole, for the others
                        record.failed = f"{type(exc).__name__}: {exc}".splitlines()[0]
                    return
                with chunks.lock:  # a chunk is handed out to one bench at a time: stored once
                    out[lo:hi] = features.to(torch.float64)
                    stored[index] = True
                    record.stats.add(stats)
                    record.chunks += 1
                    self.stats.add(_without_calls(stats))
                    chunks.finished()

        _run_threads(work, live)
        if not all(stored):
            reasons = "; ".join(f"{b.name}: {self.bench_stats[b.name].failed}" for b in live)
            missing = sum(hi - lo for (lo, hi), ok in zip(bounds, stored, strict=True) if not ok)
            raise MeasurementError(f"every bench failed with {missing} settings left ({reasons})")
        return out


class _ChunkQueue:
    """Chunk indices handed to benches: each bench a contiguous run (in bias order), work
    stealing from the longest run, a failed bench's chunk handed back whole."""

    def __init__(self, names: list[str], n_chunks: int) -> None:
        self.queues: dict[str, deque[int]] = {}
        for i, name in enumerate(names):
            lo, hi = i * n_chunks // len(names), (i + 1) * n_chunks // len(names)
            self.queues[name] = deque(range(lo, hi))
        self.lock = threading.Condition()
        self.in_flight = 0
        """Chunks a bench is measuring: a failure puts its chunk back."""

    def take(self, name: str) -> int | None:
        """The bench's next chunk, else one from the longest run; None when all is done."""
        with self.lock:
            while True:
                donor = self.queues[name] or max(self.queues.values(), key=len)
                if donor:
                    self.in_flight += 1
                    return donor.popleft() if donor is self.queues[name] else donor.pop()
                if self.in_flight == 0:
                    return None
                self.lock.wait()  # another bench may yet fail and hand its chunk back

    def give_back(self, name: str, index: int) -> None:
        """A chunk the bench failed, first in its queue again (call with the lock held)."""
        self.queues[name].appendleft(index)
        self.finished()

    def finished(self) -> None:
        """A taken chunk is done with (call with the lock held)."""
        self.in_flight -= 1
        self.lock.notify_all()


def _run_threads(work: Callable[[BenchWorker], None], benches: list[BenchWorker]) -> None:
    """`work(bench)` for every bench at once, one daemon thread each; returns when all end."""
    threads = [
        threading.Thread(target=work, args=(b,), name=f"bench-{b.name}", daemon=True)
        for b in benches
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _without_calls(stats: ScheduleStats) -> ScheduleStats:
    """A bench run's stats without its per-call counters (the multi-bench call counts those)."""
    return ScheduleStats(**{**asdict(stats), "runs": 0, "requested": 0, "unique": 0})


# --------------------------------------------------------------------------- Ray actors


class _BenchActor:
    """A Ray actor that owns a bench in its process: an embedded virtual bench
    (`embedded_bench`, ``bench_options`` its options) or, given a bench file's loaded config,
    that file's instruments (`labpgt.benches.open_bench`, ``bench_options`` the features)."""

    def __init__(
        self,
        scheduler_options: dict[str, Any],
        bench_options: dict[str, Any],
        bench_config: Any = None,
    ) -> None:
        self._stack = contextlib.ExitStack()
        if bench_config is None:
            from labpgt.embedded import embedded_bench

            options = {"handle_signals": False, **bench_options}
            self.reservoir = self._stack.enter_context(embedded_bench(**options))
        else:
            from labpgt.benches import open_bench

            opened = open_bench(bench_config, bench_options["features"], handle_signals=False)
            self.reservoir = self._stack.enter_context(opened)
        self.scheduler = PerturbationScheduler(self.reservoir, **scheduler_options)

    def info(self) -> tuple[dict[str, Any], int]:
        return self.reservoir.bounds.model_dump(), self.reservoir.feature_dim

    def snapshot(self) -> dict[str, Any]:
        return self.reservoir.snapshot()

    def run(self, settings: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        features = self.scheduler.run(settings)
        return features, asdict(self.scheduler.last)

    def pid(self) -> int:
        import os

        return os.getpid()

    def close(self) -> None:
        self._stack.close()


class RayBench:
    """A bench owned by a Ray actor (this machine, or a bench PC that joined the cluster).

    ``RayBench.embedded(name, ...)`` starts an actor around an embedded virtual bench;
    ``RayBench.bench_file(name, config, features)`` one that opens the instruments of a bench
    file (loaded here; the actor's node must reach the instruments it names). A bench that
    fails to open is a one-line `UserError` naming it.
    """

    def __init__(self, name: str, actor: Any) -> None:
        import ray

        self.name = name
        self.actor = actor
        try:
            bounds, dim = ray.get(actor.info.remote())
        except ray.exceptions.RayActorError as exc:
            cause = getattr(exc, "cause", None) or exc
            why = (str(cause).strip() or type(cause).__name__).splitlines()[-1]
            raise UserError(f"{name}: the bench's Ray actor did not start ({why})") from None
        self.bounds = SettingBounds(**bounds)
        self.feature_dim = int(dim)

    @classmethod
    def embedded(
        cls,
        name: str,
        *,
        scheduler_options: dict[str, Any] | None = None,
        resources: dict[str, float] | None = None,
        **bench_options: Any,
    ) -> RayBench:
        """``resources``: custom Ray resources the actor needs (it starts on a node that has
        them), as for `bench_file`."""
        actor_class = _actor_class(resources)
        return cls(name, actor_class.remote(scheduler_options or {}, bench_options))

    @classmethod
    def bench_file(
        cls,
        name: str,
        config: Any,
        features: Any,
        *,
        scheduler_options: dict[str, Any] | None = None,
        resources: dict[str, float] | None = None,
    ) -> RayBench:
        actor_class = _actor_class(resources)
        options = {"features": features}
        return cls(name, actor_class.remote(scheduler_options or {}, options, config))

    def run(self, settings: torch.Tensor) -> tuple[torch.Tensor, ScheduleStats]:
        import ray

        features, stats = ray.get(self.actor.run.remote(settings))
        return features, ScheduleStats(**stats)

    def snapshot(self) -> dict[str, Any]:
        """The owned reservoir's snapshot (what a checkpoint's bench identity is made of)."""
        import ray

        return ray.get(self.actor.snapshot.remote())

    def close(self) -> None:
        import ray

        with contextlib.suppress(ray.exceptions.RayActorError):  # gone already
            ray.get(self.actor.close.remote())
        ray.kill(self.actor)


def _actor_class(resources: dict[str, float] | None) -> Any:
    """The bench actor class for Ray: no CPU of its own (it waits on its instruments), and
    the custom resources that pin it to a node, if any."""
    import ray

    return ray.remote(num_cpus=0, resources=resources or {})(_BenchActor)


def check_offered(resources: tuple[str, ...]) -> None:
    """Refuse, in one line, a custom resource no node of the connected cluster offers (an
    actor that needs it would wait for it forever)."""
    if not resources:
        return
    import ray

    offered = ray.cluster_resources()
    missing = [name for name in resources if offered.get(name, 0.0) < 1.0]
    if missing:
        raise UserError(
            f"--bench-resource {missing[0]}: no node of the Ray cluster offers it (start the "
            f"bench's node with ray start --resources '{{\"{missing[0]}\": 1}}')"
        )


def start_ray(address: str | None) -> bool:
    """Join the Ray cluster at `address`, or start a local Ray sized to the cores (None);
    nothing when Ray is running in this process already. True if this call started it.

    Ray not installed, or a cluster that does not answer, is a one-line `UserError`.
    """
    import logging
    import os

    try:
        import ray
    except ImportError:
        raise UserError(
            "--ray needs Ray, which is not installed: pip install 'labpgt[scale]'"
        ) from None
    if ray.is_initialized():
        return False
    sized = {} if address is not None else {"num_cpus": os.cpu_count() or 1}
    try:
        ray.init(
            address=address or "local",  # never a cluster another program started here
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=False,
            **sized,
        )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        why = (str(exc).strip() or type(exc).__name__).splitlines()[0]
        raise UserError(
            f"--address {address or '(local Ray)'}: Ray does not start ({why})"
        ) from None
    return True
