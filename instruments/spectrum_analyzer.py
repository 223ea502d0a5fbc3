"""Swept spectrum analyzer: grid settings and single-sweep binary trace reads.

Families: "keysight_x" (Keysight X-series N9010A/N9020A/N9030B) and "rs_fsx"
(Rohde & Schwarz FSV/FSW/FSVA). Traces come as IEEE 488.2 definite-length
blocks of little-endian float32 (`FORM REAL,32` + `FORM:BORD SWAP`); an
instrument that refuses binary format is read in ASCII instead.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, ClassVar

import numpy as np
from labpgt.instruments.instrument_errors import (
    InstrumentConnectionError,
    InstrumentProtocolError,
)
from labpgt.instruments.scpi import Control, ScpiInstrument
from labpgt.instruments.setting_defs import (
    CENTER,
    CONTINUOUS,
    POINTS,
    RBW,
    SPAN,
    SWEEP_TIME,
    VBW,
)

SWEEP_MARGIN_S = 2.0
"""Added to the sweep time when waiting for a sweep, on top of the normal timeout."""
SWEEP_POLL_S = 0.2
"""While waiting for a sweep, the link is checked this often (a drop is seen at once)."""
_SWEEP_HEADS = ("1;", "+1;")
"""How the sweep and trace query's reply starts: `*OPC?`'s 1, then the block."""


class SpectrumAnalyzer(ScpiInstrument):
    """Centre/span/RBW/VBW/points, single sweeps, float32 traces in dBm."""

    role: ClassVar[str] = "analyzer"
    binary_setup: ClassVar[tuple[str, ...]] = ("FORM REAL,32", "FORM:BORD SWAP")
    ascii_setup: ClassVar[tuple[str, ...]] = ("FORM ASC",)
    init_command: ClassVar[str] = "INIT;*OPC?"
    trace_query: ClassVar[str] = "TRAC:DATA? TRACE1"

    families: ClassVar[dict[str, type[ScpiInstrument]]] = {}
    default_timeout_s: ClassVar[float] = 10.0

    center_hz = Control(CENTER)
    span_hz = Control(SPAN)
    rbw_hz = Control(RBW)
    vbw_hz = Control(VBW)
    points = Control(POINTS)
    continuous = Control(CONTINUOUS)
    sweep_time_s = Control(SWEEP_TIME)

    def __init__(self, *args: Any, trace_format: str = "real32", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if trace_format not in ("real32", "ascii"):
            raise ValueError("trace_format must be 'real32' or 'ascii'")
        self.trace_format = trace_format
        self.sweep_margin_s = SWEEP_MARGIN_S
        self._axis_key: tuple[float, float, int] | None = None
        self._sweep_query = f"{self.init_command};:{self.trace_query}"
        self._axis = np.empty(0)

    def setup(self) -> None:
        """Single-sweep mode and the trace format; falls back to ASCII if REAL,32 is refused."""
        with self.conn.lock:
            self.write_controls(continuous=False)
            if self.trace_format == "real32":
                for command in self.binary_setup:
                    self.conn.write(command)
                self.sync()
                if not self.drain_errors():
                    return
                # Refused (e.g. an older firmware): read traces as ASCII instead.
                self.trace_format = "ascii"
            for command in self.ascii_setup:
                self.conn.write(command)
            self.sync()
            self.check_errors("setup")

    def configure(
        self,
        center_hz: float,
        span_hz: float,
        rbw_hz: float,
        points: int,
        vbw_hz: float | None = None,
    ) -> dict[str, float]:
        """Set the sweep grid, wait for `*OPC?`, raise queued errors; returns what it took."""
        if not (span_hz > 0 and center_hz - span_hz / 2 > 0 and rbw_hz > 0 and points >= 2):
            raise ValueError(
                f"{self.role}: invalid grid center_hz={center_hz:.6g} span_hz={span_hz:.6g} "
                f"rbw_hz={rbw_hz:.6g} points={points}: need span>0, start>0, rbw>0, points>=2"
            )
        with self.conn.lock:
            bandwidths = (
                {"rbw_hz": rbw_hz} if vbw_hz is None else {"rbw_hz": rbw_hz, "vbw_hz": vbw_hz}
            )
            self.write_controls(center_hz=center_hz, span_hz=span_hz, **bandwidths, points=points)
            self.sync()
            self.check_errors("configure")
            taken = {
                "center_hz": self.center_hz,
                "span_hz": self.span_hz,
                "rbw_hz": self.rbw_hz,
                "points": self.points,
                "sweep_time_s": self.sweep_time_s,
            }
        return taken

    def _after_set(self, controls: list[Control]) -> None:
        # Span, RBW and points change the sweep time: query it afresh before the next sweep.
        self._last.pop("sweep_time_s", None)

    def frequencies_hz(self) -> np.ndarray:
        """The trace's frequency axis from the last known centre/span/points, Hz."""
        with self.conn.lock:
            axis = self._cached_axis()
            if axis is not None:
                return axis
            return self._axis_for(self.center_hz, self.span_hz, self.points)

    def _cached_axis(self) -> np.ndarray | None:
        """The axis from cached settings alone (no exchange), or None when one is unknown."""
        last = self._last
        center, span, points = last.get("center_hz"), last.get("span_hz"), last.get("points")
        if center is None or span is None or points is None:
            return None
        return self._axis_for(center, span, points)

    def _axis_for(self, center: float, span: float, points: float) -> np.ndarray:
        key = (center, span, int(points))
        if self._axis_key != key:
            self._axis = np.linspace(center - span / 2, center + span / 2, int(points))
            self._axis_key = key
        return self._axis.copy()

    def read_trace(self) -> tuple[np.ndarray, np.ndarray]:
        """One single sweep; returns (frequency_hz, power_dbm), both float64 of length points.

        Binary traces take one exchange: `INIT;*OPC?;:TRAC:DATA? TRACE1` is answered
        `1;#<block>` once the sweep is done (IEEE 488.2 joins the two replies with ';').
        Without compound messages: `INIT`, `*OPC?` (waits for the sweep), then the
        trace query, each its own message.
        """
        with self.conn.lock:
            return self.start_sweep()()

    def start_sweep(self) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
        """Start one single sweep; the function returned waits for it and reads its trace.

        Binary traces with compound messages: the sweep and trace query is sent now and
        its reply read by the function, so the client can work while the analyzer
        sweeps. Hold `conn.lock` until the function ran. Otherwise the whole exchange
        is the function's (`read_trace`'s separate messages).
        """
        with self.conn.lock:
            sweep_s = self._last.get("sweep_time_s")
            if sweep_s is None:
                sweep_s = self.sweep_time_s
            wait_s = self.conn.timeout_s + sweep_s + self.sweep_margin_s
            if self.trace_format != "real32" or not self._compound:
                return partial(self._separate_sweep, wait_s)
            command = self._sweep_query
            self.conn.write(command)
            # The axis is built while the analyzer sweeps (off the critical path).
            return partial(self._finish_sweep, command, wait_s, self._cached_axis())

    def _finish_sweep(
        self, command: str, wait_s: float, axis: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The reply of `start_sweep`'s exchange: the trace (the sweep redone on a fresh
        session when the link was lost before the reply)."""
        with self.conn.lock:
            try:
                reply = self.conn.read_headed_block(
                    command, _SWEEP_HEADS, poll_s=SWEEP_POLL_S, wait_s=wait_s
                )
            except InstrumentConnectionError:
                reply = self.conn.query_headed_block(
                    command, _SWEEP_HEADS, poll_s=SWEEP_POLL_S, wait_s=wait_s
                )
            power_dbm = self._block_of(command, reply)
            frequency_hz = axis if axis is not None else self.frequencies_hz()
        return self._checked_trace(frequency_hz, power_dbm)

    def _separate_sweep(self, wait_s: float) -> tuple[np.ndarray, np.ndarray]:
        """`INIT`, `*OPC?` and the trace query as separate messages (or an ASCII trace)."""
        with self.conn.lock:
            frequency_hz = self.frequencies_hz()
            with self.conn.timeout(wait_s):
                reply = self.query_message(self.init_command, poll_s=SWEEP_POLL_S).strip()
            if reply not in ("1", "+1"):
                raise InstrumentProtocolError(
                    f"{self.conn.label}: {self.init_command} answered {reply!r}"
                )
            power_dbm = self._read_trace_data()
        return self._checked_trace(frequency_hz, power_dbm)

    def _checked_trace(
        self, frequency_hz: np.ndarray, power_dbm: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        if power_dbm.shape != frequency_hz.shape:
            raise InstrumentProtocolError(
                f"{self.conn.label}: trace has {power_dbm.size} points, expected "
                f"{frequency_hz.size}"
            )
        return frequency_hz, power_dbm

    def _block_of(self, command: str, reply: np.ndarray | str) -> np.ndarray:
        if isinstance(reply, np.ndarray):
            return reply
        # A whole line instead of "1;<block>": the trace query failed; its error is queued.
        self.check_errors("reading the trace")
        raise InstrumentProtocolError(
            f"{self.conn.label}: {command} answered {reply!r}, expected '1;' and a block"
        )

    def _read_trace_data(self) -> np.ndarray:
        if self.trace_format == "real32":
            return self.conn.query_block(self.trace_query)
        reply = self.conn.query(self.trace_query)
        try:
            return np.array([float(v) for v in reply.split(",")], dtype=np.float64)
        except ValueError as exc:
            raise InstrumentProtocolError(
                f"{self.conn.label}: ASCII trace is not comma-separated numbers: {reply[:40]!r}"
            ) from exc

    def _restore(self) -> None:
        self.send_controls([(type(self).continuous, False)], readback=False)
        for command in self._format_commands():
            self.conn.write(command)
        super()._restore()

    def _format_commands(self) -> tuple[str, ...]:
        return self.binary_setup if self.trace_format == "real32" else self.ascii_setup


class KeysightX(SpectrumAnalyzer):
    """Keysight X-series signal analyzers (N9010A EXA, N9020A MXA, N9030B PXA)."""

    family: ClassVar[str] = "keysight_x"


class RohdeSchwarzFSx(SpectrumAnalyzer):
    """Rohde & Schwarz FSV/FSVA/FSW: RBW is `BAND:RES`; data are little-endian already."""

    family: ClassVar[str] = "rs_fsx"  # RBW is `BAND:RES` (`setting_defs.RBW`)
    serial_after: ClassVar[str] = "/"


ANALYZER_FAMILIES: dict[str, type[ScpiInstrument]] = SpectrumAnalyzer.families
ANALYZER_FAMILIES.update({KeysightX.family: KeysightX, RohdeSchwarzFSx.family: RohdeSchwarzFSx})
