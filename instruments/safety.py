"""Signal handling for safe shutdown: Ctrl-C and SIGTERM become exceptions.

Python turns SIGINT into KeyboardInterrupt, but SIGTERM kills the process
without running `finally` blocks or `__exit__`. `ShutdownSignals` makes both
raise inside the main thread, so a `with Bench.open(...)` block unwinds and
switches outputs off; while that shutdown runs, further signals are held back
so a second Ctrl-C cannot interrupt a current ramp half-way.

Every signal is acknowledged on stderr the moment it arrives: the first says the
safe shutdown starts, one held back during the shutdown says what is still being
made safe and how long it will take (`ShutdownSignals.status`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

HANDLED_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)

# A signal whose exception Python swallowed, until it is raised again or a shutdown starts.
_pending: list[int] = []
# Signal handlers that raised and whose program has not yet reached its shutdown.
_stopping: list[ShutdownSignals] = []
SIGNAL_STATE = (_pending, _stopping)
"""The two lists `raise_pending` acts on (changed in place only): while both are empty it
has nothing to do, which an exchange checks without calling it."""


def raise_pending() -> None:
    """Raise again a signal whose exception was swallowed; every exchange calls it first.

    A handler raises wherever the main thread happens to be. If that is a `__del__`
    or a weakref callback (the garbage collector runs them anywhere), Python only
    reports the exception to `sys.unraisablehook` and carries on: the Ctrl-C would be
    lost. `ShutdownSignals` hooks that report, so the signal becomes pending and the
    next exchange with any instrument raises it before sending anything. (Only in
    the main thread, where the signal belongs.)
    """
    if _pending and threading.current_thread() is threading.main_thread():
        signum = _pending.pop()
        _pending.clear()
        _raise(signum)
    if _stopping:
        # An exchange outside a shutdown after a signal was raised: the program caught
        # the interrupt and carried on, so the next Ctrl-C must interrupt again.
        for signals in _stopping:
            if not signals._holding:
                signals._stopping = False
        _stopping[:] = [s for s in _stopping if s._stopping]


def say(text: str) -> None:
    """One line on stderr at once, from a signal handler too (unbuffered, never raises)."""
    with contextlib.suppress(OSError):
        os.write(2, f"\n{text}\n".encode("utf-8", "replace"))


def _raise(signum: int) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise TerminatedBySignal(signum)


class TerminatedBySignal(SystemExit):
    """Raised in the main thread when SIGTERM arrives; exits with status 128 + signal."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(128 + signum)


class ShutdownSignals:
    """Install SIGINT/SIGTERM handlers; `restore()` puts the previous ones back."""

    def __init__(self) -> None:
        self._previous: dict[signal.Signals, Any] = {}
        self._previous_hook: Any = None
        self._deferred: list[int] = []
        self._holding = False
        self._stopping = False
        """A signal was raised: the run is unwinding towards the safe shutdown."""
        self.status: Callable[[], str] | None = None
        """What the running shutdown is still doing (shown on a signal held back)."""

    @property
    def installed(self) -> bool:
        return bool(self._previous)

    def install(self) -> bool:
        """Install the handlers; returns False (and does nothing) outside the main thread."""
        if threading.current_thread() is not threading.main_thread() or self._previous:
            return False
        for signum in HANDLED_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        self._previous_hook, sys.unraisablehook = sys.unraisablehook, self._unraisable
        return True

    def hold(self) -> None:
        """From now on, record signals instead of raising (a shutdown is running)."""
        self._holding = True
        _pending.clear()

    def restore(self) -> list[int]:
        """Put the previous handlers back; returns the signals held during shutdown."""
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()
        if self._previous_hook is not None:
            sys.unraisablehook, self._previous_hook = self._previous_hook, None
        held, self._deferred = self._deferred, []
        self._holding = False
        self._stopping = False
        if self in _stopping:
            _stopping.remove(self)
        return held

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self._holding or self._stopping:
            # Raising again would cut the unwinding (closing the run file) or the shutdown
            # short; the first signal already set both going.
            self._deferred.append(signum)
            doing = ""
            if self.status is not None:
                try:
                    doing = self.status()
                except Exception:  # a report must never break the shutdown it reports on
                    doing = ""
            if not doing and not self._holding:
                doing = "finishing the current exchange, then the safe shutdown starts"
            say(
                f"{name} again: the safe shutdown keeps running and cannot be skipped"
                + (f"; {doing}" if doing else "")
            )
            return
        self._stopping = True
        _stopping.append(self)
        say(
            f"{name} received: stopping; making the bench safe (RF off, magnet ramped to "
            "0 A, outputs off) - this takes a few seconds"
        )
        _raise(signum)

    def _unraisable(self, info: Any) -> None:
        """Keep a signal's exception that Python swallowed (see `raise_pending`)."""
        exc = info.exc_value
        if not self._holding and isinstance(exc, KeyboardInterrupt | TerminatedBySignal):
            _pending[:] = [signal.SIGINT if isinstance(exc, KeyboardInterrupt) else exc.signum]
            if self._previous_hook is sys.__unraisablehook__:
                return  # Python's own hook would print a traceback for a signal not lost
        self._previous_hook(info)
