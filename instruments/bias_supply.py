"""Bias current supply for the electromagnet: ramped current, compliance, output.

Families: "kepco_bop" (Kepco BOP, bipolar, put in current mode with
`FUNC:MODE CURR`) and "keysight_e36xx" (Keysight E36xx, unipolar, constant
current under a voltage limit). The magnet is an inductor: the current's
definition (`setting_defs.BIAS_CURRENT`) carries a ramp, so with the output on
every change moves in steps no larger than `ramp_step_a`, never faster than
`ramp_rate_a_per_s` (`ScpiInstrument._ramp`).
"""

from __future__ import annotations

from typing import Any, ClassVar

from labpgt.instruments.instrument_errors import LimitError
from labpgt.instruments.limits import ramp_points
from labpgt.instruments.scpi import Control, ScpiInstrument
from labpgt.instruments.setting_defs import (
    BIAS_CURRENT,
    COMPLIANCE,
    MEASURED_CURRENT,
    MEASURED_VOLTAGE,
    OUTPUT_ON,
    VOLTAGE_RANGE,
    SettingDef,
)


class BiasSupply(ScpiInstrument):
    """A current source with ramped setpoint changes and safe output switching."""

    role: ClassVar[str] = "supply"
    families: ClassVar[dict[str, type[ScpiInstrument]]] = {}
    bipolar: ClassVar[bool] = True

    compliance_v = Control(COMPLIANCE)
    current_a = Control(BIAS_CURRENT, restore=False)
    output_on = Control(OUTPUT_ON, setter="_switch_output", restore=False)
    measured_current_a = Control(MEASURED_CURRENT)
    measured_voltage_v = Control(MEASURED_VOLTAGE)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._output = False

    @property
    def _setpoint_a(self) -> float:
        """The setpoint the supply holds, as last set or learnt, A."""
        return self._last.get("current_a", 0.0)

    @_setpoint_a.setter
    def _setpoint_a(self, current_a: float) -> None:
        self._last["current_a"] = current_a

    def check_limit(self, setting: SettingDef, value: float) -> None:
        if value < 0 and not self.bipolar and setting is BIAS_CURRENT:
            low = max(0.0, self.limits.bias_min_a)
            high = self.limits.bias_max_a
            raise LimitError(self.role, setting.name, value, low, high, "A (unipolar)")
        self.limits.check(self.role, setting, value)

    def limit_range(self, setting: SettingDef) -> tuple[float, float]:
        low, high = self.limits.range_of(setting)
        if not self.bipolar and setting is BIAS_CURRENT:
            low = max(0.0, low)
        return low, high

    def ramp_live(self, control: Control) -> bool:
        # No current flows with the output off: the setpoint may move at once.
        return self._output

    # -- setup and state ---------------------------------------------------------------

    def setup(self) -> None:
        """Current mode, compliance from the limits, then learn setpoint and output state.

        A setpoint outside the limits with the output off (an E36xx holds 20 A after
        `*RST`) is moved to 0 A: no current flows, and switching the output on would
        otherwise be refused. With the output on, the supply's setpoint is kept as it is.
        """
        with self.conn.lock:
            for command in self.setup_commands:
                self.conn.write(command)
            self._select_range(self.limits.compliance_v)
            self.write_controls(compliance_v=self.limits.compliance_v)
            self.sync()
            self.check_errors("setup")
            self._learn_state()
            if not self._output and self._setpoint_a != 0.0:
                try:
                    self.check_controls(current_a=self._setpoint_a)
                except LimitError:
                    self.ramp_step(type(self).current_a, 0.0, wait=False)
                    self.check_errors("setup: setpoint to 0 A")

    def _select_range(self, compliance_v: float) -> None:
        """Supplies with output ranges choose one that holds `compliance_v` (E36xx)."""

    def _learn_state(self) -> None:
        self.get_control(type(self).current_a)
        self._output = self.query_value(type(self).output_on.get_command, bool)

    def _restore(self) -> None:
        # After a reconnect the supply's own state is learnt, never pushed: re-sending
        # a stale setpoint could make the magnet current jump.
        for command in self.setup_commands:
            self.conn.write(command)
        if "compliance_v" in self._last:
            compliance_v = self._last["compliance_v"]
            self._select_range(compliance_v)
            self.send_controls([(type(self).compliance_v, compliance_v)], readback=False)
        self._learn_state()

    def _switch_output(self, on: bool) -> None:
        """Output on at 0 A and then ramped to the setpoint; off after ramping to 0 A."""
        current, output = type(self).current_a, type(self).output_on
        step_a = self.limits.ramp_step_a
        with self.conn.lock:
            if on and not self._output:
                target_a = self._setpoint_a
                # The setpoint was learnt from the supply (e.g. 20 A after a *RST of an
                # E36xx): never ramp the magnet to a value the limits do not allow.
                self.check_controls(current_a=target_a)
                if target_a != 0.0:
                    self.ramp_step(current, 0.0, wait=False)
                try:
                    self.send_controls([(output, True)], readback=False, confirm=True)
                finally:
                    self._output = True
                    self._stamp_step()  # switching on counts as a step
                for point_a in ramp_points(0.0, target_a, step_a):
                    self.ramp_step(current, point_a)
            elif not on:
                if self._output:
                    for point_a in ramp_points(self._setpoint_a, 0.0, step_a):
                        self.ramp_step(current, point_a)
                elif self._setpoint_a != 0.0:
                    self.ramp_step(current, 0.0, wait=False)
                self.send_controls([(output, False)], readback=False)
                self._output = False
            self.get_control(output)
            self.check_errors(f"switching the output {'on' if on else 'off'}")

    def safe_off(self) -> None:
        """Ramp the current to 0 A, then switch the output off."""
        self.output_on = False


class KepcoBOP(BiasSupply):
    """Kepco BOP bipolar operational power supply, in current mode."""

    family: ClassVar[str] = "kepco_bop"
    setup_commands: ClassVar[tuple[str, ...]] = ("FUNC:MODE CURR",)


class KeysightE36xx(BiasSupply):
    """Keysight E36xx bench supply: unipolar, constant current under the voltage limit.

    The E3633A and E3642A have two output ranges and come out of `*RST` in the low
    one (8 V); setup moves to the high one (`VOLT:RANG HIGH`) only when the
    compliance needs more than the present range's `VOLT? MAX`.
    """

    family: ClassVar[str] = "keysight_e36xx"
    bipolar: ClassVar[bool] = False
    voltage_range = Control(VOLTAGE_RANGE, restore=False)

    def _select_range(self, compliance_v: float) -> None:
        if self.query_value(f"{type(self).compliance_v.get_command} MAX") < compliance_v:
            self.send_controls(self.check_controls(voltage_range="HIGH"), readback=False)


SUPPLY_FAMILIES: dict[str, type[ScpiInstrument]] = BiasSupply.families
SUPPLY_FAMILIES.update({KepcoBOP.family: KepcoBOP, KeysightE36xx.family: KeysightE36xx})
