"""Virtual swept spectrum analyzer (Keysight X-series, R&S FSx) measuring the shared ring.

`INIT` takes one sweep of `ring.measure` with the generator's present output and
the supply's present current, on the grid set by centre/span/RBW/points; the
trace is held until the next sweep and read with `TRAC:DATA? TRACE1` as ASCII
or as an IEEE 488.2 block of REAL,32 / REAL,64 values.

Couplings as on the real analyzers, all on after `*RST`: RBW follows the span
(span/RBW = 106 on Keysight X, 100 on R&S), VBW follows RBW (ratio 1), the
sweep time follows span and RBW (2.5·span/RBW²), the input attenuation follows
the reference level (ref + 10 dB). Setting a coupled value switches its AUTO off.
Markers sit on trace points. The Keysight X-series add their mode and
measurement layer (`INST:SEL SA`, `CONF:SAN`, `INIT:SAN`, `FETC:SAN1?`,
`READ:SAN1?`: x,y pairs); the R&S FSx do not know those (-113) and set the
attenuation with `INP:ATT` where the X-series use `POW:ATT`.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from labpgt.sim.grid import AnalyzerGrid
from labpgt.sim.ring import RingModel
from labpgt.sim.scpi_parser import (
    Call,
    ScpiError,
    ieee_block,
    one_param,
    parse_bool,
    parse_choice,
    parse_number,
)
from labpgt.sim.virtual.generator import SourceState
from labpgt.sim.virtual.instrument import Family, VirtualInstrument
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
    span_rbw_ratio: float = field(default=106.0, kw_only=True)  # auto RBW = span / ratio
    attenuation_step_db: float = field(default=2.0, kw_only=True)
    sweep_time_min_s: float = field(default=1e-3, kw_only=True)
    sweep_time_max_s: float = field(default=4000.0, kw_only=True)
    markers: int = field(default=12, kw_only=True)


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
        options='"526,B25,EA3,P26,PFR"',
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
        options="B4,B22,K7,K9",
        span_rbw_ratio=100.0,
        attenuation_step_db=5.0,
        sweep_time_min_s=1e-5,
        sweep_time_max_s=16000.0,
        markers=16,
    ),
}

_FORMATS = ("ASCii", "REAL")
RESET_ATTENUATION_DB = 10.0
"""`*RST` attenuation: the ring model's noise floor is the analyzer's floor at this setting."""
MIXER_P1DB_DBM = 3.0
"""Nominal 1 dB compression point at the first mixer (input level - attenuation), dBm."""
COMPRESSION_SHARPNESS = 4
"""Knee of the mixer's soft limiting (Rapp model order): below P1dB - 20 dB it is < 1e-5 dB."""
IF_HEADROOM_DB = 10.0
"""The display clips (IF overload) this far above the reference level, nominal."""
ATTENUATION_MAX_DB = 70.0
REFERENCE_LEVEL_RANGE_DBM = (-130.0, 30.0)
_RBW_TYPES = ("DB3", "DB6", "IMPulse", "NOISe")
_KEYSIGHT_DETECTORS = ("NORMal", "AVERage", "POSitive", "SAMPle", "NEGative")
_RS_DETECTORS = ("APEak", "NEGative", "POSitive", "SAMPle", "RMS", "AVERage", "QPEak")
_TRACE_NAMES = frozenset({"TRACE", *(f"TRACE{i}" for i in range(1, 7))})


class SpectrumAnalyzerInstrument(VirtualInstrument):
    """Swept analyzer coupled to a `RingModel` through the source and bias callbacks."""

    family: AnalyzerFamily

    def __init__(
        self,
        family: AnalyzerFamily,
        ring: RingModel,
        ring_lock: threading.Lock,
        source: Callable[[float], SourceState],
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
        rbw = "[SENSe#]:BANDwidth|BWIDth[:RESolution]"
        add(rbw, setter=self._set_rbw, getter=self._grid_query("rbw"))
        vbw = "[SENSe#]:BANDwidth|BWIDth:VIDeo"
        add(vbw, setter=self._set_vbw, getter=lambda call: self.number(self.vbw_hz))
        add("[SENSe#]:SWEep:POINts", setter=self._set_points, getter=self._points_query)
        add("[SENSe#]:SWEep:TIME", setter=self._set_sweep_time, getter=self._sweep_time_query)
        for pattern, attribute in (
            (rbw, "rbw_auto"),
            (vbw, "vbw_auto"),
            ("[SENSe#]:SWEep:TIME", "sweep_time_auto"),
        ):
            self._add_auto(f"{pattern}:AUTO", attribute)
        add("INITiate#:CONTinuous", setter=self._set_continuous, getter=self._continuous_query)
        add("INITiate#[:IMMediate]", setter=self._initiate)
        add("ABORt", setter=lambda call: self._abort())
        add("FORMat[:TRACe][:DATA]", setter=self._set_format, getter=self._format_query)
        add("FORMat:BORDer", setter=self._set_byte_order, getter=lambda call: self.byte_order)
        add("TRACe#[:DATA]", getter=self._trace_query)
        # Markers (both families).
        add(
            "CALCulate#:MARKer#[:STATe]",
            setter=self._set_marker_state,
            getter=lambda call: self.boolean(self._marker(call)[0]),
        )
        add("CALCulate#:MARKer#:X", setter=self._set_marker_x, getter=self._marker_x_query)
        add("CALCulate#:MARKer#:Y", getter=self._marker_y_query)
        add("CALCulate#:MARKer#:MAXimum[:PEAK]", setter=self._marker_to_peak)
        add("CALCulate#:MARKer#:AOFF", setter=lambda call: self._all_markers_off())
        if self.family.name == "keysight_x":
            self._build_levels("[SENSe]:POWer[:RF]:ATTenuation", "DISPlay:WINDow#:TRACe")
            self._build_keysight_x()
        else:
            self._build_levels("INPut#:ATTenuation", "DISPlay[:WINDow#]:TRACe#")
            self._build_rs_fsx()

    def _add_auto(self, pattern: str, attribute: str) -> None:
        """`…:AUTO ON|OFF|ONCE` of a coupled value kept in `attribute`."""
        self.table.add(
            pattern, setter=self._auto_setter(attribute), getter=self._auto_getter(attribute)
        )

    def _add_choice(self, pattern: str, attribute: str, choices: tuple[str, ...]) -> None:
        """A stored choice kept in `attribute` (read back in short form)."""
        self.table.add(
            pattern,
            setter=lambda call: self._set_choice(call, attribute, choices),
            getter=lambda call: getattr(self, attribute),
        )

    def _build_levels(self, attenuation: str, trace: str) -> None:
        """Input attenuation (NR1, as both answer) and reference level, at each family's node."""
        add = self.table.add
        add(attenuation, setter=self._set_attenuation, getter=self._attenuation_query)
        self._add_auto(f"{attenuation}:AUTO", "attenuation_auto")
        add(
            f"{trace}:Y[:SCALe]:RLEVel",
            setter=self._set_reference_level,
            getter=lambda call: self.number(self.reference_level_dbm),
        )

    def _attenuation_query(self, call: Call) -> str:
        return str(int(round(self.attenuation_db)))

    def _build_keysight_x(self) -> None:
        """X-series only: mode/measurement layer, detector, preamp, sweep type."""
        add = self.table.add
        add("INSTrument:CATalog", getter=lambda call: '"SA 1"')
        add("INSTrument[:SELect]", setter=self._set_mode, getter=lambda call: "SA")
        add("INSTrument:NSELect", setter=self._set_mode_number, getter=lambda call: "1")
        add("CONFigure:SANalyzer", setter=lambda call: self._configure_san(defaults=True))
        add("CONFigure:SANalyzer:NDEFault", setter=lambda call: self._configure_san(False))
        add("CONFigure", getter=lambda call: "SAN")
        add("CONFigure:CATalog", getter=lambda call: '"SAN"')
        add("INITiate#:SANalyzer", setter=self._initiate)
        add("FETCh:SANalyzer#", getter=lambda call: self._san_query(call, sweep=False))
        add("READ:SANalyzer#", getter=lambda call: self._san_query(call, sweep=True))
        add(
            "[SENSe]:POWer[:RF]:GAIN[:STATe]",
            setter=lambda call: setattr(self, "preamp_on", parse_bool(one_param(call))),
            getter=lambda call: self.boolean(self.preamp_on),
        )
        for pattern, attribute, choices in (
            ("[SENSe]:POWer[:RF]:GAIN:BAND", "preamp_band", ("LOW", "FULL")),
            ("[SENSe]:BANDwidth|BWIDth[:RESolution]:TYPE", "rbw_type", _RBW_TYPES),
            ("[SENSe]:DETector:TRACe#", "detector", _KEYSIGHT_DETECTORS),
            ("[SENSe]:AVERage:TYPE", "average_type", ("LOG", "RMS", "SCALar")),
            ("[SENSe]:SWEep:TYPE", "sweep_type", ("FFT", "SWEep")),
        ):
            self._add_choice(pattern, attribute, choices)
        self._add_auto("[SENSe]:SWEep:TYPE:AUTO", "sweep_type_auto")
        add(
            "CALCulate#:MARKer#:MODE",
            setter=self._set_marker_mode,
            getter=lambda call: "POS" if self._marker(call)[0] else "OFF",
        )

    def _build_rs_fsx(self) -> None:
        """R&S FSx only: `DET`, trace modes, delta markers, next peaks, zoom."""
        add = self.table.add
        add("INSTrument[:SELect]", setter=self._set_mode, getter=lambda call: "SAN")
        self._add_choice("[SENSe#]:DETector#[:FUNCtion]", "detector", _RS_DETECTORS)
        add(
            "DISPlay[:WINDow#]:TRACe#:MODE",
            setter=self._set_trace_mode,
            getter=lambda call: self.trace_modes[self._trace_number(call)],
        )
        add("INITiate#:CONMeas", setter=self._initiate)
        # Markers and delta markers: trace, peak excursion, next peak, display zoom.
        for kind, delta in (("MARKer", False), ("DELTamarker", True)):
            add(
                f"CALCulate#:{kind}#:TRACe",
                setter=lambda call, d=delta: self._set_marker_trace(call, d),
                getter=lambda call, d=delta: str(
                    self._marker_traces.get((d, self._number(call, d)), 1)
                ),
            )
            add(
                f"CALCulate#:{kind}#:PEXCursion",
                setter=self._set_peak_excursion,
                getter=lambda call: self.number(self.peak_excursion_db),
            )
            for direction in ("NEXT", "RIGHt", "LEFT"):
                add(
                    f"CALCulate#:{kind}#:MAXimum:{direction}",
                    setter=lambda call, d=delta, w=direction[:4]: self._to_next_peak(call, d, w),
                )
        self._build_delta_markers()

    def _build_delta_markers(self) -> None:
        """R&S delta markers (in dB against marker 1) and the marker zoom."""
        add = self.table.add
        add(
            "CALCulate#:DELTamarker#[:STATe]",
            setter=self._set_delta_state,
            getter=lambda call: self.boolean(self._number(call, True) in self.deltas),
        )
        add(
            "CALCulate#:DELTamarker#:X",
            setter=lambda call: self._set_marker_x(call, self.deltas),
            getter=lambda call: self._marker_x_query(call, self.deltas),
        )
        add("CALCulate#:DELTamarker#:Y", getter=self._delta_y_query)
        add(
            "CALCulate#:DELTamarker#:MAXimum[:PEAK]",
            setter=lambda call: self._marker_to_peak(call, self.deltas),
        )
        add("CALCulate#:DELTamarker#:AOFF", setter=lambda call: self.deltas.clear())
        add(
            "CALCulate#:MARKer#:FUNCtion:ZOOM",
            setter=self._set_zoom,
            getter=lambda call: self.number(self.zoom_factor),
        )

    def _reset(self) -> None:
        self.grid = AnalyzerGrid(center_hz=2.15e9, span_hz=300e6, rbw_hz=300e3, points=1001)
        if self.grid.stop_hz > self.family.frequency_max_hz:  # pragma: no cover - both fit
            raise RuntimeError("default grid exceeds the analyzer's range")
        self.vbw_hz = 300e3
        self.manual_sweep_time_s = self.grid.sweep_time_s
        self.reference_level_dbm = 0.0
        self.attenuation_db = RESET_ATTENUATION_DB
        self._preset_couplings()
        rs = self.family.name == "rs_fsx"
        self.detector = "APE" if rs else "NORM"
        self.preamp_on = False
        self.preamp_band = "LOW"
        self.rbw_type = "DB3"
        self.average_type = "LOG"
        self.sweep_type = "SWE"
        self.sweep_type_auto = True
        self.continuous = True  # real analyzers power up sweeping continuously
        self.trace_format = "ASC"
        self.real_bits = 32
        self.byte_order = self.family.byte_order
        self.trace_dbm: np.ndarray | None = None
        self._encoded: tuple[tuple[str, int, str], bytes | str] | None = None
        self._sweep_done_at = 0.0

    def _preset_couplings(self) -> None:
        """Every AUTO coupling on (the *RST state), markers off, couplings applied."""
        self.rbw_auto = True
        self.vbw_auto = True
        self.sweep_time_auto = True
        self.attenuation_auto = True
        self.markers: dict[int, float] = {}  # marker number -> x in Hz (present = on)
        self.deltas: dict[int, float] = {}  # delta marker number -> x in Hz (R&S)
        self._marker_traces: dict[tuple[str, int], int] = {}
        self.peak_excursion_db = 6.0  # R&S *RST
        self.zoom_factor = 1.0
        self.trace_modes = {n: "WRIT" if n == 1 else "BLAN" for n in range(1, 7)}
        self._couple()

    def _couple(self) -> None:
        """Apply the AUTO couplings after a change of span, RBW or reference level."""
        family = self.family
        if self.rbw_auto:
            rbw_hz = self.grid.span_hz / family.span_rbw_ratio
            rbw_hz = min(max(rbw_hz, family.rbw_min_hz), family.rbw_max_hz)
            rbw_hz = _round_rbw(rbw_hz, family.rbw_steps, family.rbw_max_hz)
            if rbw_hz != self.grid.rbw_hz:
                self.grid = self.grid.model_copy(update={"rbw_hz": rbw_hz})
        if self.vbw_auto:
            self.vbw_hz = self.grid.rbw_hz
        if self.attenuation_auto:
            self.attenuation_db = self._round_attenuation(self.reference_level_dbm + 10.0)

    def _round_attenuation(self, value_db: float) -> float:
        step = self.family.attenuation_step_db
        return min(max(round(value_db / step) * step, 0.0), ATTENUATION_MAX_DB)

    def sweep_time_s(self) -> float:
        """The sweep time in force: coupled (2.5·span/RBW²) or the one set by `SWE:TIME`."""
        return self.grid.sweep_time_s if self.sweep_time_auto else self.manual_sweep_time_s

    def _auto_setter(self, attribute: str) -> Callable[[Call], None]:
        def setter(call: Call) -> None:
            text = one_param(call)
            if text.strip().upper() in ("ONCE", "ONC"):
                setattr(self, attribute, True)
                self._couple()
                setattr(self, attribute, False)
                return
            setattr(self, attribute, parse_bool(text))
            self._couple()

        return setter

    def _auto_getter(self, attribute: str) -> Callable[[Call], str]:
        return lambda call: self.boolean(getattr(self, attribute))

    def _set_choice(self, call: Call, attribute: str, choices: tuple[str, ...]) -> None:
        choice = parse_choice(one_param(call), choices)
        setattr(self, attribute, "".join(c for c in choice if not c.islower()).upper())

    # ------------------------------------------------------------------ level settings

    def _set_attenuation(self, call: Call) -> None:
        value_db = parse_number(one_param(call), "DB", minimum=0.0, maximum=ATTENUATION_MAX_DB)
        self.attenuation_db = self._round_attenuation(value_db)
        self.attenuation_auto = False

    def _set_reference_level(self, call: Call) -> None:
        low, high = REFERENCE_LEVEL_RANGE_DBM
        self.reference_level_dbm = parse_number(
            one_param(call), "DBM", minimum=low, maximum=high, default=0.0
        )
        self._couple()

    # ------------------------------------------------------------------ mode and measurement

    def _set_mode(self, call: Call) -> None:
        allowed = ("SA",) if self.family.name == "keysight_x" else ("SANalyzer",)
        parse_choice(one_param(call), allowed)

    def _set_mode_number(self, call: Call) -> None:
        if parse_number(one_param(call), None) != 1:
            raise ScpiError(-224, "only mode 1 (SA) is licensed")

    def _configure_san(self, defaults: bool) -> None:
        """`CONF:SAN`: the swept-SA measurement, its couplings preset (NDEF keeps them)."""
        self._abort()
        self.trace_dbm = None  # results of the previous measurement are stale (FETC: -230)
        self._encoded = None
        if defaults:
            self._preset_couplings()

    def _san_query(self, call: Call, *, sweep: bool) -> bytes | str:
        """`FETC:SAN1?` / `READ:SAN1?`: trace 1 as (frequency Hz, power dBm) pairs."""
        if call.params:
            raise ScpiError(-108, ",".join(call.params))
        if call.suffix(1, default=1) != 1:
            raise ScpiError(-114, f"SAN{call.suffix(1)}: only trace 1 is measured")
        if sweep or self.continuous:
            self._sweep()  # READ sweeps; continuous sweeping always has a newer sweep
        elif self.trace_dbm is None:
            raise ScpiError(-230, "no measurement to fetch (INIT first)")
        self.wait_pending()
        assert self.trace_dbm is not None
        frequency_hz = self.grid.frequencies_hz().numpy()
        pairs = np.column_stack((frequency_hz, self.trace_dbm)).ravel()
        return self._encode(pairs)

    # ------------------------------------------------------------------ markers

    def _marker(self, call: Call) -> tuple[bool, int]:
        number = call.suffix(1)
        if not 1 <= number <= self.family.markers:
            raise ScpiError(-114, f"marker {number}")
        return number in self.markers, number

    def _number(self, call: Call, delta: bool) -> int:
        """The marker (or delta marker) number of `call`, checked against the model's count."""
        number = call.suffix(1)
        if not 1 <= number <= self.family.markers:
            raise ScpiError(-114, f"{'delta marker' if delta else 'marker'} {number}")
        return number

    def _set_delta_state(self, call: Call) -> None:
        number = self._number(call, True)
        if parse_bool(one_param(call)):
            # A delta marker is read against marker 1, switched on with it if it was off.
            self.markers.setdefault(1, self.grid.center_hz)
            self.deltas.setdefault(number, self.grid.center_hz)
        else:
            self.deltas.pop(number, None)

    def _delta_y_query(self, call: Call) -> str:
        """Level of the delta marker relative to marker 1, dB."""
        number = self._on_marker(call, self.deltas)
        trace = self._current_trace()
        reference_hz = self.markers.get(1, self.deltas[number])
        level = trace[self._point_index(self.deltas[number])]
        return self.number(float(level - trace[self._point_index(reference_hz)]))

    def _set_marker_trace(self, call: Call, delta: bool) -> None:
        number = self._number(call, delta)
        text = one_param(call)
        trace = parse_number(text, None, minimum=1, maximum=6)
        if trace != int(trace):
            raise ScpiError(-224, text)
        self._marker_traces[(delta, number)] = int(trace)

    def _set_peak_excursion(self, call: Call) -> None:
        self.peak_excursion_db = parse_number(
            one_param(call), "DB", minimum=0.0, maximum=80.0, default=6.0
        )

    def _set_zoom(self, call: Call) -> None:
        """Display zoom around the marker: the sweep and the trace data are unchanged."""
        self.zoom_factor = parse_number(one_param(call), None, minimum=1.0, maximum=1e6)

    def _to_next_peak(self, call: Call, delta: bool, direction: str) -> None:
        """Next lower peak (NEXT), or the highest peak right/left of the marker.

        A peak is a point higher than both neighbours that stands at least the peak
        excursion above the lowest point between it and the marker. Without one the
        marker stays where it is.
        """
        if call.params:
            raise ScpiError(-108, ",".join(call.params))
        positions = self.deltas if delta else self.markers
        number = self._number(call, delta)
        trace = self._current_trace()
        here = self._point_index(positions.get(number, self.grid.center_hz))
        inner = trace[1:-1]
        peaks = np.flatnonzero((inner > trace[:-2]) & (inner >= trace[2:])) + 1
        if direction == "NEXT":
            candidates = [i for i in peaks if trace[i] < trace[here]]
        elif direction == "RIGH":
            candidates = [i for i in peaks if i > here]
        else:
            candidates = [i for i in peaks if i < here]
        best = None
        for i in candidates:
            low, high = (here, i) if i > here else (i, here)
            if trace[i] - trace[low : high + 1].min() < self.peak_excursion_db:
                continue
            if best is None or trace[i] > trace[best]:
                best = int(i)
        if best is not None:
            positions[number] = self._point_hz(best)

    def _set_trace_mode(self, call: Call) -> None:
        number = self._trace_number(call)
        choices = ("WRITe", "MAXHold", "MINHold", "AVERage", "VIEW", "BLANk")
        self.trace_modes[number] = parse_choice(one_param(call), choices)[:4].upper()

    def _trace_number(self, call: Call) -> int:
        number = call.suffix(2)  # DISPlay[:WINDow#]:TRACe#: one suffix slot per pattern node
        if not 1 <= number <= 6:
            raise ScpiError(-114, f"trace {number}")
        return number

    def _all_markers_off(self) -> None:
        self.markers.clear()
        self.deltas.clear()

    def _set_marker_state(self, call: Call) -> None:
        _, number = self._marker(call)
        if parse_bool(one_param(call)):
            self.markers.setdefault(number, self.grid.center_hz)
        else:
            self.markers.pop(number, None)

    def _set_marker_mode(self, call: Call) -> None:
        _, number = self._marker(call)
        mode = parse_choice(one_param(call), ("POSition", "OFF"))
        if mode == "OFF":
            self.markers.pop(number, None)
        else:
            self.markers.setdefault(number, self.grid.center_hz)

    def _point_index(self, frequency_hz: float) -> int:
        grid = self.grid
        index = round((frequency_hz - grid.start_hz) / grid.bin_hz)
        return min(max(int(index), 0), grid.points - 1)

    def _point_hz(self, index: int) -> float:
        return self.grid.start_hz + index * self.grid.bin_hz

    def _set_marker_x(self, call: Call, positions: dict[int, float] | None = None) -> None:
        positions = self.markers if positions is None else positions
        number = self._number(call, positions is self.deltas)
        grid = self.grid
        frequency_hz = parse_number(
            one_param(call), "HZ", minimum=grid.start_hz, maximum=grid.stop_hz
        )
        if positions is self.deltas:
            self.markers.setdefault(1, self.grid.center_hz)
        positions[number] = self._point_hz(self._point_index(frequency_hz))

    def _on_marker(self, call: Call, positions: dict[int, float] | None = None) -> int:
        if call.params:
            raise ScpiError(-108, ",".join(call.params))
        positions = self.markers if positions is None else positions
        number = self._number(call, positions is self.deltas)
        if number not in positions:
            kind = "delta marker" if positions is self.deltas else "marker"
            raise ScpiError(-221, f"{kind} {number} is off")
        return number

    def _marker_x_query(self, call: Call, positions: dict[int, float] | None = None) -> str:
        positions = self.markers if positions is None else positions
        number = self._on_marker(call, positions)
        return self.number(self._point_hz(self._point_index(positions[number])))

    def _current_trace(self) -> np.ndarray:
        if self.continuous or self.trace_dbm is None:
            self._sweep()
        self.wait_pending()
        assert self.trace_dbm is not None
        return self.trace_dbm

    def _marker_y_query(self, call: Call) -> str:
        number = self._on_marker(call)
        trace = self._current_trace()
        return self.number(float(trace[self._point_index(self.markers[number])]))

    def _marker_to_peak(self, call: Call, positions: dict[int, float] | None = None) -> None:
        if call.params:
            raise ScpiError(-108, ",".join(call.params))
        positions = self.markers if positions is None else positions
        number = self._number(call, positions is self.deltas)
        trace = self._current_trace()
        if positions is self.deltas:
            self.markers.setdefault(1, self.grid.center_hz)
        positions[number] = self._point_hz(int(np.argmax(trace)))

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
        self._couple()

    def _grid_query(self, what: str) -> Callable[[Call], str]:
        def query(call: Call) -> str:
            value = {
                "center": self.grid.center_hz,
                "span": self.grid.span_hz,
                "start": self.grid.start_hz,
                "stop": self.grid.stop_hz,
                "rbw": self.grid.rbw_hz,
            }[what]
            family = self.family
            if what == "rbw":
                limits = (family.rbw_min_hz, family.rbw_max_hz)
            else:
                limits = (0.0, family.frequency_max_hz)
            return self.number_query(call, value, limits)

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
        self.rbw_auto = False
        self._with_grid(rbw_hz=_round_rbw(rbw_hz, family.rbw_steps, family.rbw_max_hz))

    def _set_vbw(self, call: Call) -> None:
        family = self.family
        self.vbw_hz = parse_number(one_param(call), "HZ", minimum=family.rbw_min_hz, maximum=50e6)
        self.vbw_auto = False

    def _set_points(self, call: Call) -> None:
        family = self.family
        points = parse_number(
            one_param(call),
            None,
            minimum=family.points_min,
            maximum=family.points_max,
            default=1001,  # the *RST value
        )
        self._with_grid(points=int(round(points)))

    def _points_query(self, call: Call) -> str:
        family = self.family
        limits = (family.points_min, family.points_max)
        return str(int(self.limit_query(call, self.grid.points, limits)))

    def _sweep_time_query(self, call: Call) -> str:
        family = self.family
        limits = (family.sweep_time_min_s, family.sweep_time_max_s)
        return self.number_query(call, self.sweep_time_s(), limits)

    def _set_sweep_time(self, call: Call) -> None:
        family = self.family
        self.manual_sweep_time_s = parse_number(
            one_param(call), "S", minimum=family.sweep_time_min_s, maximum=family.sweep_time_max_s
        )
        self.sweep_time_auto = False

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
        # The drive of this sweep: the generator's output at the sweep's middle in real
        # time (a sweeping generator steps on while the analyzer sweeps), at INIT otherwise.
        source = self._source(started + self.sweep_time_s() / 2 if self.realtime else started)
        bias_a = self._bias_a()
        with self._ring_lock:
            trace = self._ring.measure(
                source.frequency_hz,
                source.power_dbm,
                bias_a,
                self.grid,
                rf_on=source.rf_on,
            )
        self.trace_dbm = self._front_end(trace.power_dbm[0].detach().numpy().copy())
        # A binary trace is encoded now, inside the sweep time (a real analyzer has its
        # trace ready when the sweep ends); ASCII text, costlier, only when it is read.
        self._encoded = None
        if self.trace_format == "REAL":
            self._encoded = (self._encoding(), self._encode(self.trace_dbm))
        self.sweeps += 1
        self.model_compute_s += time.monotonic() - started
        if self.realtime:
            self._sweep_done_at = started + self.sweep_time_s()

    def _front_end(self, trace_dbm: np.ndarray) -> np.ndarray:
        """What attenuation and reference level do to the ring's spectrum on the display.

        * Noise floor: the ring model's floor is the analyzer's at the `*RST`
          attenuation (10 dB); each dB more raises it by 1 dB (the analyzer's own
          noise, added as power). Less attenuation does not lower it below the ring's.
        * Compression: the first mixer sees the input level minus the attenuation and
          limits softly (Rapp model, 1 dB compression at `MIXER_P1DB_DBM`).
        * IF overload: the display clips `IF_HEADROOM_DB` above the reference level.
        At the `*RST` settings none of these changes a trace of the ring model.
        """
        attenuation_db = self.attenuation_db
        excess_db = attenuation_db - RESET_ATTENUATION_DB
        if excess_db > 0:
            floor_dbm = self._ring.params.noise_floor_dbm_at_100khz + 10.0 * math.log10(
                self.grid.rbw_hz / 1e5
            )
            added_mw = 10.0 ** (floor_dbm / 10.0) * (10.0 ** (excess_db / 10.0) - 1.0)
            trace_dbm = 10.0 * np.log10(10.0 ** (trace_dbm / 10.0) + added_mw)
        order = COMPRESSION_SHARPNESS
        if trace_dbm.max() - attenuation_db > MIXER_P1DB_DBM - 40.0:
            # Rapp: |out| = |in| / (1 + (|in|/sat)^2p)^(1/2p); sat set by the 1 dB point.
            knee = (10.0 ** (2 * order / 20.0) - 1.0) ** (1.0 / (2 * order))
            saturation_dbm = MIXER_P1DB_DBM - 20.0 * math.log10(knee)
            ratio = 10.0 ** ((trace_dbm - attenuation_db - saturation_dbm) / 20.0)
            trace_dbm = trace_dbm - (10.0 / order) * np.log10(1.0 + ratio ** (2 * order))
        clip_dbm = self.reference_level_dbm + IF_HEADROOM_DB
        if trace_dbm.max() > clip_dbm:
            trace_dbm = np.minimum(trace_dbm, clip_dbm)
        return trace_dbm

    def pending_until_s(self) -> float:
        """When the running sweep ends (`time.monotonic()`; in the past when none runs)."""
        return self._sweep_done_at

    def wait_pending(self) -> None:
        """Block until the sweep's absolute deadline (INIT time + sweep time)."""
        self.wait_until(self._sweep_done_at)

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


def _round_rbw(rbw_hz: float, steps: tuple[float, ...] | None, maximum_hz: float) -> float:
    """Round to the nearest allowed filter (mantissa steps per decade), as R&S analyzers do."""
    if steps is None:
        return rbw_hz
    decade = 10.0 ** math.floor(math.log10(rbw_hz))
    candidates = [m * decade for m in steps] + [10.0 * decade]
    best = min(candidates, key=lambda c: abs(math.log(c / rbw_hz)))
    return min(best, maximum_hz)
