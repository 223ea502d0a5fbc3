"""Fault injection for reliability tests: armed per instrument, consumed by the next line.

Kinds:
  drop    close the client's connection on the next command (on a pty: swallow it)
  stall   do not answer the next query (the client times out)
  error   refuse the settings of the next command line and queue -200
  garble  corrupt the next reply (same length, terminator kept, unparseable)
"""

from __future__ import annotations

import threading
from collections import Counter

FAULT_KINDS = ("drop", "stall", "error", "garble")


class FaultError(ValueError):
    """An unknown fault kind or a bad count."""


class FaultPlan:
    """Thread-safe counters of armed faults for one instrument."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: Counter[str] = Counter()
        self._pending = 0  # sum of _armed: read without the lock (an int read is atomic)
        self.fired: Counter[str] = Counter()

    def arm(self, kind: str, count: int = 1) -> None:
        """Arm `count` faults of `kind` (one of FAULT_KINDS)."""
        if kind not in FAULT_KINDS:
            raise FaultError(f"fault kind must be one of {', '.join(FAULT_KINDS)}, got {kind!r}")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise FaultError(f"fault count must be an integer >= 1, got {count!r}")
        with self._lock:
            self._armed[kind] += count
            self._pending += count

    def take(self, kind: str) -> bool:
        """Consume one armed fault of `kind`; True if one was armed."""
        if not self._pending:  # nothing armed (the usual case): no lock per command line
            return False
        with self._lock:
            if self._armed[kind] <= 0:
                return False
            self._armed[kind] -= 1
            self._pending -= 1
            self.fired[kind] += 1
            return True

    def armed(self) -> dict[str, int]:
        """Faults still waiting to fire, by kind."""
        with self._lock:
            return {kind: n for kind, n in self._armed.items() if n > 0}

    def clear(self) -> None:
        with self._lock:
            self._armed.clear()
            self._pending = 0


def garble(reply: bytes) -> bytes:
    """Corrupt a reply so no parser accepts it, keeping its length and final newline.

    A binary block loses its '#' header marker (so the block length is unknown
    to the client, as with a real line fault); text becomes non-numeric noise.
    """
    body, newline = (reply[:-1], reply[-1:]) if reply.endswith(b"\n") else (reply, b"")
    if body.startswith(b"#"):
        return b"?" + body[1:] + newline
    noise = bytes(b"~?%&"[i % 4] for i in range(len(body)))
    return noise + newline
