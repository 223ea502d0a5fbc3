"""A replay double of the VISA byte stream, for protocol tests with no server.

`ReplayTransport` is given the exact conversation: each expected written string
and the raw bytes the instrument answers. Replies are queued on one byte stream
and read back the way VISA does: `read()` stops at the first "\\n", a binary
block is read by its IEEE 488.2 header length. A driver that read a block as
text would therefore be cut at the first "\\n" inside the data, as on a real
instrument.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

import numpy as np
from labpgt.instruments.transport import (
    TERMINATION,
    TransportBase,
    TransportClosed,
    TransportGarbled,
    TransportTimeout,
)

DROP = object()
"""Scripted reply: the connection closes instead of answering."""

STALL = object()
"""Scripted reply: the instrument never answers (the read times out)."""

Reply = str | bytes | object | None
D = TypeVar("D")


def ieee_block(values: Sequence[float], *, big_endian: bool = False) -> bytes:
    """An IEEE 488.2 definite-length block of float32 values, terminated by "\\n"."""
    payload = struct.pack(("<" if not big_endian else ">") + "f" * len(values), *values)
    length = str(len(payload)).encode()
    return b"#" + str(len(length)).encode() + length + payload + b"\n"


class ReplayTransport(TransportBase):
    """Asserts every write against a script and serves the scripted reply bytes."""

    def __init__(self, exchanges: Iterable[tuple[str, Reply]], resource: str = "REPLAY") -> None:
        self.resource = resource
        self._script = list(exchanges)
        self._pos = 0
        self._buffer = bytearray()
        self._timeout_s = 1.0
        self.timeouts_s: list[float] = []
        self.closed = False
        self._dropped = False

    def _timeout_changed(self, value: float) -> None:
        self.timeouts_s.append(value)

    def write(self, message: str) -> None:
        if self.closed or self._dropped:
            raise TransportClosed("replay: write on a closed connection")
        if self._pos >= len(self._script):
            raise AssertionError(f"unexpected write {message!r}: the script is exhausted")
        expected, reply = self._script[self._pos]
        if message != expected:
            raise AssertionError(
                f"write #{self._pos}: expected {expected!r}, the driver wrote {message!r}"
            )
        self._pos += 1
        if reply is DROP:
            self._dropped = True
        elif reply is STALL:
            self._buffer.extend(b"\x00STALL")  # a marker the reads turn into a timeout
        elif isinstance(reply, str):
            self._buffer.extend(reply.encode() + TERMINATION.encode())
        elif isinstance(reply, bytes):
            self._buffer.extend(reply)

    def read(self) -> str:
        raw = self._take_line()
        try:
            return raw.decode("ascii").rstrip(TERMINATION)
        except UnicodeDecodeError as exc:
            raise TransportGarbled(f"replay: undecodable reply {raw!r}") from exc

    def read_exact(self, count: int) -> bytes:
        """Up to `count` bytes, fewer when a "\n" ends them first (VISA's termchar rule)."""
        self._check_readable()
        end = self._buffer.find(TERMINATION.encode(), 0, count)
        take = count if end < 0 else end + 1
        if len(self._buffer) < take:
            raise TransportTimeout("replay: reply shorter than the bytes asked for")
        head = bytes(self._buffer[:take])
        del self._buffer[:take]
        return head

    def read_block_float32(self) -> np.ndarray:
        self._check_readable()
        buf = self._buffer
        if not buf.startswith(b"#") or len(buf) < 2 or not buf[1:2].isdigit():
            raise TransportGarbled(f"replay: no IEEE block header in {bytes(buf[:16])!r}")
        ndigits = int(buf[1:2])
        header_end = 2 + ndigits
        length = int(buf[2:header_end])
        end = header_end + length
        if len(buf) < end + 1 or buf[end : end + 1] != TERMINATION.encode():
            raise TransportGarbled("replay: block shorter than its header or unterminated")
        payload = bytes(buf[header_end:end])
        del buf[: end + 1]
        if length % 4:
            raise TransportGarbled(f"replay: block of {length} bytes is not float32")
        return np.frombuffer(payload, dtype="<f4").astype(np.float64)

    def peer_closed(self) -> bool:
        return self._dropped

    def close(self) -> None:
        self.closed = True

    def assert_done(self) -> None:
        """Fail unless every scripted exchange happened and every reply was read."""
        if self._pos != len(self._script):
            missing = [cmd for cmd, _ in self._script[self._pos :]]
            raise AssertionError(f"script not finished; still expected: {missing}")
        if self._buffer:
            raise AssertionError(f"unread reply bytes left: {bytes(self._buffer)!r}")

    def _check_readable(self) -> None:
        if self._dropped:
            raise TransportClosed("replay: connection dropped")
        if self._buffer.startswith(b"\x00STALL"):
            del self._buffer[:6]
            raise TransportTimeout("replay: stalled")
        if not self._buffer:
            raise AssertionError("read with no reply pending: the driver expected an answer")

    def _take_line(self) -> bytes:
        self._check_readable()
        term = TERMINATION.encode()
        idx = self._buffer.find(term)
        if idx < 0:
            raise TransportTimeout("replay: reply without termination")
        line = bytes(self._buffer[: idx + 1])
        del self._buffer[: idx + 1]
        return line


def replay_driver(
    cls: type[D], exchanges: Iterable[tuple[str, Reply]], resource: str = "REPLAY", **kwargs: Any
) -> tuple[D, ReplayTransport]:
    """A driver of `cls` on a replay of `exchanges`, its session open, its setup not run."""
    transport = ReplayTransport(exchanges, resource=resource)
    driver = cls(transport, **kwargs)  # type: ignore[call-arg]
    driver.conn.open()  # type: ignore[attr-defined]
    return driver, transport
