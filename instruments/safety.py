"""Signal handling for safe shutdown: Ctrl-C and SIGTERM become exceptions.

Python turns SIGINT into KeyboardInterrupt, but SIGTERM kills the process
without running `finally` blocks or `__exit__`. `ShutdownSignals` makes both
raise inside the main thread, so a `with Bench.open(...)` block unwinds and
switches outputs off; while that shutdown runs, further signals are held back
so a second Ctrl-C cannot interrupt a current ramp half-way.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

HANDLED_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)


class TerminatedBySignal(SystemExit):
    """Raised in the main thread when SIGTERM arrives; exits with status 128 + signal."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(128 + signum)


class ShutdownSignals:
    """Install SIGINT/SIGTERM handlers; `restore()` puts the previous ones back."""

    def __init__(self) -> None:
        self._previous: dict[signal.Signals, Any] = {}
        self._deferred: list[int] = []
        self._holding = False
        self._pending: int | None = None

    @property
    def installed(self) -> bool:
        return bool(self._previous)

    def install(self) -> bool:
        """Install the handlers; returns False (and does nothing) outside the main thread."""
        if threading.current_thread() is not threading.main_thread() or self._previous:
            return False
        for signum in HANDLED_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return True

    def hold(self) -> None:
        """From now on, record signals instead of raising (a shutdown is running)."""
        self._holding = True
        self._pending = None

    def raise_pending(self) -> None:
        """Raise again a signal whose exception was swallowed; call it at safe points.

        The handler raises wherever the main thread happens to be. If that is a
        `__del__` or a weakref callback (the garbage collector runs them anywhere),
        Python prints "Exception ignored" and carries on: the Ctrl-C would be lost.
        The signal stays pending until the shutdown starts (`hold`), so the next
        safe point (every `Bench.apply`) raises it.
        """
        signum, self._pending = self._pending, None
        if signum is not None:
            self._raise(signum)

    def restore(self) -> list[int]:
        """Put the previous handlers back; returns the signals held during shutdown."""
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()
        held, self._deferred = self._deferred, []
        self._holding = False
        return held

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._holding:
            self._deferred.append(signum)
            return
        self._pending = signum
        self._raise(signum)

    @staticmethod
    def _raise(signum: int) -> None:
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise TerminatedBySignal(signum)
