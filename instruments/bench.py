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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyvisa
import pyvisa.errors as verr
from labpgt.instruments.bench_file import (
    ROLES,
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
from labpgt.instruments.instrument_errors import (
    InstrumentConnectionError,
    InstrumentsError,
    LimitError,
)
from labpgt.instruments.safety import ShutdownSignals
from labpgt.instruments.scpi import RAMP_MARGIN, Prepared, ScpiInstrument
from labpgt.instruments.signal_generator import SignalGenerator
from labpgt.instruments.spectrum_analyzer import SpectrumAnalyzer
from labpgt.instruments.transport import acquire_resource_manager, release_resource_manager

__all__ = [
    "AnalyzerDefaults",
    "Bench",
    "BenchConfig",
    "ShutdownError",
    "ShutdownFailure",
    "GeneratorConfig",
    "PreparedSettings",
    "SettleConfig",
    "SupplyConfig",
    "bench_config_from_resources",
    "bench_toml",
    "dump_bench",
    "load_bench",
    "validate_bench",
]


DRIVERS: dict[str, type[ScpiInstrument]] = {
    "generator": SignalGenerator,
    "analyzer": SpectrumAnalyzer,
    "supply": BiasSupply,
}
"""The driver base class of each role (`open` picks the family's class)."""


DriveBias = tuple[float | None, float | None, float | None]
"""A shot's (drive frequency Hz, drive power dBm, bias current A); None: unchanged."""


class PreparedSettings(NamedTuple):
    """Drive and bias values checked and their messages built (`Bench.prepare`)."""

    drive: Prepared | None
    """The generator's frequency and power (None: unchanged)."""
    bias: Prepared | None
    """The supply's current (None: unchanged)."""


def open_instrument(role: str, cfg: BenchConfig, rm: pyvisa.ResourceManager) -> ScpiInstrument:
    """Open one role's instrument as the bench file describes it, on the caller's manager."""
    section = getattr(cfg, role)
    return DRIVERS[role].open(
        section.resource,
        family=section.family,
        limits=cfg.limits,
        timeout_s=section.timeout_s,
        rm=rm,
        compound_messages=section.compound_messages,
    )


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


@dataclass(eq=False)
class Bench:
    """Generator, analyzer and supply sharing one resource manager and one safe shutdown."""

    cfg: BenchConfig
    rm: pyvisa.ResourceManager
    generator: SignalGenerator
    analyzer: SpectrumAnalyzer
    supply: BiasSupply
    _signals: ShutdownSignals
    closed: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
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
            for role in ROLES:
                opened.append(open_instrument(role, cfg, rm))
            generator, analyzer, supply = opened  # type: ignore[misc]
            if apply_analyzer_defaults:
                d = cfg.analyzer_defaults
                analyzer.configure(d.center_hz, d.span_hz, d.rbw_hz, d.points)
        except BaseException as exc:
            signals.hold()
            failures = _shutdown(opened, signals)
            if rm is not None:
                release_resource_manager(rm)
            signals.status = None
            signals.restore()
            if failures:
                error = ShutdownError(failures)
                error.during = exc
                raise error from exc
            raise
        return cls(cfg, rm, generator, analyzer, supply, signals)

    @property
    def instruments(self) -> dict[str, ScpiInstrument]:
        return {"generator": self.generator, "analyzer": self.analyzer, "supply": self.supply}

    def enable_outputs(self) -> None:
        """Supply output on (at 0 A, then ramped to its setpoint), then RF on."""
        self.supply.output_on = True
        self.generator.rf_on = True

    def prepare(self, setting: DriveBias) -> PreparedSettings:
        """Check a (drive Hz, drive dBm, bias A) row against every limit; build its messages.

        None leaves a value unchanged. Sends nothing: `apply_prepared` sends them. A
        value outside a limit raises `LimitError` here, before any byte of it leaves.
        """
        frequency_hz, power_dbm, current_a = setting
        generator, supply = self.generator, self.supply
        checked = []
        if frequency_hz is not None:
            checked.append(generator.checked_value("frequency_hz", frequency_hz))
        if power_dbm is not None:
            checked.append(generator.checked_value("power_dbm", power_dbm))
        return PreparedSettings(
            generator.prepare_controls(checked) if checked else None,
            None
            if current_a is None
            else supply.prepare_controls([supply.checked_value("current_a", current_a)]),
        )

    def apply(
        self,
        frequency_hz: float | None = None,
        power_dbm: float | None = None,
        current_a: float | None = None,
    ) -> None:
        """Drive frequency and power, and bias current, for the next sweep (None: unchanged).

        Every value is limit-checked before anything is sent (`prepare`), then sent as
        `apply_prepared` sends it.
        """
        self.apply_prepared(self.prepare((frequency_hz, power_dbm, current_a)))

    def apply_prepared(self, prepared: PreparedSettings) -> None:
        """Send settings from `prepare`: the generator's and the supply's exchanges overlapped.

        The generator's exchange (as `set_cw`) is sent first and its reply read after
        the supply's (ramped) setting, so the two instruments work at the same time;
        each still reads back its values and raises its own queued error before this
        returns. If both fail, the supply's error is raised with the generator's as a note.
        """
        generator, supply = self.generator, self.supply
        with generator.conn.lock, supply.conn.lock:
            finish = None
            if prepared.drive is not None:
                finish = generator.send_controls(prepared.drive, overlap=True)
            try:
                if prepared.bias is not None:  # ramped, without a re-check
                    supply.send_controls(prepared.bias)
            except BaseException as exc:
                if finish is not None:
                    try:
                        finish()
                    except InstrumentsError as generator_error:
                        exc.add_note(f"generator also failed: {generator_error}")
                raise
            if finish is not None:
                finish()

    def shots(
        self,
        settings: Sequence[DriveBias],
        before_sweep: Callable[[int], object] | None = None,
    ) -> Iterator[np.ndarray]:
        """Each (drive Hz, drive dBm, bias A) applied in turn and swept: its trace (dBm).

        None leaves a value unchanged. `before_sweep(i)` runs after shot i's settings
        were taken and before its sweep (settle waits, outputs on). The loop is
        pipelined, so that between one sweep's end and the next sweep's start the
        client only sends settings and reads their replies:
        - while the analyzer sweeps shot i, shot i+1's values are checked and its
          messages built (`prepare`);
        - shot i's trace is given once shot i+1's sweep has started, so the caller's
          work on it runs during that sweep. Do not use the bench's instruments
          between two traces: the analyzer is sweeping. A caller that stops early
          closes the iterator (`close()`, or `contextlib.closing`): the sweep's
          reply is then left unread and the analyzer's session renewed.
        A value outside a limit (or an instrument error) of shot i+1 is raised after
        shot i's trace was given, as `apply` would raise it when the shot is due.
        """
        if not settings:
            return
        analyzer, last = self.analyzer, len(settings) - 1
        self.apply_prepared(self.prepare(settings[0]))
        if before_sweep is not None:
            before_sweep(0)
        with analyzer.conn.lock:
            pending: Callable[[], tuple[np.ndarray, np.ndarray]] | None = analyzer.start_sweep()
            try:
                for i in range(last + 1):
                    ahead = self._prepare_ahead(settings[i + 1]) if i < last else None
                    finish, pending = pending, None  # its own errors leave the link in step
                    _, power_dbm = finish()  # type: ignore[misc]
                    if ahead is not None:
                        pending, ahead = self._next_sweep(ahead, i + 1, before_sweep)
                    yield power_dbm
                    if isinstance(ahead, Exception):
                        raise ahead
            finally:
                if pending is not None:  # left early: the sweep's reply is not read
                    analyzer.conn.abandon_reply()

    def _next_sweep(
        self,
        prepared: PreparedSettings | Exception,
        i: int,
        before_sweep: Callable[[int], object] | None,
    ) -> tuple[Callable[[], tuple[np.ndarray, np.ndarray]] | None, Exception | None]:
        """Shot i's settings sent and its sweep started; or the error that stops it."""
        if isinstance(prepared, Exception):
            return None, prepared
        try:
            self.apply_prepared(prepared)
            if before_sweep is not None:
                before_sweep(i)
            return self.analyzer.start_sweep(), None
        except Exception as exc:  # noqa: BLE001 - raised after the trace before it
            return None, exc

    def _prepare_ahead(self, setting: DriveBias) -> PreparedSettings | Exception:
        # An error is kept for its own shot, raised when that shot is due.
        try:
            return self.prepare(setting)
        except Exception as exc:  # noqa: BLE001 - raised by `shots` when its shot is due
            return exc

    def snapshot(self) -> dict[str, Any]:
        """Identity and settings of every instrument, plus the limits and settle times."""
        snap: dict[str, Any] = {role: inst.snapshot() for role, inst in self.instruments.items()}
        snap["limits"] = self.cfg.limits.model_dump()
        snap["settle"] = self.cfg.settle.model_dump()
        snap["visa_library"] = self.cfg.visa_library
        return snap

    def close(self) -> None:
        """RF off, bias ramped to 0 A, output off; then close sessions and the manager.

        Signals are held back meanwhile (one that arrives is answered with what is
        still being made safe). Every instrument's shutdown is attempted even when
        another's fails; then a `ShutdownError` lists what may still be on.
        """
        if self.closed:
            return
        self.closed = True
        atexit.unregister(self.close)
        self._signals.hold()
        try:
            failures = _shutdown([self.generator, self.analyzer, self.supply], self._signals)
        finally:
            release_resource_manager(self.rm)
            self._signals.status = None
            self._signals.restore()
        if failures:
            raise ShutdownError(failures)

    def __enter__(self) -> Bench:
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> None:
        try:
            self.close()
        except ShutdownError as shutdown_error:
            if exc is None:
                raise
            # What is still on matters more than why the run stopped: the shutdown
            # failure wins, carrying the original exception (also as its __context__).
            shutdown_error.during = exc
            raise shutdown_error from exc


@dataclass
class ShutdownFailure:
    """One instrument that could not be confirmed safe."""

    role: str
    resource: str
    still_on: str
    """What may still be on, with the last known value, e.g. 'output ON at up to 1.75 A'."""
    action: str
    """What the operator should do about it."""
    error: str

    def describe(self) -> str:
        return f"{self.role} ({self.resource}): {self.still_on}: {self.error}"

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


class ShutdownError(InstrumentsError):
    """The safe shutdown failed for at least one instrument: something may still be on."""

    def __init__(self, failures: list[ShutdownFailure]) -> None:
        self.failures = failures
        self.during: BaseException | None = None
        """The exception the bench was leaving on (None: a normal close)."""
        super().__init__("safe shutdown failed: " + "; ".join(f.describe() for f in failures))


def _state(instrument: ScpiInstrument) -> dict[str, Any]:
    """The driver's last known output state (no exchange: the instrument may not answer)."""
    last = getattr(instrument, "_last", {})
    return {
        "rf_on": last.get("rf_on"),
        "frequency_hz": last.get("frequency_hz"),
        "power_dbm": last.get("power_dbm"),
        "output_on": getattr(instrument, "_output", last.get("output_on")),
        "current_a": getattr(instrument, "_setpoint_a", last.get("current_a")),
    }


def _failure(instrument: ScpiInstrument, before: dict[str, Any], exc: Exception) -> ShutdownFailure:
    role, resource = instrument.role, instrument.conn.resource
    after = _state(instrument)
    if role == "supply":
        values = [abs(v) for v in (before["current_a"], after["current_a"]) if v is not None]
        top_a = max(values) if values else float("nan")
        output = "may still be ON" if after["output_on"] is not False else "state unknown"
        rate = getattr(getattr(instrument, "limits", None), "ramp_rate_a_per_s", None)
        rate_text = f" at no more than {rate:g} A/s" if rate else ""
        still_on = f"magnet output {output} at up to {top_a:.4g} A (not confirmed at 0 A)"
        action = (
            f"ramp the current to 0 A{rate_text} from the supply's front panel, then "
            "switch its output off; do not disconnect the magnet while current flows"
        )
    elif role == "generator":
        where = ""
        if before["frequency_hz"] is not None and before["power_dbm"] is not None:
            where = f" at {before['frequency_hz'] / 1e9:.6g} GHz, {before['power_dbm']:.3g} dBm"
        still_on = f"RF output may still be ON{where} (not confirmed off)"
        action = "switch the RF output off on the generator (RF ON/OFF key)"
    else:
        still_on = "no outputs, but its session did not close cleanly"
        action = "nothing is energised; power-cycle it if it stays unresponsive"
    text = " ".join(str(exc).split())
    return ShutdownFailure(role, resource, still_on, action, text or type(exc).__name__)


SHUTDOWN_ATTEMPTS = 2
"""Each instrument's safe-off is tried this often (each try bounded by its timeout)."""


def _shutdown(
    instruments: list[ScpiInstrument], signals: ShutdownSignals | None = None
) -> list[ShutdownFailure]:
    """Safe-off every instrument (RF first, then the magnet), then close every session.

    Each instrument is attempted whatever happened to the one before, twice if the
    first try fails; a stalled one gets 90 % of one timeout per try (a fresh session).
    Returns the failures.
    """
    failures: list[ShutdownFailure] = []
    ordered = sorted(instruments, key=lambda i: i.role != "generator")
    pending = [i.role for i in ordered]
    for instrument in ordered:
        before = _state(instrument)
        if signals is not None:
            signals.status = lambda i=instrument: _status(i, pending)
        for attempt in range(SHUTDOWN_ATTEMPTS):
            try:
                instrument.conn.begin_shutdown()
                instrument.safe_off()
                break
            except LimitError as exc:  # not transient: trying again cannot help
                failures.append(_failure(instrument, before, exc))
                break
            except Exception as exc:  # every instrument gets its turn, whatever failed
                # A garbled or lost reply mid-ramp is worth one more try on a fresh
                # session (the ramp goes on from the last step sent).
                if attempt + 1 == SHUTDOWN_ATTEMPTS:
                    failures.append(_failure(instrument, before, exc))
        pending.remove(instrument.role)
    for instrument in instruments:
        try:
            instrument.close()
        except Exception as exc:
            failures.append(_failure(instrument, _state(instrument), exc))
    return failures


def _status(current: ScpiInstrument, pending: list[str]) -> str:
    """What the shutdown is doing now and how long the rest will take (for a held signal)."""
    if current.role == "supply":
        state = _state(current)
        current_a = abs(state["current_a"] or 0.0)
        rate = current.limits.ramp_rate_a_per_s
        if state["output_on"] and current_a > 0:
            left_s = RAMP_MARGIN * current_a / rate
            return (
                f"ramping the magnet from {current_a:.4g} A to 0 A at {rate:g} A/s, about "
                f"{left_s:.1f} s left (at most {current.conn.timeout_s:.3g} s more if the "
                "supply stops answering)"
            )
        return "switching the supply output off (under a second)"
    after = ", then ".join(p for p in pending if p != current.role)
    then = f", then {after}" if after else ""
    return (
        f"switching the {current.role} safe{then}; at most {current.conn.timeout_s:.3g} s per "
        "instrument that does not answer, plus the magnet ramp"
    )
