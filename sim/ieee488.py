"""IEEE 488.2 status reporting, held per client session.

Every connection to a virtual instrument is a `Session`: its own SCPI error
queue, standard event status register (ESR) with its enable mask (`*ESE`),
service request enable mask (`*SRE`) and pending `*OPC`. What one client sends,
garbage included, can therefore never put an error into another client's queue
or clear another client's events.

The status byte (`*STB?`) is built on demand from the session:

======  =====================================================================
bit     meaning
======  =====================================================================
2 (4)   error/event queue not empty (SCPI)
5 (32)  ESB: a standard event that the event-enable mask lets through
6 (64)  MSS: any other bit that the service-request-enable mask lets through
======  =====================================================================

`*OPC` is overlapped: it does not wait. It arms the session, and the OPC bit
(ESR bit 0) is set once the instrument's pending operations (a running sweep)
are complete, which `*ESR?` and `*STB?` see when they are asked.
"""

from __future__ import annotations

import itertools
import time

from labpgt.sim.scpi_parser import ErrorQueue, ScpiError, parse_number

# Standard event status register bits 0..7 (IEEE 488.2 11.5.1.1).
(
    ESR_OPC,
    ESR_REQUEST_CONTROL,
    ESR_QUERY_ERROR,
    ESR_DEVICE_ERROR,
    ESR_EXECUTION_ERROR,
    ESR_COMMAND_ERROR,
    ESR_USER_REQUEST,
    ESR_POWER_ON,
) = (1 << bit for bit in range(8))

# Status byte bits 2, 4, 5, 6: error queue not empty, message available, event summary,
# master summary.
STB_ERROR_QUEUE, STB_MAV, STB_ESB, STB_MSS = (1 << bit for bit in (2, 4, 5, 6))

ERROR_QUEUE_CAPACITY = 30
"""Entries a session's queue holds before the last becomes -350 (Keysight and R&S: 20-100)."""

_session_ids = itertools.count(1)


def esr_bit(code: int) -> int:
    """The ESR bit an error code sets: -1xx command, -2xx execution, -4xx query, else device."""
    if -199 <= code <= -100:
        return ESR_COMMAND_ERROR
    if -299 <= code <= -200:
        return ESR_EXECUTION_ERROR
    if -499 <= code <= -400:
        return ESR_QUERY_ERROR
    return ESR_DEVICE_ERROR


class Session:
    """One client's status registers and error queue."""

    def __init__(self, name: str = "", capacity: int = ERROR_QUEUE_CAPACITY) -> None:
        self.id = next(_session_ids)
        self.name = name or f"session{self.id}"
        self.errors = ErrorQueue(capacity)
        self.esr = 0
        self.ese = 0
        self.sre = 0
        self._opc_deadline_s: float | None = None  # an armed *OPC completes at this time

    def record(self, error: ScpiError) -> None:
        """Queue `error` and set its standard event bit."""
        self.errors.push(error)
        self.esr |= esr_bit(error.code)

    def arm_opc(self, deadline_s: float) -> None:
        """`*OPC`: the OPC bit is set once `time.monotonic()` reaches `deadline_s`."""
        self._opc_deadline_s = deadline_s
        self._poll_opc()

    def _poll_opc(self) -> None:
        deadline = self._opc_deadline_s
        if deadline is not None and time.monotonic() >= deadline:
            self.esr |= ESR_OPC
            self._opc_deadline_s = None

    def read_esr(self) -> int:
        """`*ESR?`: the register's value; reading clears it."""
        self._poll_opc()
        value, self.esr = self.esr, 0
        return value

    def status_byte(self) -> int:
        """`*STB?`: the status byte (reading it clears nothing)."""
        self._poll_opc()
        stb = STB_ERROR_QUEUE if len(self.errors) else 0
        if self.esr & self.ese:
            stb |= STB_ESB
        if stb & self.sre & ~STB_MSS:
            stb |= STB_MSS
        return stb

    def clear(self) -> None:
        """`*CLS`: empty the error queue, clear the ESR and forget an armed `*OPC`."""
        self.errors.clear()
        self.esr = 0
        self._opc_deadline_s = None

    def take_over(self, other: Session) -> None:
        """Move `other`'s queued errors and events into this session (front-panel hand-over)."""
        while len(other.errors):
            self.errors.push_entry(other.errors.pop())
        self.esr |= other.esr
        other.esr = 0


def register_value(text: str) -> int:
    """The parameter of `*ESE` / `*SRE`: an integer 0..255 (a decimal is rounded)."""
    value = parse_number(text, None, minimum=-0.5, maximum=255.5)
    return int(round(value))
