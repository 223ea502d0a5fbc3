"""The bench: three instruments opened from one bench file, shut down safely.

```python
cfg = load_bench("bench.toml")
with Bench.open(cfg) as bench:
    bench.supply.current_a = 1.8
    f_hz, p_dbm = bench.analyzer.read_trace()
```

The `Bench` holds one use of the process's pyvisa `ResourceManager` (pyvisa shares
one per VISA library) and gives it back after every instrument session is closed;
the manager itself closes with its last user, so benches never close each other.
Whichever way the block is left (normal exit, exception, Ctrl-C, SIGTERM,
interpreter exit), RF goes off, the bias is ramped to 0 A and the supply output
goes off.
"""

from __future__ import annotations

import atexit
from pathlib import Path
from typing import Any

import pyvisa
import pyvisa.errors as verr
from labpgt.instruments.bench_file import (
    AnalyzerDefaults,
    BenchConfig,
    GeneratorConfig,
    SettleConfig,
    SupplyConfig,
    bench_config_from_resources,
    bench_toml,
    dump_bench,
    load_bench,
    validate_bench,
)
from labpgt.instruments.bias_supply import BiasSupply
from labpgt.instruments.errors import InstrumentConnectionError, InstrumentsError
from labpgt.instruments.safety import ShutdownSignals
from labpgt.instruments.scpi import ScpiInstrument
from labpgt.instruments.signal_generator import SignalGenerator
from labpgt.instruments.spectrum_analyzer import SpectrumAnalyzer
from labpgt.instruments.transport import acquire_resource_manager, release_resource_manager

__all__ = [
    "AnalyzerDefaults",
    "Bench",
    "BenchConfig",
    "GeneratorConfig",
    "SettleConfig",
    "SupplyConfig",
    "bench_config_from_resources",
    "bench_toml",
    "dump_bench",
    "load_bench",
    "validate_bench",
]


def open_resource_manager(visa_library: str) -> pyvisa.ResourceManager:
    """A pyvisa ResourceManager for "@py", a vendor VISA path or "file.yaml@sim".

    Shared with other benches of the process; give it back with `release_resource_manager`.
    """
    try:
        return acquire_resource_manager(visa_library)
    except (OSError, ValueError, verr.Error) as exc:
        raise InstrumentConnectionError(
            f"visa_library {visa_library!r} cannot be loaded: {exc}"
        ) from exc


class Bench:
    """Generator, analyzer and supply sharing one resource manager and one safe shutdown."""

    def __init__(
        self,
        cfg: BenchConfig,
        rm: pyvisa.ResourceManager,
        generator: SignalGenerator,
        analyzer: SpectrumAnalyzer,
        supply: BiasSupply,
        signals: ShutdownSignals,
    ) -> None:
        self.cfg = cfg
        self.rm = rm
        self.generator = generator
        self.analyzer = analyzer
        self.supply = supply
        self._signals = signals
        self.closed = False
        atexit.register(self.close)

    @classmethod
    def open(
        cls,
        cfg: BenchConfig | str | Path,
        *,
        handle_signals: bool = True,
        apply_analyzer_defaults: bool = True,
    ) -> Bench:
        """Open all three instruments; on any failure, whatever was opened is made safe."""
        if not isinstance(cfg, BenchConfig):
            cfg = load_bench(cfg)
        signals = ShutdownSignals()
        if handle_signals:
            signals.install()
        rm: pyvisa.ResourceManager | None = None
        opened: list[ScpiInstrument] = []
        try:
            rm = open_resource_manager(cfg.visa_library)
            generator = SignalGenerator.open(
                cfg.generator.resource,
                family=cfg.generator.family,
                limits=cfg.limits,
                timeout_s=cfg.generator.timeout_s,
                rm=rm,
            )
            opened.append(generator)
            analyzer = SpectrumAnalyzer.open(
                cfg.analyzer.resource,
                family=cfg.analyzer.family,
                limits=cfg.limits,
                timeout_s=cfg.analyzer.timeout_s,
                rm=rm,
            )
            opened.append(analyzer)
            supply = BiasSupply.open(
                cfg.supply.resource,
                family=cfg.supply.family,
                limits=cfg.limits,
                timeout_s=cfg.supply.timeout_s,
                rm=rm,
            )
            opened.append(supply)
            if apply_analyzer_defaults:
                d = cfg.analyzer_defaults
                analyzer.configure(d.center_hz, d.span_hz, d.rbw_hz, d.points)
        except BaseException:
            signals.hold()
            _shutdown(opened)
            if rm is not None:
                release_resource_manager(rm)
            signals.restore()
            raise
        return cls(cfg, rm, generator, analyzer, supply, signals)

    @property
    def instruments(self) -> dict[str, ScpiInstrument]:
        return {"generator": self.generator, "analyzer": self.analyzer, "supply": self.supply}

    def enable_outputs(self) -> None:
        """Supply output on (at 0 A, then ramped to its setpoint), then RF on."""
        self.supply.output_on = True
        self.generator.rf_on = True

    def apply(
        self,
        frequency_hz: float | None = None,
        power_dbm: float | None = None,
        current_a: float | None = None,
    ) -> None:
        """Drive frequency and power, and bias current, for the next sweep (None: unchanged).

        Every value is limit-checked before anything is sent. The generator's
        exchange (as `set_cw`) is sent first and its reply read after the supply's
        (ramped) setting, so the two instruments work at the same time; each still
        reads back its values and raises its own queued error before this returns.
        If both fail, the supply's error is raised with the generator's as a note.
        """
        generator, supply = self.generator, self.supply
        drive = {
            name: value
            for name, value in (("frequency_hz", frequency_hz), ("power_dbm", power_dbm))
            if value is not None
        }
        checked = generator.check_controls(**drive)
        if current_a is not None:
            current_a = supply.check_value("current_a", current_a)
        with generator.conn.lock, supply.conn.lock:
            finish = generator.start_controls(checked) if checked else None
            try:
                if current_a is not None:
                    supply._ramp_to(current_a)  # checked above: the setter without a re-check
            except BaseException as exc:
                if finish is not None:
                    try:
                        finish()
                    except InstrumentsError as generator_error:
                        exc.add_note(f"generator also failed: {generator_error}")
                raise
            if finish is not None:
                finish()

    def snapshot(self) -> dict[str, Any]:
        """Identity and settings of every instrument, plus the limits and settle times."""
        snap: dict[str, Any] = {role: inst.snapshot() for role, inst in self.instruments.items()}
        snap["limits"] = self.cfg.limits.model_dump()
        snap["settle"] = self.cfg.settle.model_dump()
        snap["visa_library"] = self.cfg.visa_library
        return snap

    def close(self) -> None:
        """RF off, bias ramped to 0 A, output off; then close sessions and the manager.

        Signals are held back meanwhile. Raises the first shutdown failure (with the
        others as notes) after everything that could be done was done.
        """
        if self.closed:
            return
        self.closed = True
        atexit.unregister(self.close)
        self._signals.hold()
        try:
            errors = _shutdown([self.generator, self.analyzer, self.supply])
        finally:
            release_resource_manager(self.rm)
            self._signals.restore()
        if errors:
            first = errors[0]
            for other in errors[1:]:
                first.add_note(str(other))
            raise first

    def __enter__(self) -> Bench:
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> None:
        try:
            self.close()
        except InstrumentsError as shutdown_error:
            if exc is None:
                raise
            # Keep the original exception; the failed shutdown travels with it.
            exc.add_note(f"safe shutdown also failed: {shutdown_error}")


def _shutdown(instruments: list[ScpiInstrument]) -> list[InstrumentsError]:
    """Safe-off every instrument (RF first, then the magnet), then close every session."""
    errors: list[InstrumentsError] = []
    for instrument in sorted(instruments, key=lambda i: i.role != "generator"):
        try:
            instrument.safe_off()
        except InstrumentsError as exc:
            errors.append(exc)
    for instrument in instruments:
        instrument.close()
    return errors
