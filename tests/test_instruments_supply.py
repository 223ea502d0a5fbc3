"""Byte-exact protocol tests of the bias supplies: setup, limits, ramps, safe output switching."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from labpgt.instruments.bias_supply import KepcoBOP, KeysightE36xx
from labpgt.instruments.instrument_errors import ExecutionError, InstrumentProtocolError, LimitError
from labpgt.instruments.limits import Limits, ramp_points
from labpgt.instruments.replay import replay_driver
from labpgt.instruments.scpi import RAMP_MARGIN


def frozen_clock(mocker):
    """Stop the supply's clock and record its waits instead of sleeping.

    Only the driver's own view of time is replaced, so on a loaded machine the real
    time between two steps cannot shorten a wait the test expects at full length.
    """
    sleep = mocker.Mock()
    mocker.patch(
        "labpgt.instruments.scpi.time",
        SimpleNamespace(monotonic=lambda: 1000.0, sleep=sleep),
    )
    return sleep


NO_ERROR = '+0,"No error"'
LIMITS = Limits(ramp_rate_a_per_s=2.0, ramp_step_a=0.05, bias_min_a=-1.0, bias_max_a=2.5)


def opened(cls, script, limits=LIMITS):
    return replay_driver(cls, script, "ASRL/dev/pts/9::INSTR", limits=limits)


def frozen_kepco(mocker, script):
    """A Kepco BOP replaying `script` under `frozen_clock`: (supply, transport, sleep)."""
    sleep = frozen_clock(mocker)
    supply, transport = opened(KepcoBOP, script)
    return supply, transport, sleep


@pytest.mark.parametrize(
    "setpoint",
    # 4 A is outside the 2.5 A limit, but with the output on the setpoint is kept as it is.
    ["0.3", "4"],
)
def test_kepco_setup_learns_state_and_keeps_the_setpoint_while_the_output_is_on(setpoint):
    supply, t = opened(
        KepcoBOP,
        [
            ("FUNC:MODE CURR", None),
            ("VOLT 20", None),
            ("*OPC?", "1"),
            ("SYST:ERR?", NO_ERROR),
            ("CURR?", setpoint),
            ("OUTP?", "1"),
        ],
    )
    supply.setup()
    assert supply._setpoint_a == float(setpoint) and supply._output is True
    t.assert_done()


def test_e36xx_has_no_mode_command():
    # Already in a range that holds the 20 V compliance: no range command.
    supply, t = opened(
        KeysightE36xx,
        [
            ("VOLT? MAX", "+2.06000000E+01"),
            ("VOLT 20", None),
            ("*OPC?", "1"),
            ("SYST:ERR?", NO_ERROR),
            ("CURR?", "+0.00000000E+00"),
            ("OUTP?", "0"),
        ],
    )
    supply.setup()
    t.assert_done()


def test_e36xx_after_reset_selects_the_high_range_and_zeroes_the_setpoint():
    # A reset E3633A: low range (8.24 V max), CURR 20 A; the high range brings it to 10.3 A,
    # still outside the 2.5 A limit, so with the output off the setpoint goes to 0 A.
    supply, t = opened(
        KeysightE36xx,
        [
            ("VOLT? MAX", "+8.24000000E+00"),
            ("VOLT:RANG HIGH", None),
            ("VOLT 20", None),
            ("*OPC?", "1"),
            ("SYST:ERR?", NO_ERROR),
            ("CURR?", "+1.03000000E+01"),
            ("OUTP?", "0"),
            ("CURR 0;*OPC?", "1"),
            ("SYST:ERR?", NO_ERROR),
        ],
    )
    supply.setup()
    assert supply._setpoint_a == 0.0 and supply._output is False
    t.assert_done()


def test_ramp_steps_with_output_on(mocker):
    supply, t, sleep = frozen_kepco(
        mocker,
        [
            ("OUTP ON;*OPC?", "1"),
            ("OUTP?", "1"),
            ("SYST:ERR?", NO_ERROR),
            ("CURR 0.05;*OPC?", "1"),
            ("CURR 0.1;*OPC?", "1"),
            ("CURR 0.15;*OPC?", "1"),
            # The last step travels with its verification: one exchange.
            ("CURR 0.2;:CURR?;:SYST:ERR?", "0.2;" + NO_ERROR),
        ],
    )
    supply.output_on = True
    supply.current_a = 0.2
    # Switching the output on counts as a step; the clock does not move under the
    # patched sleep: one wait before every step, each the step over the rate (+ margin).
    assert sleep.call_count == 4
    for call in sleep.call_args_list:
        assert call.args[0] == pytest.approx(RAMP_MARGIN * 0.05 / 2.0, rel=1e-9)
    t.assert_done()


def test_output_on_refuses_a_learnt_setpoint_outside_the_limits(mocker):
    supply, t, _ = frozen_kepco(mocker, [])  # not one byte may be sent
    supply._setpoint_a = 20.0  # what the supply reported (a reset E36xx holds 20 A)
    with pytest.raises(LimitError, match="current_a"):
        supply.output_on = True
    assert supply._output is False
    t.assert_done()


def test_every_step_is_confirmed_and_the_next_waits_from_the_reply(mocker):
    # The clock stands still under the patched sleep, so every wait is the full spacing
    # for its own step size, counted from the supply's reply to the step before.
    supply, t, sleep = frozen_kepco(
        mocker,
        [
            ("CURR 0.04;*OPC?", "1"),
            ("CURR 0.08;:CURR?;:SYST:ERR?", "0.08;" + NO_ERROR),
            ("CURR 0.1;:CURR?;:SYST:ERR?", "0.1;" + NO_ERROR),
        ],
    )
    supply._output = True
    supply.current_a = 0.08  # two steps: 0.04 (with *OPC?) and 0.08 (with its read-back)
    supply.current_a = 0.1  # one step of 0.02 A
    # No wait before the very first step.
    waits = [call.args[0] for call in sleep.call_args_list]
    assert waits == pytest.approx([RAMP_MARGIN * 0.04 / 2.0, RAMP_MARGIN * 0.02 / 2.0], rel=1e-9)
    assert supply.steps_sent == 3
    t.assert_done()


def test_a_step_the_supply_does_not_confirm_is_a_protocol_error(mocker):
    supply, t, _ = frozen_kepco(mocker, [("CURR 0.05;*OPC?", "0")])
    supply._output = True
    with pytest.raises(InstrumentProtocolError, match=r"CURR 0.05;\*OPC\? answered '0'"):
        supply.current_a = 0.1
    t.assert_done()


def test_output_off_changes_setpoint_without_ramp(mocker):
    supply, t, sleep = frozen_kepco(mocker, [("CURR 1.5;:CURR?;:SYST:ERR?", "1.5;" + NO_ERROR)])
    supply.current_a = 1.5
    assert sleep.call_count == 0
    t.assert_done()


def test_output_on_starts_at_zero_and_ramps_to_the_setpoint(mocker):
    supply, t, _ = frozen_kepco(
        mocker,
        [
            ("CURR 0;*OPC?", "1"),
            ("OUTP ON;*OPC?", "1"),
            ("CURR 0.05;*OPC?", "1"),
            ("CURR 0.1;*OPC?", "1"),
            ("OUTP?", "1"),
            ("SYST:ERR?", NO_ERROR),
        ],
    )
    supply._setpoint_a = 0.1
    supply.output_on = True
    t.assert_done()


def test_safe_off_ramps_down_then_switches_off(mocker):
    supply, t, sleep = frozen_kepco(
        mocker,
        [
            ("CURR 0.05;*OPC?", "1"),
            ("CURR 0;*OPC?", "1"),
            ("OUTP OFF", None),
            ("OUTP?", "0"),
            ("SYST:ERR?", NO_ERROR),
        ],
    )
    supply._setpoint_a, supply._output = 0.1, True
    supply.safe_off()
    assert sleep.call_count == 1
    t.assert_done()


def test_negative_bias_ramps_through_zero_on_bipolar(mocker):
    supply, t, _ = frozen_kepco(
        mocker,
        [
            ("CURR 0;*OPC?", "1"),
            ("CURR -0.05;:CURR?;:SYST:ERR?", "-0.05;" + NO_ERROR),
        ],
    )
    supply._setpoint_a, supply._output = 0.05, True
    supply.current_a = -0.05
    t.assert_done()


def test_a_refused_final_step_raises_and_the_next_ramp_starts_from_the_read_back(mocker):
    supply, t, _ = frozen_kepco(
        mocker,
        [
            ("CURR 0.05;:CURR?;:SYST:ERR?", '0;-222,"Data out of range"'),
            ("SYST:ERR?", NO_ERROR),
            ("CURR 0.05;:CURR?;:SYST:ERR?", "0.05;" + NO_ERROR),
        ],
    )
    supply._output = True
    with pytest.raises(ExecutionError, match="-222.*setting current_a=0.05"):
        supply.current_a = 0.05
    assert supply._setpoint_a == 0.0 and supply.steps_sent == 1
    supply.current_a = 0.05  # one step of 0.05 A from the 0 A the supply reported
    assert supply._setpoint_a == 0.05 and supply.steps_sent == 2
    t.assert_done()


@pytest.mark.parametrize(
    ("cls", "value", "fragment"),
    [
        (KepcoBOP, 3.0, "current_a=3 A refused: allowed range is [-1, 2.5] A"),
        (KepcoBOP, -1.5, "current_a=-1.5 A refused"),
        (KeysightE36xx, -0.1, "current_a=-0.1 A (unipolar) refused: allowed range is [0, 2.5]"),
    ],
)
def test_current_limits_refuse_before_any_byte(cls, value, fragment):
    supply, t = opened(cls, [])
    with pytest.raises(LimitError) as info:
        supply.current_a = value
    assert str(info.value).startswith("supply: ") and fragment in str(info.value)
    t.assert_done()


def test_compliance_above_limit_is_refused():
    supply, t = opened(KepcoBOP, [])
    with pytest.raises(LimitError, match=r"compliance_v=25 V refused: allowed range is \[0, 20\]"):
        supply.compliance_v = 25
    t.assert_done()


def test_measurements_are_read_only_queries():
    supply, t = opened(KepcoBOP, [("MEAS:CURR?", "1.2001"), ("MEAS:VOLT?", "3.5")])
    assert supply.measured_current_a == pytest.approx(1.2001)
    assert supply.measured_voltage_v == pytest.approx(3.5)
    with pytest.raises(AttributeError, match="read-only"):
        supply.measured_current_a = 1.0
    t.assert_done()


@pytest.mark.parametrize(
    ("start", "target", "step", "expected"),
    [
        (0.0, 0.2, 0.05, [0.05, 0.1, 0.15, 0.2]),
        (0.0, 0.12, 0.05, [0.04, 0.08, 0.12]),
        (1.0, 1.0, 0.05, []),
        (0.1, 0.0, 0.5, [0.0]),
    ],
)
def test_ramp_points_never_exceed_the_step(start, target, step, expected):
    points = ramp_points(start, target, step)
    assert points == pytest.approx(expected)
    previous = start
    for point in points:
        assert abs(point - previous) <= step + 1e-12
        previous = point
