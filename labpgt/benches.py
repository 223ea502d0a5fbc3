"""Opening a bench, one way for every command: the embedded virtual bench or a bench file's
instruments (acquire, calibrate, train, the Python API).

`open_bench` is the one path; `check_bench_file` the one set of bench-file checks (missing,
unreadable, not UTF-8, invalid), `load_bench_files` the one load of a run's bench files
(each read once) and `instrument_errors_in_one_line` the one place an instrument failure
becomes a one-line `UserError` ("instrument: ..."). A failed safe shutdown
(`ShutdownError`) is never shortened: the entry point reports it at length.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from labpgt.errors import UserError
from labpgt.features import FeatureSpec
from labpgt.instrument_reservoir import InstrumentReservoir
from labpgt.instruments.bench_file import BenchConfig


def check_utf8(path: Path, option: str = "--bench") -> None:
    """Refuse, in one line, a bench file that cannot be read or is not UTF-8 text."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{option}: cannot read {path}: {exc.strerror or exc}") from None
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise UserError(
            f"{option}: {path} line {line} is not UTF-8 text (byte 0x{raw[exc.start]:02x}); "
            "a bench file is UTF-8 TOML"
        ) from None


def check_bench_file(path: Path, option: str = "--bench") -> Any:
    """Load and validate a bench file; every problem is a one-line `UserError`."""
    from labpgt.instruments.bench import load_bench
    from labpgt.instruments.instrument_errors import InstrumentsError

    if not path.is_file():
        raise UserError(f"{option}: file {path} does not exist")
    check_utf8(path, option)
    try:
        return load_bench(path)
    except InstrumentsError as exc:
        raise UserError(f"{option} {path}: {exc}") from None
    except (ValueError, TypeError) as exc:  # anything the loader did not put in words
        raise UserError(f"{option} {path}: {' '.join(str(exc).split())}") from None


def load_bench_files(names: Sequence[str | Path], option: str = "--bench") -> list[BenchConfig]:
    """Each bench file loaded and checked once, in order (a run opens these configs and
    never reads the files again); one line for a file that cannot be used or is given twice."""
    seen: set[Path] = set()
    configs = []
    for name in names:
        path = Path(name)
        if path.resolve() in seen:
            raise UserError(f"{option} {name} is given twice: each bench file is one bench")
        seen.add(path.resolve())
        configs.append(check_bench_file(path, option))
    return configs


@contextmanager
def instrument_errors_in_one_line() -> Iterator[None]:
    """An instrument failure inside the block becomes ``UserError("instrument: ...")``."""
    from labpgt.instruments.bench import ShutdownError
    from labpgt.instruments.instrument_errors import InstrumentsError

    try:
        yield
    except ShutdownError:
        raise  # reported at length by the entry point (exit 3), never as one line
    except InstrumentsError as exc:
        raise UserError(f"instrument: {exc}") from None


@contextmanager
def open_bench(
    bench: Path | BenchConfig | None,
    features: FeatureSpec,
    *,
    keep_traces: bool = False,
    seed: int = 0,
    noise: bool = True,
    drift: bool | None = None,
    hysteresis: bool = True,
    realtime: bool = False,
    prepare_embedded: Callable[[InstrumentReservoir], None] | None = None,
    handle_signals: bool = True,
) -> Iterator[InstrumentReservoir]:
    """A bench file's instruments (its path, or the config already loaded from it), or (None)
    the embedded virtual bench; left safe on exit.

    ``seed``, ``noise``, ``drift`` (None: as ``noise``), ``hysteresis``, ``realtime`` and
    ``prepare_embedded`` (called once on the fresh embedded reservoir) apply to the embedded
    bench only. ``handle_signals=False`` leaves SIGINT/SIGTERM alone (a process that is not
    the one the user started, e.g. a Ray actor). Instrument failures, opening or inside the
    block, are one-line `UserError`s.
    """
    with instrument_errors_in_one_line():
        if bench is None:
            from labpgt.embedded import embedded_bench

            with embedded_bench(
                seed=seed,
                noise=noise,
                drift=noise if drift is None else drift,
                hysteresis=hysteresis,
                realtime=realtime,
                keep_traces=keep_traces,
                features=features,
                handle_signals=handle_signals,
            ) as reservoir:
                if prepare_embedded is not None:
                    prepare_embedded(reservoir)
                yield reservoir
            return
        from labpgt.instruments.bench import Bench

        cfg = check_bench_file(bench) if isinstance(bench, Path) else bench
        with Bench.open(cfg, handle_signals=handle_signals) as opened:
            yield InstrumentReservoir(opened, features, keep_traces=keep_traces)
