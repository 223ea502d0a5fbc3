"""Health check of a bench: open each instrument, read identity, settings and errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from labpgt.instruments.bench import open_instrument, open_resource_manager
from labpgt.instruments.bench_file import ROLES, BenchConfig
from labpgt.instruments.instrument_errors import InstrumentsError
from labpgt.instruments.scpi import ScpiInstrument
from labpgt.instruments.transport import release_resource_manager


@dataclass
class CheckResult:
    """What one instrument answered (or why it could not)."""

    role: str
    resource: str
    family: str
    identity: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    errors: list[tuple[int, str]] = field(default_factory=list)
    stale_errors: list[tuple[int, str]] = field(default_factory=list)
    failure: str | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None and not self.errors


def check_instrument(role: str, cfg: BenchConfig, rm: Any) -> CheckResult:
    """Open one instrument, read `*IDN?`, every setting and the error queue, close it.

    Nothing is switched: outputs stay as they were (setup only selects modes,
    formats and a supply range, and moves a supply setpoint outside the limits to
    0 A while its output is off). Errors queued before the check (`stale_errors`, left by an earlier
    session) are reported apart from errors raised by the check itself.
    """
    section = getattr(cfg, role)
    result = CheckResult(role, section.resource, section.family)
    instrument: ScpiInstrument | None = None
    try:
        instrument = open_instrument(role, cfg, rm)
        result.stale_errors = list(instrument.stale_errors)
        result.identity = instrument.identify()
        result.settings = instrument.settings()
        result.errors.extend(instrument.drain_errors())
    except InstrumentsError as exc:
        result.failure = str(exc)
    finally:
        if instrument is not None:
            instrument.close()
    return result


def check_bench(cfg: BenchConfig) -> list[CheckResult]:
    """Check every instrument of the bench, one after the other, with one resource manager."""
    rm = open_resource_manager(cfg.visa_library)
    try:
        return [check_instrument(role, cfg, rm) for role in ROLES]
    finally:
        release_resource_manager(rm)
