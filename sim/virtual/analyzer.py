"""Virtual swept spectrum analyzer (Keysight X-series, R&S FSx) measuring the shared ring.

`INIT` takes one sweep of `ring.measure` with the generator's present output and
the supply's present current, on the grid set by centre/span/RBW/points; the
trace is held until the next sweep and read with `TRAC:DATA? TRACE1` as ASCII
or as an IEEE 488.2 block of REAL,32 / REAL,64 values.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from labpgt.sim.grid import AnalyzerGrid
from labpgt.sim.ring import RingModel
from labpgt.sim.scpi import (
    Call,
    ScpiError,
    ieee_block,
    one_param,
    parse_bool,
    parse_choice,
    parse_number,
)
from labpgt.sim.virtual.generator import SourceState
from labpgt.sim.virtual.instrument import Family, ScpiInstrument
from pydantic import ValidationError


@dataclass(frozen=True)
class AnalyzerFamily(Family):
    """Identity and the ranges of one analyzer model."""

    frequency_max_hz: float
    rbw_min_hz: float
    rbw_max_hz: float
    points_min: int
    points_max: int
    rbw_steps: tuple[float, ...] | None  # mantissas RBW is rounded to, None = continuous
    byte_order: str  # *RST byte order of REAL data: "NORM" big-endian, "SWAP" little-endian


ANALYZER_FAMILIES: dict[str, AnalyzerFamily] = {
    "keysight_x": AnalyzerFamily(
        name="keysight_x",
        identity="Keysight Technologies,N9020A,MY00000002,A.26.09",
        number_style="keysight",
        frequency_max_hz=26.5e9,
        rbw_min_hz=1.0,
        rbw_max_hz=8e6,
        points_min=11,
        points_max=40001,
        rbw_steps=None,
        byte_order="NORM",
    ),
    "rs_fsx": AnalyzerFamily(
        name="rs_fsx",
        identity="Rohde&Schwarz,FSV-7,1307.9002K07/101234,3.40",
        number_style="rs",
        frequency_max_hz=7e9,
        rbw_min_hz=1.0,
        rbw_max_hz=10e6,
        points_min=101,
        points_max=32001,
        rbw_steps=(1.0, 2.0, 3.0, 5.0),
        byte_order="SWAP",
    ),
}

_FORMATS = ("ASCii", "REAL")
_TRACE_NAMES = frozenset({"TRACE", *(f"TRACE{i}" for i in range(1, 7))})

FINISH_SPIN_S = 0.001
"""A real-time sweep's last millisecond is waited out by spinning, not by a timed wait."""


class SpectrumAnalyzerInstrument(ScpiInstrument):
    """Swept analyzer coupled to a `RingModel` through the source and bias callbacks."""

    family: AnalyzerFamily

    def __init__(
        self,
        family: AnalyzerFamily,
        ring: RingModel,
        ring_lock: threading.Lock,
        source: Callable[[], SourceState],
        bias_a: Callable[[], float],
        *,
        realtime: bool = False,
        stop_event: threading.Event | None = None,
    ) -> None:
        self._ring = ring
        self._ring_lock = ring_lock
        self._source = source
        self._bias_a = bias_a
        self.realtime = realtime
        self.sweeps = 0  # sweeps measured since the server started
        self.model_compute_s = 0.0  # wall time spent in ring.measure, s (for benchmarks)
        super().__init__(family, stop_event)

    # ------------------------------------------------------------------ command tree

    def _build(self) -> None:
        add = self.table.add
        add("[SENSe#]:FREQuency:CENTer", setter=self._set_center, getter=self._grid_query("center"))
        add("[SENSe#]:FREQuency:SPAN", setter=self._set_span, getter=self._grid_query("span"))
        add("[SENSe#]:FREQuency:SPAN:FULL", setter=self._set_full_span)
        add("[SENSe#]:FREQuency:STARt", setter=self._set_start, getter=self._grid_query("start"))
        add("[SENSe#]:FREQuency:STOP", setter=self._set_stop, getter=self._grid_query("stop"))
        add(
            "[SENSe#]:BANDwidth|BWIDth[:RESolution]",
            setter=self._set_rbw,
            getter=self._grid_query("rbw"),
        )
        add("[SENSe#]:BANDwidth|BWIDth[:RESolution]:AUTO", setter=self._set_auto, getter=_off)
        add(
            "[SENSe#]:BANDwidth|BWIDth:VIDeo",
            setter=self._set_vbw,
            getter=lambda call: self.number(self.vbw_hz),
        )
        add("[SENSe#]:BANDwidth|BWIDth:VIDeo:AUTO", setter=self._set_auto, getter=_off)
        add("[SENSe#]:SWEep:POINts", setter=self._set_points, getter=self._points_query)
        add("[SENSe#]:SWEep:TIME", setter=self._set_sweep_time, getter=self._sweep_time_query)
        add("[SENSe#]:SWEep:TIME:AUTO", setter=self._set_sweep_time_auto, getter=lambda c: "1")
        add("INITiate#:CONTinuous", setter=self._set_continuous, getter=self._continuous_query)
        add("INITiate#[:IMMediate]", setter=self._initiate)
        add("ABORt", setter=lambda call: self._abort())
        add("FORMat[:TRACe][:DATA]", setter=self._set_format, getter=self._format_query)
        add("FORMat:BORDer", setter=self._set_byte_order, getter=lambda call: self.byte_order)
        add("TRACe#[:DATA]", getter=self._trace_query)

    def _reset(self) -> None:
        self.grid = AnalyzerGrid(center_hz=2.15e9, span_hz=300e6, rbw_hz=300e3, points=1001)
        if self.grid.stop_hz > self.family.frequency_max_hz:  # pragma: no cover - both fit
            raise RuntimeError("default grid exceeds the analyzer's range")
        self.vbw_hz = 300e3
        self.continuous = True  # real analyzers power up sweeping continuously
        self.trace_format = "ASC"
        self.real_bits = 32
        self.byte_order = self.family.byte_order
        self.trace_dbm: np.ndarray | None = None
        self._encoded: tuple[tuple[str, int, str], bytes | str] | None = None
        self._sweep_done_at = 0.0

    # ------------------------------------------------------------------ grid settings

    def _with_grid(self, **changes: float) -> None:
        values = {
            "center_hz": self.grid.center_hz,
            "span_hz": self.grid.span_hz,
            "rbw_hz": self.grid.rbw_hz,
            "points": self.grid.points,
        }
        values.update(changes)
        try:
            grid = AnalyzerGrid(**values)
        except ValidationError as exc:
            raise ScpiError(-222, exc.errors()[0]["msg"]) from exc
        if grid.stop_hz > self.family.frequency_max_hz:
            raise ScpiError(-222, "stop frequency beyond the analyzer's range")
        self.grid = grid

    def _grid_query(self, what: str) -> Callable[[Call], str]:
        def query(call: Call) -> str:
            if call.params:
                raise ScpiError(-108, ",".join(call.params))
            value = {
                "center": self.grid.center_hz,
                "span": self.grid.span_hz,
                "start": self.grid.start_hz,
                "stop": self.grid.stop_hz,
                "rbw": self.grid.rbw_hz,
            }[what]
            return self.number(value)

        return query

    def _frequency(self, call: Call, minimum: float = 0.0) -> float:
        top = self.family.frequency_max_hz
        return parse_number(one_param(call), "HZ", minimum=minimum, maximum=top)

    def _set_center(self, call: Call) -> None:
        self._with_grid(center_hz=self._frequency(call))

    def _set_span(self, call: Call) -> None:
        self._with_grid(span_hz=self._frequency(call))

    def _set_full_span(self, call: Call) -> None:
        top = min(self.family.frequency_max_hz, 10e9)
        self._with_grid(center_hz=top / 2 + 5e3, span_hz=top)

    def _set_start(self, call: Call) -> None:
        start_hz = self._frequency(call)
        stop_hz = self.grid.stop_hz
        if start_hz >= stop_hz:
            raise ScpiError(-222, "start must be below stop")
        self._with_grid(center_hz=(start_hz + stop_hz) / 2, span_hz=stop_hz - start_hz)

    def _set_stop(self, call: Call) -> None:
        stop_hz = self._frequency(call)
        start_hz = self.grid.start_hz
        if stop_hz <= start_hz:
            raise ScpiError(-222, "stop must be above start")
        self._with_grid(center_hz=(start_hz + stop_hz) / 2, span_hz=stop_hz - start_hz)

    def _set_rbw(self, call: Call) -> None:
        family = self.family
        rbw_hz = parse_number(
            one_param(call), "HZ", minimum=family.rbw_min_hz, maximum=family.rbw_max_hz
        )
        self._with_grid(rbw_hz=_round_rbw(rbw_hz, family.rbw_steps, family.rbw_max_hz))

    def _set_vbw(self, call: Call) -> None:
        family = self.family
        self.vbw_hz = parse_number(
            one_param(call), "HZ", minimum=family.rbw_min_hz, maximum=family.rbw_max_hz
        )

    def _set_auto(self, call: Call) -> None:
        # The bandwidths are always what the client set; coupling them is not modelled.
        if parse_bool(one_param(call)):
            raise ScpiError(-221, "automatic bandwidth coupling is not available")

    def _set_points(self, call: Call) -> None:
        family = self.family
        points = parse_number(
            one_param(call), None, minimum=family.points_min, maximum=family.points_max
        )
        self._with_grid(points=int(round(points)))

    def _points_query(self, call: Call) -> str:
        return str(self.grid.points)

    def _sweep_time_query(self, call: Call) -> str:
        return self.number(self.grid.sweep_time_s)

    def _set_sweep_time(self, call: Call) -> None:
        raise ScpiError(-221, "sweep time is coupled to span and RBW (2.5*span/RBW^2)")

    def _set_sweep_time_auto(self, call: Call) -> None:
        if not parse_bool(one_param(call)):
            raise ScpiError(-221, "only automatic sweep time is available")

    # ------------------------------------------------------------------ sweeping

    def _set_continuous(self, call: Call) -> None:
        self.continuous = parse_bool(one_param(call))

    def _continuous_query(self, call: Call) -> str:
        return self.boolean(self.continuous)

    def _initiate(self, call: Call) -> None:
        if call.params:
            raise ScpiError(-108, ",".join(call.params))
        self._sweep()

    def _abort(self) -> None:
        self._sweep_done_at = 0.0

    def _sweep(self) -> None:
        """Measure one sweep now; in realtime mode it completes one sweep time after INIT.

        The model's compute time runs inside the sweep time (as a real analyzer
        measures while it sweeps), so it is hidden whenever it is the shorter of the two.
        """
        started = time.monotonic()
        source = self._source()
        bias_a = self._bias_a()
        with self._ring_lock:
            trace = self._ring.measure(
                source.frequency_hz,
                source.power_dbm,
                bias_a,
                self.grid,
                rf_on=source.rf_on,
            )
        self.trace_dbm = trace.power_dbm[0].detach().numpy().copy()
        # A binary trace is encoded now, inside the sweep time (a real analyzer has its
        # trace ready when the sweep ends); ASCII text, costlier, only when it is read.
        self._encoded = None
        if self.trace_format == "REAL":
            self._encoded = (self._encoding(), self._encode(self.trace_dbm))
        self.sweeps += 1
        self.model_compute_s += time.monotonic() - started
        if self.realtime:
            self._sweep_done_at = started + trace.sweep_time_s

    def wait_pending(self) -> None:
        """Block until the sweep's absolute deadline (INIT time + sweep time).

        A timed wait wakes up late (0.2-0.3 ms here, ms under load), which would add
        to every sweep; so it wakes `FINISH_SPIN_S` early and spins until the deadline
        (median 0.03 ms late at load 2.5 on 2 cores), as an instrument's own clock would.
        """
        deadline = self._sweep_done_at
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        if remaining > FINISH_SPIN_S:
            # Event.wait, not sleep: stopping the bench must not wait out a long sweep.
            self.stop_event.wait(remaining - FINISH_SPIN_S)
        while time.monotonic() < deadline and not self.stop_event.is_set():
            pass  # busy: a yield (sleep(0)) can hand the core away for ms on a loaded machine

    # ------------------------------------------------------------------ trace transfer

    def _set_format(self, call: Call) -> None:
        if not call.params or len(call.params) > 2:
            raise ScpiError(-109 if not call.params else -108)
        kind = parse_choice(call.params[0], _FORMATS)
        if kind == "ASCii":
            if len(call.params) == 2:
                parse_number(call.params[1], None, minimum=0, maximum=64)
            self.trace_format = "ASC"
            return
        bits = 32 if len(call.params) == 1 else parse_number(call.params[1], None)
        if bits not in (32, 64):
            raise ScpiError(-224, f"REAL,{call.params[1]}")
        self.trace_format, self.real_bits = "REAL", int(bits)

    def _format_query(self, call: Call) -> str:
        if self.trace_format == "ASC":
            return "ASC,8" if self.family.number_style == "keysight" else "ASC,0"
        return f"REAL,{self.real_bits}"

    def _set_byte_order(self, call: Call) -> None:
        self.byte_order = parse_choice(one_param(call), ("NORMal", "SWAPped")).upper()[:4]

    def _trace_query(self, call: Call) -> bytes | str:
        name = one_param(call)
        upper = name.strip().upper()
        if upper not in _TRACE_NAMES:
            raise ScpiError(-224, name)
        if upper not in ("TRACE1", "TRACE"):
            raise ScpiError(-221, f"{name} is not active (only TRACE1 is)")
        if self.continuous or self.trace_dbm is None:
            # Continuous sweeping (or nothing swept since *RST) shows the latest sweep.
            self._sweep()
        self.wait_pending()
        encoded = self._encoded
        if encoded is not None and encoded[0] == self._encoding():
            return encoded[1]
        return self._encode(self.trace_dbm)

    def _encoding(self) -> tuple[str, int, str]:
        """What the trace's bytes depend on besides its values: format, bits, byte order."""
        return self.trace_format, self.real_bits, self.byte_order

    def _encode(self, power_dbm: np.ndarray) -> bytes | str:
        if self.trace_format == "ASC":
            values = power_dbm.astype(np.float32)
            return ",".join(f"{v:.8E}" for v in values.tolist())
        endian = ">" if self.byte_order == "NORM" else "<"
        dtype = np.dtype(f"{endian}f{self.real_bits // 8}")
        return ieee_block(power_dbm.astype(dtype).tobytes())


def _off(call: Call) -> str:
    return "0"


def _round_rbw(rbw_hz: float, steps: tuple[float, ...] | None, maximum_hz: float) -> float:
    """Round to the nearest allowed filter (mantissa steps per decade), as R&S analyzers do."""
    if steps is None:
        return rbw_hz
    decade = 10.0 ** math.floor(math.log10(rbw_hz))
    candidates = [m * decade for m in steps] + [10.0 * decade]
    best = min(candidates, key=lambda c: abs(math.log(c / rbw_hz)))
    return min(best, maximum_hz)
