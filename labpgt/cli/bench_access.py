"""Opening the reservoir a command measures: a bench file's instruments or the embedded bench."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from labpgt.errors import UserError
from labpgt.features import FeatureSpec
from labpgt.reservoir import PhysicalReservoir


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
    from labpgt.instruments.errors import InstrumentsError

    if not path.is_file():
        raise UserError(f"{option}: file {path} does not exist")
    check_utf8(path, option)
    try:
        return load_bench(path)
    except InstrumentsError as exc:
        raise UserError(f"{option} {path}: {exc}") from None
    except (ValueError, TypeError) as exc:  # anything the loader did not put in words
        raise UserError(f"{option} {path}: {' '.join(str(exc).split())}") from None


def check_calibration_file(path: Path, option: str = "--calibration") -> None:
    """Refuse, in one line, a calibration file that cannot be loaded (missing, damaged)."""
    from labpgt.calibration import load_calibration

    if not path.is_file():
        raise UserError(f"{option}: file {path} does not exist")
    try:
        load_calibration(path)
    except UserError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
        # RuntimeError: torch refusing a surrogate state of the wrong shape.
        what = f"missing {exc}" if isinstance(exc, KeyError) else " ".join(str(exc).split())
        raise UserError(f"{option}: {path} is a damaged calibration file: {what[:300]}") from None


@contextmanager
def open_reservoir(
    bench_path: Path | None,
    features: FeatureSpec,
    *,
    keep_traces: bool = False,
    seed: int = 0,
    noise: bool = True,
    hysteresis: bool = True,
    realtime: bool = False,
    prepare_embedded: Callable[[PhysicalReservoir], None] | None = None,
) -> Iterator[PhysicalReservoir]:
    """The bench file's instruments, or (no path) the embedded virtual bench; left safe on exit.

    ``seed``, ``noise`` (noise and drift), ``hysteresis``, ``realtime`` and
    ``prepare_embedded`` (called once on the fresh embedded reservoir) apply to
    the embedded bench only. Instrument failures become a one-line `UserError`.
    """
    from labpgt.instruments.bench import ShutdownError
    from labpgt.instruments.errors import InstrumentsError

    try:
        if bench_path is None:
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

        with Bench.open(check_bench_file(bench_path)) as bench:
            yield InstrumentReservoir(bench, features, keep_traces=keep_traces)
    except ShutdownError:
        raise  # reported at length by the entry point (exit 3), never as one line
    except InstrumentsError as exc:
        raise UserError(f"instrument: {exc}") from None
