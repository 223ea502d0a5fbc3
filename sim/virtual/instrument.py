"""The SCPI instrument base: IEEE 488.2 common commands, sessions, dispatch of a line.

Subclasses (generator, analyzer, supply) register their command tree in
`_build()` and their power-on state in `_reset()`. `execute()` runs one
newline-terminated program message for one client `Session` (its own error
queue and status registers, `labpgt.sim.ieee488`) and returns the reply bytes
(or None when the message held no query), exactly what the transport writes back.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from labpgt.sim.ieee488 import Session, register_value
from labpgt.sim.scpi_parser import (
    Call,
    CommandTable,
    ErrorQueue,
    Handler,
    Node,
    ScpiError,
    absolute_nodes,
    one_param,
    parse_bool,
    parse_choice,
    parse_header,
    parse_number,
    split_header,
    split_params,
    split_units,
)

log = logging.getLogger(__name__)

_NOT_PRINTABLE_RE = re.compile(r"[^\t\x20-\x7e]")
"""Anything but printable 7-bit ASCII and tab: -101 Invalid character (IEEE 488.2 7.4.1)."""


class _Resolved(NamedTuple):
    """What a header means at a path: its handler and what the next unit's path becomes."""

    query: bool
    handler: Handler | None  # None: no such command (-113, raised while parsing the unit)
    suffixes: tuple[int | None, ...]
    common: bool
    next_path: tuple[Node, ...]


_NO_CALL = Call((), (), False)

StoredRow = tuple[str, str, object, object]
"""A stored setting in a model's table: (pattern, name, *RST value, extra); see `add_settings`."""
_UNIT_SUFFIXES = (("_hz", "HZ"), ("_dbm", "DBM"), ("_s", "S"), ("_v", "V"), ("_pct", "PCT"))

FINISH_SPIN_S = 0.001
"""A real-time sweep's last millisecond is waited out by spinning, not by a timed wait."""

_RESOLVED_MAX = 4096
"""Headers remembered per instrument: a garbage client must not grow memory without bound."""


@dataclass(frozen=True)
class Family:
    """What distinguishes one model on the wire: identity, reply number style, options.

    `name` is the driver family (what a bench file names), `model` the virtual
    model's own key (several models share a family, e.g. MXG and PSG), and
    `options` the `*OPT?` reply exactly as the model sends it (Keysight X-series
    quote it, MXG and R&S do not).
    """

    name: str
    identity: str
    number_style: Literal["keysight", "rs"]
    model: str = field(default="", kw_only=True)
    options: str = field(default="0", kw_only=True)

    @property
    def key(self) -> str:
        """The model's key in its table (the family name when the model has none of its own)."""
        return self.model or self.name


_COMMON_WITH_PARAMETER = frozenset({("ESE", False), ("SRE", False)})
"""Common commands that take one parameter; every other one refuses parameters (-108)."""


class VirtualInstrument:
    """One virtual instrument: a command table, sessions and a lock around state.

    `local` is the instrument's own session (the front panel): `execute()` without
    a session and `push_error()` without one use it, and the first client session
    opened afterwards takes over what it queued (errors left for the next user).
    """

    def __init__(self, family: Family, stop_event: threading.Event | None = None) -> None:
        self.family = family
        self.local = Session("local")
        self.session = self.local  # the session whose message runs now (under `lock`)
        self.newest_session: Session | None = None  # the client session opened last
        self.table = CommandTable()
        # Re-entrant: handlers may call helpers that take the lock again.
        self.lock = threading.RLock()
        self.stop_event = stop_event if stop_event is not None else threading.Event()
        self._resolved: dict[tuple[str, tuple[Node, ...]], _Resolved] = {}
        self._resolved_version = -1
        self._common = {
            ("IDN", True): lambda call: self.family.identity,
            ("RST", False): lambda call: self.power_on_reset(),
            ("CLS", False): lambda call: self.session.clear(),
            ("OPC", True): self._opc_query,
            ("OPC", False): self._opc_set,
            ("WAI", False): lambda call: self.wait_pending(),
            ("ESR", True): lambda call: str(self.session.read_esr()),
            ("ESE", True): lambda call: str(self.session.ese),
            ("ESE", False): self._ese_set,
            ("SRE", True): lambda call: str(self.session.sre),
            ("SRE", False): self._sre_set,
            ("STB", True): lambda call: str(self.session.status_byte()),
            ("TST", True): lambda call: "0",
            ("OPT", True): lambda call: self.options_reply(),
        }
        self.table.add("SYSTem:ERRor[:NEXT]", getter=lambda call: self.session.errors.pop())
        self.table.add("SYSTem:ERRor:ALL", getter=self._all_errors)
        self.table.add("SYSTem:ERRor:COUNt", getter=lambda call: str(len(self.session.errors)))
        self.table.add("SYSTem:VERSion", getter=lambda call: "1999.0")
        self.table.add("SYSTem:PRESet", setter=lambda call: self.power_on_reset())
        self.joined_replies = True
        """False: each query of a message is answered on its own line (as some
        instruments and simulators do) instead of one `;`-joined reply."""
        self.stored: dict[str, object] = {}
        self._stored_initial: dict[str, object] = {}
        self._build()
        with self.lock:
            self.power_on_reset()

    def power_on_reset(self) -> None:
        """`*RST`: every stored setting to its initial value, then the model's own state."""
        self.stored.update(self._stored_initial)
        self._reset()

    def add_setting(
        self,
        pattern: str,
        name: str,
        initial: object,
        *,
        choices: tuple[str, ...] = (),
        unit: str | None = None,
        limits: tuple[float, float] | None = None,
        only_off: bool = False,
        then: Callable[[], None] | None = None,
    ) -> None:
        """A setting the model stores and reports but that has no effect on the ring.

        `initial` (its *RST value) decides the kind: a bool (ON|OFF|1|0, read as 1/0),
        a str with `choices` (short or long form, read in short form), or a number
        (within `limits`, `unit` suffixes accepted). `only_off`: the model refuses ON
        with -221 (e.g. a modulation the virtual source cannot apply). `then` runs
        after each set.
        """
        self._stored_initial[name] = initial
        self.stored[name] = initial

        def setter(call: Call) -> None:
            text = one_param(call)
            if isinstance(initial, bool):
                value: object = parse_bool(text)
                if value and only_off:
                    raise ScpiError(-221, f"{name}: not available on the virtual source")
            elif isinstance(initial, str):
                value = short_form(parse_choice(text, choices))
            else:
                low, high = limits if limits is not None else (None, None)
                value = parse_number(text, unit, minimum=low, maximum=high, default=initial)
            self.stored[name] = value
            if then is not None:
                then()

        def getter(call: Call) -> str:
            value = self.stored[name]
            if isinstance(value, bool):
                return self.boolean(value)
            if isinstance(value, str):
                return value
            return self.number(float(value))

        self.table.add(pattern, setter=setter, getter=getter)

    def add_number(
        self,
        pattern: str,
        attribute: str,
        unit: str,
        limits: str,
        *,
        default: float,
        then: Callable[[], None] | None = None,
        reading: Callable[[], float] | None = None,
    ) -> None:
        """A numeric setting that acts (kept in `attribute`): set within the model's range,
        the property named `limits`; `X? MIN|MAX` answers that range; `then` runs after a set;
        `reading`, when given, gives what `X?` answers (default: the attribute)."""

        def setter(call: Call) -> None:
            low, high = getattr(self, limits)
            value = parse_number(one_param(call), unit, minimum=low, maximum=high, default=default)
            setattr(self, attribute, value)
            if then is not None:
                then()

        def getter(call: Call) -> str:
            value = reading() if reading is not None else getattr(self, attribute)
            return self.number_query(call, value, getattr(self, limits))

        self.table.add(pattern, setter=setter, getter=getter)

    def add_settings(
        self,
        rows: tuple[StoredRow, ...],
        named_limits: dict[str, tuple[float, float]],
        then: Callable[[], None] | None = None,
    ) -> None:
        """`add_setting` for each row of a table: (pattern, name, *RST value, extra).

        `extra` is, by the value's kind: for a bool, "off" (ON refused) or None; for a
        str, its choices; for a number, its limits, the key of one of `named_limits`
        (e.g. the model's output range), or None. A number's unit follows its name
        (`_hz`, `_s`, `_dbm`, `_v`, `_pct`). `then` runs after each set of any of them.
        """
        for pattern, name, initial, extra in rows:
            if isinstance(initial, bool):
                self.add_setting(pattern, name, initial, only_off=extra == "off", then=then)
            elif isinstance(initial, str):
                choices: tuple[str, ...] = extra  # type: ignore[assignment]
                self.add_setting(pattern, name, initial, choices=choices, then=then)
            else:
                limits = named_limits[extra] if isinstance(extra, str) else extra
                unit = next((u for s, u in _UNIT_SUFFIXES if name.endswith(s)), None)
                self.add_setting(pattern, name, initial, unit=unit, limits=limits, then=then)

    @property
    def errors(self) -> ErrorQueue:
        """The local (front-panel) session's error queue."""
        return self.local.errors

    def add_common(self, mnemonic: str, query: bool, handler: Handler) -> None:
        """A common command this model knows beyond the shared set (e.g. `*TRG`)."""
        self._common[(mnemonic, query)] = handler

    def open_session(self, name: str = "") -> Session:
        """A new client session; it takes over what the local session had queued."""
        session = Session(name)
        with self.lock:
            session.take_over(self.local)
            self.newest_session = session
        return session

    # ------------------------------------------------------------------ for subclasses

    def _build(self) -> None:
        """Register the family's commands in `self.table`."""

    def _reset(self) -> None:
        """Put the instrument in its *RST state."""

    def wait_pending(self) -> None:
        """Block until overlapped operations (a running sweep) are complete."""

    def pending_until_s(self) -> float:
        """`time.monotonic()` at which overlapped operations complete (now or earlier: none)."""
        return 0.0

    def wait_until(self, deadline_s: float) -> None:
        """Block until `time.monotonic()` reaches `deadline_s` (or the bench stops).

        A timed wait wakes up late (0.2-0.3 ms here, ms under load), which would add
        to every sweep; so it wakes `FINISH_SPIN_S` early and spins until the deadline
        (median 0.03 ms late at load 2.5 on 2 cores), as an instrument's own clock would.
        """
        remaining = deadline_s - time.monotonic()
        if remaining <= 0:
            return
        if remaining > FINISH_SPIN_S:
            # Event.wait, not sleep: stopping the bench must not wait out a long sweep.
            self.stop_event.wait(remaining - FINISH_SPIN_S)
        while time.monotonic() < deadline_s and not self.stop_event.is_set():
            pass  # busy: a yield (sleep(0)) can hand the core away for ms on a loaded machine

    def options_reply(self) -> str:
        """`*OPT?`: the installed options as the model lists them ("0": none)."""
        return self.family.options

    # ------------------------------------------------------------------ formatting

    def number(self, value: float) -> str:
        """A numeric reply in the family's style (Keysight NR3, R&S shortest decimal)."""
        if self.family.number_style == "keysight":
            return f"{value:+.15E}"
        return f"{value:.15g}"

    @staticmethod
    def boolean(value: bool) -> str:
        return "1" if value else "0"

    @staticmethod
    def limit_query(call: Call, value: float, limits: tuple[float, float]) -> float:
        """`X?` answers the setting, `X? MIN|MAX` the model's limits."""
        keyword = one_param(call, required=False)
        if keyword is None:
            return value
        choice = parse_choice(keyword, ("MINimum", "MAXimum"))
        return limits[0] if choice == "MINimum" else limits[1]

    def number_query(self, call: Call, value: float, limits: tuple[float, float]) -> str:
        """A numeric setting's query: its value, or with MIN|MAX the model's limit."""
        return self.number(self.limit_query(call, value, limits))

    # ------------------------------------------------------------------ execution

    def push_error(self, code: int, detail: str = "", session: Session | None = None) -> None:
        """Queue an error in `session`; sets its event status bit.

        By default the error goes to the client session opened last (the instrument
        reports it to whoever is connected), or to the local one before any client:
        a new session takes over what the local one queued.
        """
        with self.lock:
            target = session or self.newest_session or self.local
            target.record(ScpiError(code, detail, own_text=True))

    def _record(self, error: ScpiError) -> None:
        self.session.record(error)

    def execute(
        self, line: str, *, session: Session | None = None, refuse_settings: bool = False
    ) -> bytes | None:
        """Run one program message; return the reply (``;``-joined, newline-terminated) or None.

        Errors go to `session` (default: the local session). A command error (-1xx)
        discards the rest of the message, as IEEE 488.2 parsers do; execution errors
        (-2xx) do not. A message holding anything but printable ASCII is refused
        whole (-101) before any unit runs. With `refuse_settings`, units that would
        change state are skipped (queries still answer).
        """
        with self.lock:
            self.session = session or self.local
            try:
                return self._execute(line, refuse_settings)
            finally:
                self.session = self.local

    def _execute(self, line: str, refuse_settings: bool) -> bytes | None:
        replies: list[bytes] = []
        bad = _NOT_PRINTABLE_RE.search(line)
        if bad is not None:
            self._record(ScpiError(-101, f"character {bad.group()!r} at {bad.start()}"))
            return None
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
        return (b";" if self.joined_replies else b"\n").join(replies) + b"\n"

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
                if (
                    resolved.common
                    and params
                    and (header_key(header), query) not in (_COMMON_WITH_PARAMETER)
                ):
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

    def _opc_query(self, call: Call) -> str:
        self.wait_pending()
        return "1"

    def _opc_set(self, call: Call) -> None:
        # Overlapped: *OPC does not wait; the OPC bit is set when the sweep is done.
        self.session.arm_opc(self.pending_until_s())

    def _ese_set(self, call: Call) -> None:
        self.session.ese = register_value(one_param(call))

    def _sre_set(self, call: Call) -> None:
        # Bit 6 (MSS) cannot be enabled: IEEE 488.2 11.3.2.3.
        self.session.sre = register_value(one_param(call)) & ~0x40

    def _all_errors(self, call: Call) -> str:
        errors = self.session.errors
        entries = []
        while len(errors):
            entries.append(errors.pop())
        return ",".join(entries) if entries else errors.pop()


def short_form(choice: str) -> str:
    """`SWEep` -> `SWE`: the upper-case short form of a choice written in manual notation."""
    short = "".join(c for c in choice if not c.islower())
    return short.upper() if short else choice.upper()


def header_key(header: str) -> str:
    """`*ese` -> `ESE`: the mnemonic of a common command header."""
    return header.lstrip("*").rstrip("?").upper()
