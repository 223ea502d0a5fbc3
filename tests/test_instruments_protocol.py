"""Byte-exact protocol tests: every driver family against replayed exchanges, no server."""

from __future__ import annotations

import math
import re
import struct

import numpy as np
import pytest
from labpgt.instruments.bias_supply import KepcoBOP, KeysightE36xx
from labpgt.instruments.instrument_errors import (
    CommandError,
    ExecutionError,
    InstrumentProtocolError,
    LimitError,
)
from labpgt.instruments.limits import Limits
from labpgt.instruments.replay import ReplayTransport, ieee_block, replay_driver
from labpgt.instruments.setting_defs import SettingDef
from labpgt.instruments.signal_generator import KeysightMXG, RohdeSchwarzSMB
from labpgt.instruments.spectrum_analyzer import SWEEP_POLL_S, KeysightX, RohdeSchwarzFSx

NO_ERROR = '+0,"No error"'


def opened(cls, script, **kwargs):
    """A driver on a replay transport, session open, setup not run."""
    return replay_driver(cls, script, "TCPIP::replay::5025::SOCKET", **kwargs)


# -- signal generators ----------------------------------------------------------------


def test_mxg_setup_and_settings_are_byte_exact():
    gen, t = opened(
        KeysightMXG,
        [
            ("SOUR:FREQ:MODE CW", None),
            ("OUTP:MOD:STAT OFF", None),
            ("*OPC?", "1"),
            ("SYST:ERR?", NO_ERROR),
            ("SOUR:FREQ 2100000000;:SOUR:FREQ?;:SYST:ERR?", "+2.100000000000000E+09;" + NO_ERROR),
            ("SOUR:POW -12.5;:SOUR:POW?;:SYST:ERR?", "-1.250000000000000E+01;" + NO_ERROR),
            ("OUTP:STAT ON;:OUTP:STAT?;:SYST:ERR?", "1;" + NO_ERROR),
            ("SOUR:FREQ?", "+2.100000000000000E+09"),
            ("OUTP:STAT OFF;:OUTP:STAT?;:SYST:ERR?", "0;" + NO_ERROR),
        ],
    )
    gen.setup()
    gen.frequency_hz = 2.1e9
    gen.power_dbm = -12.5
    gen.rf_on = True
    assert gen.frequency_hz == 2.1e9
    gen.safe_off()
    t.assert_done()


def test_identify_parses_vendor_model_serial_firmware():
    gen, t = opened(
        RohdeSchwarzSMB, [("*IDN?", "Rohde&Schwarz,SMB100A,1406.6000k03/180001,4.20.028.58")]
    )
    assert gen.identify() == {
        "vendor": "Rohde&Schwarz",
        "model": "SMB100A",
        "serial": "180001",
        "firmware": "4.20.028.58",
    }
    t.assert_done()
    gen, t = opened(KeysightMXG, [("*IDN?", "Keysight Technologies,N5183B,MY00000001,B.01.80")])
    assert gen.identify()["serial"] == "MY00000001"


def test_rs_smb_setup_commands():
    gen, t = opened(
        RohdeSchwarzSMB,
        [("SOUR:FREQ:MODE CW", None), ("*OPC?", "1"), ("SYST:ERR?", '0,"No error"')],
    )
    gen.setup()
    t.assert_done()


@pytest.mark.parametrize(
    ("quantity", "value", "fragment"),
    [
        (
            "frequency_hz",
            2.5e9,
            "frequency_hz=2.5e+09 Hz refused: allowed range is [2e+09, 2.3e+09]",
        ),
        ("power_dbm", 5.0, "power_dbm=5 dBm refused: allowed range is [-40, 0] dBm"),
        ("power_dbm", -50.0, "power_dbm=-50 dBm"),
        ("power_dbm", float("nan"), "power_dbm=nan dBm"),
    ],
)
def test_generator_limits_refuse_before_any_byte(quantity, value, fragment):
    gen, t = opened(KeysightMXG, [], limits=Limits())
    with pytest.raises(LimitError) as info:
        setattr(gen, quantity, value)
    assert str(info.value).startswith("generator: ")
    assert fragment in str(info.value)
    t.assert_done()  # the script is empty: a single written byte would have failed


def _outcome(check):
    try:
        value = check()
    except LimitError as exc:
        return str(exc)
    return "nan" if value != value else value


@pytest.mark.parametrize("cls", [KeysightMXG, RohdeSchwarzSMB, KepcoBOP, KeysightE36xx])
def test_the_one_comparison_check_takes_and_refuses_what_the_full_check_does(cls):
    driver, t = opened(cls, [], limits=Limits(bias_min_a=-1.0, bias_max_a=2.5))
    ranges = driver.limit_ranges()
    assert ranges  # frequency and power; the bias current and the compliance
    for name, (control, low, high) in ranges.items():
        values = [low, high, (low + high) / 2, -0.1, 0.0, str(high), True, None, "x"]
        values += [math.nextafter(low, -math.inf), math.nextafter(high, math.inf)]
        values += [math.nan, math.inf, -math.inf, np.float64(high), np.float32(low)]
        for value in values:
            full = _outcome(lambda: driver.check_control(control, value))  # noqa: B023
            fast = _outcome(lambda: driver.checked_value(name, value)[1])  # noqa: B023
            assert fast == full, (name, value)
    t.assert_done()  # nothing was sent


def test_a_driver_adding_a_limit_rule_without_its_range_is_checked_the_full_way():
    class NarrowMXG(KeysightMXG):  # a plugin's rule: nothing above 2.2 GHz
        def check_limit(self, setting, value):
            if setting.name == "frequency_hz" and value > 2.2e9:
                raise LimitError(self.role, setting.name, value, 2e9, 2.2e9, "Hz")
            super().check_limit(setting, value)

    gen, t = opened(NarrowMXG, [], limits=Limits())
    assert gen.limit_ranges() == {}
    with pytest.raises(LimitError, match="2.2e"):
        gen.checked_value("frequency_hz", 2.25e9)
    t.assert_done()


def test_error_queue_is_drained_into_a_typed_error():
    gen, t = opened(
        KeysightMXG,
        [
            ("SOUR:POW -10;:SOUR:POW?;:SYST:ERR?", "-30;" + '-222,"Data out of range;power"'),
            ("SYST:ERR?", '-113,"Undefined header;FOO"'),
            ("SYST:ERR?", NO_ERROR),
        ],
    )
    with pytest.raises(ExecutionError) as info:
        gen.power_dbm = -10
    assert info.value.code == -222
    assert "Data out of range" in info.value.message and "+1 more" in info.value.message
    assert "setting power_dbm=-10" in str(info.value)
    t.assert_done()


def test_command_error_class_from_code():
    gen, t = opened(
        KeysightMXG,
        [("*OPC?", "1"), ("SYST:ERR?", '-113,"Undefined header"'), ("SYST:ERR?", NO_ERROR)],
    )
    gen.setup_commands = ()
    with pytest.raises(CommandError):
        gen.setup()


def test_garbled_numeric_reply_is_a_protocol_error():
    gen, t = opened(KeysightMXG, [("SOUR:FREQ?", "#!garbage")])
    with pytest.raises(InstrumentProtocolError, match=r"generator .*SOUR:FREQ\?.*'#!garbage'"):
        _ = gen.frequency_hz


# -- spectrum analyzers ---------------------------------------------------------------

SETUP_X = [
    ("INIT:CONT OFF", None),
    ("FORM REAL,32", None),
    ("FORM:BORD SWAP", None),
    ("*OPC?", "1"),
    ("SYST:ERR?", NO_ERROR),
]


def configure_script(rbw_set: str, rbw_get: str, rbw_reply: str = "300000") -> list:
    return [
        ("FREQ:CENT 2150000000", None),
        ("FREQ:SPAN 300000000", None),
        (rbw_set, None),
        ("SWE:POIN 1001", None),
        ("*OPC?", "1"),
        ("SYST:ERR?", NO_ERROR),
        ("FREQ:CENT?", "+2.150000000000000E+09"),
        ("FREQ:SPAN?", "+3.000000000000000E+08"),
        (rbw_get, rbw_reply),
        ("SWE:POIN?", "+1001"),
        ("SWE:TIME?", "+8.333333333333334E-03"),
    ]


def test_keysight_x_setup_configure_and_binary_trace_with_newline_bytes():
    # Payload bytes chosen to contain 0x0A ("\n") several times, as real dBm data do.
    raw = bytearray(np.full(1001, -90.0, dtype="<f4").tobytes())
    raw[0:4] = b"\x0a\x0a\xb4\xc2"  # about -90.02 dBm
    raw[4000:4004] = b"\x00\x00\x0a\xc2"
    values = np.frombuffer(bytes(raw), dtype="<f4")
    assert b"\n" in bytes(raw)
    block = ieee_block(values.tolist())
    sa, t = opened(
        KeysightX,
        [
            *SETUP_X,
            *configure_script("BAND 300000", "BAND?", "+3.000000000000000E+05"),
            # One exchange: the sweep handshake and the block, joined by ';' in the reply.
            ("INIT;*OPC?;:TRAC:DATA? TRACE1", b"1;" + block),
        ],
        timeout_s=4.0,
    )
    sa.setup()
    taken = sa.configure(2.15e9, 300e6, 300e3, 1001)
    assert taken["points"] == 1001 and taken["sweep_time_s"] == pytest.approx(
        2.5 * 300e6 / 300e3**2
    )
    f_hz, p_dbm = sa.read_trace()
    np.testing.assert_array_equal(p_dbm, values.astype(np.float64))
    np.testing.assert_allclose(f_hz, np.linspace(2.0e9, 2.3e9, 1001))
    # The sweep was awaited in short slices (the link is checked between them), then the
    # normal timeout was restored.
    assert t.timeouts_s[-2] == pytest.approx(SWEEP_POLL_S)
    assert t.timeouts_s[-1] == 4.0
    t.assert_done()


def test_block_header_lengths_are_honoured():
    payload = struct.pack("<3f", -1.0, -2.0, -3.0)
    sa, t = opened(KeysightX, [("TRAC:DATA? TRACE1", b"#212" + payload + b"\n")])
    np.testing.assert_array_equal(sa.conn.query_block("TRAC:DATA? TRACE1"), [-1.0, -2.0, -3.0])
    t.assert_done()


def test_garbled_block_is_a_protocol_error():
    sa, t = opened(KeysightX, [("TRAC:DATA? TRACE1", b"%%garbage%%\n")])
    with pytest.raises(InstrumentProtocolError, match="analyzer .*garbled reply"):
        sa.conn.query_block("TRAC:DATA? TRACE1")


def test_rs_fsx_uses_band_res_and_falls_back_to_ascii():
    sa, t = opened(
        RohdeSchwarzFSx,
        [
            ("INIT:CONT OFF", None),
            ("FORM REAL,32", None),
            ("FORM:BORD SWAP", None),
            ("*OPC?", "1"),
            ("SYST:ERR?", '-113,"Undefined header;FORM:BORD"'),
            ("SYST:ERR?", '0,"No error"'),
            ("FORM ASC", None),
            ("*OPC?", "1"),
            ("SYST:ERR?", '0,"No error"'),
            ("FREQ:CENT 2150000000", None),
            ("FREQ:SPAN 300000000", None),
            ("BAND:RES 300000", None),
            ("SWE:POIN 3", None),
            ("*OPC?", "1"),
            ("SYST:ERR?", '0,"No error"'),
            ("FREQ:CENT?", "2150000000"),
            ("FREQ:SPAN?", "300000000"),
            ("BAND:RES?", "300000"),
            ("SWE:POIN?", "3"),
            ("SWE:TIME?", "0.0083"),
            ("INIT;*OPC?", "1"),
            ("TRAC:DATA? TRACE1", "-80.5,-20.25,-81"),
        ],
    )
    sa.setup()
    assert sa.trace_format == "ascii"
    sa.configure(2.15e9, 300e6, 300e3, 3)
    f_hz, p_dbm = sa.read_trace()
    np.testing.assert_array_equal(p_dbm, [-80.5, -20.25, -81.0])
    np.testing.assert_array_equal(f_hz, [2.0e9, 2.15e9, 2.3e9])
    t.assert_done()


def test_rs_fsx_identity_serial():
    sa, t = opened(RohdeSchwarzFSx, [("*IDN?", "Rohde&Schwarz,FSV-7,1307.9002K07/101234,3.40")])
    assert sa.identify()["serial"] == "101234"


def test_trace_length_mismatch_is_a_protocol_error():
    sa, t = opened(KeysightX, [("INIT;*OPC?;:TRAC:DATA? TRACE1", b"1;" + ieee_block([-1.0, -2.0]))])
    sa._last.update(center_hz=2.15e9, span_hz=300e6, points=3, sweep_time_s=0.01)
    with pytest.raises(InstrumentProtocolError, match="2 points, expected 3"):
        sa.read_trace()


def test_analyzer_readback_keeps_what_the_instrument_took():
    sa, t = opened(
        KeysightX,
        [("BAND 310000;:BAND?;:SYST:ERR?", "+3.000000000000000E+05;" + NO_ERROR)],
    )
    sa.rbw_hz = 310e3
    assert sa._last["rbw_hz"] == 300e3
    t.assert_done()


def test_a_setting_is_one_round_trip_and_a_queued_error_drains_the_rest():
    gen, t = opened(
        KeysightMXG,
        [
            ("SOUR:POW -5;:SOUR:POW?;:SYST:ERR?", '-1.0E+01;-222,"Data out of range"'),
            ("SYST:ERR?", '-221,"Settings conflict"'),
            ("SYST:ERR?", NO_ERROR),
        ],
    )
    with pytest.raises(ExecutionError, match=r"-222.*Data out of range.*\+1 more queued"):
        gen.power_dbm = -5.0
    t.assert_done()


def test_a_combined_reply_without_the_error_part_is_a_protocol_error():
    gen, t = opened(KeysightMXG, [("SOUR:POW -5;:SOUR:POW?;:SYST:ERR?", "-5.0")])
    with pytest.raises(InstrumentProtocolError, match="expected 'value;code"):
        gen.power_dbm = -5.0
    t.assert_done()


def test_snapshot_has_identity_and_every_setting():
    gen, t = opened(
        KeysightMXG,
        [
            ("*IDN?", "Keysight Technologies,N5183B,MY1,B.01"),
            ("SOUR:FREQ?", "2.2E9"),
            ("SOUR:POW?", "-20"),
            ("OUTP:STAT?", "0"),
        ],
    )
    snap = gen.snapshot()
    assert snap["family"] == "keysight_mxg" and snap["role"] == "generator"
    assert snap["identity"]["model"] == "N5183B"
    assert snap["settings"] == {"frequency_hz": 2.2e9, "power_dbm": -20.0, "rf_on": False}
    t.assert_done()


def test_changing_the_span_makes_the_next_sweep_ask_for_its_time():
    sa, t = opened(
        KeysightX,
        [
            ("FREQ:SPAN 100000000;:FREQ:SPAN?;:SYST:ERR?", "1E8;" + NO_ERROR),
            ("SWE:TIME?", "0.5"),
            ("INIT;*OPC?;:TRAC:DATA? TRACE1", b"+1;" + ieee_block([-90.0, -91.0, -92.0])),
        ],
        timeout_s=1.0,
    )
    sa._last.update(center_hz=2.15e9, span_hz=300e6, points=3, sweep_time_s=0.01)
    sa.span_hz = 100e6
    f_hz, _ = sa.read_trace()
    np.testing.assert_allclose(f_hz, [2.1e9, 2.15e9, 2.2e9])
    assert sa._last["sweep_time_s"] == 0.5
    t.assert_done()


def test_a_failed_trace_query_in_the_sweep_exchange_raises_the_queued_error():
    # "1" alone: the sweep ran, the trace query was refused (no block); the error says why.
    sa, t = opened(
        KeysightX,
        [
            ("INIT;*OPC?;:TRAC:DATA? TRACE1", "1"),
            ("SYST:ERR?", '-221,"Settings conflict;TRACE1 is not active"'),
            ("SYST:ERR?", NO_ERROR),
        ],
    )
    sa._last.update(center_hz=2.15e9, span_hz=300e6, points=3, sweep_time_s=0.01)
    with pytest.raises(ExecutionError, match="-221.*after reading the trace"):
        sa.read_trace()
    t.assert_done()


def test_a_garbled_sweep_handshake_is_a_protocol_error():
    sa, t = opened(KeysightX, [("INIT;*OPC?;:TRAC:DATA? TRACE1", "~?%&~?%&")])
    sa._last.update(center_hz=2.15e9, span_hz=300e6, points=3, sweep_time_s=0.01)
    with pytest.raises(InstrumentProtocolError, match=r"garbled reply .*b'~\?'"):
        sa.read_trace()


def test_set_cw_is_one_exchange_with_both_read_backs():
    gen, t = opened(
        KeysightMXG,
        [
            (
                "SOUR:FREQ 2100000000;:SOUR:POW -12.5;:SOUR:FREQ?;:SOUR:POW?;:SYST:ERR?",
                "+2.100000000000000E+09;-1.250000000000000E+01;" + NO_ERROR,
            ),
        ],
    )
    assert gen.set_cw(2.1e9, -12.5) == (2.1e9, -12.5)
    assert gen._last["frequency_hz"] == 2.1e9 and gen._last["power_dbm"] == -12.5
    t.assert_done()


def test_set_cw_checks_both_limits_before_any_byte():
    gen, t = opened(KeysightMXG, [], limits=Limits())
    with pytest.raises(LimitError, match="power_dbm=5 dBm refused"):
        gen.set_cw(2.1e9, 5.0)
    with pytest.raises(LimitError, match="frequency_hz=2.5e\\+09 Hz refused"):
        gen.set_cw(2.5e9, -10.0)
    t.assert_done()


def test_set_cw_error_names_the_message_and_caches_what_was_taken():
    gen, t = opened(
        KeysightMXG,
        [
            (
                "SOUR:FREQ 2100000000;:SOUR:POW -10;:SOUR:FREQ?;:SOUR:POW?;:SYST:ERR?",
                '+2.1E+09;-3.0E+01;-222,"Data out of range;power"',
            ),
            ("SYST:ERR?", NO_ERROR),
        ],
    )
    with pytest.raises(ExecutionError, match="setting frequency_hz=2100000000, power_dbm=-10"):
        gen.set_cw(2.1e9, -10.0)
    assert gen._last["power_dbm"] == -30.0  # what the generator kept, not what was asked
    t.assert_done()


@pytest.mark.parametrize(
    ("get_command", "set_command", "message"),
    [
        ("A?", "A {0}", "set command 'A {0}' must contain exactly one bare '{}'"),
        ("A?", "A {} {}", "exactly one bare"),
        ("A?", "A {:.3f}", "exactly one bare"),
        ("A?", "A", "exactly one bare"),
        ("A{}?", "A {}", "query command 'A{}?' must not contain braces"),
    ],
)
def test_a_control_whose_commands_could_misplace_a_value_is_refused(
    get_command: str, set_command: str, message: str
) -> None:
    # Settings messages are one template filled in order: "X {0}" would take the
    # first control's value, a brace in a query would break the template.
    with pytest.raises(ValueError, match=re.escape(message)):
        SettingDef("a", "", "", (get_command, set_command))


# -- instruments that do not take compound messages -----------------------------------


def test_connect_probes_compound_messages_and_keeps_them_when_joined():
    transport = ReplayTransport(
        [
            ("SYST:ERR?", NO_ERROR),
            ("*OPC?;*OPC?", "1;1"),
            ("SOUR:FREQ:MODE CW", None),
            ("OUTP:MOD:STAT OFF", None),
            ("*OPC?", "1"),
            ("SYST:ERR?", NO_ERROR),
            ("SOUR:POW -3;:SOUR:POW?;:SYST:ERR?", "-3;" + NO_ERROR),
        ],
        resource="TCPIP::replay::5025::SOCKET",
    )
    gen = KeysightMXG(transport)
    gen.connect()
    assert gen.compound_messages is True
    gen.power_dbm = -3.0
    transport.assert_done()


def test_an_instrument_answering_each_query_on_its_own_line_is_driven_unit_by_unit():
    transport = ReplayTransport(
        [
            ("SYST:ERR?", NO_ERROR),
            ("*OPC?;*OPC?", b"1\n1\n"),  # two replies, not "1;1"
            ("SYST:ERR?", NO_ERROR),  # whatever the probe queued is dropped
            ("SOUR:FREQ:MODE CW", None),
            ("OUTP:MOD:STAT OFF", None),
            ("*OPC?", "1"),
            ("SYST:ERR?", NO_ERROR),
            # set_cw: every set, every read-back and the error query, one message each.
            ("SOUR:FREQ 2100000000", None),
            ("SOUR:POW -12.5", None),
            ("SOUR:FREQ?", "+2.100000000000000E+09"),
            ("SOUR:POW?", "-1.250000000000000E+01"),
            ("SYST:ERR?", NO_ERROR),
            ("OUTP:STAT OFF", None),
            ("OUTP:STAT?", "0"),
            ("SYST:ERR?", NO_ERROR),
        ],
        resource="TCPIP::replay::5025::SOCKET",
    )
    gen = KeysightMXG(transport)
    gen.connect()
    assert gen.compound_messages is False
    assert gen.set_cw(2.1e9, -12.5) == (2.1e9, -12.5)
    gen.safe_off()
    transport.assert_done()


def test_non_compound_setting_error_drains_and_raises_as_compound_does():
    gen, t = opened(
        KeysightMXG,
        [
            ("SOUR:POW -5", None),
            ("SOUR:POW?", "-1.000000000000000E+01"),
            ("SYST:ERR?", '-222,"Data out of range"'),
            ("SYST:ERR?", NO_ERROR),
        ],
        compound_messages=False,
    )
    with pytest.raises(ExecutionError, match="-222"):
        gen.power_dbm = -5.0
    assert gen._last["power_dbm"] == -10.0  # what the generator kept
    t.assert_done()


def test_non_compound_sweep_is_init_then_opc_then_the_trace_query():
    block = ieee_block([-90.0, -91.0, -92.0])
    sa, t = opened(
        KeysightX,
        [
            ("INIT", None),
            ("*OPC?", "1"),
            ("TRAC:DATA? TRACE1", block),
        ],
        timeout_s=1.0,
        compound_messages=False,
    )
    sa._last.update(center_hz=2.15e9, span_hz=300e6, points=3, sweep_time_s=0.01)
    f_hz, p_dbm = sa.read_trace()
    np.testing.assert_array_equal(p_dbm, [-90.0, -91.0, -92.0])
    # The wait for the sweep was sliced as in the one-message exchange.
    assert SWEEP_POLL_S in t.timeouts_s
    t.assert_done()


def test_non_compound_supply_step_waits_on_its_own_opc():
    supply, t = opened(
        KepcoBOP,
        [
            ("OUTP ON", None),
            ("*OPC?", "1"),
            ("OUTP?", "1"),
            ("SYST:ERR?", NO_ERROR),
            ("CURR 0.5", None),
            ("CURR?", "0.5"),
            ("SYST:ERR?", NO_ERROR),
        ],
        compound_messages=False,
        limits=Limits(ramp_step_a=1.0, ramp_rate_a_per_s=1000.0),
    )
    supply.output_on = True  # at 0 A: "OUTP ON", then its own "*OPC?"
    supply.current_a = 0.5  # the last ramp step: set, read back, error queue
    assert supply._setpoint_a == 0.5
    t.assert_done()
