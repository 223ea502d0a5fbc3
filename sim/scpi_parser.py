"""SCPI program-message parsing the way instruments do it (IEEE 488.2 / SCPI 1999).

A line such as ``:SOUR:FREQ 2.1 GHz;POW -10dBm;:OUTP ON;*OPC?`` is split into
program message units, each header is resolved against the current path of the
command tree (``;`` keeps the path, ``;:`` and a leading ``:`` return to the
root), and matched against command patterns written in manual notation::

    [SOURce#]:FREQuency[:CW|:FIXed]

``[...]`` marks an optional node, ``|`` alternatives, lower case the part a
short form may omit, ``#`` a node that takes a numeric suffix (``TRACe2``).

Parameter helpers turn text into numbers (with unit suffixes and MIN/MAX),
booleans and character data, raising `ScpiError` with the standard codes.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

ERROR_MESSAGES: dict[int, str] = {
    0: "No error",
    -100: "Command error",
    -101: "Invalid character",
    -102: "Syntax error",
    -103: "Invalid separator",
    -104: "Data type error",
    -108: "Parameter not allowed",
    -109: "Missing parameter",
    -110: "Command header error",
    -112: "Program mnemonic too long",
    -113: "Undefined header",
    -114: "Header suffix out of range",
    -120: "Numeric data error",
    -131: "Invalid suffix",
    -141: "Invalid character data",
    -150: "String data error",
    -160: "Block data error",
    -200: "Execution error",
    -211: "Trigger ignored",
    -213: "Init ignored",
    -221: "Settings conflict",
    -222: "Data out of range",
    -223: "Too much data",
    -224: "Illegal parameter value",
    -230: "Data corrupt or stale",
    -300: "Device-specific error",
    -350: "Queue overflow",
    -363: "Input buffer overrun",
    -410: "Query INTERRUPTED",
    -420: "Query UNTERMINATED",
}


class ScpiError(Exception):
    """A SCPI error to be queued: standard code plus optional device-dependent detail."""

    def __init__(self, code: int, detail: str = "", *, own_text: bool = False) -> None:
        super().__init__(f"{code},{ERROR_MESSAGES.get(code, 'Error')}: {detail}")
        self.code = code
        self.detail = detail
        self.own_text = own_text
        """True for text the instrument wrote itself (sent as UTF-8, as some firmware does);
        False for text that may echo what a client sent (escaped to 7-bit ASCII)."""

    @property
    def is_command_error(self) -> bool:
        """Command errors (-1xx) abort the rest of the program message, as 488.2 says."""
        return -199 <= self.code <= -100

    def entry(self) -> str:
        """The `SYST:ERR?` reply text, e.g. ``-113,"Undefined header;FOO"``."""
        message = ERROR_MESSAGES.get(self.code, "Error")
        # Echoed client text is escaped to 7-bit ASCII whatever the client sent; the
        # instrument's own text goes out as it is (non-ASCII included, like some firmware).
        detail = self.detail.replace('"', "'")
        if not self.own_text:
            detail = detail.encode("ascii", "backslashreplace").decode()
        text = f"{message};{detail}" if detail else message
        return f'{self.code},"{text}"'


class ErrorQueue:
    """First-in first-out error queue; when full, the last entry becomes -350 (SCPI rule)."""

    def __init__(self, capacity: int = 30) -> None:
        self._capacity = capacity
        self._entries: deque[str] = deque()

    def push(self, error: ScpiError) -> None:
        self.push_entry(error.entry())

    def push_entry(self, entry: str) -> None:
        """Queue an entry already in `SYST:ERR?` form; a full queue ends in -350."""
        if len(self._entries) < self._capacity:
            self._entries.append(entry)
        else:
            self._entries[-1] = ScpiError(-350).entry()

    def pop(self) -> str:
        return self._entries.popleft() if self._entries else '+0,"No error"'

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


# --------------------------------------------------------------------------- splitting


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    """Split on `separator` where it is not inside a single- or double-quoted string."""
    if "'" not in text and '"' not in text:
        return text.split(separator)  # the common case, at C speed
    parts: list[str] = []
    start = 0
    quote = ""
    for index, char in enumerate(text):
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == separator:
            parts.append(text[start:index])
            start = index + 1
    if quote:
        raise ScpiError(-102, "unterminated string")
    parts.append(text[start:])
    return parts


def split_units(line: str) -> list[str]:
    """Split a program message into its units (``;`` outside quoted strings)."""
    return _split_outside_quotes(line, ";")


def split_params(text: str) -> list[str]:
    """Split a parameter list on commas outside quoted strings; empty text gives []."""
    if not text.strip():
        return []
    params = [p.strip() for p in _split_outside_quotes(text, ",")]
    if any(not p for p in params):
        raise ScpiError(-102, "empty parameter")
    return params


# --------------------------------------------------------------------------- headers


class Node(NamedTuple):
    """One header mnemonic, upper case, with its numeric suffix (None when absent).

    A named tuple: headers are hashed and compared on every command-table lookup.
    """

    mnemonic: str
    suffix: int | None = None


class Unit(NamedTuple):
    """A parsed program message unit."""

    text: str
    common: str | None  # "IDN" for *IDN?, None for tree commands
    nodes: tuple[Node, ...]  # absolute path in the tree (empty for common commands)
    query: bool
    params: tuple[str, ...]


_COMMON_RE = re.compile(r"\*([A-Za-z]+)(\?)?")
_HEADER_RE = re.compile(r"(:)?([A-Za-z][A-Za-z0-9_]*(?::[A-Za-z][A-Za-z0-9_]*)*)(\?)?")
_SUFFIX_RE = re.compile(r"([A-Z_]*[A-Z_])(\d+)?")


MNEMONIC_MAX_CHARS = 12
"""IEEE 488.2 7.6.1.4: a program mnemonic has at most 12 characters (-112 beyond)."""


def _node(mnemonic: str) -> Node:
    match = _SUFFIX_RE.fullmatch(mnemonic.upper())
    if match is None:
        raise ScpiError(-113, mnemonic)
    base, digits = match.groups()
    if len(base) > MNEMONIC_MAX_CHARS:
        raise ScpiError(-112, mnemonic[:40])
    return Node(base, int(digits) if digits is not None else None)


def parse_unit(text: str, path: tuple[Node, ...]) -> tuple[Unit, tuple[Node, ...]]:
    """Parse one unit relative to the current `path`; return it and the path for the next unit.

    The next path is this header minus its last node (SCPI's tree-walking rule);
    common commands leave the path unchanged.
    """
    stripped = text.strip()
    header, rest = split_header(stripped)
    params = tuple(split_params(rest))
    common, rooted, nodes, query = parse_header(header)
    if common is not None:
        return Unit(stripped, common, (), query, params), path
    absolute = absolute_nodes(rooted, nodes, path)
    return Unit(stripped, None, absolute, query, params), absolute[:-1]


def absolute_nodes(
    rooted: bool, nodes: tuple[Node, ...], path: tuple[Node, ...]
) -> tuple[Node, ...]:
    """A header's nodes from the root: rooted (leading ':') or under the current `path`.

    The next unit's path is this minus its last node (SCPI's tree-walking rule).
    """
    return nodes if rooted else path + nodes


def split_header(stripped: str) -> tuple[str, str]:
    """(header, parameter text) of a unit already stripped of surrounding white space."""
    header, _, rest = stripped.partition(" ")
    if "\t" in header:  # any white space separates the header from its parameters
        header, rest = re.split(r"\s", stripped, maxsplit=1)
    return header, rest


@lru_cache(maxsize=1024)  # bounded: a garbage client cannot grow memory; errors are not cached
def parse_header(header: str) -> tuple[str | None, bool, tuple[Node, ...], bool]:
    """(common mnemonic or None, rooted, nodes, query) of one header; raises ScpiError."""
    common = _COMMON_RE.fullmatch(header)
    if common is not None:
        return common.group(1).upper(), False, (), common.group(2) is not None
    match = _HEADER_RE.fullmatch(header)
    if match is None:
        if any(c.isalpha() for c in header) and all(c.isalnum() or c in ":*?_" for c in header):
            raise ScpiError(-113, header)
        raise ScpiError(-102, header[:40].encode("ascii", "backslashreplace").decode())
    rooted, body, question = match.groups()
    nodes = tuple(_node(m) for m in body.split(":"))
    return None, rooted is not None, nodes, question is not None


# --------------------------------------------------------------------------- patterns


@dataclass(frozen=True)
class _PatternNode:
    forms: tuple[tuple[str, str], ...]  # (short, long) per alternative, upper case
    optional: bool
    takes_suffix: bool

    def accepts(self, node: Node) -> bool:
        if node.suffix is not None and not self.takes_suffix:
            return False
        return any(node.mnemonic in (short, long) for short, long in self.forms)


_PATTERN_TOKEN_RE = re.compile(r"\[:?([^\]]+)\]|:?([^:\[]+)")


def _parse_pattern(pattern: str) -> tuple[_PatternNode, ...]:
    nodes: list[_PatternNode] = []
    for optional_text, required_text in _PATTERN_TOKEN_RE.findall(pattern):
        text = optional_text or required_text
        takes_suffix = text.endswith("#")
        forms = []
        for alternative in text.rstrip("#").split("|"):
            alternative = alternative.lstrip(":").rstrip("#")
            short = "".join(c for c in alternative if not c.islower())
            forms.append((short.upper(), alternative.upper()))
        nodes.append(_PatternNode(tuple(forms), bool(optional_text), takes_suffix))
    return tuple(nodes)


def _match(pattern: Sequence[_PatternNode], nodes: Sequence[Node]) -> list[int | None] | None:
    """Suffixes per pattern node (None where absent or skipped), or None if no match."""
    if not pattern:
        return [] if not nodes else None
    head, tail = pattern[0], pattern[1:]
    if nodes and head.accepts(nodes[0]):
        rest = _match(tail, nodes[1:])
        if rest is not None:
            return [nodes[0].suffix, *rest]
    if head.optional:
        rest = _match(tail, nodes)
        if rest is not None:
            return [None, *rest]
    return None


class Call(NamedTuple):
    """What a handler receives: the unit's parameters and the header's numeric suffixes."""

    params: tuple[str, ...]
    suffixes: tuple[int | None, ...]
    query: bool

    def suffix(self, index: int, default: int = 1) -> int:
        value = self.suffixes[index] if index < len(self.suffixes) else None
        return default if value is None else value


Handler = Callable[[Call], object]


@dataclass(frozen=True)
class Command:
    pattern: str
    nodes: tuple[_PatternNode, ...]
    setter: Handler | None
    getter: Handler | None


class CommandTable:
    """Command patterns with their set and query handlers; lookups are cached per header."""

    def __init__(self) -> None:
        self._commands: list[Command] = []
        self._cache: dict[tuple[Node, ...], tuple[Command, tuple[int | None, ...]] | None] = {}
        self.version = 0
        """Counts `add` calls: caches of lookups made by users of the table check it."""

    def add(self, pattern: str, *, setter: Handler | None = None, getter: Handler | None = None):
        """Register `pattern` (manual notation) with a set handler and/or a query handler."""
        self._commands.append(Command(pattern, _parse_pattern(pattern), setter, getter))
        self._cache.clear()
        self.version += 1

    def lookup(self, nodes: tuple[Node, ...]) -> tuple[Command, tuple[int | None, ...]] | None:
        if nodes in self._cache:
            return self._cache[nodes]
        found = None
        for command in self._commands:
            suffixes = _match(command.nodes, nodes)
            if suffixes is not None:
                found = (command, tuple(suffixes))
                break
        if len(self._cache) < 4096:  # garbage clients must not grow memory without bound
            self._cache[nodes] = found
        return found


# --------------------------------------------------------------------------- parameters

# Suffix -> (unit, multiplier). Case-insensitive as in IEEE 488.2: "MA" is milliamp,
# and "MHZ" megahertz (the one documented exception to M = milli).
_UNIT_SUFFIXES: dict[str, tuple[str, float]] = {
    "HZ": ("HZ", 1.0),
    "KHZ": ("HZ", 1e3),
    "MHZ": ("HZ", 1e6),
    "GHZ": ("HZ", 1e9),
    "DBM": ("DBM", 1.0),
    "DB": ("DB", 1.0),
    "A": ("A", 1.0),
    "MA": ("A", 1e-3),
    "UA": ("A", 1e-6),
    "V": ("V", 1.0),
    "MV": ("V", 1e-3),
    "KV": ("V", 1e3),
    "VP": ("V", 1.0),  # volts peak (Keysight's LF output amplitude)
    "UV": ("V", 1e-6),
    "S": ("S", 1.0),
    "MS": ("S", 1e-3),
    "US": ("S", 1e-6),
    "NS": ("S", 1e-9),
    "PS": ("S", 1e-12),
    "KS": ("S", 1e3),
    "PCT": ("PCT", 1.0),
}
_PLAIN_NUMBER_CHARS = frozenset("0123456789.+-eE")
"""Text made of these only is a plain decimal number (or no number): `float` decides it alone."""
_NUMBER_RE = re.compile(r"([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE]\s*[+-]?\d+)?)\s*([A-Za-z]*)")
_NONDECIMAL = {"#H": 16, "#Q": 8, "#B": 2}


def parse_number(
    text: str,
    unit: str | None = None,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    default: float | None = None,
) -> float:
    """A decimal numeric parameter in base units; MIN/MAX/DEF when bounds are given.

    Raises -222 when the value lies outside [minimum, maximum].
    """
    stripped = text.strip()
    if stripped and _PLAIN_NUMBER_CHARS.issuperset(stripped):
        # The common case (digits, point, sign, exponent; no unit, keyword or base):
        # for such text `float` accepts exactly what the decimal pattern below accepts.
        try:
            value = float(stripped)
        except ValueError:
            pass
        else:
            if (minimum is not None and value < minimum) or (
                maximum is not None and value > maximum
            ):
                raise ScpiError(-222, text)
            return value
    upper = stripped.upper()
    keyword = {"MIN": minimum, "MINIMUM": minimum, "MAX": maximum, "MAXIMUM": maximum}
    keyword.update({"DEF": default, "DEFAULT": default})
    if upper in keyword:
        value = keyword[upper]
        if value is None:
            raise ScpiError(-224, text)
        return value
    if upper[:2] in _NONDECIMAL:
        try:
            value = float(int(upper[2:], _NONDECIMAL[upper[:2]]))
        except ValueError as exc:
            raise ScpiError(-102, text) from exc
    else:
        match = _NUMBER_RE.fullmatch(upper)
        if match is None:
            raise ScpiError(-104 if upper[:1].isalpha() else -102, text)
        value = float(match.group(1).replace(" ", ""))
        suffix = match.group(2)
        if suffix:
            if unit is None or suffix not in _UNIT_SUFFIXES or _UNIT_SUFFIXES[suffix][0] != unit:
                raise ScpiError(-131, text)
            value *= _UNIT_SUFFIXES[suffix][1]
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ScpiError(-222, text)
    return value


def parse_bool(text: str) -> bool:
    """ON|OFF|1|0 (any number: non-zero after rounding is true, as SCPI says)."""
    upper = text.strip().upper()
    if upper == "ON":
        return True
    if upper == "OFF":
        return False
    try:
        return round(float(upper)) != 0
    except (ValueError, OverflowError) as exc:  # not a number, NaN, infinity
        raise ScpiError(-224, text) from exc


def parse_choice(text: str, choices: Sequence[str]) -> str:
    """Character data matched in short or long form; returns the choice as written in `choices`."""
    upper = text.strip().upper()
    for choice in choices:
        short = "".join(c for c in choice if not c.islower()).upper()
        if upper in (short, choice.upper()):
            return choice
    raise ScpiError(-224, text)


def one_param(call: Call, required: bool = True) -> str | None:
    """The single parameter of a unit: -109 if missing (when required), -108 if extra."""
    if len(call.params) > 1:
        raise ScpiError(-108, ",".join(call.params))
    if not call.params:
        if required:
            raise ScpiError(-109)
        return None
    return call.params[0]


def ieee_block(payload: bytes) -> bytes:
    """IEEE 488.2 definite-length arbitrary block: ``#<n><length><payload>``."""
    length = str(len(payload))
    return f"#{len(length)}{length}".encode("ascii") + payload
