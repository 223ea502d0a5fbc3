"""One instrument's link: a lock, explicit timeouts, and self-healing reconnects.

Every exchange runs under the instrument's lock (pyvisa is not thread safe).
A dropped link is closed, backed off, reopened and the instrument's last
settings restored, with bounded retries; a stall becomes a timeout error within
the configured time; bytes that make no sense become a protocol error. Each
message names the instrument's role and VISA resource.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any, TypeVar

import numpy as np
from labpgt.instruments.instrument_errors import (
    InstrumentConnectionError,
    InstrumentProtocolError,
    InstrumentTimeoutError,
)
from labpgt.instruments.safety import SIGNAL_STATE, raise_pending
from labpgt.instruments.transport import (
    Transport,
    TransportClosed,
    TransportGarbled,
    TransportTimeout,
)

T = TypeVar("T")
GIVE_UP_SHARE = 0.9
"""After a stalled exchange, retries and reconnects share this fraction of one timeout."""
Opener = Callable[[], Transport]
_PENDING, _STOPPING = SIGNAL_STATE


class Connection:
    """One instrument's link: lock, timeouts, reconnect with bounded retries."""

    def __init__(
        self,
        opener: Opener,
        *,
        role: str,
        resource: str,
        timeout_s: float,
        retries: int = 3,
        backoff_s: float = 0.05,
    ) -> None:
        self.role = role
        self.resource = resource
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.lock = threading.RLock()
        self.reconnects = 0
        self.on_reconnect: Callable[[], None] | None = None
        self._opener = opener
        self._transport: Transport | None = None
        self._dirty = False
        self._restoring = False
        self._stall_started: float | None = None
        """When the current chain of unanswered exchanges began (monotonic s), else None."""
        self._stall_deadline: float | None = None
        """Give up on the instrument at this time (monotonic s) until it answers again."""

    @property
    def label(self) -> str:
        return f"{self.role} ({self.resource})"

    # -- stalls: a bounded time to give up ----------------------------------------------
    #
    # The first exchange that gets no reply starts a stall. From then on every retry,
    # reconnect and restore of this instrument shares 90 % of one more timeout: the
    # instrument is given up on within wait + timeout of the stalled exchange's start
    # (2x the timeout for an ordinary exchange; a sweep's wait adds its sweep time and
    # margin). Any complete reply ends the stall.

    @property
    def stalled(self) -> bool:
        return self._stall_deadline is not None

    def _note_stall(self, started_s: float, wait_s: float) -> None:
        if self._stall_deadline is None:
            self._stall_started = started_s
            # 90 % of one timeout for what follows: the rest is headroom for the caller.
            self._stall_deadline = started_s + wait_s + GIVE_UP_SHARE * self.timeout_s

    def _clear_stall(self) -> None:
        self._stall_started = self._stall_deadline = None

    def _capped(self, seconds: float) -> float:
        """`seconds`, or less when a stall leaves less time before giving up."""
        if self._stall_deadline is None:
            return seconds
        return max(min(seconds, self._stall_deadline - time.monotonic()), 1e-3)

    def _give_up_if_stalled(self, command: str) -> None:
        if self._stall_deadline is None or time.monotonic() < self._stall_deadline:
            return
        assert self._stall_started is not None
        raise InstrumentTimeoutError(
            f"{self.label}: gave up on {command!r}: no reply for "
            f"{time.monotonic() - self._stall_started:.3g} s (timeout {self.timeout_s:.3g} s); "
            "the instrument is stalled or hung - check it and its cable"
        )

    def begin_shutdown(self) -> None:
        """Give a stalled instrument one more timeout for the safe shutdown (a fresh try)."""
        with self.lock:
            if self._stall_deadline is not None:
                now = time.monotonic()
                self._stall_started = now
                self._stall_deadline = now + GIVE_UP_SHARE * self.timeout_s

    def open(self) -> None:
        """Open the first session; no restore (there is nothing to restore yet)."""
        with self.lock:
            try:
                self._transport = self._opener()
            except (TransportClosed, TransportTimeout, OSError) as exc:
                raise InstrumentConnectionError(f"{self.label}: cannot connect: {exc}") from exc
            self._transport.timeout_s = self.timeout_s

    def close(self) -> None:
        with self.lock:
            if self._transport is not None:
                self._transport.close()
                self._transport = None

    def write(self, command: str) -> None:
        self._transaction(command, lambda t: t.write(command))

    def abandon_reply(self) -> None:
        """A reply that was asked for will not be read: renew the session before the next
        exchange (its late bytes must never be taken for another reply)."""
        with self.lock:
            self._dirty = True

    def read_reply(
        self,
        command: str,
        read: Callable[[Transport], Any] | None = None,
        wait_s: float | None = None,
    ) -> Any:
        """Read the reply to `command`, written earlier by `write` (a split exchange).

        `read` reads it from the transport (default: one line, within the timeout;
        `wait_s` names the wait in a timeout error). No retry here: after a lost link
        the command must be sent again, which only the caller can decide; the error
        says so and the next exchange reconnects.
        """
        with self.lock:
            transport = self._transport
            if transport is None or self._dirty:
                raise InstrumentConnectionError(
                    f"{self.label}: no session for the reply to {command!r}"
                )
            started = time.monotonic()
            stalled = self._stall_deadline is not None
            if stalled:
                transport.timeout_s = self._capped(self.timeout_s)
            try:
                reply = transport.read() if read is None else read(transport)
                if stalled:
                    self._clear_stall()
                return reply
            except TransportTimeout as exc:
                self._dirty = True
                self._note_stall(started, wait_s or self.timeout_s)
                raise self._timeout_error(command, wait_s or self.timeout_s) from exc
            except TransportClosed as exc:
                self._dirty = True
                raise InstrumentConnectionError(
                    f"{self.label}: connection lost before the reply to {command!r}: {exc}"
                ) from exc
            except TransportGarbled as exc:
                self._dirty = True
                raise self._garbled_error(command, exc) from exc
            except BaseException:
                self._dirty = True
                raise
            finally:
                if stalled:
                    transport.timeout_s = self.timeout_s

    def query(self, command: str, *, poll_s: float | None = None) -> str:
        """Write and read one reply within the current timeout.

        With `poll_s`, the wait is cut into slices of that length and the link is
        checked between them, so an instrument that drops the connection during a
        long wait (a slow sweep) is noticed at once, not after the whole timeout.
        """

        def exchange(t: Transport) -> str:
            t.write(command)
            if poll_s is None:
                return t.read()
            return self._read_polling(t, poll_s)

        return self._transaction(command, exchange)

    def _read_polling(
        self, t: Transport, poll_s: float, read: Callable[[], T] | None = None, wait_s: float = 0.0
    ) -> T:
        """`read()` (default: one reply line) within `wait_s` (default: the timeout), in slices."""
        deadline = time.monotonic() + self._capped(wait_s or self.timeout_s)
        try:
            while True:
                t.timeout_s = max(min(poll_s, deadline - time.monotonic()), 1e-3)
                try:
                    return read() if read is not None else t.read()  # type: ignore[return-value]
                except TransportTimeout:
                    # Replies polled this way start with a few bytes ("1\n", "1;") sent
                    # at once with what follows, so a slice never ends inside them.
                    if t.peer_closed():
                        raise TransportClosed("connection closed while waiting") from None
                    if time.monotonic() >= deadline:
                        raise
        finally:
            t.timeout_s = self._capped(self.timeout_s)

    def query_headed_block(
        self,
        command: str,
        heads: tuple[str, ...],
        *,
        poll_s: float,
        wait_s: float,
    ) -> np.ndarray | str:
        """One exchange whose reply is a short head (e.g. "1;") then an IEEE 488.2 block.

        The wait for the head may be long (a sweep): up to `wait_s`, checking the link
        every `poll_s`. Then the block is read within the normal timeout. If the reply
        is instead one complete short line (e.g. "1" when the block's query failed),
        that line is returned as str with the stream still in step; any other reply
        is garbled (and the session is renewed before the next exchange).
        """

        def exchange(t: Transport) -> np.ndarray | str:
            t.write(command)
            return self._headed_block(t, heads, poll_s, wait_s)

        return self._transaction(command, exchange, wait_s)

    def read_headed_block(
        self, command: str, heads: tuple[str, ...], *, poll_s: float, wait_s: float
    ) -> np.ndarray | str:
        """`query_headed_block`'s reply to `command`, written earlier by `write` (split).

        As `read_reply`: no retry; a lost link raises `InstrumentConnectionError`.
        """
        return self.read_reply(
            command, partial(self._headed_block, heads=heads, poll_s=poll_s, wait_s=wait_s), wait_s
        )

    def _headed_block(
        self, t: Transport, heads: tuple[str, ...], poll_s: float, wait_s: float
    ) -> np.ndarray | str:
        shortest = len(min(heads, key=len))
        got = self._read_polling(t, poll_s, lambda: t.read_exact(shortest), wait_s)
        while True:
            text = got.decode("latin-1")
            if text in heads:
                return t.read_block_float32()
            if text.endswith("\n"):
                return text.rstrip("\r\n")
            if not any(h.startswith(text) for h in heads):
                raise TransportGarbled(
                    f"reply starts {got[:16]!r}, expected {' or '.join(map(repr, heads))}"
                )
            got += t.read_exact(1)

    def query_block(self, command: str) -> np.ndarray:
        return self._transaction(command, lambda t: t.query_block_float32(command))

    @contextmanager
    def timeout(self, seconds: float) -> Iterator[None]:
        """Temporarily use a different timeout (e.g. sweep time + margin)."""
        with self.lock:
            previous = self.timeout_s
            self.timeout_s = seconds
            if self._transport is not None:
                self._transport.timeout_s = seconds
            try:
                yield
            finally:
                self.timeout_s = previous
                if self._transport is not None:
                    self._transport.timeout_s = previous

    def _transaction(
        self, command: str, fn: Callable[[Transport], T], wait_s: float | None = None
    ) -> T:
        with self.lock:
            if self._restoring:
                # Inside a restore: failures go straight back to the reconnect loop.
                assert self._transport is not None
                return fn(self._transport)
            if _PENDING or _STOPPING:  # (the usual case skips the call)
                raise_pending()  # a Ctrl-C whose exception Python swallowed: raise it now
            if self._stall_deadline is not None:  # (the usual case skips the call)
                self._give_up_if_stalled(command)
            started = time.monotonic()
            if self._transport is None:
                self._reconnect("the session was closed", command)
            elif self._dirty:
                self._reconnect("the previous exchange did not complete", command)
            # A link the instrument closed since is found by the exchange itself (its
            # write fails or its read meets the end of the stream) and redone below on a
            # fresh session, as a link lost mid-exchange is: no check costs every exchange.
            attempts = 0
            while True:
                assert self._transport is not None
                if self._stall_deadline is not None:
                    # Every other path leaves the transport at the connection's timeout.
                    self._transport.timeout_s = self._capped(self.timeout_s)
                try:
                    result = fn(self._transport)
                except TransportTimeout as exc:
                    if not self._transport.peer_closed():
                        self._dirty = True  # a late reply may still arrive: never read it
                        self._note_stall(started, wait_s or self.timeout_s)
                        raise self._timeout_error(command, wait_s or self.timeout_s) from exc
                    reason: str = "connection closed by the instrument"
                except TransportClosed as exc:
                    reason = str(exc) or "connection lost"
                except TransportGarbled as exc:
                    self._dirty = True
                    raise self._garbled_error(command, exc) from exc
                except BaseException:
                    self._dirty = True  # interrupted mid-exchange (Ctrl-C, bug): resync
                    raise
                else:
                    if self._stall_deadline is not None:
                        self._clear_stall()
                        self._transport.timeout_s = self.timeout_s
                    return result
                attempts += 1
                if attempts > self.retries:
                    raise InstrumentConnectionError(
                        f"{self.label}: connection lost during {command!r} and it failed again "
                        f"after {self.retries} reconnects: {reason}"
                    )
                self._reconnect(reason, command)

    def _transport_timeout(self) -> float:
        return self._transport.timeout_s if self._transport is not None else self.timeout_s

    def _timeout_error(self, command: str, seconds: float) -> InstrumentTimeoutError:
        return InstrumentTimeoutError(
            f"{self.label}: no reply to {command!r} within {seconds:.3g} s "
            "(instrument stalled or busy)"
        )

    def _garbled_error(self, command: str, exc: Exception) -> InstrumentProtocolError:
        return InstrumentProtocolError(f"{self.label}: garbled reply to {command!r}: {exc}")

    def _reconnect(self, reason: str, command: str = "") -> None:
        last: Exception | None = None
        for attempt in range(self.retries):
            if self._transport is not None:
                self._transport.close()
                self._transport = None
            if attempt:
                self._give_up_if_stalled(command or "reconnecting")
            time.sleep(self._capped(self.backoff_s * 2**attempt))
            try:
                self._transport = self._opener()
                self._transport.timeout_s = self._capped(self.timeout_s)
                self._restoring = True
                try:
                    if self.on_reconnect is not None:
                        self.on_reconnect()
                finally:
                    self._restoring = False
            except TransportTimeout as exc:
                # No reply to the restore: the instrument is stalled, not merely dropped.
                self._note_stall(time.monotonic() - self._transport_timeout(), self.timeout_s)
                last = exc
                continue
            except (TransportClosed, TransportGarbled, OSError) as exc:
                last = exc
                continue
            self._dirty = False
            self.reconnects += 1
            return
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        raise InstrumentConnectionError(
            f"{self.label}: unreachable after {self.retries} reconnect attempts "
            f"({reason}); last error: {last}"
        )
