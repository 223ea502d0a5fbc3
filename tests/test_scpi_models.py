"""Per-model command sets of the virtual instruments, over real loopback sockets.

What each model knows is answered in that model's format; what it does not know
is -113 (never a neighbour's answer).
"""

from __future__ import annotations

import numpy as np
import pytest
from labpgt.sim.params import RingParams
from labpgt.sim.raw_client import RawClient
from labpgt.sim.ring import RingModel
from labpgt.sim.virtual import VirtualBench


def code(entry: str) -> int:
    return int(entry.split(",", 1)[0])


def bench(**families: str) -> VirtualBench:
    return VirtualBench(RingModel(RingParams(noise=False, drift=False), seed=0), **families)


def refused(client: RawClient, command: str) -> int:
    """Send `command` and return the one error it queued."""
    client.send(command)
    errors = client.errors()
    assert len(errors) == 1, (command, errors)
    return code(errors[0])


# --------------------------------------------------------------------------- generators


@pytest.mark.parametrize(
    ("model", "family", "options"),
    [
        ("keysight_mxg", "keysight_mxg", "520,1EA,UNT"),
        ("keysight_psg", "keysight_mxg", "520,1E1,UNT"),
        ("rs_smb", "rs_smb", "SMB-B120,SMB-K22"),
        ("rs_sgs", "rs_smb", "SGS-B26,SGS-K22"),
    ],
)
def test_generator_models_identity_options_and_modulation_states(model, family, options):
    with bench(generator_family=model) as vb, RawClient(vb.resources["generator"]) as c:
        assert vb.families["generator"] == family and vb.models["generator"] == model
        assert c.ask("*OPT?") == options
        assert c.ask("OUTP:MOD?") == "0"
        if model.startswith("keysight"):
            assert c.ask("AM:STAT?;:FM?;:PM?;:PULM:STAT?") == "0;0;0;0"
            assert c.ask("ROSC:SOUR:AUTO?;:ROSC:SOUR?") == "1;INT"
            assert c.ask("PHAS 0.5;:PHAS?") == "+5.000000000000000E-01"
        else:
            assert c.ask("PULM:STAT?;:ROSC:SOUR?") == "0;INT"
            assert c.ask("ROSC:SOUR EXT;:ROSC:SOUR?;:PHAS 45;:PHAS?") == "EXT;45"
        # The output is a carrier: modulation cannot be switched on.
        assert refused(c, "PULM:STAT ON") == -221
        assert c.ask("PULM:STAT?") == "0"
        assert c.errors() == []


def test_only_the_psg_answers_the_option_detail_query():
    with bench(generator_family="keysight_psg") as vb, RawClient(vb.resources["generator"]) as c:
        detail = c.ask("DIAG:CPU:INFO:OPT:DET?")
        assert detail.startswith('"') and "520" in detail and "1E1" in detail
        assert c.ask("*IDN?").split(",")[1].strip() == "E8257D"
    with bench(generator_family="keysight_mxg") as vb, RawClient(vb.resources["generator"]) as c:
        assert refused(c, "DIAG:CPU:INFO:OPT:DET?") == -113


def test_sgs_has_iq_and_lo_settings_and_no_am_fm_pm():
    with bench(generator_family="rs_sgs") as vb, RawClient(vb.resources["generator"]) as c:
        assert c.ask("IQ:STAT?;:LOSC:SOUR?;:CONN:REFL:OUTP?;:OPM?") == "0;INT;OFF;NORM"
        c.send("LOSC:SOUR EXT;:CONN:REFL:OUTP LO;:ROSC:OUTP:FREQ 100MHZ;:OPMode BBBY")
        assert c.ask("LOSC:SOUR?;:CONN:REFL:OUTP?;:ROSC:OUTP:FREQ?;:OPM?") == "EXT;LO;100MHZ;BBBY"
        for command in ("AM:STAT?", "FM:STAT?", "PM:STAT?"):
            assert refused(c, command) == -113
        c.send("*RST")
        assert c.ask("LOSC:SOUR?;:OPM?") == "INT;NORM"
    with bench(generator_family="rs_smb") as vb, RawClient(vb.resources["generator"]) as c:
        assert c.ask("AM:STAT?;:FM:STAT?") == "0;0"
        assert refused(c, "IQ:STAT?") == -113


# --------------------------------------------------------------------------- analyzers


def test_keysight_x_mode_measurement_and_fetch_read_flow():
    with bench(analyzer_family="keysight_x") as vb, RawClient(vb.resources["analyzer"]) as c:
        assert c.ask("INST:CAT?") == '"SA 1"'
        assert c.ask("INST:SEL SA;:INST:SEL?;:INST?") == "SA;SA"
        assert refused(c, "INST:SEL PNOISE") == -224
        assert c.ask("CONF:SAN;:CONF?;:CONF:CAT?") == 'SAN;"SAN"'
        c.send("INIT:CONT OFF;:FREQ:CENT 2.1 GHz;:FREQ:SPAN 200 MHz;:SWE:POIN 101")
        assert refused(c, "FETC:SAN1?") == -230  # nothing measured since the preset
        c.send("FORM ASC;:INIT:SAN")
        pairs = np.array([float(v) for v in c.ask("FETC:SAN1?").split(",")]).reshape(-1, 2)
        np.testing.assert_allclose(pairs[:, 0], np.linspace(2.0e9, 2.2e9, 101))
        trace = np.array([float(v) for v in c.ask("TRAC:DATA? TRACE1").split(",")])
        np.testing.assert_allclose(pairs[:, 1], trace, rtol=1e-6)
        # READ = a new sweep then FETCh; REAL,64 little-endian as QCoDeS asks for it.
        sweeps = vb.analyzer.sweeps
        c.send("FORM REAL,64;:FORM:BORD SWAP;:READ:SAN1?")
        block = np.frombuffer(c.read_block(), dtype="<f8").reshape(-1, 2)
        assert vb.analyzer.sweeps == sweeps + 1
        np.testing.assert_allclose(block[:, 1], trace, rtol=1e-6)
        assert refused(c, "FETC:SAN2?") == -114
        assert c.errors() == []


def test_rs_fsx_has_no_keysight_measurement_layer():
    with bench(analyzer_family="rs_fsx") as vb, RawClient(vb.resources["analyzer"]) as c:
        for command in ("INST:CAT?", "CONF:SAN", "FETC:SAN1?", "READ:SAN1?", "POW:ATT 10"):
            assert refused(c, command) == -113, command
        assert c.ask("INST:SEL SAN;:INST?") == "SAN"


@pytest.mark.parametrize(
    ("model", "attenuation", "ratio"),
    [("keysight_x", "POW:ATT", 106.0), ("rs_fsx", "INP:ATT", 100.0)],
)
def test_analyzer_couplings_levels_and_markers(model, attenuation, ratio):
    with bench(analyzer_family=model) as vb, RawClient(vb.resources["analyzer"]) as c:
        # Both accept AUTO ON for RBW, VBW, sweep time and attenuation.
        c.send("BAND:RES:AUTO ON;:BAND:VID:AUTO ON;:SWE:TIME:AUTO ON;:" + attenuation + ":AUTO ON")
        span_hz = float(c.ask("FREQ:SPAN?"))
        assert float(c.ask("BAND:RES?")) <= span_hz / ratio * 1.5
        c.send("SWE:TIME 50 ms")
        assert float(c.ask("SWE:TIME?")) == 0.05 and c.ask("SWE:TIME:AUTO?") == "0"
        c.send("DISP:WIND:TRAC:Y:RLEV -20")
        assert float(c.ask(attenuation + "?")) == 0.0  # ref + 10 dB, coupled
        c.send(attenuation + " 20")
        assert float(c.ask(attenuation + "?")) == 20.0
        assert c.ask(attenuation + ":AUTO?") == "0"
        assert float(c.ask("DISP:WIND:TRAC:Y:RLEV?")) == -20.0
        # Markers: peak search lands on the trace's maximum point.
        c.send("INIT:CONT OFF;:SWE:POIN 201;:FORM ASC;:INIT;*WAI")
        trace = np.array([float(v) for v in c.ask("TRAC? TRACE1").split(",")])
        axis = np.linspace(*(float(c.ask(q)) for q in ("FREQ:STAR?", "FREQ:STOP?")), 201)
        assert refused(c, "CALC:MARK:Y?") == -221  # marker 1 is off
        c.send("CALC:MARK:MAX")
        assert float(c.ask("CALC:MARK:X?")) == pytest.approx(axis[np.argmax(trace)])
        assert float(c.ask("CALC:MARK:Y?")) == pytest.approx(trace.max(), abs=1e-5)
        c.send(f"CALC:MARK2:X {axis[10]:.6f}")
        assert c.ask("CALC:MARK2?") == "1"
        assert float(c.ask("CALC:MARK2:Y?")) == pytest.approx(trace[10], abs=1e-5)
        c.send("CALC:MARK:AOFF")
        assert c.ask("CALC:MARK1?;:CALC:MARK2?") == "0;0"
        assert c.errors() == []


@pytest.mark.parametrize("model", ["keysight_x", "rs_fsx"])
def test_trace_formats_ascii_and_real32_in_both_byte_orders(model):
    with bench(analyzer_family=model) as vb, RawClient(vb.resources["analyzer"]) as c:
        c.send("INIT:CONT OFF;:SWE:POIN 101;:INIT;*WAI")
        text = np.array([float(v) for v in c.ask("FORM ASC;:TRAC:DATA? TRACE1").split(",")])
        c.send("FORM REAL,32;:FORM:BORD NORM;:TRAC:DATA? TRACE1")
        big = np.frombuffer(c.read_block(), dtype=">f4")
        c.send("FORM:BORD SWAP;:TRAC:DATA? TRACE1")
        little = np.frombuffer(c.read_block(), dtype="<f4")
        assert c.ask("FORM?;:FORM:BORD?") == "REAL,32;SWAP"
        np.testing.assert_array_equal(big, little)
        np.testing.assert_allclose(text, little, rtol=1e-6)
        assert c.errors() == []


# --------------------------------------------------------------------------- supplies


def test_kepco_bop_answers_its_mode_as_a_number_and_knows_no_e36xx_commands():
    with bench(supply_family="kepco_bop") as vb, RawClient(vb.resources["supply"]) as c:
        assert c.ask("FUNC:MODE?") == "0"  # voltage mode after power-on
        assert c.ask("FUNC:MODE CURR;:FUNC:MODE?") == "1"
        assert c.ask("CURR -1.5;CURR?") == "-1.500000000000000E+00"  # bipolar
        for command in ("APPL 1,1", "VOLT:RANG LOW", "VOLT:PROT 10", "CURR:PROT?"):
            assert refused(c, command) == -113, command
        assert c.ask("*TST?") == "0"


def test_e36xx_apply_ranges_protection_and_no_function_mode():
    with bench(supply_family="keysight_e36xx") as vb, RawClient(vb.resources["supply"]) as c:
        assert refused(c, "FUNC:MODE?") == -113
        assert refused(c, "FUNC:MODE CURR") == -113
        # Power-on state as the E3633A manual's *RST table gives it: low range, 20 A, 0 V.
        power_on = "P8V;+2.000000000000000E+01;+0.000000000000000E+00;0;1;1"
        state = "VOLT:RANG?;:CURR?;:VOLT?;:OUTP?;:VOLT:PROT:STAT?;:CURR:PROT:STAT?"
        assert c.ask(state) == power_on
        assert c.ask("VOLT:RANG HIGH;:VOLT:RANG?") == "P20V"
        assert c.ask("APPL 5,1.5;:APPL?") == '"5.000000,1.500000"'
        assert c.ask("VOLT?;CURR?") == "+5.000000000000000E+00;+1.500000000000000E+00"
        assert c.ask("CURR? MAX") == "+1.030000000000000E+01"
        assert c.ask("VOLT:RANG LOW;:VOLT:RANG?;:CURR? MAX") == "P8V;+2.060000000000000E+01"
        assert refused(c, "VOLT 10") == -222  # beyond the 8 V range
        assert refused(c, "CURR -0.1") == -222  # unipolar
        assert c.ask("VOLT:PROT?;:VOLT:PROT:STAT?;:CURR:PROT?") == (
            "+2.200000000000000E+01;1;+2.200000000000000E+01"
        )
        assert c.ask("CURR:PROT 5;:CURR:PROT?;:CURR:PROT DEF;:CURR:PROT?") == (
            "+5.000000000000000E+00;+2.200000000000000E+01"
        )
        assert refused(c, "VOLT:PROT 23") == -222
        # Over-voltage: 1 A into the 4 Ohm coil needs 4 V, above a 2 V protection level.
        c.send("VOLT:RANG HIGH;:APPL 10,1;:VOLT:PROT 2;:OUTP ON")
        assert c.ask("OUTP?;:VOLT:PROT:TRIP?;:MEAS:CURR?") == "0;1;+0.000000000000000E+00"
        assert refused(c, "OUTP ON") == -221
        c.send("VOLT:PROT 22;:VOLT:PROT:CLE;:OUTP ON")
        assert c.ask("OUTP?;:VOLT:PROT:TRIP?;:MEAS:CURR?") == "1;0;+1.000000000000000E+00"
        c.send("OUTP OFF;*RST")
        assert c.ask(state) == power_on
        assert c.errors() == []


def test_e3642a_has_its_own_ratings():
    with bench(supply_family="keysight_e3642a") as vb, RawClient(vb.resources["supply"]) as c:
        assert vb.families["supply"] == "keysight_e36xx"
        assert c.ask("*IDN?").split(",")[1] == "E3642A"
        assert c.ask("VOLT:RANG?;:CURR?;:CURR? MAX") == (
            "P8V;+5.000000000000000E+00;+5.150000000000000E+00"
        )
        assert c.ask("VOLT:RANG P20V;:CURR? MAX;:CURR?") == (
            "+2.575000000000000E+00;+2.575000000000000E+00"
        )


@pytest.mark.parametrize(
    ("model", "high_range_a"), [("keysight_e36xx", 10.3), ("keysight_e3642a", 2.575)]
)
def test_labpgt_driver_opens_a_reset_e36xx_and_drives_the_coil(model, high_range_a):
    """The reset state (low range, CURR at its rating) is what labpgt's driver meets first."""
    from labpgt.instruments.bias_supply import BiasSupply
    from labpgt.instruments.limits import Limits

    limits = Limits(bias_min_a=0.0, bias_max_a=2.5, ramp_rate_a_per_s=100.0)
    with bench(supply_family=model) as vb, RawClient(vb.resources["supply"]) as c:
        c.send("*RST")
        supply = BiasSupply.open(vb.resources["supply"], family="keysight_e36xx", limits=limits)
        try:
            # 20 V of compliance needs the high range; the range's rating is outside
            # the 2.5 A limit, so with the output off the setpoint was brought to 0 A.
            assert c.ask("VOLT:RANG?;:VOLT?;:CURR? MAX") == (
                f"P20V;+2.000000000000000E+01;{high_range_a:+.15E}"
            )
            assert supply.current_a == 0.0 and supply.output_on is False
            supply.output_on = True
            supply.current_a = 1.5
            assert supply.measured_current_a == pytest.approx(1.5)
            supply.safe_off()
            assert c.ask("OUTP?;:MEAS:CURR?") == "0;+0.000000000000000E+00"
            assert c.errors() == []
        finally:
            supply.close()


def test_fsv_trace_mode_delta_markers_and_peak_excursion_are_rs_only():
    with bench(analyzer_family="rs_fsx") as vb, RawClient(vb.resources["analyzer"]) as c:
        assert c.ask("DISP:TRAC:MODE?;:DISP:WIND:TRAC2:MODE?") == "WRIT;BLAN"
        assert c.ask("DISP:TRAC1:MODE AVER;:DISP:TRAC1:MODE?") == "AVER"
        assert refused(c, "DISP:TRAC7:MODE WRIT") == -114
        assert c.ask("CALC:MARK:PEXC?;:CALC:MARK:TRAC?") == "6;1"
        assert refused(c, "CALC:DELT2:Y?") == -221  # off
        c.send("INIT:CONT OFF;:CALC:DELT2 ON;:CALC:DELT2:X 2.06GHZ")
        assert c.ask("CALC:MARK1?;:CALC:DELT2?;:CALC:DELT2:X?") == "1;1;2060000000"
        c.send("CALC:MARK:AOFF")
        assert c.ask("CALC:MARK1?;:CALC:DELT2?") == "0;0"
        c.send("CALC:MARK:PEXC 3;:DISP:TRAC:MODE WRIT;:INIT:CONM;*RST")
        assert c.ask("CALC:MARK:PEXC?;:DISP:TRAC:MODE?") == "6;WRIT"
        assert c.errors() == []
    with bench(analyzer_family="keysight_x") as vb, RawClient(vb.resources["analyzer"]) as c:
        for command in ("DISP:TRAC:MODE?", "CALC:DELT2 ON", "INIT:CONM", "CALC:MARK:PEXC 3"):
            assert refused(c, command) == -113, command


@pytest.mark.parametrize(
    ("family", "center_max", "points"),
    [("keysight_x", "+2.65", "11;40001"), ("rs_fsx", "7", "101;32001")],
)
def test_analyzer_queries_answer_min_max_and_points_take_def(family, center_max, points):
    with bench(analyzer_family=family) as vb, RawClient(vb.resources["analyzer"]) as c:
        assert c.ask("FREQ:CENT? MAX").startswith(center_max)
        assert c.ask("SWE:POIN? MIN;:SWE:POIN? MAX") == points
        assert c.ask("SWE:POIN 401;:SWE:POIN DEF;:SWE:POIN?") == "1001"
        assert refused(c, "FREQ:SPAN? BIG") == -224
        assert c.errors() == []


@pytest.mark.parametrize(
    ("model", "start", "dwell"),
    [
        ("keysight_mxg", "+2.000000000000000E+09", "SWE:DWEL"),
        ("keysight_psg", "+2.000000000000000E+09", "SWE:DWEL1"),
        ("rs_smb", "2000000000", "SWE:FREQ:DWEL"),
    ],
)
def test_generator_sweep_settings_read_back_and_rst_returns_to_cw(model, start, dwell):
    """The sweep and list settings read back; `*RST` puts them and `FREQ:MODE` back (CW).
    How the sweeps run: tests/test_sim_virtual_generator_sweep.py."""
    with bench(generator_family=model) as vb, RawClient(vb.resources["generator"]) as c:
        assert c.ask("FREQ:STAR 2 GHZ;:FREQ:STAR?") == start
        c.send(f"{dwell} 5 ms;:SWE:POIN 11;:POW:STOP -10")
        assert float(c.ask(f"{dwell}?")) == 5e-3 and int(float(c.ask("SWE:POIN?"))) == 11
        assert c.errors() == []
        if model == "rs_smb":  # FREQ:MODE LIST needs a list first (LIST:SEL), else -221
            assert c.ask("FREQ:MODE SWE;:FREQ:MODE?") == "SWE"
        else:  # LIST selects the step sweep (LIST:TYPE STEP) or the list; no SWEep
            assert c.ask("FREQ:MODE LIST;:FREQ:MODE?") == "LIST"
            assert refused(c, "FREQ:MODE SWE") == -224
        assert refused(c, "FREQ:MODE PULSE") == -224
        c.send("*RST")
        assert c.ask("FREQ:MODE?") == "CW"
        assert c.ask("FREQ:STAR?") != start
        assert c.errors() == []


def test_sgs100a_has_no_sweep():
    with bench(generator_family="rs_sgs") as vb, RawClient(vb.resources["generator"]) as c:
        for command in ("FREQ:STAR 2 GHZ", "SWE:POIN 11", "SWE:DWEL 5 ms", "LIST:MODE AUTO"):
            assert refused(c, command) == -113, command
        assert refused(c, "FREQ:MODE SWE") == -224


@pytest.mark.parametrize(
    ("family", "attenuation"), [("keysight_x", "POW:ATT"), ("rs_fsx", "INP:ATT")]
)
def test_attenuation_raises_the_floor_and_the_reference_level_clips(family, attenuation):
    """At *RST the display is the ring's spectrum; 20 dB more attenuation lifts the floor
    by 20 dB and leaves the line; a reference level 20 dB under the line clips it."""
    with bench(generator_family="keysight_mxg", analyzer_family=family) as vb:
        with RawClient(vb.resources["generator"]) as g:
            assert g.ask("FREQ 2.1 GHZ;:POW 10;:OUTP ON;*OPC?") == "1"
        with RawClient(vb.resources["analyzer"]) as c:

            def trace(setting: str) -> np.ndarray:
                c.send(f"*RST;:INIT:CONT OFF;:{setting}")
                reply = c.ask("INIT;*OPC?;:TRAC? TRACE1").split(";", 1)[1]
                return np.array([float(v) for v in reply.split(",")])

            reset = trace("FORM ASC")
            grid = vb.analyzer.grid
            expected = vb.ring.evaluate(2.1e9, 10.0, 0.0, grid)[0].numpy()
            np.testing.assert_allclose(reset, expected, atol=1e-4)
            floor, line = np.median(reset), reset.max()
            lifted = trace(f"{attenuation} 30")
            assert np.median(lifted) == pytest.approx(floor + 20.0, abs=0.1)
            assert lifted.max() == pytest.approx(line, abs=0.1)
            reference_dbm = round(float(line) - 30.0, 1)
            clipped = trace(f"DISP:WIND:TRAC:Y:RLEV {reference_dbm}")  # clips 10 dB above
            assert clipped.max() == pytest.approx(reference_dbm + 10.0, abs=1e-4)
            assert c.errors() == []
        # The first mixer compresses by 1 dB at +3 dBm (input level minus attenuation).
        front_end = vb.analyzer._front_end
        vb.analyzer.reference_level_dbm = 30.0
        vb.analyzer.attenuation_db = 10.0
        out = front_end(np.array([-30.0, 3.0 + 10.0, 20.0 + 10.0]))
        assert out[0] == pytest.approx(-30.0, abs=1e-5)
        assert out[1] == pytest.approx(13.0 - 1.0, abs=1e-6)
        assert out[2] < 20.0 + 10.0 - 10.0  # deep in compression
