"""Opening the reservoir a command measures: a bench file's instruments or the embedded bench."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from labpgt.errors import UserError
from labpgt.features import FeatureSpec
from labpgt.instruments.bench_file import BenchConfig
from labpgt.reservoir import PhysicalReservoir
from labpgt.runner import check_bench_file


@contextmanager
def open_reservoir(
    bench: Path | BenchConfig | None,
    features: FeatureSpec,
    *,
    keep_traces: bool = False,
    seed: int = 0,
    noise: bool = True,
    hysteresis: bool = True,
    realtime: bool = False,
    prepare_embedded: Callable[[PhysicalReservoir], None] | None = None,
) -> Iterator[PhysicalReservoir]:
    """A bench file's instruments (its path, or the config already loaded from it), or (None)
    the embedded virtual bench; left safe on exit.

    ``seed``, ``noise`` (noise and drift), ``hysteresis``, ``realtime`` and
    ``prepare_embedded`` (called once on the fresh embedded reservoir) apply to
    the embedded bench only. Instrument failures become a one-line `UserError`.
    """
    from labpgt.instruments.bench import ShutdownError
    from labpgt.instruments.instrument_errors import InstrumentsError

    try:
        if bench is None:
            from labpgt.embedded import embedded_bench

            with embedded_bench(
                seed=seed,
                noise=noise,
                drift=noise,
                hysteresis=hysteresis,
                realtime=realtime,
                keep_traces=keep_traces,
                features=features,
            ) as reservoir:
                if prepare_embedded is not None:
                    prepare_embedded(reservoir)
                yield reservoir
            return
        from labpgt.instrument_reservoir import InstrumentReservoir
        from labpgt.instruments.bench import Bench

        cfg = check_bench_file(bench) if isinstance(bench, Path) else bench
        with Bench.open(cfg) as opened:
            yield InstrumentReservoir(opened, features, keep_traces=keep_traces)
    except ShutdownError:
        raise  # reported at length by the entry point (exit 3), never as one line
    except InstrumentsError as exc:
        raise UserError(f"instrument: {exc}") from None
