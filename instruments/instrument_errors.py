"""Exceptions raised by the drivers. The CLI layer converts them to user-facing errors.

Every message names the instrument (its role, e.g. "generator") and, where it
helps, the VISA resource, so a person at the bench knows which box to look at.
"""

from __future__ import annotations

from dataclasses import dataclass


class InstrumentsError(Exception):
    """Base class of every error raised by `instruments`."""


@dataclass(eq=False)
class LimitError(InstrumentsError, ValueError):
    """A requested value lies outside the bench's hard limits; nothing was sent."""

    instrument: str
    quantity: str
    value: float
    low: float
    high: float
    unit: str

    def __post_init__(self) -> None:
        super().__init__(
            f"{self.instrument}: {self.quantity}={self.value:.6g} {self.unit} refused: "
            f"allowed range is [{self.low:.6g}, {self.high:.6g}] {self.unit} (bench limits)"
        )


class InstrumentError(InstrumentsError):
    """An entry from the instrument's own error queue (`SYST:ERR?`)."""

    def __init__(self, instrument: str, code: int, message: str, context: str = "") -> None:
        self.instrument = instrument
        self.code = code
        self.message = message
        where = f" after {context}" if context else ""
        super().__init__(f"{instrument}: instrument error {code}, {message!r}{where}")


class CommandError(InstrumentError):
    """SCPI command errors (-100 .. -199): the instrument did not understand a command."""


class ExecutionError(InstrumentError):
    """SCPI execution errors (-200 .. -299), e.g. -222 "Data out of range"."""


class DeviceError(InstrumentError):
    """SCPI device-specific errors (-300 .. -399) and positive vendor codes."""


class QueryError(InstrumentError):
    """SCPI query errors (-400 .. -499), e.g. a reply was lost or interrupted."""


def instrument_error(
    instrument: str, code: int, message: str, context: str = ""
) -> InstrumentError:
    """The typed `InstrumentError` subclass for one SCPI error code."""
    if -199 <= code <= -100:
        cls: type[InstrumentError] = CommandError
    elif -299 <= code <= -200:
        cls = ExecutionError
    elif -499 <= code <= -400:
        cls = QueryError
    else:
        cls = DeviceError
    return cls(instrument, code, message, context)


class InstrumentConnectionError(InstrumentsError):
    """The instrument cannot be reached, or was lost and could not be reconnected."""


class InstrumentTimeoutError(InstrumentsError):
    """The instrument did not answer within the timeout (it may be stalled or busy)."""


class InstrumentProtocolError(InstrumentsError):
    """The instrument answered something that cannot be parsed (a garbled or foreign reply)."""


class BenchConfigError(InstrumentsError, ValueError):
    """The bench file is missing, unreadable or invalid; the message names the field."""
