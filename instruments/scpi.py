"""SCPI base: declarative settings, identity, error queue, `*OPC?`, snapshots.

`Control` puts one setting definition (`setting_defs.SettingDef`: unit, limits,
ramp, SCPI per family) on a driver as a property, and `ScpiInstrument` gives
identity, error-queue draining, `*OPC?`, snapshots, `open`, and the one path every
setting takes: checked against its definition's limits before any byte, then sent
(ramped in steps when the definition has a ramp) and read back.
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from collections.abc import Callable
from functools import partial
from operator import itemgetter
from typing import Any, ClassVar, NamedTuple, TypeVar

import numpy as np
import pyvisa
from labpgt.instruments.connection import Connection, Opener
from labpgt.instruments.instrument_errors import (
    InstrumentConnectionError,
    InstrumentProtocolError,
    InstrumentTimeoutError,
    LimitError,
    instrument_error,
)
from labpgt.instruments.limits import Limits, ramp_points
from labpgt.instruments.setting_defs import SettingDef
from labpgt.instruments.transport import (
    SocketTransport,
    Transport,
    acquire_resource_manager,
    release_resource_manager,
)

T = TypeVar("T")
S = TypeVar("S", bound="ScpiInstrument")
Context = str | Callable[[], str]
"""What an exchange was doing, for its error message: text, or a function worded on error."""

_ERROR_REPLY = re.compile(r'^\s*([+-]?\d+)\s*,\s*"?(.*?)"?\s*$')
MAX_QUEUED_ERRORS = 64
_NO_ERROR_REPLIES = frozenset(('+0,"No error"', '0,"No error"'))
RAMP_MARGIN = 1.1
"""Ramp steps are spaced 10 % slower than the ramp rate allows. Every step is confirmed by
the instrument's reply and the next one is timed from that reply, so a step delivered late
can never arrive close behind the one before it."""


def format_value(value: float | int | bool | str, kind: type) -> str:
    """SCPI text for a value: ON/OFF, integers, floats without lost precision, or a word."""
    if kind is bool:
        return "ON" if value else "OFF"
    if kind is int:
        return str(int(value))
    if kind is str:
        return str(value)
    return f"{float(value):.12g}"


def parse_value(reply: str, kind: type, what: str) -> Any:
    """Parse a SCPI reply as kind; raises ValueError with the offending text."""
    text = reply.strip()
    if kind is bool:
        upper = text.upper()
        if upper in ("1", "ON", "+1"):
            return True
        if upper in ("0", "OFF", "+0"):
            return False
        raise ValueError(f"{what}: expected ON/OFF/1/0, got {reply!r}")
    if kind is str:
        return text.strip('"')
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"{what}: expected a number, got {reply!r}") from None
    if kind is int:
        return int(round(number))
    return number


class Control:
    """One setting of a driver, from its definition: `Control(DRIVE_FREQUENCY)`.

    The definition gives the name, unit, kind, limits (checked before anything is
    written), ramp and the SCPI get/set pair for the instrument's family. With
    `readback`, the value the instrument actually took (it may round) is queried after
    the set and cached. `setter` names a method that replaces the plain write (e.g.
    switching an output at 0 A); `restore=False` keeps the value out of the automatic
    re-apply after a reconnect.
    """

    def __init__(
        self,
        setting: SettingDef,
        *,
        family: str = "",
        readback: bool = True,
        setter: str | None = None,
        restore: bool = True,
    ) -> None:
        self.setting = setting
        self.get_command, self.set_command = setting.commands(family)
        self.name = setting.name
        self.unit = setting.unit
        self.kind = setting.kind
        self.limited = setting.high is not None
        self.ramp = setting.ramp
        self.readback = readback
        self.setter = setter
        self.restore = restore
        self.__doc__ = f"{setting.doc} [{setting.unit}]" if setting.unit else setting.doc

    def for_family(self, family: str) -> Control:
        """The same control speaking `family`'s SCPI."""
        return Control(
            self.setting,
            family=family,
            readback=self.readback,
            setter=self.setter,
            restore=self.restore,
        )

    def set_text(self, value: Any) -> str:
        """The set command carrying `value` (e.g. `SOUR:FREQ 2100000000`)."""
        assert self.set_command is not None, f"{self.name} is read-only"
        return self.set_command.format(format_value(value, self.kind))

    def __set_name__(self, owner: type, name: str) -> None:
        if name != self.name:
            raise TypeError(f"{owner.__name__}.{name} holds the control of {self.name!r}")

    def __get__(self, instrument: ScpiInstrument | None, owner: type) -> Any:
        if instrument is None:
            return self
        return instrument.get_control(self)

    def __set__(self, instrument: ScpiInstrument, value: Any) -> None:
        if self.set_command is None:
            raise AttributeError(f"{instrument.role}: {self.name} is read-only")
        if self.setter is not None:
            getattr(instrument, self.setter)(instrument.check_control(self, value, True))
            return
        instrument.send_controls([(self, instrument.check_control(self, value))])


class ScpiInstrument:
    """Base of every driver: identity, error queue, `*OPC?`, controls, snapshot."""

    role: ClassVar[str] = "instrument"
    family: ClassVar[str] = ""
    setup_commands: ClassVar[tuple[str, ...]] = ()
    """Sent once after connecting and again after every reconnect."""
    families: ClassVar[dict[str, type[ScpiInstrument]]] = {}
    """The role's drivers by family name (what `open` picks from; plugins add to it)."""
    default_timeout_s: ClassVar[float] = 5.0
    control_table: ClassVar[dict[str, Control]] = {}
    _ranges_complete: ClassVar[bool] = True
    """Whether `limit_range` says all that `check_limit` allows (see `limit_ranges`)."""
    """The class's controls by name (what `check_controls` looks values up in)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # A family speaks its own SCPI where its settings' definitions say so (e.g. the
        # R&S analyzers' `BAND:RES`): each such control is re-declared for the family.
        super().__init_subclass__(**kwargs)
        if cls.family:
            for control in cls.controls():
                if cls.family in control.setting.family_scpi:
                    setattr(cls, control.name, control.for_family(cls.family))
        cls.control_table = {control.name: control for control in cls.controls()}
        checks = next(klass for klass in cls.__mro__ if "check_limit" in vars(klass))
        ranges = next(klass for klass in cls.__mro__ if "limit_range" in vars(klass))
        cls._ranges_complete = issubclass(ranges, checks)

    def __init__(
        self,
        transport: Transport | Opener,
        *,
        limits: Limits | None = None,
        timeout_s: float = 5.0,
        retries: int = 3,
        backoff_s: float = 0.05,
        compound_messages: bool | None = None,
    ) -> None:
        if isinstance(transport, Transport):
            fixed = transport
            opener: Opener = lambda: fixed  # noqa: E731  (replay tests hand one transport)
        else:
            opener = transport
        resource = getattr(transport, "resource", None) or "<transport>"
        self.limits = limits or Limits()
        self.conn = Connection(
            opener,
            role=self.role,
            resource=str(resource),
            timeout_s=timeout_s,
            retries=retries,
            backoff_s=backoff_s,
        )
        self.conn.on_reconnect = self._restore
        self._last: dict[str, Any] = {}
        self._ranges: dict[str, tuple[Control, float, float]] = {}
        self._ranges_of: Limits | None = None  # the limits `_ranges` were taken from
        self._message_plans: dict[tuple[Control, ...], _MessagePlan] = {}
        self._identity: dict[str, str] | None = None
        self._on_close: list[Callable[[], None]] = []
        self.stale_errors: list[tuple[int, str]] = []
        self._last_step_s = -math.inf  # when the last ramp step was confirmed (monotonic s)
        self.steps_sent = 0
        self.ramp_wait_s = 0.0  # time spent waiting for ramp rates, s (for benchmarks)
        self.compound_messages = compound_messages
        """Whether the instrument takes several units in one message and answers their
        queries in one `;`-joined reply. None: probed by `connect()` (until then the
        driver sends compound messages). False: one command per message."""

    @classmethod
    def open(
        cls: type[S],
        resource: str,
        *,
        family: str,
        limits: Limits | None = None,
        timeout_s: float | None = None,
        rm: pyvisa.ResourceManager | None = None,
        visa_library: str = "@py",
        **kwargs: Any,
    ) -> S:
        """Connect to `resource` as `family` of this role, run its setup, return the driver.

        Without `rm`, the instrument acquires a use of the process's resource manager
        (given back when it closes); with `rm`, the caller's manager is never closed here.
        """
        if family not in cls.families:
            known = ", ".join(sorted(cls.families))
            raise ValueError(f"unknown family {family!r}; known: {known}")
        timeout_s = cls.default_timeout_s if timeout_s is None else timeout_s
        manager = acquire_resource_manager(visa_library) if rm is None else rm
        instrument = cls.families[family](
            _visa_opener(manager, resource, timeout_s),
            limits=limits,
            timeout_s=timeout_s,
            **kwargs,
        )
        instrument.conn.resource = resource
        if rm is None:
            instrument._on_close.append(lambda: release_resource_manager(manager))
        try:
            instrument.connect()
        except BaseException:
            instrument.close()
            raise
        return instrument  # type: ignore[return-value]

    # -- lifecycle ---------------------------------------------------------------------

    def connect(self) -> None:
        """Open the session, set aside stale queued errors, put the instrument in a known state.

        Errors left in the queue by an earlier session are kept in `stale_errors`
        (reported, e.g. by `labpgt instruments check`) rather than blamed on setup.
        """
        self.conn.open()
        self.stale_errors = self.drain_errors()
        if self.compound_messages is None:
            self.compound_messages = self.probe_compound_messages()
        self.setup()

    def probe_compound_messages(self) -> bool:
        """Ask `*OPC?;*OPC?` once: "1;1" means compound messages work as IEEE 488.2 says.

        An instrument that answers each query of a message on its own line ("1", then
        "1") is driven one command per message; so is one that answers only the first
        (the second line never comes: a timeout within the normal timeout). Errors the
        probe left in the queue are drained and dropped.
        """
        probe = "*OPC?;*OPC?"
        with self.conn.lock:
            first = self.conn.query(probe).strip()
            if first in ("1;1", "+1;+1"):
                return True
            if first not in ("1", "+1"):
                raise InstrumentProtocolError(
                    f"{self.conn.label}: {probe} answered {first!r}, expected '1;1' or '1'"
                )
            # A timeout: it answered the first query only; the next exchange renews the session.
            with contextlib.suppress(InstrumentTimeoutError):
                self.conn.read_reply(probe)
            self.drain_errors()
        return False

    # -- messages: compound or one command at a time ------------------------------------

    @property
    def _compound(self) -> bool:
        return self.compound_messages is not False

    def query_message(self, message: str, *, poll_s: float | None = None) -> str:
        """Send a program message and return its replies joined with ';' (IEEE 488.2 style).

        Compound mode sends it as it is. Otherwise each unit goes as its own message,
        in order, and the queries' replies are joined here; `poll_s` applies to the
        first query (the one that may wait, e.g. `*OPC?` after a sweep).
        """
        if self._compound:
            return self.conn.query(message, poll_s=poll_s)
        replies = []
        with self.conn.lock:
            for unit in split_message(message):
                if _is_query(unit):
                    wait = poll_s if not replies else None
                    replies.append(self.conn.query(unit, poll_s=wait))
                else:
                    self.conn.write(unit)
        return ";".join(replies)

    def write_message(self, message: str) -> None:
        """Send a program message without queries (split into units when not compound)."""
        if self._compound:
            self.conn.write(message)
            return
        with self.conn.lock:
            for unit in split_message(message):
                self.conn.write(unit)

    def setup(self) -> None:
        """Send the family's setup commands and raise any queued instrument error."""
        with self.conn.lock:
            for command in self.setup_commands:
                self.conn.write(command)
            self.sync()
            self.check_errors("setup")

    def close(self) -> None:
        """Close the session (no output changes; `safe_off` does those)."""
        self.conn.close()
        for hook in self._on_close:
            hook()
        self._on_close.clear()

    def __enter__(self: T) -> T:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.safe_off()
        finally:
            self.close()

    def safe_off(self) -> None:
        """Put outputs in their safe state; overridden by drivers that have outputs."""

    # -- plain SCPI --------------------------------------------------------------------

    def write(self, command: str) -> None:
        self.conn.write(command)

    def query(self, command: str) -> str:
        return self.conn.query(command)

    def query_value(self, command: str, kind: type = float) -> Any:
        reply = self.conn.query(command)
        try:
            return parse_value(reply, kind, command)
        except ValueError as exc:
            raise InstrumentProtocolError(f"{self.conn.label}: {exc}") from exc

    def sync(self) -> None:
        """Wait until all pending operations completed (`*OPC?` answers 1).

        (A setting confirmed the same way travels with it: `send_controls(confirm=True)`.)
        """
        reply = self.conn.query("*OPC?").strip()
        if reply not in ("1", "+1"):
            raise InstrumentProtocolError(f"{self.conn.label}: *OPC? answered {reply!r}")

    def _parse_error(self, reply: str) -> tuple[int, str]:
        if reply in _NO_ERROR_REPLIES:  # the usual answer, taken without the pattern
            return 0, "No error"
        match = _ERROR_REPLY.match(reply)
        if match is None:
            raise InstrumentProtocolError(
                f"{self.conn.label}: SYST:ERR? answered {reply!r}, not 'code,\"message\"'"
            )
        return int(match.group(1)), match.group(2)

    def drain_errors(self) -> list[tuple[int, str]]:
        """Read `SYST:ERR?` until "0, No error"; returns the (code, message) entries."""
        entries: list[tuple[int, str]] = []
        with self.conn.lock:
            for _ in range(MAX_QUEUED_ERRORS):
                code, message = self._parse_error(self.conn.query("SYST:ERR?"))
                if code == 0:
                    return entries
                entries.append((code, message))
        raise InstrumentProtocolError(
            f"{self.conn.label}: error queue did not empty after {MAX_QUEUED_ERRORS} reads"
        )

    def check_errors(self, context: str = "") -> None:
        """Drain the error queue and raise the first entry as a typed `InstrumentError`."""
        self._raise_errors(self.drain_errors(), context)

    def _raise_errors(self, entries: list[tuple[int, str]], context: Context) -> None:
        if entries:
            code, message = entries[0]
            more = f" (+{len(entries) - 1} more queued)" if len(entries) > 1 else ""
            text = context if isinstance(context, str) else context()
            raise instrument_error(self.role, code, message + more, text)

    def query_checked_many(
        self,
        commands: list[str],
        gets: list[tuple[str, type]],
        context: Context,
        on_values: Callable[[list[Any]], None] | None = None,
    ) -> list[Any]:
        """`commands`, then each query of `gets` and `SYST:ERR?`, all in one program message.

        Returns the parsed replies of `gets` in order; `on_values` receives them before
        a queued error is raised (so caches hold what the instrument took). A queued
        error drains the rest of the queue and is raised as a typed error.
        """
        message = _checked_message(commands, gets)
        with self.conn.lock:
            reply = self.query_message(message)
            return self._checked_reply(message, reply, gets, context, on_values)

    def _checked_reply(
        self,
        message: str,
        reply: str,
        gets: list[tuple[str, type]],
        context: Context,
        on_values: Callable[[list[Any]], None] | None,
    ) -> list[Any]:
        # Numbers and booleans hold no ';'; the error message may (it comes last).
        fields = reply.split(";", len(gets))
        if len(fields) != len(gets) + 1:
            expected = ";".join(["value"] * len(gets) + ['code,"message"'])
            raise InstrumentProtocolError(
                f"{self.conn.label}: {message} answered {reply!r}, expected {expected!r}"
            )
        values = []
        for (get, kind), text in zip(gets, fields, strict=False):
            if kind is float:
                try:
                    values.append(float(text))  # what parse_value does for a float
                    continue
                except ValueError:
                    pass  # parse_value below words the error
            try:
                values.append(parse_value(text, kind, get))
            except ValueError as exc:
                raise InstrumentProtocolError(f"{self.conn.label}: {exc}") from exc
        error = fields[-1]
        # The usual answer is taken without a call (what `_parse_error` does first).
        code, error_text = (0, "") if error in _NO_ERROR_REPLIES else self._parse_error(error)
        if on_values is not None:
            on_values(values)
        if code != 0:
            self._raise_errors([(code, error_text), *self.drain_errors()], context)
        return values

    # -- identity ----------------------------------------------------------------------

    def identify(self) -> dict[str, str]:
        """`*IDN?` as {"vendor", "model", "serial", "firmware"}."""
        reply = self.conn.query("*IDN?")
        fields = [f.strip() for f in reply.split(",")]
        if len(fields) != 4 or not fields[0]:
            raise InstrumentProtocolError(
                f"{self.conn.label}: *IDN? answered {reply!r}, expected 4 comma-separated fields"
            )
        self._identity = {
            "vendor": fields[0],
            "model": fields[1],
            "serial": self.parse_serial(fields[2]),
            "firmware": fields[3],
        }
        return dict(self._identity)

    serial_after: ClassVar[str] = ""
    """The serial number follows this mark in `*IDN?` (R&S: "<order number>/<serial>")."""

    @classmethod
    def parse_serial(cls, field: str) -> str:
        return field.rsplit(cls.serial_after, 1)[-1] if cls.serial_after else field

    # -- controls: one path for every setting ---------------------------------------------

    @classmethod
    def controls(cls) -> list[Control]:
        seen: dict[str, Control] = {}
        for klass in reversed(cls.__mro__):
            for name, attr in vars(klass).items():
                if isinstance(attr, Control):
                    seen[name] = attr
        return list(seen.values())

    def get_control(self, control: Control) -> Any:
        value = self.query_value(control.get_command, control.kind)
        self._last[control.name] = value
        return value

    def check_controls(self, own_setters: bool = False, **values: Any) -> list[tuple[Control, Any]]:
        """Coerce every value and check it against its definition's limits; sends nothing.

        This is the only check a value passes before it is written, whichever way it
        is sent afterwards (`send_controls`, with or without read-back, overlapped or not).
        A control with its own setter (an output switch) is refused unless `own_setters`.
        """
        return [self.checked_value(name, value, own_setters) for name, value in values.items()]

    def checked_value(
        self, name: str, value: Any, own_setters: bool = False
    ) -> tuple[Control, Any]:
        """One (control, value) of `check_controls`.

        A float setting takes one comparison against the (low, high) its limits allow,
        kept per limits (`limit_ranges`; finite bounds, so NaN and infinities fail it).
        Anything else, and every value refused, goes the full way (`check_control`),
        which words the error.
        """
        if self._ranges_of is not self.limits:
            self._ranges = self.limit_ranges()
            self._ranges_of = self.limits
        fast = self._ranges.get(name)
        if fast is not None:
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = math.nan  # refused below, with the words
            if fast[1] <= number <= fast[2]:
                return fast[0], number
        control = self.control_table.get(name)
        if control is None or control.set_command is None:
            raise AttributeError(f"{self.role}: {name} is not a settable control")
        return control, self.check_control(control, value, own_setters)

    def check_control(self, control: Control, value: Any, own_setters: bool = False) -> Any:
        """A value for `control`, coerced to its kind and checked against its limits."""
        if control.setter is not None and not own_setters:
            raise AttributeError(f"{self.role}: {control.name} has its own setter; set it alone")
        value = self._coerce(control, value)
        if control.limited:
            self.check_limit(control.setting, value)
        return value

    def check_limit(self, setting: SettingDef, value: float) -> None:
        """Raise `LimitError` unless the bench limits allow `value` (drivers may add rules).

        A driver that adds a rule here says the range it leaves in `limit_range` too,
        or its values are never checked by the one comparison of `checked_value`.
        """
        self.limits.check(self.role, setting, value)

    def limit_range(self, setting: SettingDef) -> tuple[float, float]:
        """The (low, high) `check_limit` allows for a limited setting."""
        return self.limits.range_of(setting)

    def limit_ranges(self) -> dict[str, tuple[Control, float, float]]:
        """(control, low, high) of each settable float control with finite limits.

        Empty when a driver adds rules in `check_limit` without saying its range in
        `limit_range` (a class below the one defining `check_limit` must define it).
        """
        if not self._ranges_complete:
            return {}
        ranges = {}
        for name, control in self.control_table.items():
            plain = control.set_command is not None and control.setter is None
            if plain and control.kind is float and control.limited:
                low, high = self.limit_range(control.setting)
                if math.isfinite(low) and math.isfinite(high):
                    ranges[name] = (control, float(low), float(high))
        return ranges

    def set_controls(self, **values: Any) -> dict[str, Any]:
        """Set controls and return what the instrument took (every value checked first).

        A ramped control (its definition has a `Ramp`) moves in steps; the others go in
        one program message that sets them all, reads back those with read-back and the
        error queue: `A x;:B y;:A?;:B?;:SYST:ERR?`. A queued error is raised as a typed
        error naming every value of the message, after the read-backs were cached.
        """
        checked = self.check_controls(**values)
        self.send_controls(checked)
        return {control.name: self._last[control.name] for control, _ in checked}

    def write_controls(self, **values: Any) -> None:
        """Check and write each control's set command, no read-back (batched configuration)."""
        self.send_controls(self.check_controls(**values), readback=False)

    def prepare_controls(
        self,
        checked: list[tuple[Control, Any]],
        *,
        readback: bool = True,
        confirm: bool = False,
    ) -> Prepared:
        """Checked values (`check_controls`) with their program message built; sends nothing.

        Building the message costs CPU, not exchanges: a loop prepares the next shot's
        settings while the analyzer still sweeps, and sends them (`send_controls`) as
        soon as the sweep ends, with nothing left to compute in between.
        """
        plan = self._plan_for(checked, readback, confirm)
        texts = [format_value(value, control.kind) for control, value in checked]
        values = dict(zip(plan.names, map(_value_of, checked), strict=True))
        return Prepared(plan, checked, texts, plan.message.format(*texts), values)

    def send_controls(
        self,
        checked: list[tuple[Control, Any]] | Prepared,
        *,
        readback: bool = True,
        confirm: bool = False,
        overlap: bool = False,
    ) -> Callable[[], None] | None:
        """The one path every checked setting takes to the instrument (`check_controls` first).

        `checked` is the checked values, or those already prepared (`prepare_controls`,
        which then decided `readback` and `confirm`). Ramped controls move in confirmed
        steps (`_ramp`), whose last value takes this path again. The rest go by one plan
        per combination of controls, built once:
        - `readback` (default): the sets, the read-backs and `SYST:ERR?` in one program
          message, `A x;:B y;:A?;:B?;:SYST:ERR?`; the values the instrument took are
          cached and a queued error is raised as a typed error naming every value.
          Without: each set command is written as its own message, nothing is read
          (configuration, and the re-apply after a reconnect); with `confirm` instead,
          the sets and `*OPC?` in one message, `A x;*OPC?`, whose `1` says the
          instrument has taken them (each ramp step, the supply's output switch).
        - compound or not (the instrument's `compound_messages`): an instrument that
          refuses compound messages gets one command per message, queries answered
          one by one and joined here as IEEE 488.2 would.
        - `overlap`: the message is sent now and `finish()` is returned to take the
          reply later (hold `conn.lock` until it ran), so a caller can overlap this
          instrument's exchange with another's. A link lost before the reply makes
          `finish()` redo the whole (idempotent) exchange on a fresh session.
        Without `overlap` the exchange is complete when this returns (None).
        """
        with self.conn.lock:
            if isinstance(checked, Prepared):
                prepared = checked
            else:
                prepared = self.prepare_controls(checked, readback=readback, confirm=confirm)
            if prepared.plan.ramped:
                pairs = prepared.checked
                if len(pairs) == 1:  # the usual: a bias setpoint alone
                    self._ramp(*pairs[0], prepared=prepared)
                    return _nothing if overlap else None
                pairs = [pair for pair in pairs if not self._ramped(*pair)]
                if not pairs:
                    return _nothing if overlap else None
                prepared = self.prepare_controls(
                    pairs, readback=prepared.readback, confirm=prepared.plan.confirm
                )
            return self._exchange(prepared, overlap)

    def _ramped(self, control: Control, value: Any) -> bool:
        """Ramp `control` to `value` if it has a ramp (True); else False (sent with the rest)."""
        if control.ramp is None:
            return False
        self._ramp(control, value)
        return True

    def _exchange(self, prepared: Prepared, overlap: bool) -> Callable[[], None] | None:
        """`send_controls` for controls without a ramp: send, and read (or return `finish`)."""
        plan, _, texts, message, values = prepared
        self._last.update(values)
        conn = self.conn
        if plan.queries and self.compound_messages is not False:
            if not overlap:
                return self._finish(prepared, partial(conn.query, message))
            conn.write(message)
            read = partial(conn.read_reply, message)
        else:
            for template, text in zip(plan.sets, texts, strict=True):
                conn.write(template.format(text))
            if not plan.queries:
                if plan.after_set:
                    self._after_set(plan.controls)
                return None
            read = partial(_join_replies, conn, plan.queries)
            if not overlap:
                return self._finish(prepared, read)
        return partial(self._finish, prepared, read, overlap)

    def _finish(
        self, prepared: Prepared, read: Callable[[], str], overlapped: bool = False
    ) -> None:
        """Read a settings exchange's reply: cache the read-backs, raise a queued error.

        An overlapped exchange whose link was lost before the reply is redone whole
        (it is idempotent) on a fresh session.
        """
        plan, _, texts, message, _ = prepared
        try:
            try:
                reply = read()
            except InstrumentConnectionError:
                if not overlapped:
                    raise
                self._exchange(prepared, False)
                return
            if plan.confirm:  # `*OPC?` answers 1 once the sets were taken
                if reply.strip() not in ("1", "+1"):
                    raise InstrumentProtocolError(
                        f"{self.conn.label}: {message} answered {reply.strip()!r}"
                    )
                return
            if plan.floats:  # the usual reply: numbers, then '+0,"No error"'
                fields = reply.split(";", plan.reads)
                if len(fields) == plan.reads + 1 and fields[-1] in _NO_ERROR_REPLIES:
                    try:
                        taken = tuple(map(float, fields[: plan.reads]))
                    except ValueError:
                        pass  # worded below
                    else:
                        self._last.update(zip(plan.read_names, taken, strict=True))
                        return
            context = partial(_setting_words, plan.controls, texts)
            self._checked_reply(message, reply, plan.gets, context, plan.cache)
        finally:
            if plan.after_set:
                self._after_set(plan.controls)

    def _plan_for(
        self, checked: list[tuple[Control, Any]], readback: bool, confirm: bool = False
    ) -> _MessagePlan:
        """The plan for these controls, built on first use and kept (keyed by the controls)."""
        key = (readback, confirm, *map(_control_of, checked))
        plan = self._message_plans.get(key)
        if plan is None:
            plan = self._message_plans[key] = self._plan(key[2:], readback, confirm)
        return plan

    def _plan(self, controls: tuple[Control, ...], readback: bool, confirm: bool) -> _MessagePlan:
        # `A {};:B {};:A?;:B?;:SYST:ERR?` with the values' places left open: built once
        # per combination of controls, filled in per exchange.
        sets = [control.set_command.lstrip(":") for control in controls]  # type: ignore[union-attr]
        reads = [control for control in controls if control.readback] if readback else []
        gets = [(control.get_command, control.kind) for control in reads]
        read_names = tuple(control.name for control in reads)

        def cache(taken: list[Any]) -> None:  # what the instrument took, kept
            self._last.update(zip(read_names, taken, strict=True))

        if readback:
            queries = [*(get.lstrip(":") for get, _ in gets), "SYST:ERR?"]
            message = ";:".join([*sets, *queries])
        else:
            queries = ["*OPC?"] if confirm else []
            message = ";:".join(sets) + (";*OPC?" if confirm else "")
        return _MessagePlan(
            message=message,
            sets=tuple(sets),
            queries=tuple(queries),
            gets=gets,
            cache=cache,
            controls=list(controls),
            names=tuple(control.name for control in controls),
            read_names=read_names,
            reads=len(reads),
            floats=all(control.kind is float for control in reads),
            confirm=confirm and not readback,
            ramped=any(control.ramp is not None for control in controls),
            after_set=type(self)._after_set is not ScpiInstrument._after_set,
        )

    def _after_set(self, controls: list[Control]) -> None:
        """Hook after controls were set (e.g. to forget derived cached values)."""

    # -- ramped controls (the definition's `Ramp`: largest step, fastest rate) ----------

    def ramp_live(self, control: Control) -> bool:
        """Whether `control` must ramp now; drivers say when it need not (output off)."""
        return True

    def _ramp(self, control: Control, target: Any, prepared: Prepared | None = None) -> None:
        """Ramp (live) or move (not live) a control to `target`, then verify it.

        Intermediate steps go as `SET x;*OPC?`; the last value travels with its
        verification, `SET x;:GET?;:SYST:ERR?` (with nothing to move: `GET?;:SYST:ERR?`),
        the message `prepared` holds when it was prepared with read-back.
        Each step is sent no sooner than the ramp rate allows after the instrument's
        reply to the previous one.
        """
        with self.conn.lock:
            final: Any = target
            live = self.ramp_live(control)
            if live:
                step, rate = self.limits.ramp_of(control.setting)
                start = self._last.get(control.name, 0.0)
                if start == target:
                    final = None
                elif abs(target - start) > step:  # else one step, to the target itself
                    points = ramp_points(start, target, step)
                    for point in points[:-1]:
                        self.ramp_step(control, point)
                    final = points[-1]
            if final is None:
                self.query_checked_many(
                    [],
                    [(control.get_command, control.kind)],
                    lambda: f"setting {control.name}={format_value(target, control.kind)}",
                    lambda values: self._last.__setitem__(control.name, values[0]),
                )
                return
            if live:
                self._wait_for_step(control, final, rate)
            if prepared is None or not prepared.readback or final != target:
                # the same exchange as any setting, unramped
                prepared = self.prepare_controls([(control, final)])
            try:
                self._exchange(prepared, False)
            finally:
                self._stamp_step()

    def ramp_step(self, control: Control, value: Any, *, wait: bool = True) -> None:
        """One confirmed step, `SET x;*OPC?`, no sooner than the rate allows (with `wait`)."""
        if wait:
            self._wait_for_step(control, value)
        step = [(control, value)]  # the one path, unramped: `SET x;*OPC?`
        try:
            self._exchange(self.prepare_controls(step, readback=False, confirm=True), False)
        finally:
            self._last[control.name] = value
            self._stamp_step()

    def _wait_for_step(self, control: Control, value: float, rate: float = 0.0) -> None:
        """Sleep until a step to `value` respects the ramp rate (plus margin)."""
        if not rate:
            _, rate = self.limits.ramp_of(control.setting)
        step = abs(value - self._last.get(control.name, 0.0))
        wait_s = self._last_step_s + RAMP_MARGIN * step / rate - time.monotonic()
        if wait_s > 0:
            time.sleep(wait_s)
            self.ramp_wait_s += wait_s

    def _stamp_step(self) -> None:
        # Stamped once the reply is in: the instrument had the step by then, so the
        # spacing it sees between this step and the next can only be longer than the wait.
        self._last_step_s = time.monotonic()
        self.steps_sent += 1

    def _coerce(self, control: Control, value: Any) -> Any:
        if control.kind is bool:
            return bool(value)
        if control.kind is str:
            choices = control.setting.choices
            if not isinstance(value, str) or (choices and value.upper() not in choices):
                raise ValueError(
                    f"{self.role}: {control.name}={value!r} refused: one of {', '.join(choices)}"
                )
            return value.upper()
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise LimitError(
                self.role, control.name, float("nan"), -np.inf, np.inf, control.unit
            ) from None
        if control.kind is int:
            if number != int(number):
                raise LimitError(self.role, control.name, number, -np.inf, np.inf, control.unit)
            return int(number)
        return number

    def settings(self) -> dict[str, Any]:
        """Every control, queried live from the instrument."""
        with self.conn.lock:
            return {control.name: self.get_control(control) for control in self.controls()}

    def snapshot(self) -> dict[str, Any]:
        """Identity, family, resource and every setting (stored with all data)."""
        with self.conn.lock:
            return {
                "role": self.role,
                "family": self.family,
                "resource": self.conn.resource,
                "identity": self.identify(),
                "settings": self.settings(),
            }

    def _restore(self) -> None:
        """After a reconnect: setup commands, then the last value of every control."""
        for command in self.setup_commands:
            self.conn.write(command)
        last = self._last
        restored = [
            (control, last[control.name])
            for control in self.controls()
            if control.set_command and control.restore and control.name in last
        ]
        self.send_controls(restored, readback=False)
        self.sync()


class _MessagePlan(NamedTuple):
    """The messages for one combination of controls, their values' places left open."""

    message: str
    """Compound: `A {};:B {};:A?;:B?;:SYST:ERR?` (without read-back: the sets alone)."""
    sets: tuple[str, ...]
    """One command per message: `A {}`, `B {}`."""
    queries: tuple[str, ...]
    """One command per message: `A?`, `B?`, `SYST:ERR?` (none without read-back)."""
    gets: list[tuple[str, type]]
    cache: Callable[[list[Any]], None]
    controls: list[Control]
    names: tuple[str, ...]
    read_names: tuple[str, ...]
    """The controls read back, in the reply's order."""
    reads: int
    floats: bool
    """Whether every read-back is a float (the reply is parsed by `float` alone)."""
    confirm: bool
    """The reply is `*OPC?`'s 1 (no read-back)."""
    ramped: bool
    """Whether any of the controls has a ramp (those move in steps first)."""
    after_set: bool
    """Whether the driver has an `_after_set` hook to call."""


class Prepared(NamedTuple):
    """Checked settings and their program message, ready to send (`prepare_controls`)."""

    plan: _MessagePlan
    checked: list[tuple[Control, Any]]
    texts: list[str]
    """Each value as sent."""
    message: str
    """The whole compound message (one command per message: named in an error)."""
    values: dict[str, Any]
    """Control name -> value sent (what `_last` keeps)."""

    @property
    def readback(self) -> bool:
        """Whether it was prepared with read-back (its queries are more than `*OPC?`)."""
        return bool(self.plan.queries) and not self.plan.confirm


_control_of = itemgetter(0)
_value_of = itemgetter(1)


def _nothing() -> None:
    """`finish()` of an overlapped exchange that had nothing left to send."""


def _join_replies(conn: Connection, queries: tuple[str, ...]) -> str:
    """Each query as its own message, the replies joined with ';' (IEEE 488.2 style)."""
    return ";".join([conn.query(query) for query in queries])


def _setting_words(controls: list[Control], texts: list[str]) -> str:
    """What a settings exchange was doing, for its error message."""
    pairs = zip(controls, texts, strict=True)
    return "setting " + ", ".join(f"{control.name}={text}" for control, text in pairs)


def split_message(message: str) -> list[str]:
    """The units of a program message the drivers build (absolute headers, no quoted ';')."""
    return [unit.lstrip(":") for unit in message.split(";") if unit.strip()]


def _is_query(unit: str) -> bool:
    return unit.split(" ", 1)[0].endswith("?")


def _checked_message(commands: list[str], gets: list[tuple[str, type]]) -> str:
    """`SET a;:SET b;:GET?;:GET?;:SYST:ERR?`: sets, queries and the error queue in one message."""
    parts = [c.lstrip(":") for c in commands]
    parts.extend(get.lstrip(":") for get, _ in gets)
    parts.append("SYST:ERR?")
    return ";:".join(parts)


def _visa_opener(rm: pyvisa.ResourceManager, resource: str, timeout_s: float) -> Opener:
    def opener() -> Transport:
        return SocketTransport.open(rm, resource, timeout_s)

    return opener
