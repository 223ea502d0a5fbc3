"""Virtual bias current supply (Kepco BOP, Keysight E36xx) feeding the ring's electromagnet.

The load is the magnet coil, modelled as a resistor: V = I·R. The output
delivers the programmed current unless that needs more than the voltage limit
(compliance), in which case it delivers V_limit / R. Every bias value received
(`CURR`, `OUTP`, `*RST`) is appended to `log` as (time.monotonic(), current_a,
output_on), and the current actually delivered is passed to `ring.set_bias`.

Models: ``kepco_bop`` (Kepco BOP 20-10M, bipolar; `FUNC:MODE VOLT|CURR`, whose
query answers 0|1 as the BOP does), ``keysight_e36xx`` (E3633A) and
``keysight_e3642a`` (E3642A): unipolar, two output ranges (`VOLT:RANG`),
`APPL`, over-voltage and over-current protection that trip the output off;
they power on and reset in the low range with `CURR` at its rating, as the
manuals' `*RST` tables give. The E36xx have no `FUNC:MODE` (-113), the BOP no
`APPL`, ranges or protection.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field, replace

from labpgt.sim.ring import RingModel
from labpgt.sim.scpi_parser import (
    Call,
    ScpiError,
    one_param,
    parse_bool,
    parse_choice,
    parse_number,
)
from labpgt.sim.virtual.instrument import Family, VirtualInstrument


@dataclass(frozen=True)
class SupplyFamily(Family):
    """Identity and output ranges of one supply model."""

    current_range_a: tuple[float, float]
    voltage_range_v: tuple[float, float]
    ranges: tuple[tuple[str, float, float], ...] = field(default=(), kw_only=True)
    """E36xx output ranges: (name, voltage max V, current max A), low range first."""
    reset_range: int = field(default=0, kw_only=True)
    """Range index after power-on and `*RST`."""
    reset_current_a: float = field(default=0.0, kw_only=True)
    """`CURR` after power-on and `*RST` (the E36xx: the low range's rating)."""
    protection_v: float = field(default=22.0, kw_only=True)
    protection_a: float = field(default=22.0, kw_only=True)


_BOP = SupplyFamily(
    "kepco_bop",
    "KEPCO,BOP 20-10M 08-11-2020,E0000001,1.61",
    "keysight",
    current_range_a=(-10.0, 10.0),
    voltage_range_v=(-20.0, 20.0),
)
# The E36xx may be programmed about 3 % past each range's rating. Power-on and *RST
# as the manuals give them: low range, CURR at the range's rating (E3633A 20 A,
# E3642A 5 A), VOLT 0 V, output off, protection levels at their maximum and on.
_E3633A = SupplyFamily(
    "keysight_e36xx",
    "Keysight Technologies,E3633A,MY00000003,2.1-5.0-1.0",
    "keysight",
    current_range_a=(0.0, 20.6),
    voltage_range_v=(0.0, 20.6),
    ranges=(("P8V", 8.24, 20.6), ("P20V", 20.6, 10.3)),
    reset_current_a=20.0,
)
_E3642A = replace(  # the E3633A's command set with a 5 A rating
    _E3633A,
    model="keysight_e3642a",
    identity="Agilent Technologies,E3642A,0,1.7-5.0-1.0",
    current_range_a=(0.0, 5.15),
    ranges=(("P8V", 8.24, 5.15), ("P20V", 20.6, 2.575)),
    reset_current_a=5.0,
    protection_a=5.5,
)
SUPPLY_FAMILIES: dict[str, SupplyFamily] = {f.key: f for f in (_BOP, _E3633A, _E3642A)}

BiasLogEntry = tuple[float, float, bool]


class BiasSupplyInstrument(VirtualInstrument):
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
        e36xx = bool(self.family.ranges)
        if not e36xx:
            add("[SOURce#]:FUNCtion:MODE", setter=self._set_mode, getter=self._mode_query)
        # The current is a bias step (logged, passed to the ring); the voltage limits it.
        for kind, attribute, unit, limits, then in (
            ("CURRent", "current_a", "A", "_current_limits", self._received),
            ("VOLTage", "voltage_v", "V", "_voltage_limits", self._apply),
        ):
            pattern = f"[SOURce#]:{kind}[:LEVel][:IMMediate][:AMPLitude]"
            self.add_number(pattern, attribute, unit, limits, default=0.0, then=then)
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
            "MEASure#[:SCALar][:VOLTage][:DC]",
            getter=lambda call: self.number(self.applied_current_a() * self.coil_resistance_ohm),
        )
        add("SYSTem:REMote", setter=self._set_remote)
        add("SYSTem:LOCal", setter=lambda call: None)
        add("SYSTem:BEEPer[:IMMediate]", setter=lambda call: None)
        if e36xx:
            self._build_e36xx()

    def _build_e36xx(self) -> None:
        add = self.table.add
        add("APPLy", setter=self._apply_command, getter=self._apply_query)
        add(
            "[SOURce]:VOLTage:RANGe",
            setter=self._set_range,
            getter=lambda call: self.family.ranges[self.range_index][0],
        )
        for kind, unit in (("VOLTage", "V"), ("CURRent", "A")):
            key = kind[:4].lower()
            add(
                f"[SOURce]:{kind}:PROTection[:LEVel]",
                setter=self._protection_setter(key, unit),
                getter=self._protection_getter(key),
            )
            add(
                f"[SOURce]:{kind}:PROTection:STATe",
                setter=self._protection_state_setter(key),
                getter=lambda call, key=key: self.boolean(self.protection[key][1]),
            )
            add(
                f"[SOURce]:{kind}:PROTection:TRIPped",
                getter=lambda call, key=key: self.boolean(self.tripped == key),
            )
            add(f"[SOURce]:{kind}:PROTection:CLEar", setter=self._clear_trip)

    def _reset(self) -> None:
        self.mode = "CURR" if self.family.ranges else "VOLT"
        self.range_index = self.family.reset_range
        self.protection = {
            "volt": [self.family.protection_v, True],
            "curr": [self.family.protection_a, True],
        }
        self.tripped: str | None = None
        self.current_a = self.family.reset_current_a
        self.voltage_v = 0.0
        self.output_on = False
        if self._powered:
            self._received()

    @property
    def _current_limits(self) -> tuple[float, float]:
        if self.family.ranges:
            return 0.0, self.family.ranges[self.range_index][2]
        return self.family.current_range_a

    @property
    def _voltage_limits(self) -> tuple[float, float]:
        if self.family.ranges:
            return 0.0, self.family.ranges[self.range_index][1]
        return self.family.voltage_range_v

    # ------------------------------------------------------------------ E36xx only

    def _apply_command(self, call: Call) -> None:
        """`APPL <V>[,<I>]`: voltage and current at once (each may be MIN|MAX|DEF)."""
        if not call.params:
            raise ScpiError(-109)
        if len(call.params) > 2:
            raise ScpiError(-108, ",".join(call.params))
        v_low, v_high = self._voltage_limits
        i_low, i_high = self._current_limits
        voltage_v = parse_number(call.params[0], "V", minimum=v_low, maximum=v_high, default=0.0)
        current_a = self.current_a
        if len(call.params) == 2:
            current_a = parse_number(
                call.params[1], "A", minimum=i_low, maximum=i_high, default=i_high
            )
        self.voltage_v, self.current_a = voltage_v, current_a
        self._received()

    def _apply_query(self, call: Call) -> str:
        if call.params:
            raise ScpiError(-108, ",".join(call.params))
        return f'"{self.voltage_v:.6f},{self.current_a:.6f}"'

    def _set_range(self, call: Call) -> None:
        names = [name for name, _, _ in self.family.ranges]
        upper = one_param(call).strip().upper()
        aliases = {"LOW": 0, "HIGH": len(names) - 1, **{n: i for i, n in enumerate(names)}}
        if upper not in aliases:
            raise ScpiError(-224, upper)
        self.range_index = aliases[upper]
        # Settings beyond the new range's rating are brought down to it.
        self.voltage_v = min(self.voltage_v, self._voltage_limits[1])
        self.current_a = min(self.current_a, self._current_limits[1])
        self._received()

    def _protection_setter(self, key: str, unit: str):
        def setter(call: Call) -> None:
            # The *RST level is also the highest (E3633A: 22 V, 22 A).
            maximum = self.family.protection_v if key == "volt" else self.family.protection_a
            level = parse_number(
                one_param(call), unit, minimum=0.0, maximum=maximum, default=maximum
            )
            self.protection[key][0] = level
            self._apply()

        return setter

    def _protection_getter(self, key: str):
        def getter(call: Call) -> str:
            limits = (0.0, self.family.protection_v if key == "volt" else self.family.protection_a)
            return self.number_query(call, self.protection[key][0], limits)

        return getter

    def _protection_state_setter(self, key: str):
        def setter(call: Call) -> None:
            self.protection[key][1] = parse_bool(one_param(call))
            self._apply()

        return setter

    def _clear_trip(self, call: Call) -> None:
        self.tripped = None

    def _check_protection(self) -> None:
        """Over-voltage / over-current: the output switches off and the trip is latched."""
        if not self.family.ranges or not self.output_on:
            return
        applied_a = self.applied_current_a()
        volt_level, volt_on = self.protection["volt"]
        curr_level, curr_on = self.protection["curr"]
        if volt_on and applied_a * self.coil_resistance_ohm > volt_level:
            self.tripped = "volt"
        elif curr_on and abs(applied_a) > curr_level:
            self.tripped = "curr"
        else:
            return
        self.output_on = False
        self.log.append((time.monotonic(), self.current_a, self.output_on))

    def _set_mode(self, call: Call) -> None:
        self.mode = parse_choice(one_param(call), ("CURRent", "VOLTage"))[:4].upper()

    def _mode_query(self, call: Call) -> str:
        # The BOP answers its mode as a number: 0 voltage, 1 current.
        return "1" if self.mode == "CURR" else "0"

    def _set_output(self, call: Call) -> None:
        on = parse_bool(one_param(call))
        if on and self.tripped is not None:
            raise ScpiError(-221, f"{self.tripped} protection tripped: clear it first")
        self.output_on = on
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
        self._check_protection()
        applied = self.applied_current_a()
        if applied == self._applied_a:
            return
        if not math.isfinite(applied):
            raise ScpiError(-222, "current not finite")
        with self._ring_lock:
            self._ring.set_bias(applied)
        self._applied_a = applied
