"""Virtual bias current supply (Kepco BOP, Keysight E36xx) feeding the ring's electromagnet.

The load is the magnet coil, modelled as a resistor: V = I·R. The output
delivers the programmed current unless that needs more than the voltage limit
(compliance), in which case it delivers V_limit / R. Every bias value received
(`CURR`, `OUTP`, `*RST`) is appended to `log` as (time.monotonic(), current_a,
output_on), and the current actually delivered is passed to `ring.set_bias`.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

from labpgt.sim.ring import RingModel
from labpgt.sim.scpi import Call, ScpiError, one_param, parse_bool, parse_choice, parse_number
from labpgt.sim.virtual.instrument import Family, ScpiInstrument


@dataclass(frozen=True)
class SupplyFamily(Family):
    """Identity and output ranges of one supply model."""

    current_min_a: float
    current_max_a: float
    voltage_min_v: float
    voltage_max_v: float


SUPPLY_FAMILIES: dict[str, SupplyFamily] = {
    "kepco_bop": SupplyFamily(
        name="kepco_bop",
        identity="KEPCO,BOP 20-10M 08-11-2020,E0000001,1.61",
        number_style="keysight",
        current_min_a=-10.0,
        current_max_a=10.0,
        voltage_min_v=-20.0,
        voltage_max_v=20.0,
    ),
    "keysight_e36xx": SupplyFamily(
        name="keysight_e36xx",
        identity="Keysight Technologies,E3633A,MY00000003,2.1-5.0-1.0",
        number_style="keysight",
        current_min_a=0.0,
        current_max_a=20.0,
        voltage_min_v=0.0,
        voltage_max_v=20.0,
    ),
}

BiasLogEntry = tuple[float, float, bool]


class BiasSupplyInstrument(ScpiInstrument):
    """Current source with a voltage limit, driving `ring.set_bias` with the delivered current."""

    family: SupplyFamily

    def __init__(
        self,
        family: SupplyFamily,
        ring: RingModel,
        ring_lock: threading.Lock,
        *,
        coil_resistance_ohm: float = 4.0,
        log: list[BiasLogEntry] | None = None,
        stop_event: threading.Event | None = None,
    ) -> None:
        if not coil_resistance_ohm > 0:
            raise ValueError(f"coil_resistance_ohm must be > 0 Ohm, got {coil_resistance_ohm}")
        self._ring = ring
        self._ring_lock = ring_lock
        self.coil_resistance_ohm = coil_resistance_ohm
        self.log: list[BiasLogEntry] = log if log is not None else []
        # The ring starts at 0 A like a supply at power-on, so power-on is not a bias step.
        self._applied_a = 0.0
        self._powered = False
        super().__init__(family, stop_event)
        self._powered = True

    def _build(self) -> None:
        add = self.table.add
        add("[SOURce#]:FUNCtion:MODE", setter=self._set_mode, getter=lambda call: self.mode)
        add(
            "[SOURce#]:CURRent[:LEVel][:IMMediate][:AMPLitude]",
            setter=self._set_current,
            getter=lambda call: self._number_query(call, self.current_a, self._current_limits),
        )
        add(
            "[SOURce#]:VOLTage[:LEVel][:IMMediate][:AMPLitude]",
            setter=self._set_voltage,
            getter=lambda call: self._number_query(call, self.voltage_v, self._voltage_limits),
        )
        add(
            "OUTPut#[:STATe]",
            setter=self._set_output,
            getter=lambda c: self.boolean(self.output_on),
        )
        add(
            "MEASure#[:SCALar]:CURRent[:DC]",
            getter=lambda call: self.number(self.applied_current_a()),
        )
        add(
            "MEASure#[:SCALar]:VOLTage[:DC]",
            getter=lambda call: self.number(self.applied_current_a() * self.coil_resistance_ohm),
        )
        add("SYSTem:REMote", setter=self._set_remote)
        add("SYSTem:LOCal", setter=lambda call: None)

    def _reset(self) -> None:
        self.mode = "CURR" if self.family.name == "keysight_e36xx" else "VOLT"
        self.current_a = 0.0
        self.voltage_v = 0.0
        self.output_on = False
        if self._powered:
            self._received()

    @property
    def _current_limits(self) -> tuple[float, float]:
        return self.family.current_min_a, self.family.current_max_a

    @property
    def _voltage_limits(self) -> tuple[float, float]:
        return self.family.voltage_min_v, self.family.voltage_max_v

    def _number_query(self, call: Call, value: float, limits: tuple[float, float]) -> str:
        keyword = one_param(call, required=False)
        if keyword is None:
            return self.number(value)
        choice = parse_choice(keyword, ("MINimum", "MAXimum"))
        return self.number(limits[0] if choice == "MINimum" else limits[1])

    def _set_mode(self, call: Call) -> None:
        self.mode = parse_choice(one_param(call), ("CURRent", "VOLTage"))[:4].upper()

    def _set_current(self, call: Call) -> None:
        low, high = self._current_limits
        self.current_a = parse_number(one_param(call), "A", minimum=low, maximum=high, default=0.0)
        self._received()

    def _set_voltage(self, call: Call) -> None:
        low, high = self._voltage_limits
        self.voltage_v = parse_number(one_param(call), "V", minimum=low, maximum=high, default=0.0)
        self._apply()

    def _set_output(self, call: Call) -> None:
        self.output_on = parse_bool(one_param(call))
        self._received()

    def _set_remote(self, call: Call) -> None:
        value = one_param(call, required=False)
        if value is not None:
            parse_bool(value)

    def applied_current_a(self) -> float:
        """The current flowing in the coil now: 0 A with the output off, compliance-limited."""
        with self.lock:
            if not self.output_on:
                return 0.0
            limit_a = abs(self.voltage_v) / self.coil_resistance_ohm
            return math.copysign(min(abs(self.current_a), limit_a), self.current_a)

    def _received(self) -> None:
        self.log.append((time.monotonic(), self.current_a, self.output_on))
        self._apply()

    def _apply(self) -> None:
        """Tell the ring when the delivered current changes (hysteresis follows real steps)."""
        applied = self.applied_current_a()
        if applied == self._applied_a:
            return
        if not math.isfinite(applied):
            raise ScpiError(-222, "current not finite")
        with self._ring_lock:
            self._ring.set_bias(applied)
        self._applied_a = applied
