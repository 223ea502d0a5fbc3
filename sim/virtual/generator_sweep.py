"""Step sweeps and lists of the virtual generators, run as the MXG/PSG and the SMB run them.

`KeysightSweep` (MXG N5183B, PSG E8257D) and `RsSweep` (SMB100A) register their
family's sweep and list commands on a generator (`SweepHost`: the
`SignalGeneratorInstrument` of `labpgt.sim.virtual.generator`) and keep where
the sweep is (`labpgt.sim.virtual.sweep.SweepRun`). The generator asks them what
it emits at a given time (`output_at`) and until when a single sweep runs
(`pending_until_s`, what `*OPC?` waits for). The SGS100A has neither sweep nor list.

Any change to a setting the sweep depends on builds it again from its first point
(and starts it again if it is free-running), as the real ones restart a sweep
whose range, points, dwell or list changed.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Protocol

from labpgt.sim.scpi_parser import (
    Call,
    CommandTable,
    Handler,
    ScpiError,
    one_param,
    parse_choice,
    parse_number,
)
from labpgt.sim.virtual.instrument import StoredRow, short_form
from labpgt.sim.virtual.sweep import SweepPlan, SweepRun, linear_points, log_points

LIST_POINTS_MAX = 1601
"""Points a list may hold (the PSG's limit; the MXG and SMB hold more): -223 beyond."""
MAX_SWEEP_POINTS = 65535
"""Most points a virtual step sweep runs (the MXG/PSG's `SWE:POIN` range; an SMB sweep
whose step would give more is a settings conflict, -221, as every point is built)."""
DWELL_LIMITS_S = (1e-3, 60.0)


class SweepHost(Protocol):
    """What a sweep control uses of its generator."""

    stored: dict[str, object]
    table: CommandTable
    realtime: bool
    frequency_hz: float
    power_dbm: float

    @property
    def frequency_range_hz(self) -> tuple[float, float]: ...

    @property
    def power_range_dbm(self) -> tuple[float, float]: ...

    def number(self, value: float) -> str: ...

    def add_settings(
        self,
        rows: tuple[StoredRow, ...],
        named_limits: dict[str, tuple[float, float]],
        then: Callable[[], None] | None = None,
    ) -> None: ...

    def add_common(self, mnemonic: str, query: bool, handler: Handler) -> None: ...


Column = tuple[float, ...]


class SweepControl(ABC):
    """The sweep and list of one generator; a family's subclass adds its commands."""

    def __init__(self, generator: SweepHost) -> None:
        self.generator = generator
        self.run: SweepRun | None = None  # None: the output is the CW setting

    @property
    def stored(self) -> dict[str, object]:
        return self.generator.stored

    # ------------------------------------------------------------------ per family

    @abstractmethod
    def build(self) -> None:
        """Register the family's sweep and list commands."""

    def reset(self) -> None:
        """The `*RST` state (stored settings are reset by the instrument)."""
        self.run = None

    @abstractmethod
    def plan(self) -> SweepPlan | None:
        """The points of the selected sweep or list; None in CW; -221 when they conflict."""

    @abstractmethod
    def end_index(self, plan: SweepPlan) -> int:
        """Where the output rests after a single sweep."""

    @abstractmethod
    def begin(self, now_s: float) -> None:
        """Start `self.run` as its trigger settings say, after it was (re)built."""

    def after_end(self, now_s: float) -> None:  # noqa: B027 - an optional hook
        """A single sweep has just ended (a family with nothing to do keeps this)."""

    # ------------------------------------------------------------------ shared

    def restart(self, strict: bool = False) -> None:
        """Build the sweep again from its first point; with `strict` a conflict raises -221,
        otherwise it leaves the output at the CW setting until the conflict is resolved."""
        try:
            plan = self.plan()
        except ScpiError:
            if strict:
                raise
            plan = None
        self.run = None
        if plan is not None:
            self.run = self.new_run(plan)
            self.begin(time.monotonic())

    def settle(self, now_s: float) -> None:
        if self.run is not None and self.run.settle(now_s):
            self.after_end(now_s)

    def output_at(self, at_s: float) -> tuple[float, float] | None:
        """(frequency Hz, power dBm) emitted at `at_s`; None when the output is CW."""
        if self.run is None:
            return None
        return self.run.plan.point(self.run.index_at(at_s))

    def pending_until_s(self) -> float:
        return 0.0 if self.run is None else self.run.done_at_s()

    def frequency_reading(self) -> float | None:
        """What `FREQ?` answers instead of the CW setting (None: the CW setting)."""
        return None

    def add_values(
        self,
        pattern: str,
        unit: str,
        limits: tuple[float, float],
        column: tuple[Callable[[], Column], Callable[[Column], None]],
    ) -> None:
        """A list column (`LIST:FREQ 1 GHZ,2 GHZ,…`) read and written by `column`, with
        `:POINts?`."""
        generator = self.generator
        read, write = column

        def setter(call: Call) -> None:
            write(self.parse_values(call, unit, limits))
            self.restart()

        def getter(call: Call) -> str:
            return ",".join(generator.number(v) for v in read())

        generator.table.add(pattern, setter=setter, getter=getter)
        generator.table.add(f"{pattern}:POINts", getter=lambda call: str(len(read())))

    def parse_values(self, call: Call, unit: str, limits: tuple[float, float]) -> tuple[float, ...]:
        if not call.params:
            raise ScpiError(-109)
        if len(call.params) > LIST_POINTS_MAX:
            raise ScpiError(-223, f"more than {LIST_POINTS_MAX} points")
        low, high = limits
        return tuple(parse_number(p, unit, minimum=low, maximum=high) for p in call.params)

    def new_run(self, plan: SweepPlan) -> SweepRun:
        """A run of `plan` resting at its first point."""
        return SweepRun(plan, end_index=self.end_index(plan), collapse=not self.generator.realtime)


def _no_params(call: Call) -> None:
    if call.params:
        raise ScpiError(-108, ",".join(call.params))


# --------------------------------------------------------------------------- Keysight

_KEYSIGHT_TRIGGERS = ("BUS", "IMMediate", "EXTernal", "KEY")
KEYSIGHT_SWEEP: tuple[StoredRow, ...] = (
    ("[SOURce]:FREQuency:STARt", "sweep_start_hz", 1e9, "frequency"),
    ("[SOURce]:FREQuency:STOP", "sweep_stop_hz", 2e9, "frequency"),
    ("[SOURce]:POWer:STARt", "sweep_start_dbm", -30.0, "power"),
    ("[SOURce]:POWer:STOP", "sweep_stop_dbm", -30.0, "power"),
    ("[SOURce]:SWEep:DWELl#", "sweep_dwell_s", 2e-3, DWELL_LIMITS_S),
    ("[SOURce]:SWEep:POINts", "sweep_points", 101.0, (2.0, float(MAX_SWEEP_POINTS))),
    ("[SOURce]:SWEep:SPACing", "sweep_spacing", "LIN", ("LINear", "LOGarithmic")),
    ("[SOURce]:SWEep:MODE", "sweep_mode", "AUTO", ("AUTO", "MANual")),
    ("[SOURce]:LIST:TYPE", "list_type", "STEP", ("LIST", "STEP")),
    ("[SOURce]:LIST:DIRection", "list_direction", "UP", ("UP", "DOWN")),
    ("[SOURce]:LIST:MODE", "list_mode", "AUTO", ("AUTOmatic", "MANual")),
    ("[SOURce]:LIST:RETRace", "list_retrace", True, None),
    ("[SOURce]:LIST:DWELl:TYPE", "list_dwell_type", "LIST", ("LIST", "STEP")),
    ("TRIGger[:SEQuence]:SOURce", "sweep_trigger", "IMM", _KEYSIGHT_TRIGGERS),
    ("[SOURce]:LIST:TRIGger:SOURce", "point_trigger", "IMM", _KEYSIGHT_TRIGGERS),
    ("INITiate:CONTinuous[:ALL]", "continuous", False, None),
)
"""The MXG/PSG settings a step sweep or list depends on (*RST values)."""


class KeysightSweep(SweepControl):
    """MXG/PSG: `FREQ:MODE LIST` and/or `POW:MODE LIST`, a step sweep
    (`LIST:TYPE STEP`) or a list (`LIST:TYPE LIST`), started by `INIT` (or
    `INIT:CONT ON`) and the sweep trigger (`TRIG:SOUR`); each point held for its
    dwell (`LIST:TRIG:SOUR IMM`) or until the next point trigger (`BUS`: `*TRG`)."""

    def build(self) -> None:
        gen = self.generator
        add = gen.table.add
        add(
            "[SOURce#]:FREQuency:MODE",
            setter=lambda call: self._set_mode(call, "frequency_mode", ("CW", "FIXed")),
            getter=lambda call: str(self.stored["frequency_mode"]),
        )
        add(
            "[SOURce#]:POWer:MODE",
            setter=lambda call: self._set_mode(call, "power_mode", ("FIXed",)),
            getter=lambda call: str(self.stored["power_mode"]),
        )
        limits = {"frequency": gen.frequency_range_hz, "power": gen.power_range_dbm}
        gen.add_settings(KEYSIGHT_SWEEP, limits, then=self.restart)
        add("[SOURce]:SWEep:GENeration", setter=self._set_generation, getter=lambda call: "STEP")
        for pattern, unit, limits_of_unit, name in (
            ("[SOURce]:LIST:FREQuency", "HZ", gen.frequency_range_hz, "list_frequencies_hz"),
            ("[SOURce]:LIST:POWer", "DBM", gen.power_range_dbm, "list_powers_dbm"),
            ("[SOURce]:LIST:DWELl", "S", DWELL_LIMITS_S, "list_dwells_s"),
        ):
            column = (
                lambda n=name: getattr(self, n),
                lambda values, n=name: setattr(self, n, values),
            )
            self.add_values(pattern, unit, limits_of_unit, column)
        add("INITiate[:IMMediate][:ALL]", setter=self._initiate)
        add("[SOURce]:TSWeep", setter=self._trigger_sweep)
        add("ABORt", setter=self._abort)
        gen.add_common("TRG", False, self._trigger)

    def reset(self) -> None:
        super().reset()
        self.stored["frequency_mode"] = "CW"
        self.stored["power_mode"] = "FIX"
        self.armed = False
        # A preset list holds one point: the preset CW frequency, power and dwell.
        self.list_frequencies_hz: tuple[float, ...] = (self.generator.frequency_hz,)
        self.list_powers_dbm: tuple[float, ...] = (self.generator.power_dbm,)
        self.list_dwells_s: tuple[float, ...] = (float(self.stored["sweep_dwell_s"]),)  # type: ignore[arg-type]

    def _set_mode(self, call: Call, name: str, fixed: tuple[str, ...]) -> None:
        # LIST selects the swept mode, step sweep or list (LIST:TYPE); there is no SWEep.
        choice = parse_choice(one_param(call), (*fixed, "LIST"))
        self.stored[name] = fixed[0].upper()[:3] if choice in fixed else "LIST"
        self.restart()

    def _set_generation(self, call: Call) -> None:
        if parse_choice(one_param(call), ("STEP", "ANALog")) == "ANALog":
            raise ScpiError(-221, "analog ramp sweep is not available on the virtual source")

    def plan(self) -> SweepPlan | None:
        swept_frequency = self.stored["frequency_mode"] != "CW"
        swept_power = self.stored["power_mode"] != "FIX"
        if not (swept_frequency or swept_power):
            return None
        if self.stored["list_type"] == "STEP":
            plan = self._step_plan(swept_frequency, swept_power)
        else:
            plan = self._list_plan(swept_frequency, swept_power)
        if self.stored["list_direction"] == "DOWN":
            plan = SweepPlan(
                *(column[::-1] for column in (plan.frequencies_hz, plan.powers_dbm, plan.dwells_s))
            )
        return plan

    def _step_plan(self, swept_frequency: bool, swept_power: bool) -> SweepPlan:
        s = self.stored
        points = int(s["sweep_points"])  # type: ignore[call-overload]
        spacing = log_points if s["sweep_spacing"] == "LOG" else linear_points
        frequencies = (
            spacing(s["sweep_start_hz"], s["sweep_stop_hz"], points)  # type: ignore[arg-type]
            if swept_frequency
            else (self.generator.frequency_hz,) * points
        )
        powers = (
            linear_points(s["sweep_start_dbm"], s["sweep_stop_dbm"], points)  # type: ignore[arg-type]
            if swept_power
            else (self.generator.power_dbm,) * points
        )
        return SweepPlan(frequencies, powers, (float(s["sweep_dwell_s"]),) * points)  # type: ignore[arg-type]

    def _list_plan(self, swept_frequency: bool, swept_power: bool) -> SweepPlan:
        """The list's columns in use: each the list's length, or 1 (then used at every point)."""
        gen = self.generator
        step_dwell = self.stored["list_dwell_type"] == "STEP"
        columns = [
            self.list_frequencies_hz if swept_frequency else None,
            self.list_powers_dbm if swept_power else None,
            None if step_dwell else self.list_dwells_s,
        ]
        points = max(len(c) for c in columns if c is not None)
        if any(c is not None and len(c) not in (1, points) for c in columns):
            raise ScpiError(-221, "list lengths differ")
        fixed = (gen.frequency_hz, gen.power_dbm, float(self.stored["sweep_dwell_s"]))  # type: ignore[arg-type]
        frequencies, powers, dwells = (
            (value,) * points if column is None else column * (points // len(column))
            for column, value in zip(columns, fixed, strict=True)
        )
        return SweepPlan(frequencies, powers, dwells)

    def end_index(self, plan: SweepPlan) -> int:
        return 0 if self.stored["list_retrace"] else plan.points - 1

    def begin(self, now_s: float) -> None:
        self.armed = False
        if self.stored["continuous"]:
            self._arm(now_s)

    def after_end(self, now_s: float) -> None:
        if self.stored["continuous"]:
            self._arm(now_s)

    def _arm(self, now_s: float) -> None:
        """Wait for the sweep trigger; with `TRIG:SOUR IMM` it comes at once."""
        self.armed = True
        if self.stored["sweep_trigger"] == "IMM":
            self._start(now_s)

    def _start(self, now_s: float) -> None:
        assert self.run is not None
        self.armed = False
        repeat = bool(self.stored["continuous"]) and self.stored["sweep_trigger"] == "IMM"
        if self.stored["point_trigger"] == "IMM":
            self.run.start_timed(now_s, repeat=repeat)
        else:
            self.run.start_stepped(repeat=repeat)

    def _initiate(self, call: Call) -> None:
        """`INIT`: arm one sweep; -213 while one is armed or running or sweeping continuously."""
        _no_params(call)
        now_s = time.monotonic()
        self.settle(now_s)
        if self.stored["continuous"] or self.armed or (self.run and self.run.running):
            raise ScpiError(-213, "a sweep is armed or running")
        self._rearm(now_s)

    def _rearm(self, now_s: float) -> None:
        plan = self.plan()
        if plan is None:
            return  # CW: nothing to sweep
        self.run = self.new_run(plan)
        self._arm(now_s)

    def _trigger_sweep(self, call: Call) -> None:
        """`TSW`: abort the sweep, then arm it again (and start it with `TRIG:SOUR IMM`)."""
        _no_params(call)
        self.armed = False
        self._rearm(time.monotonic())

    def _abort(self, call: Call) -> None:
        _no_params(call)
        if self.run is not None:
            self.run.stop()
            self.armed = False
            self.begin(time.monotonic())

    def _trigger(self, call: Call) -> None:
        """`*TRG`: the sweep trigger when one waits for BUS, else the point trigger."""
        now_s = time.monotonic()
        self.settle(now_s)
        run = self.run
        if run is not None and self.armed and self.stored["sweep_trigger"] == "BUS":
            self._start(now_s)
        elif run is not None and run.stepping and self.stored["point_trigger"] == "BUS":
            run.step()
            if not run.running:
                self.after_end(now_s)
        else:
            raise ScpiError(-211, "no sweep waits for a bus trigger")


# --------------------------------------------------------------------------- R&S

_RS_TRIGGERS = ("AUTO", "IMMediate", "SINGle", "BUS", "EXTernal", "EAUTo")
_RS_TRIGGER_NAMES = {"IMM": "AUTO", "BUS": "SING"}
"""SCPI names the SMB takes for its own (queries answer in its own names)."""
_RS_SWEEP_MODES = ("AUTO", "MANual", "STEP")
RS_SWEEP: tuple[StoredRow, ...] = (
    ("[SOURce]:SWEep[:FREQuency]:DWELl", "sweep_dwell_s", 10e-3, (1e-3, 100.0)),
    ("[SOURce]:SWEep[:FREQuency]:SPACing", "sweep_spacing", "LIN", ("LINear", "LOGarithmic")),
    ("[SOURce]:SWEep[:FREQuency]:MODE", "sweep_mode", "AUTO", _RS_SWEEP_MODES),
    ("[SOURce]:SWEep[:FREQuency]:RETRace", "sweep_retrace", False, None),
    ("[SOURce]:SWEep[:FREQuency]:STEP:LOGarithmic", "sweep_step_pct", 1.0, (0.01, 100.0)),
    ("[SOURce]:POWer:STARt", "sweep_start_dbm", -30.0, "power"),
    ("[SOURce]:POWer:STOP", "sweep_stop_dbm", -10.0, "power"),
    ("[SOURce]:SWEep:POWer:DWELl", "power_sweep_dwell_s", 10e-3, (1e-3, 100.0)),
    ("[SOURce]:SWEep:POWer:MODE", "power_sweep_mode", "AUTO", _RS_SWEEP_MODES),
    ("[SOURce]:SWEep:POWer:RETRace", "power_sweep_retrace", False, None),
    ("[SOURce]:LIST:DWELl", "list_dwell_s", 15e-3, (7e-4, 100.0)),
    ("[SOURce]:LIST:MODE", "list_mode", "AUTO", ("AUTO", "STEP")),
)
"""The SMB settings its sweeps and list depend on (*RST values)."""
_RS_RESET = {
    "frequency_mode": "CW",
    "power_mode": "CW",
    "sweep_trigger": "AUTO",
    "power_sweep_trigger": "AUTO",
    "list_trigger": "AUTO",
    "sweep_start_hz": 100e6,
    "sweep_stop_hz": 500e6,
    "sweep_step_hz": 1e6,
    "power_sweep_step_db": 1.0,
}
"""The *RST values of the SMB's sweep settings that have handlers of their own."""
_RS_KINDS = {  # the stored names of each sweep's settings
    "SWE": ("sweep_trigger", "sweep_mode", "sweep_retrace", "sweep_dwell_s"),
    "PSW": (
        "power_sweep_trigger",
        "power_sweep_mode",
        "power_sweep_retrace",
        "power_sweep_dwell_s",
    ),
    "LIST": ("list_trigger", "list_mode", "", "list_dwell_s"),
}


class RsSweep(SweepControl):
    """SMB: one of the frequency sweep (`FREQ:MODE SWE`: start/stop, step or points,
    lin/log), the level sweep (`POW:MODE SWE`: start/stop in dBm, step or points) and
    the list (`FREQ:MODE LIST`: the selected list's frequency/level pairs), each with
    one dwell; free-running with trigger source AUTO (*RST), once per `…:EXEC`/`*TRG`
    with SINGle, one point per trigger in mode STEP. Selecting one switches the
    others off."""

    def build(self) -> None:
        gen = self.generator
        add = gen.table.add
        for pattern, name, modes in (
            ("[SOURce#]:FREQuency:MODE", "frequency_mode", ("SWEep", "LIST")),
            ("[SOURce#]:POWer:MODE", "power_mode", ("SWEep",)),
        ):
            add(
                pattern,
                setter=lambda call, n=name, m=modes: self._set_mode(call, n, m),
                getter=lambda call, n=name: str(self.stored[n]),
            )
        gen.add_settings(RS_SWEEP, {"power": gen.power_range_dbm}, then=self.restart)
        for pattern, which in (
            ("[SOURce]:FREQuency:STARt", "start"),
            ("[SOURce]:FREQuency:STOP", "stop"),
            ("[SOURce]:FREQuency:CENTer", "center"),
            ("[SOURce]:FREQuency:SPAN", "span"),
        ):
            add(
                pattern,
                setter=lambda call, w=which: self._set_range(call, w),
                getter=lambda call, w=which: gen.number(self._range()[w]),
            )
        for node, kind in (("SWEep[:FREQuency]", "SWE"), ("SWEep:POWer", "PSW")):
            step = "STEP[:LINear]" if kind == "SWE" else "STEP[:LOGarithmic]"
            add(
                f"[SOURce]:{node}:{step}",
                setter=lambda call, k=kind: self._set_step(call, k),
                getter=lambda call, k=kind: gen.number(float(self.stored[self._step_name(k)])),  # type: ignore[arg-type]
            )
            add(
                f"[SOURce]:{node}:POINts",
                setter=lambda call, k=kind: self._set_points(call, k),
                getter=lambda call, k=kind: str(self._points(k)),
            )
        self._build_triggers()
        self._build_lists()
        gen.add_common("TRG", False, self._trigger)

    def _build_triggers(self) -> None:
        add = self.generator.table.add
        for pattern, kind in (
            ("TRIGger#:FSWeep:SOURce", "SWE"),
            ("TRIGger#:PSWeep:SOURce", "PSW"),
            ("[SOURce]:LIST:TRIGger:SOURce", "LIST"),
        ):
            add(
                pattern,
                setter=lambda call, k=kind: self._set_trigger(call, k),
                getter=lambda call, k=kind: str(self.stored[_RS_KINDS[k][0]]),
            )
        for pattern, kind in (
            ("[SOURce]:SWEep[:FREQuency]:EXECute", "SWE"),
            ("TRIGger#:FSWeep[:IMMediate]", "SWE"),
            ("[SOURce]:SWEep:POWer:EXECute", "PSW"),
            ("TRIGger#:PSWeep[:IMMediate]", "PSW"),
            ("[SOURce]:LIST:TRIGger:EXECute", "LIST"),
        ):
            add(pattern, setter=lambda call, k=kind: self._execute(call, k))

    def _build_lists(self) -> None:
        gen = self.generator
        add = gen.table.add
        add("[SOURce]:LIST:SELect", setter=self._select, getter=lambda call: f'"{self.selected}"')
        for pattern, unit, limits, index in (
            ("[SOURce]:LIST:FREQuency", "HZ", gen.frequency_range_hz, 0),
            ("[SOURce]:LIST:POWer", "DBM", gen.power_range_dbm, 1),
        ):
            column = (
                lambda i=index: self._columns()[i],
                lambda values, i=index: self._set_column(i, values),
            )
            self.add_values(pattern, unit, limits, column)
        add("[SOURce]:LIST:LEARn", setter=self._learn)
        add("[SOURce]:LIST:RESet", setter=lambda call: self.restart())
        self.lists: dict[str, tuple[Column, Column]] = {}
        self.selected = ""

    def reset(self) -> None:
        """*RST: CW, trigger sources AUTO; the lists and the selection are kept (as on the SMB)."""
        super().reset()
        self.stored.update(_RS_RESET)

    # ------------------------------------------------------------------ settings

    def _set_mode(self, call: Call, name: str, swept: tuple[str, ...]) -> None:
        """`FREQ:MODE` or `POW:MODE`; a sweep or list selected switches the other mode to CW."""
        choice = parse_choice(one_param(call), ("CW", "FIXed", *swept))
        before = dict(self.stored)
        self.stored[name] = "CW" if choice == "FIXed" else short_form(choice)
        if self.stored[name] != "CW":
            other = "power_mode" if name == "frequency_mode" else "frequency_mode"
            self.stored[other] = "CW"
        try:
            self.restart(strict=True)
        except ScpiError:
            self.stored.update(before)
            self.restart()
            raise

    def _set_trigger(self, call: Call, kind: str) -> None:
        choice = short_form(parse_choice(one_param(call), _RS_TRIGGERS))
        if kind == "LIST" and choice == "EAUT":
            raise ScpiError(-224, one_param(call))
        self.stored[_RS_KINDS[kind][0]] = _RS_TRIGGER_NAMES.get(choice, choice)
        self.restart()

    def _range(self) -> dict[str, float]:
        start = float(self.stored["sweep_start_hz"])  # type: ignore[arg-type]
        stop = float(self.stored["sweep_stop_hz"])  # type: ignore[arg-type]
        return {"start": start, "stop": stop, "center": (start + stop) / 2, "span": stop - start}

    def _set_range(self, call: Call, which: str) -> None:
        """Start/stop, or centre/span (each keeping the other); start > stop is allowed."""
        low, high = self.generator.frequency_range_hz
        limits = (-(high - low), high - low) if which == "span" else (low, high)
        value = parse_number(one_param(call), "HZ", minimum=limits[0], maximum=limits[1])
        now = self._range()
        now[which] = value
        if which in ("center", "span"):
            now["start"] = now["center"] - now["span"] / 2
            now["stop"] = now["center"] + now["span"] / 2
        if not (low <= now["start"] <= high and low <= now["stop"] <= high):
            raise ScpiError(-222, f"sweep range beyond {low:g}-{high:g} Hz")
        self.stored["sweep_start_hz"], self.stored["sweep_stop_hz"] = now["start"], now["stop"]
        self.restart()

    def _span(self, kind: str) -> tuple[float, float]:
        """(start, stop) of the frequency (Hz) or level (dBm) sweep."""
        if kind == "SWE":
            r = self._range()
            return r["start"], r["stop"]
        s = self.stored
        return float(s["sweep_start_dbm"]), float(s["sweep_stop_dbm"])  # type: ignore[arg-type]

    @staticmethod
    def _step_name(kind: str) -> str:
        return "sweep_step_hz" if kind == "SWE" else "power_sweep_step_db"

    def _points(self, kind: str) -> int:
        """Points: span/step + 1 (linear), log(stop/start)/log(1 + step) + 1 (log frequency)."""
        start, stop = self._span(kind)
        if kind == "SWE" and self.stored["sweep_spacing"] == "LOG":
            growth = 1.0 + float(self.stored["sweep_step_pct"]) / 100.0  # type: ignore[arg-type]
            return int(abs(math.log(stop / start)) / math.log(growth) + 1e-9) + 1
        step = float(self.stored[self._step_name(kind)])  # type: ignore[arg-type]
        return int(abs(stop - start) / step + 1e-9) + 1

    def _set_points(self, call: Call, kind: str) -> None:
        points = parse_number(one_param(call), None, minimum=2, maximum=MAX_SWEEP_POINTS)
        start, stop = self._span(kind)
        if start == stop:
            raise ScpiError(-221, "the sweep's span is 0")
        self.stored[self._step_name(kind)] = abs(stop - start) / (int(points) - 1)
        self.restart()

    def _set_step(self, call: Call, kind: str) -> None:
        if kind == "SWE":
            low, high = self.generator.frequency_range_hz
            step = parse_number(one_param(call), "HZ", minimum=0.01, maximum=high - low)
        else:
            step = parse_number(one_param(call), "DB", minimum=0.01, maximum=165.0)
        self.stored[self._step_name(kind)] = step
        self.restart()

    def _select(self, call: Call) -> None:
        name = one_param(call).strip()
        if len(name) < 2 or name[0] not in "'\"" or name[-1] != name[0]:
            raise ScpiError(-104, "LIST:SEL takes a string: the list's name in quotes")
        self.selected = name[1:-1]
        self.lists.setdefault(self.selected, ((), ()))  # a new name creates an empty list
        self.restart()

    def _columns(self) -> tuple[Column, Column]:
        """(frequencies Hz, levels dBm) of the selected list."""
        return self.lists.get(self.selected, ((), ()))

    def _set_column(self, column: int, values: Column) -> None:
        if not self.selected:
            raise ScpiError(-221, "no list selected (LIST:SEL)")
        columns = list(self._columns())
        columns[column] = values
        self.lists[self.selected] = (columns[0], columns[1])

    def _learn(self, call: Call) -> None:
        _no_params(call)
        if not self.selected:
            raise ScpiError(-221, "no list selected (LIST:SEL)")

    # ------------------------------------------------------------------ running

    def _active(self) -> str | None:
        """The sweep selected: SWE (frequency), PSW (level), LIST, or None (CW)."""
        if self.stored["frequency_mode"] != "CW":
            return str(self.stored["frequency_mode"])
        return "PSW" if self.stored["power_mode"] == "SWE" else None

    def plan(self) -> SweepPlan | None:
        kind = self._active()
        if kind is None:
            return None
        if kind == "LIST":
            frequencies, powers = self._columns()
            if not frequencies or len(frequencies) != len(powers):
                raise ScpiError(-221, "the selected list is empty or its columns differ")
        else:
            points = self._points(kind)
            if points > MAX_SWEEP_POINTS:  # the points are built in full: bounded here
                raise ScpiError(
                    -221, f"a sweep of {points} points; this one runs at most {MAX_SWEEP_POINTS}"
                )
            start, stop = self._span(kind)
            sign = 1.0 if stop >= start else -1.0
            if kind == "SWE" and self.stored["sweep_spacing"] == "LOG":
                growth = (1.0 + float(self.stored["sweep_step_pct"]) / 100.0) ** sign  # type: ignore[arg-type]
                values = tuple(start * growth**i for i in range(points))
            else:
                step = sign * float(self.stored[self._step_name(kind)])  # type: ignore[arg-type]
                values = tuple(start + i * step for i in range(points))
            if kind == "SWE":
                frequencies, powers = values, (self.generator.power_dbm,) * points
            else:
                frequencies, powers = (self.generator.frequency_hz,) * points, values
        dwell_s = float(self.stored[_RS_KINDS[kind][3]])  # type: ignore[arg-type]
        return SweepPlan(frequencies, powers, (dwell_s,) * len(frequencies))

    def _kind(self) -> tuple[str, str]:
        """(trigger source, mode) of the active sweep or list."""
        trigger, mode, _, _ = _RS_KINDS[self._active() or "SWE"]
        return str(self.stored[trigger]), str(self.stored[mode])

    def end_index(self, plan: SweepPlan) -> int:
        retrace = _RS_KINDS[self._active() or "SWE"][2]
        return 0 if retrace and self.stored[retrace] else plan.points - 1

    def begin(self, now_s: float) -> None:
        assert self.run is not None
        source, mode = self._kind()
        if mode == "STEP":
            self.run.start_stepped(repeat=True)
        elif mode == "AUTO" and source == "AUTO":
            self.run.start_timed(now_s, repeat=True)
        # SINGle, EXTernal, EAUTo (no trigger line here) and MANual: rest at the first point

    def _execute(self, call: Call, kind: str) -> None:
        """`…:EXEC`, `TRIG:FSW|PSW`: one sweep (or, in mode STEP, one point) of the active one."""
        _no_params(call)
        if self.run is None or self._active() != kind:
            names = {"SWE": "frequency sweep", "PSW": "level sweep", "LIST": "list"}
            raise ScpiError(-221, f"{names[kind]} mode is not on")
        now_s = time.monotonic()
        self.settle(now_s)
        source, mode = self._kind()
        if mode == "STEP":
            self.run.step()
        elif mode == "AUTO":
            self.run.start_timed(now_s, repeat=source == "AUTO")

    def _trigger(self, call: Call) -> None:
        kind = self._active()
        if self.run is None or kind is None or self._kind()[0] != "SING":
            raise ScpiError(-211, "no sweep or list waits for a bus trigger")
        self._execute(call, kind)

    def frequency_reading(self) -> float | None:
        """What `FREQ?` answers in sweep mode: the frequency the sweep is at now."""
        point = self.output_at(time.monotonic()) if self._active() == "SWE" else None
        return None if point is None else point[0]
