"""The byte pipe under every driver: a tiny interface, implemented over pyvisa.

Drivers never touch pyvisa directly; they talk to a `Transport`. In production
that is `VisaTransport` (a pyvisa message-based resource); in protocol tests it
is `instruments.replay.ReplayTransport`, which asserts every written string and
returns scripted bytes, so exact exchanges can be replayed with no server.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
import time
from abc import ABC, abstractmethod
from typing import Protocol, runtime_checkable

import numpy as np
import pyvisa
import pyvisa.constants as vc
import pyvisa.errors as verr

try:  # pyvisa-py's own "attribute not implemented" exception
    from pyvisa_py.sessions import UnknownAttribute
except ImportError:  # a vendor VISA only: never raised

    class UnknownAttribute(Exception):  # type: ignore[no-redef]
        """Placeholder when pyvisa-py is not installed."""


TERMINATION = "\n"
_TERM = b"\n"
# POSIX has MSG_DONTWAIT and select.poll; Windows has neither. There the peek waits for
# `select` to say the socket is readable first, and raw sockets use pyvisa's own I/O.
_HAS_DONTWAIT = hasattr(socket, "MSG_DONTWAIT")
_HAS_POLL = hasattr(select, "poll")
# an int: enum "|" costs ~3 us a call
_PEEK_NOWAIT = int(socket.MSG_PEEK | (socket.MSG_DONTWAIT if _HAS_DONTWAIT else 0))

_managers_lock = threading.Lock()
_manager_users: dict[int, int] = {}


def acquire_resource_manager(visa_library: str) -> pyvisa.ResourceManager:
    """The VISA library's resource manager, counted: release it with `release_resource_manager`.

    pyvisa hands out one shared manager per VISA library, and closing it closes
    every session opened through it - also those of another bench in the same
    process. So each user acquires it and only the last release closes it.
    """
    with _managers_lock:
        rm = pyvisa.ResourceManager(visa_library)
        _manager_users[id(rm)] = _manager_users.get(id(rm), 0) + 1
        return rm


def release_resource_manager(rm: pyvisa.ResourceManager) -> None:
    """Drop one use of `rm`; the last one closes it (and every session it still holds)."""
    with _managers_lock:
        users = _manager_users.pop(id(rm), 1) - 1
        if users > 0:
            _manager_users[id(rm)] = users
            return
    rm.close()


class TransportTimeout(Exception):
    """No (complete) reply within the timeout."""


class TransportClosed(Exception):
    """The connection is gone (peer closed, reset, I/O error)."""


class TransportGarbled(Exception):
    """Bytes arrived but do not form a valid reply (bad encoding, bad block header)."""


@runtime_checkable
class Transport(Protocol):
    """What a driver needs from a connection; messages are str without termination."""

    resource: str

    @property
    def timeout_s(self) -> float: ...

    @timeout_s.setter
    def timeout_s(self, value: float) -> None: ...

    def write(self, message: str) -> None: ...

    def read(self) -> str: ...

    def read_exact(self, count: int) -> bytes:
        """Read exactly `count` bytes (fewer only if a termination char ends them first)."""
        ...

    def read_block_float32(self) -> np.ndarray:
        """Read an IEEE 488.2 definite-length block of little-endian float32 and its "\n"."""
        ...

    def query_block_float32(self, message: str) -> np.ndarray:
        """Write `message`, read an IEEE 488.2 definite-length block of little-endian float32."""
        ...

    def peer_closed(self) -> bool:
        """True when the far end is known to have closed the connection."""
        ...

    def close(self) -> None: ...


class TransportBase(ABC):
    """What every transport shares: the stored `timeout_s`, and a block query as write + read.

    A transport says how it writes a message and reads a float32 block; the rest is here."""

    _timeout_s: float

    @property
    def timeout_s(self) -> float:
        return self._timeout_s

    @timeout_s.setter
    def timeout_s(self, value: float) -> None:
        self._timeout_s = value
        self._timeout_changed(value)

    @abstractmethod
    def _timeout_changed(self, value: float) -> None:
        """What a new timeout changes beyond the stored value."""

    @abstractmethod
    def write(self, message: str) -> None: ...

    @abstractmethod
    def read_block_float32(self) -> np.ndarray: ...

    def query_block_float32(self, message: str) -> np.ndarray:
        self.write(message)
        return self.read_block_float32()


def is_tcpip_socket(resource: str) -> bool:
    """True for raw-socket resources (`TCPIP[n]::host::port::SOCKET`)."""
    upper = resource.upper()
    return upper.startswith("TCPIP") and upper.endswith("::SOCKET")


class VisaTransport(TransportBase):
    """A pyvisa message-based resource with explicit termination and timeout.

    The resource manager is borrowed, never closed here: it belongs to the
    caller (a `Bench`, or a standalone driver's `open`).
    """

    def __init__(self, rm: pyvisa.ResourceManager, resource: str, timeout_s: float) -> None:
        self.resource = resource
        try:
            self._res = rm.open_resource(
                resource,
                read_termination=TERMINATION,
                write_termination=TERMINATION,
                timeout=int(timeout_s * 1000),
            )
        except (verr.Error, OSError, ValueError) as exc:
            raise TransportClosed(str(exc)) from exc
        self._timeout_s = timeout_s
        if is_tcpip_socket(resource):
            self._check_connected()
            self._set_nodelay()
            # Only the termination char (or a block length) may end a read, never a
            # momentarily empty socket (pyvisa-py's default; NI-VISA needs it said).
            with contextlib.suppress(verr.Error, UnknownAttribute):
                self._res.set_visa_attribute(vc.ResourceAttribute.suppress_end_enabled, vc.VI_TRUE)

    def _check_connected(self) -> None:
        # pyvisa-py 0.8 reports success for a refused non-blocking connect (the socket
        # selects writable on error); ask the socket whether the connect worked.
        sock = self._socket()
        if sock is None:
            return
        error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            self.close()
            raise TransportClosed(os.strerror(error))

    def _set_nodelay(self) -> None:
        # Without NODELAY, Nagle on our side meets delayed ACK on the instrument and
        # every write+query cycle stalls ~40 ms (measured: 23 vs 1,400 cycles/s).
        try:
            self._res.set_visa_attribute(vc.ResourceAttribute.tcpip_nodelay, vc.VI_TRUE)
            return
        except (verr.Error, UnknownAttribute):
            # pyvisa-py 0.8 registers no setter for this attribute on SOCKET sessions
            # (it raises UnknownAttribute): set the option on its socket instead.
            pass
        sock = self._socket()
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    @property
    def nodelay(self) -> bool | None:
        """TCP_NODELAY on the session's socket (None when not a pyvisa-py socket)."""
        sock = self._socket()
        if sock is None:
            return None
        return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    def _timeout_changed(self, value: float) -> None:
        self._res.timeout = int(value * 1000)

    def write(self, message: str) -> None:
        with _translated():
            self._res.write(message)

    def read(self) -> str:
        with _translated():
            raw = self._res.read_raw()
        return decode_reply(raw.rstrip(b"\r\n"))

    def read_exact(self, count: int) -> bytes:
        with _translated():
            return self._res.read_bytes(count, break_on_termchar=True)

    def read_block_float32(self) -> np.ndarray:
        with _translated():
            # The block header gives the byte count, so "\n" bytes inside the data
            # never end the read; expect_termination consumes the trailing "\n".
            values = self._res.read_binary_values(
                datatype="f",
                is_big_endian=False,
                container=np.array,
                header_fmt="ieee",
                expect_termination=True,
            )
        return np.asarray(values, dtype=np.float64)

    def peer_closed(self) -> bool:
        sock = self._socket()
        if sock is None:
            return False
        return _peek_closed(sock)

    def _socket(self) -> socket.socket | None:
        # pyvisa-py keeps the socket on its session object; a closed peer is otherwise
        # only visible as a read that spins until the timeout.
        sessions = getattr(self._res.visalib, "sessions", None)
        if not isinstance(sessions, dict):
            return None
        session = sessions.get(self._res.session)
        sock = getattr(session, "interface", None)
        return sock if isinstance(sock, socket.socket) else None

    def close(self) -> None:
        # Already gone is fine: closing is best effort by definition.
        with contextlib.suppress(verr.Error, OSError):
            self._res.close()


class SocketTransport(VisaTransport):
    """A pyvisa-py raw-socket session whose bytes are moved on its socket directly.

    pyvisa opens, configures (NODELAY) and closes the session; reads and writes
    skip pyvisa's generic read loop (4096-byte chunks, attribute look-ups and a
    `select` per call, several calls per reply), which cost ~0.25 ms of CPU per
    exchange here. Framing is the same: "\n"-terminated text, and IEEE 488.2
    definite-length blocks read by their header's byte count, so "\n" bytes inside
    the data never end a read. Bytes that arrive early stay buffered: a timed-out
    wait loses nothing.
    """

    def __init__(self, rm: pyvisa.ResourceManager, resource: str, timeout_s: float) -> None:
        super().__init__(rm, resource, timeout_s)
        sock = self._socket()
        if sock is None:  # not a pyvisa-py socket session: use pyvisa's I/O
            self.close()
            raise TypeError(f"{resource} is not a pyvisa-py raw-socket session")
        self._sock = sock
        self._buf = bytearray()
        # One poll object for every wait: no fd list built per call, and a zero-timeout
        # poll tells "nothing to read" (the usual case before an exchange) in ~1 us.
        self._poll = select.poll()
        self._poll.register(sock, select.POLLIN)

    @classmethod
    def open(cls, rm: pyvisa.ResourceManager, resource: str, timeout_s: float) -> VisaTransport:
        """This transport for pyvisa-py raw sockets (POSIX), `VisaTransport` for anything else."""
        if not is_tcpip_socket(resource) or not _HAS_POLL:
            return VisaTransport(rm, resource, timeout_s)
        try:
            return cls(rm, resource, timeout_s)
        except TypeError:
            return VisaTransport(rm, resource, timeout_s)

    def _timeout_changed(self, value: float) -> None:
        pass  # applied per read below; pyvisa's own reads are unused

    def write(self, message: str) -> None:
        try:
            self._sock.sendall((message + TERMINATION).encode("ascii"))
        except OSError as exc:
            raise TransportClosed(str(exc) or "send failed") from exc

    def _fill(self, deadline: float) -> None:
        """Append what the socket has (waiting until `deadline` for something)."""
        try:
            remaining_ms = 1e3 * (deadline - time.monotonic())
            if not self._poll.poll(remaining_ms if remaining_ms > 0.0 else 0):
                raise TransportTimeout(f"no reply within {self._timeout_s:.3g} s")
            data = self._sock.recv(1 << 16)
        except (OSError, ValueError) as exc:  # ValueError: the socket was closed under us
            raise TransportClosed(str(exc) or "receive failed") from exc
        if not data:
            raise TransportClosed("connection closed by the instrument")
        self._buf += data

    def read(self) -> str:
        deadline = time.monotonic() + self._timeout_s
        term = _TERM
        start = 0
        while (end := self._buf.find(term, start)) < 0:
            start = len(self._buf)
            self._fill(deadline)
        line = bytes(self._buf[:end])
        del self._buf[: end + 1]
        return decode_reply(line)

    def read_exact(self, count: int) -> bytes:
        deadline = time.monotonic() + self._timeout_s
        term = _TERM
        while True:
            end = self._buf.find(term, 0, count)
            take = count if end < 0 else end + 1
            if len(self._buf) >= take:
                head = bytes(self._buf[:take])
                del self._buf[:take]
                return head
            self._fill(deadline)

    def read_block_float32(self) -> np.ndarray:
        deadline = time.monotonic() + self._timeout_s
        while len(self._buf) < 2:
            self._fill(deadline)
        digits = self._buf[1:2]
        if self._buf[:1] != b"#" or not digits.isdigit() or digits == b"0":
            raise TransportGarbled(
                f"no IEEE 488.2 definite-length block header in {bytes(self._buf[:16])!r}"
            )
        header_end = 2 + int(digits)
        while len(self._buf) < header_end:
            self._fill(deadline)
        length_text = bytes(self._buf[2:header_end])
        if not length_text.isdigit():
            raise TransportGarbled(f"bad block length {length_text!r}")
        end = header_end + int(length_text)
        if (end - header_end) % 4:
            raise TransportGarbled(f"block of {end - header_end} bytes is not float32")
        while len(self._buf) < end + 1:
            self._fill(deadline)
        if self._buf[end : end + 1] != _TERM:
            raise TransportGarbled("block not followed by the termination character")
        values = np.frombuffer(
            self._buf, dtype="<f4", count=(end - header_end) // 4, offset=header_end
        ).astype(np.float64)
        del self._buf[: end + 1]
        return values

    def peer_closed(self) -> bool:
        if self._buf:
            return False  # unread bytes: the link was alive when they came
        if not self._poll.poll(0):
            return False  # nothing readable, not even an end of file: the link is up
        return _peek_closed(self._sock)


def decode_reply(line: bytes) -> str:
    """A reply line as text, leniently: ASCII, else UTF-8, else Latin-1 (never fails).

    SCPI replies are ASCII, but an instrument's error text may carry its own
    language ("Donn\u00e9es hors limites"); that is not a garbled reply. Numbers that
    arrive as other bytes still fail where they are parsed, naming the command.
    """
    try:
        return line.decode("ascii")
    except UnicodeDecodeError:
        pass
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return line.decode("latin-1")


def _peek_closed(sock: socket.socket) -> bool:
    """True when `sock` reads as closed (end of file or an error) without consuming a byte."""
    try:
        if not _HAS_DONTWAIT and not select.select([sock], [], [], 0)[0]:
            return False  # nothing readable (not even an end of file): the link is up
        data = sock.recv(1, _PEEK_NOWAIT)
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True
    return data == b""


class _translated:
    """Map pyvisa/OS exceptions onto the three transport failures."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> bool:
        if exc is None:
            return False
        if isinstance(exc, verr.VisaIOError):
            if exc.error_code == vc.StatusCode.error_timeout:
                raise TransportTimeout(str(exc)) from exc
            raise TransportClosed(str(exc)) from exc
        if isinstance(exc, verr.InvalidSession):
            raise TransportClosed(str(exc)) from exc
        if isinstance(exc, OSError):
            raise TransportClosed(str(exc)) from exc
        if isinstance(exc, (UnicodeDecodeError, verr.InvalidBinaryFormat, ValueError)):
            raise TransportGarbled(str(exc)) from exc
        return False
