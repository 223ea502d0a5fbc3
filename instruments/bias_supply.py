"""Bias current supply for the electromagnet: ramped current, compliance, output.

Families: "kepco_bop" (Kepco BOP, bipolar, put in current mode with
`FUNC:MODE CURR`) and "keysight_e36xx" (Keysight E36xx, unipolar, constant
current under a voltage limit). The magnet is an inductor: every current
change with the output on is ramped in steps no larger than `ramp_step_a`,
never faster than `ramp_rate_a_per_s`.
"""

from __future__ import annotations

import math
import time
from typing import Any, ClassVar

import pyvisa
from labpgt.instruments.instrument_errors import LimitError
from labpgt.instruments.limits import Limits, ramp_points
from labpgt.instruments.scpi import Control, ScpiInstrument, open_family

RAMP_MARGIN = 1.1
"""Steps are spaced 10 % slower than the ramp rate allows. Every step is confirmed by the
supply's reply and the next one is timed from that reply, so a step delivered late can
never arrive at the supply close behind the one before it."""


class BiasSupply(ScpiInstrument):
    """A current source with ramped setpoint changes and safe output switching."""

    role: ClassVar[str] = "supply"
    bipolar: ClassVar[bool] = True

    compliance_v = Control(
        "VOLT?", "VOLT {}", unit="V", doc="Voltage limit (compliance)", check="check_compliance"
    )
    current_a = Control(
        "CURR?",
        "CURR {}",
        unit="A",
        doc="Current setpoint; setting it ramps at <= the bench's ramp rate",
        check="check_current",
        setter="_ramp_to",
        restore=False,
    )
    output_on = Control(
        "OUTP?",
        "OUTP {}",
        unit="",
        doc="Output enabled (switched at 0 A; the current is ramped back after)",
        kind=bool,
        setter="_switch_output",
        restore=False,
    )
    measured_current_a = Control("MEAS:CURR?", None, unit="A", doc="Measured output current")
    measured_voltage_v = Control("MEAS:VOLT?", None, unit="V", doc="Measured output voltage")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._setpoint_a = 0.0
        self._output = False
        self._last_step_s = -math.inf  # when the supply confirmed the last step (monotonic)
        self.steps_sent = 0
        self.ramp_wait_s = 0.0  # time spent waiting for the ramp rate, s (for benchmarks)

    # -- limits ------------------------------------------------------------------------

    def check_current(self, current_a: float) -> None:
        low = self.limits.bias_min_a if self.bipolar else max(0.0, self.limits.bias_min_a)
        if not self.bipolar and current_a < 0:
            raise LimitError(
                self.role, "current_a", current_a, low, self.limits.bias_max_a, "A (unipolar)"
            )
        self.limits.check_current(self.role, current_a)

    def check_compliance(self, compliance_v: float) -> None:
        self.limits.check_compliance(self.role, compliance_v)

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
            self.write_control("compliance_v", self.limits.compliance_v)
            self.sync()
            self.check_errors("setup")
            self._learn_state()
            if not self._output and self._setpoint_a != 0.0:
                try:
                    self.check_current(self._setpoint_a)
                except LimitError:
                    self._send_setpoint(0.0)
                    self.check_errors("setup: setpoint to 0 A")

    def _select_range(self, compliance_v: float) -> None:
        """Supplies with output ranges choose one that holds `compliance_v` (E36xx)."""

    def _learn_state(self) -> None:
        self._setpoint_a = self.query_value("CURR?")
        self._output = self.query_value("OUTP?", bool)

    def _restore(self) -> None:
        # After a reconnect the supply's own state is learnt, never pushed: re-sending
        # a stale setpoint could make the magnet current jump.
        for command in self.setup_commands:
            self.conn.write(command)
        if "compliance_v" in self._last:
            self._select_range(self._last["compliance_v"])
            self.conn.write(f"VOLT {self._last['compliance_v']:.12g}")
        self._learn_state()

    # -- ramped current ----------------------------------------------------------------

    def _ramp_to(self, target_a: float) -> None:
        """Ramp (output on) or move (output off) the setpoint, then verify it.

        Intermediate steps go as `CURR x;*OPC?`; the last setpoint travels with its
        verification, `CURR x;:CURR?;:SYST:ERR?`. Each step is sent no sooner than the
        ramp rate allows after the supply's reply to the previous one.
        """
        with self.conn.lock:
            if not self._output:
                # No current flows with the output off: the setpoint may move at once.
                final_a: float | None = target_a
            else:
                points = ramp_points(self._setpoint_a, target_a, self.limits.ramp_step_a)
                for point_a in points[:-1]:
                    self._step_to(point_a)
                final_a = points[-1] if points else None
                if final_a is not None:
                    self._wait_for_step(final_a)
            commands = [] if final_a is None else [f"CURR {final_a:.12g}"]
            if final_a is not None:
                self._setpoint_a = final_a
                self._last["current_a"] = final_a

            def took(values: list[float]) -> None:
                # What the supply holds (also when it refused): the next ramp starts there.
                self._setpoint_a = values[0]

            try:
                self.query_checked_many(
                    commands,
                    [(type(self).current_a.get_command, float)],
                    lambda: f"setting current_a={target_a:.6g}",
                    took,
                )
            finally:
                if final_a is not None:
                    self._stamp_step()
            self._last["current_a"] = self._setpoint_a

    def _step_to(self, current_a: float) -> None:
        self._wait_for_step(current_a)
        self._send_setpoint(current_a)

    def _wait_for_step(self, current_a: float) -> None:
        """Sleep until a step to `current_a` respects the ramp rate (plus margin)."""
        step_a = abs(current_a - self._setpoint_a)
        due_s = self._last_step_s + RAMP_MARGIN * step_a / self.limits.ramp_rate_a_per_s
        wait_s = due_s - time.monotonic()
        if wait_s > 0:
            time.sleep(wait_s)
            self.ramp_wait_s += wait_s

    def _stamp_step(self) -> None:
        # Stamped once the reply is in: the supply had the step by then, so the spacing
        # it sees between this step and the next can only be longer than the wait.
        self._last_step_s = time.monotonic()
        self.steps_sent += 1

    def _send_setpoint(self, current_a: float) -> None:
        try:
            self.sync(f"CURR {current_a:.12g}")
        finally:
            self._setpoint_a = current_a
            self._last["current_a"] = current_a
            self._stamp_step()

    def _switch_output(self, on: bool) -> None:
        with self.conn.lock:
            if on and not self._output:
                target_a = self._setpoint_a
                # The setpoint was learnt from the supply (e.g. 20 A after a *RST of an
                # E36xx): never ramp the magnet to a value the limits do not allow.
                self.check_current(target_a)
                if target_a != 0.0:
                    self._send_setpoint(0.0)
                try:
                    self.sync("OUTP ON")
                finally:
                    self._output = True
                    self._stamp_step()  # switching on counts as a step
                if target_a != 0.0:
                    for point_a in ramp_points(0.0, target_a, self.limits.ramp_step_a):
                        self._step_to(point_a)
            elif not on:
                if self._output:
                    for point_a in ramp_points(self._setpoint_a, 0.0, self.limits.ramp_step_a):
                        self._step_to(point_a)
                elif self._setpoint_a != 0.0:
                    self._send_setpoint(0.0)
                self.conn.write("OUTP OFF")
                self._output = False
            self._last["output_on"] = self.query_value("OUTP?", bool)
            self.check_errors(f"switching the output {'on' if on else 'off'}")

    def safe_off(self) -> None:
        """Ramp the current to 0 A, then switch the output off."""
        self.output_on = False

    @classmethod
    def open(
        cls,
        resource: str,
        *,
        family: str,
        limits: Limits | None = None,
        timeout_s: float = 5.0,
        rm: pyvisa.ResourceManager | None = None,
        visa_library: str = "@py",
        **kwargs: Any,
    ) -> BiasSupply:
        """Connect to `resource` (TCPIP socket or ASRL serial) as `family`."""
        return open_family(
            SUPPLY_FAMILIES, resource, family, limits, timeout_s, rm, visa_library, **kwargs
        )


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

    def _select_range(self, compliance_v: float) -> None:
        if self.query_value("VOLT? MAX") < compliance_v:
            self.conn.write("VOLT:RANG HIGH")


SUPPLY_FAMILIES: dict[str, type[BiasSupply]] = {
    KepcoBOP.family: KepcoBOP,
    KeysightE36xx.family: KeysightE36xx,
}
