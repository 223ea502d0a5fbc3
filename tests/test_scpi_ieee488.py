"""IEEE 488.2 common layer of every virtual instrument, over real loopback sockets.

Each `RawClient` is one TCP connection, so one session on the instrument: its own
error queue and status registers.
"""

from __future__ import annotations

import pytest
from labpgt.instruments.signal_generator import SignalGenerator
from labpgt.sim.params import RingParams
from labpgt.sim.raw_client import RawClient
from labpgt.sim.ring import RingModel
from labpgt.sim.virtual import VirtualBench

ROLES = ("generator", "analyzer", "supply")


@pytest.fixture(scope="module")
def vb():
    ring = RingModel(RingParams(noise=False, drift=False), seed=0)
    with VirtualBench(ring) as bench:
        yield bench


@pytest.fixture
def clients(vb):
    opened: list[RawClient] = []

    def connect(role: str) -> RawClient:
        client = RawClient(vb.resources[role])
        opened.append(client)
        client.ask("*CLS;*OPC?")
        return client

    yield connect
    for client in opened:
        client.close()


def code(entry: str) -> int:
    return int(entry.split(",", 1)[0])


@pytest.mark.parametrize("role", ROLES)
def test_every_session_has_its_own_error_queue(clients, role):
    a, b = clients(role), clients(role)
    b.send("FOO:BAR 1")
    b.send("*CLS 1")  # a common command given a parameter it does not take
    assert a.errors() == []
    assert [code(e) for e in b.errors()] == [-113, -108]
    assert a.ask("SYST:ERR:COUN?") == "0"


def test_junk_from_a_second_client_does_not_fail_a_driver(vb, clients):
    junk = clients("generator")
    with SignalGenerator.open(vb.resources["generator"], family="keysight_mxg") as gen:
        for _ in range(3):
            junk.send("NOT:A:COMMAND")
            junk.send(b"\xff\xfe\x00binary\x01")
            assert gen.set_cw(2.1e9, -10.0) == (2.1e9, -10.0)
        assert gen.drain_errors() == []
    assert [code(e) for e in junk.errors()] == [-113, -101] * 3


@pytest.mark.parametrize("role", ROLES)
def test_status_byte_is_gated_by_the_enable_registers(clients, role):
    c = clients(role)
    assert c.ask("*ESE 0;*SRE 0;*ESE?;*SRE?") == "0;0"
    c.send("FOO")  # -113: command error, ESR bit 5
    assert c.ask("*STB?") == "4"  # error queue not empty; ESB masked by *ESE 0
    assert c.ask("*ESE 32;*STB?") == "36"  # ESB now passes
    assert c.ask("*SRE 32;*STB?") == "100"  # and requests service (MSS, bit 6)
    assert c.ask("*SRE 255;*SRE?") == "191"  # bit 6 cannot be enabled
    assert c.ask("SYST:ERR:COUN?") == "1"
    assert c.ask("*ESR?;*ESR?") == "32;0"  # reading clears
    assert c.ask("*STB?") == "68"  # still the queued error
    assert code(c.ask("SYST:ERR?")) == -113
    assert c.ask("*STB?;SYST:ERR:COUN?") == "0;0"
    c.send("*ESE 256")
    assert code(c.ask("SYST:ERR?")) == -222
    assert c.ask("*ESE?") == "32"  # the refused value left the register as it was
    # Execution (-2xx) and query (-4xx) events land on their own bits.
    c.send("*CLS;*ESE 255;*SRE 0")
    c.send("SYST:ERR:COUN 3")  # a query-only header used as a command: -113
    assert c.ask("*ESR?") == "32"


def test_execution_errors_set_bit_4_and_cls_clears_everything(clients):
    c = clients("generator")
    c.send("SOUR:FREQ 100 GHz")  # out of range: -222 execution error
    assert c.ask("*ESR?") == "16"
    c.send("SOUR:FREQ 100 GHz")
    assert c.ask("*CLS;*ESR?;SYST:ERR:COUN?;*STB?") == "0;0;0"


@pytest.mark.parametrize("role", ROLES)
def test_queue_overflow_replaces_the_last_entry(clients, role):
    c = clients(role)
    for index in range(40):
        c.send(f"UNKNOWN{index}")
    assert c.ask("SYST:ERR:COUN?") == "30"
    entries = c.errors()
    assert [code(e) for e in entries] == [-113] * 29 + [-350]
    assert "UNKNOWN0" in entries[0] and "UNKNOWN28" in entries[28]
    assert entries[-1] == '-350,"Queue overflow"'


def test_syst_err_all_reads_and_empties_the_queue(clients):
    c = clients("supply")
    c.send("FOO;BAR")  # the command error ends the message: one entry
    c.send("*CLS 1")
    entries = c.ask("SYST:ERR:ALL?")
    assert entries.startswith('-113,"Undefined header;FOO"') and ',-108,"' in entries
    assert c.ask("SYST:ERR:ALL?") == '+0,"No error"'


@pytest.mark.parametrize(
    ("role", "options"),
    [("generator", "520,1EA,UNT"), ("analyzer", '"526,B25,EA3,P26,PFR"'), ("supply", "0")],
)
def test_opt_and_tst(clients, role, options):
    c = clients(role)
    assert c.ask("*OPT?") == options
    assert c.ask("*TST?") == "0"
    assert c.errors() == []


@pytest.mark.parametrize(
    ("garbage", "expected"),
    [
        (b"\xc3\xa9SOUR:FREQ 1e9", -101),  # non-ASCII (UTF-8 e-acute)
        (b"\x00\x01\x02\x03\x04", -101),  # binary
        (b"SOUR:FREQ 2e9\x1b[A", -101),  # an escape sequence
        (b"SOUR:FREQUENCYXXXXXXXX 1", -112),  # mnemonic longer than 12 characters
        (b"SOUR:FR$Q 1", -102),
        (b'SOUR:FREQ "open', -102),
        (b"SOUR:FREQ 1,,2", -102),
        (b"SOUR:FREQ 5 furlongs", -131),
        (b"::::", -102),
    ],
)
def test_garbage_is_refused_with_its_error_and_disturbs_no_one(clients, garbage, expected):
    bystander, sender = clients("generator"), clients("generator")
    before = bystander.ask("SOUR:FREQ?")
    sender.send(garbage)
    assert [code(e) for e in sender.errors()] == [expected]
    assert bystander.ask("SOUR:FREQ?") == before
    assert bystander.errors() == []


def test_an_overlong_line_is_discarded_with_an_input_overrun(clients):
    bystander, sender = clients("analyzer"), clients("analyzer")
    sender.sock.sendall(b"A" * (1 << 20) + b"B" * 1000)  # over 1 MiB with no newline
    sender.send("FREQ:CENT 1e9")  # the tail of the overlong line: discarded with it
    assert [code(e) for e in sender.errors()] == [-363]
    assert sender.ask("FREQ:CENT?") != "+1.000000000000000E+09"
    assert bystander.errors() == []
    assert sender.ask("*OPC?") == "1"


def test_headers_long_short_optional_suffix_min_max_def_and_units(clients):
    c = clients("generator")
    assert c.ask("SOURce1:FREQuency:CW 2.25GHz;:FREQ?") == "+2.250000000000000E+09"
    assert c.ask(":sour:freq:fix 2100 MHz;:SOUR:FREQ:CW?") == "+2.100000000000000E+09"
    assert c.ask("FREQ 2.2e+09 HZ;FREQ?") == "+2.200000000000000E+09"
    assert c.ask(":POW MIN;:POW?;:POW? MAX") == "-1.300000000000000E+02;+1.900000000000000E+01"
    assert c.ask(":POWer:LEVel:IMMediate:AMPLitude -7.5 dBm;:POW?") == "-7.500000000000000E+00"
    assert c.ask(":POW DEF;:POW?") == "-3.000000000000000E+01"  # the *RST level
    assert c.ask(":OUTP1:STAT ON;:OUTP?;:OUTP OFF;:OUTP:STAT?") == "1;0"
    c.send(":SOUR:FREQ 2 GHZ;:SOUR:POW -10 dBm")
    assert c.errors() == []
    s = clients("supply")
    assert (
        s.ask("CURR 150 mA;CURR?;:CURR 0.25;CURR?")
        == "+1.500000000000000E-01;+2.500000000000000E-01"
    )
    assert s.ask("VOLT 1.5 V;:VOLT?;:VOLT 2000 mV;:VOLT?") == (
        "+1.500000000000000E+00;+2.000000000000000E+00"
    )
    s.send("CURR 1 V")
    assert [code(e) for e in s.errors()] == [-131]
    s.send("*RST")


def test_rst_restores_power_on_state_with_auto_couplings(clients):
    c = clients("analyzer")
    c.send("BAND 10 kHz;:BAND:VID 3 kHz;:SWE:TIME 0.5;:POW:ATT 30;:INIT:CONT OFF")
    assert c.ask("BAND:AUTO?;:BAND:VID:AUTO?;:SWE:TIME:AUTO?;:POW:ATT:AUTO?") == "0;0;0;0"
    assert c.ask("SWE:TIME?") == "+5.000000000000000E-01"
    c.send("*RST")
    assert c.ask("BAND:AUTO?;:BAND:VID:AUTO?;:SWE:TIME:AUTO?;:POW:ATT:AUTO?") == "1;1;1;1"
    assert c.ask("INIT:CONT?") == "1"
    # Coupled: RBW = span/106, VBW = RBW, sweep time = 2.5 span / RBW^2, att = ref + 10 dB.
    span_hz = float(c.ask("FREQ:SPAN?"))
    rbw_hz = float(c.ask("BAND?"))
    assert rbw_hz == pytest.approx(span_hz / 106)
    assert float(c.ask("BAND:VID?")) == rbw_hz
    assert float(c.ask("SWE:TIME?")) == pytest.approx(2.5 * span_hz / rbw_hz**2)
    assert float(c.ask("POW:ATT?")) == 10.0
    c.send("FREQ:SPAN 106 MHz")
    assert float(c.ask("BAND?")) == pytest.approx(1e6)
    assert c.errors() == []


def test_rst_keeps_status_enables_and_the_error_queue(clients):
    c = clients("supply")
    c.send("FOO")
    assert c.ask("*ESE 4;*SRE 16;*RST;*ESE?;*SRE?;SYST:ERR:COUN?") == "4;16;1"
    c.send("*CLS;*ESE 0;*SRE 0")


def test_opc_is_overlapped_with_a_realtime_sweep():
    ring = RingModel(RingParams(noise=False, drift=False), seed=0)
    with VirtualBench(ring, realtime=True) as bench, RawClient(bench.resources["analyzer"]) as c:
        # span 100 MHz at RBW 22.36 kHz: a 0.5 s sweep.
        c.send("INIT:CONT OFF;:FREQ:SPAN 100 MHz;:BAND 22.36 kHz")
        sweep_s = float(c.ask("SWE:TIME?"))
        assert sweep_s == pytest.approx(0.5, rel=1e-3)
        # *OPC does not wait: the reply to *ESR? in the same message comes at once,
        # with the OPC bit still clear, and the sweep is still running.
        assert c.ask("INIT;*OPC;*ESR?") == "0"
        assert c.ask("*OPC?;*ESR?") == "1;1"  # *OPC? waited; the armed *OPC then fired
        assert c.ask("*ESR?") == "0"
        assert c.ask("INIT;*WAI;*OPC;*ESR?") == "1"  # *WAI waited for the sweep
        assert c.errors() == []


def test_rst_puts_generator_and_supply_back_to_power_on(clients):
    g = clients("generator")
    g.send("SOUR:FREQ 2.2 GHz;:SOUR:POW -5;:OUTP ON;:PHAS 1.5;:ROSC:SOUR:AUTO OFF")
    assert g.ask("*RST;:SOUR:FREQ?;:SOUR:POW?;:OUTP?;:PHAS?;:ROSC:SOUR:AUTO?") == (
        "+1.000000000000000E+09;-3.000000000000000E+01;0;+0.000000000000000E+00;1"
    )
    s = clients("supply")
    s.send("FUNC:MODE CURR;:VOLT 10;:CURR 0.5;:OUTP ON")
    assert s.ask("*RST;:FUNC:MODE?;:CURR?;:VOLT?;:OUTP?;:MEAS:CURR?") == (
        "0;+0.000000000000000E+00;+0.000000000000000E+00;0;+0.000000000000000E+00"
    )
    assert g.errors() == [] and s.errors() == []
