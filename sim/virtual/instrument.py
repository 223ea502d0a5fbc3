"""The SCPI instrument base: error queue, IEEE 488.2 common commands, dispatch of a line.

Subclasses (generator, analyzer, supply) register their command tree in
`_build()` and their power-on state in `_reset()`. `execute()` runs one
newline-terminated program message and returns the reply bytes (or None when
the message held no query), exactly what the transport writes back.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Literal, NamedTuple

from labpgt.sim.scpi import (
    Call,
    CommandTable,
    ErrorQueue,
    Handler,
    Node,
    ScpiError,
    absolute_nodes,
    parse_header,
    split_header,
    split_params,
    split_units,
)

log = logging.getLogger(__name__)

# Standard event status register bits (IEEE 488.2).
_ESR_OPC = 1 << 0
_ESR_QUERY_ERROR = 1 << 2
_ESR_DEVICE_ERROR = 1 << 3
_ESR_EXECUTION_ERROR = 1 << 4
_ESR_COMMAND_ERROR = 1 << 5


class _Resolved(NamedTuple):
    """What a header means at a path: its handler and what the next unit's path becomes."""

    query: bool
    handler: Handler | None  # None: no such command (-113, raised while parsing the unit)
    suffixes: tuple[int | None, ...]
    common: bool
    next_path: tuple[Node, ...]


_NO_CALL = Call((), (), False)

_RESOLVED_MAX = 4096
"""Headers remembered per instrument: a garbage client must not grow memory without bound."""


@dataclass(frozen=True)
class Family:
    """What distinguishes one model family on the wire: identity and reply number style."""

    name: str
    identity: str
    number_style: Literal["keysight", "rs"]


class ScpiInstrument:
    """One virtual instrument: a command table, an error queue and a lock around state."""

    def __init__(self, family: Family, stop_event: threading.Event | None = None) -> None:
        self.family = family
        self.errors = ErrorQueue()
        self.table = CommandTable()
        # Re-entrant: handlers may call helpers that take the lock again.
        self.lock = threading.RLock()
        self.stop_event = stop_event if stop_event is not None else threading.Event()
        self._esr = 0
        self._resolved: dict[tuple[str, tuple[Node, ...]], _Resolved] = {}
        self._resolved_version = -1
        self._common = {
            ("IDN", True): lambda call: self.family.identity,
            ("RST", False): lambda call: self._reset(),
            ("CLS", False): lambda call: self._clear_status(),
            ("OPC", True): self._opc_query,
            ("OPC", False): self._opc_set,
            ("WAI", False): lambda call: self.wait_pending(),
            ("ESR", True): self._esr_query,
            ("STB", True): self._stb_query,
            ("TST", True): lambda call: "0",
        }
        self.table.add("SYSTem:ERRor[:NEXT]", getter=lambda call: self.errors.pop())
        self.table.add("SYSTem:ERRor:ALL", getter=self._all_errors)
        self.table.add("SYSTem:VERSion", getter=lambda call: "1999.0")
        self.table.add("SYSTem:PRESet", setter=lambda call: self._reset())
        self._build()
        with self.lock:
            self._reset()

    # ------------------------------------------------------------------ for subclasses

    def _build(self) -> None:
        """Register the family's commands in `self.table`."""

    def _reset(self) -> None:
        """Put the instrument in its *RST state."""

    def wait_pending(self) -> None:
        """Block until overlapped operations (a running sweep) are complete."""

    # ------------------------------------------------------------------ formatting

    def number(self, value: float) -> str:
        """A numeric reply in the family's style (Keysight NR3, R&S shortest decimal)."""
        if self.family.number_style == "keysight":
            return f"{value:+.15E}"
        return f"{value:.15g}"

    @staticmethod
    def boolean(value: bool) -> str:
        return "1" if value else "0"

    # ------------------------------------------------------------------ execution

    def push_error(self, code: int, detail: str = "") -> None:
        """Queue an error (also sets the matching event status bit)."""
        with self.lock:
            self._record(ScpiError(code, detail))

    def _record(self, error: ScpiError) -> None:
        self.errors.push(error)
        if error.is_command_error:
            self._esr |= _ESR_COMMAND_ERROR
        elif -299 <= error.code <= -200:
            self._esr |= _ESR_EXECUTION_ERROR
        elif -499 <= error.code <= -400:
            self._esr |= _ESR_QUERY_ERROR
        else:
            self._esr |= _ESR_DEVICE_ERROR

    def execute(self, line: str, *, refuse_settings: bool = False) -> bytes | None:
        """Run one program message; return the reply (``;``-joined, newline-terminated) or None.

        A command error (-1xx) discards the rest of the message, as IEEE 488.2
        parsers do; execution errors (-2xx) do not. With `refuse_settings`, units
        that would change state are skipped (queries still answer).
        """
        replies: list[bytes] = []
        with self.lock:
            try:
                units = split_units(line)
            except ScpiError as error:
                self._record(error)
                return None
            # The units are parsed before any runs (parsing changes no state), up to the
            # first unit that fails to parse: the units before it run, then its command
            # error is queued and the rest is discarded. So a wait in one unit (`*OPC?`
            # during a sweep) is followed at once by the next unit's handler.
            steps, parse_error = self._parse_units(units, refuse_settings)
            for text, handler, call in steps:
                try:
                    if isinstance(handler, Exception):
                        raise handler  # a unit whose parsing failed unexpectedly (a bug)
                    reply = handler(call)
                except ScpiError as error:
                    self._record(error)
                    if error.is_command_error:
                        parse_error = None  # the rest of the message is discarded
                        break
                    continue
                except Exception as exc:  # a bug must cost one error entry, never the server
                    log.exception("virtual %s: %r failed", self.family.name, text)
                    self._record(ScpiError(-300, f"{type(exc).__name__}: {exc}"))
                    continue
                if call.query and reply is not None:
                    replies.append(reply if isinstance(reply, bytes) else str(reply).encode())
            if parse_error is not None:
                self._record(parse_error)
        if not replies:
            return None
        return b";".join(replies) + b"\n"

    def _parse_units(
        self, units: list[str], refuse_settings: bool
    ) -> tuple[list[tuple[str, Handler | Exception, Call]], ScpiError | None]:
        """(text, handler, call) of each unit to run, up to the first command error.

        That error (a unit that does not parse, names no command, or gives a common
        command parameters) is returned to be queued after the units before it ran,
        which is when a parser reading unit by unit would have met it. Units refused
        by `refuse_settings` are left out.
        """
        if self._resolved_version != self.table.version:
            self._resolved.clear()
            self._resolved_version = self.table.version
        steps: list[tuple[str, Handler | Exception, Call]] = []
        path: tuple[Node, ...] = ()
        for unit_text in units:
            text = unit_text.strip()
            if not text:
                continue
            try:
                header, rest = split_header(text)
                params = tuple(split_params(rest)) if rest else ()
                resolved = self._resolved.get((header, path))
                if resolved is None:
                    resolved = self._resolve(header, path)
                path = resolved.next_path
                query = resolved.query
                if refuse_settings and not query:
                    continue
                handler = resolved.handler
                if handler is None:
                    raise ScpiError(-113, header)
                if resolved.common and params:
                    raise ScpiError(-108, ",".join(params))
            except ScpiError as error:
                if error.is_command_error:
                    return steps, error
                steps.append((text, error, _NO_CALL))
                continue
            except Exception as exc:
                steps.append((text, exc, _NO_CALL))
                continue
            steps.append((text, handler, Call(params, resolved.suffixes, query)))
        return steps, None

    def _resolve(self, header: str, path: tuple[Node, ...]) -> _Resolved:
        """Parse `header` at `path` and find its handler; remembered per (header, path).

        A header that does not parse raises `ScpiError` and is not remembered; one that
        parses but names no command is remembered with no handler.
        """
        common, rooted, nodes, query = parse_header(header)
        if common is not None:
            handler = self._common.get((common, query))
            resolved = _Resolved(query, handler, (), True, path)
        else:
            absolute = absolute_nodes(rooted, nodes, path)
            found = self.table.lookup(absolute)
            handler, suffixes = None, ()
            if found is not None:
                command, suffixes = found
                handler = command.getter if query else command.setter
            resolved = _Resolved(query, handler, suffixes, False, absolute[:-1])
        if len(self._resolved) < _RESOLVED_MAX:
            self._resolved[(header, path)] = resolved
        return resolved

    # ------------------------------------------------------------------ common commands

    def _clear_status(self) -> None:
        self.errors.clear()
        self._esr = 0

    def _opc_query(self, call: Call) -> str:
        self.wait_pending()
        return "1"

    def _opc_set(self, call: Call) -> None:
        self.wait_pending()
        self._esr |= _ESR_OPC

    def _esr_query(self, call: Call) -> str:
        value, self._esr = self._esr, 0
        return str(value)

    def _stb_query(self, call: Call) -> str:
        # Bit 2: error queue not empty (SCPI); bit 5: a standard event is pending.
        return str((4 if len(self.errors) else 0) | (32 if self._esr else 0))

    def _all_errors(self, call: Call) -> str:
        entries = []
        while len(self.errors):
            entries.append(self.errors.pop())
        return ",".join(entries) if entries else self.errors.pop()
