"""SCPI parsing (sim.scpi_parser) as instruments do it, and virtual trace encoding: no sockets."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from labpgt.sim.params import RingParams
from labpgt.sim.ring import RingModel
from labpgt.sim.scpi_parser import (
    CommandTable,
    ScpiError,
    parse_bool,
    parse_number,
    parse_unit,
    split_params,
    split_units,
)
from labpgt.sim.virtual.analyzer import ANALYZER_FAMILIES, SpectrumAnalyzerInstrument
from labpgt.sim.virtual.generator import GENERATOR_FAMILIES, SignalGeneratorInstrument, SourceState


@pytest.fixture
def gen() -> SignalGeneratorInstrument:
    return SignalGeneratorInstrument(GENERATOR_FAMILIES["keysight_mxg"])


def error(gen: SignalGeneratorInstrument) -> str:
    return gen.execute("SYST:ERR?").decode().strip()


def test_split_units_and_params_respect_quotes():
    assert split_units('A 1;B "x;y";C') == ["A 1", 'B "x;y"', "C"]
    assert split_units("A;:B") == ["A", ":B"]
    assert split_params(" 1, 'a,b' ,3") == ["1", "'a,b'", "3"]
    assert split_params("  ") == []
    with pytest.raises(ScpiError) as exc:
        split_units('A "open')
    assert exc.value.code == -102
    with pytest.raises(ScpiError) as exc:
        split_params("1,,2")
    assert exc.value.code == -102


def test_parse_unit_paths_suffixes_and_common_commands():
    unit, path = parse_unit(":sour2:freq:cw 1 GHz", ())
    nodes = [(n.mnemonic, n.suffix) for n in unit.nodes]
    assert nodes == [("SOUR", 2), ("FREQ", None), ("CW", None)]
    assert unit.params == ("1 GHz",) and not unit.query and unit.common is None
    # The next unit continues under the last header's parent (SOUR2:FREQ).
    unit2, path2 = parse_unit("MODE?", path)
    assert [n.mnemonic for n in unit2.nodes] == ["SOUR", "FREQ", "MODE"] and unit2.query
    assert path2 == path
    common, same = parse_unit("*idn?", path)
    assert common.common == "IDN" and common.query and same == path
    tabbed, _ = parse_unit("FREQ\t5", ())
    assert tabbed.params == ("5",)
    for bad, code in (("FR$Q 1", -102), ("FREQ1X2 1", -113)):
        with pytest.raises(ScpiError) as exc:
            parse_unit(bad, ())
        assert exc.value.code == code


def test_the_server_walks_paths_suffixes_common_commands_and_tabs(gen):
    # What test_parse_unit_paths_suffixes_and_common_commands checks on the parser,
    # through execute (the server resolves headers with its own remembered lookup).
    assert gen.execute(":sour2:freq:cw 1 GHz;MODE?") == b"CW\n"  # under SOUR2:FREQ
    assert gen.frequency_hz == 1e9
    assert gen.execute("SOUR:FREQ:CW 2e9;*OPC?;MODE?") == b"1;CW\n"  # *OPC? keeps the path
    assert gen.execute("FREQ\t3e9;:FREQ?") == b"+3.000000000000000E+09\n"
    assert error(gen) == '+0,"No error"'
    for bad, code in (("FR$Q 1", "-102"), ("FREQ1X2 1", "-113")):
        assert gen.execute(bad + ";:SOUR:FREQ?") is None  # the command error ends the line
        assert error(gen).startswith(code), bad
    assert gen.frequency_hz == 3e9


def test_parse_number_units_keywords_and_ranges():
    assert parse_number("2.1GHz", "HZ") == pytest.approx(2.1e9)
    assert parse_number("250 mA", "A") == pytest.approx(0.25)
    assert parse_number("1e3", None) == 1e3
    assert parse_number("#H1F", None) == 31.0
    assert parse_number("max", "HZ", minimum=1.0, maximum=5.0) == 5.0
    for text, unit, code in (("1 V", "A", -131), ("abc", None, -104), ("1..2", None, -102)):
        with pytest.raises(ScpiError) as exc:
            parse_number(text, unit)
        assert exc.value.code == code
    with pytest.raises(ScpiError) as exc:
        parse_number("6", None, minimum=1.0, maximum=5.0)
    assert exc.value.code == -222
    # Plain decimal text (the fast path) keeps the same rules as the full pattern.
    assert parse_number(" +.5E-3 ", None, minimum=0.0) == 5e-4
    assert parse_number("-2.", None) == -2.0
    for text, code in (("1e", -131), ("1_0", -102), ("nan", -104), ("inf", -104), ("1e5.", -102)):
        with pytest.raises(ScpiError) as exc:
            parse_number(text, None)
        assert exc.value.code == code, text
    with pytest.raises(ScpiError) as exc:
        parse_number("-1e-3", None, minimum=0.0)
    assert exc.value.code == -222
    for text in ("inf", "nan", "x"):
        with pytest.raises(ScpiError) as exc:
            parse_bool(text)
        assert exc.value.code == -224, text


def test_command_table_matches_long_short_optional_and_suffixed_forms():
    table = CommandTable()
    table.add("[SOURce#]:FREQuency[:CW|:FIXed]", setter=lambda call: call.suffixes)
    for header in ("FREQ", "SOUR:FREQ", "source:frequency:fixed", "SOUR3:FREQ:CW"):
        unit, _ = parse_unit(header + " 1", ())
        assert table.lookup(unit.nodes) is not None, header
    unit, _ = parse_unit("SOUR3:FREQ 1", ())
    command, suffixes = table.lookup(unit.nodes)
    assert suffixes == (3, None, None)
    for header in ("FRE", "FREQ:CW:FIXED", "SOUR:SOUR:FREQ", "FREQ2"):
        unit, _ = parse_unit(header + " 1", ())
        assert table.lookup(unit.nodes) is None, header


def test_instrument_message_rules(gen):
    # Long/short form, optional root, ";" keeps the path, ";:" returns to the root.
    assert gen.execute("SOURce:FREQuency 2 GHz;:POW -7 dBm;:SOUR:FREQ?;POW?") == (
        b"+2.000000000000000E+09;-7.000000000000000E+00\n"
    )
    assert gen.execute("freq 3e9") is None and gen.frequency_hz == 3e9
    assert gen.execute("*OPC?;:OUTP ON;OUTP?") == b"1;1\n"
    assert error(gen) == '+0,"No error"'


def test_command_error_discards_the_rest_execution_error_does_not(gen):
    assert gen.execute("FOO 1;:SOUR:POW -3") is None
    assert gen.power_dbm == -30.0  # the unit after the command error was discarded
    assert error(gen).startswith('-113,"Undefined header;FOO')
    assert gen.execute("SOUR:POW 99;:SOUR:FREQ 4e9;:SOUR:FREQ?") == b"+4.000000000000000E+09\n"
    assert error(gen).startswith('-222,"Data out of range')
    assert error(gen) == '+0,"No error"'


def test_a_header_means_what_its_path_makes_it_each_time(gen):
    # Resolved headers are remembered per (header, path): the same text at another
    # path is another command, and refused settings still skip unknown headers.
    for _ in range(2):
        assert gen.execute("SOUR:FREQ:CW 2e9;MODE?") == b"CW\n"  # SOUR:FREQ:MODE?
        assert gen.execute("MODE?") is None
        assert error(gen).startswith('-113,"Undefined header;MODE?')
        assert gen.execute("*OPC? 1") is None
        assert error(gen).startswith('-108,"Parameter not allowed;1')
    assert gen.execute("FOO 1;:SOUR:FREQ?", refuse_settings=True) == b"+2.000000000000000E+09\n"
    assert error(gen) == '+0,"No error"'


def test_units_before_a_bad_unit_run_and_their_errors_queue_first(gen):
    # The whole message is parsed before it runs; errors still queue in unit order.
    assert gen.execute("SOUR:POW 99;:SOUR:POW -5;:FOO;:SOUR:FREQ 3e9;:SOUR:POW?") is None
    assert gen.power_dbm == -5.0 and gen.frequency_hz != 3e9
    assert error(gen).startswith('-222,"Data out of range')
    assert error(gen).startswith('-113,"Undefined header;:FOO')
    assert error(gen) == '+0,"No error"'
    # A command error raised while a unit runs discards the rest, parsed or not.
    assert gen.execute("SOUR:POW -6;:SOUR:POW;:SOUR:POW -7;:FOO") is None
    assert gen.power_dbm == -6.0
    assert error(gen).startswith('-109,"Missing parameter')
    assert error(gen) == '+0,"No error"'


def test_garbage_never_raises_and_queues_errors(gen):
    for line in ('SOUR:FREQ "', "\x00\xff;;", ":", "*", "?", "SOUR:::FREQ 1", "POW 1,2"):
        gen.execute(line)
    assert len(gen.errors) >= 5


def test_one_sweep_reads_the_same_in_every_trace_format():
    # The binary trace is encoded during the sweep; a format or byte-order change
    # made after it must still be honoured by the next read of the same sweep.
    ring = RingModel(RingParams(noise=False, drift=False), seed=0)
    sa = SpectrumAnalyzerInstrument(
        ANALYZER_FAMILIES["keysight_x"],
        ring,
        threading.Lock(),
        lambda at_s: SourceState(2.1e9, -10.0, True),
        lambda: 1.5,
    )
    assert sa.execute("INIT:CONT OFF;:SWE:POIN 101;:FORM REAL,32;:FORM:BORD SWAP;:INIT") is None
    reads = {}
    for setup, dtype in (
        ("FORM:BORD SWAP", "<f4"),
        ("FORM:BORD NORM", ">f4"),
        ("FORM REAL,64", ">f8"),
        ("FORM:BORD SWAP", "<f8"),
    ):
        reply = sa.execute(f"{setup};:TRAC:DATA? TRACE1")
        assert reply[:2] == b"#3" and reply.endswith(b"\n")
        reads[setup] = np.frombuffer(reply[5:-1], dtype=dtype).astype(np.float64)
    text = sa.execute("FORM ASC;:TRAC:DATA? TRACE1").decode()
    reads["ASC"] = np.array([float(v) for v in text.split(",")])
    assert sa.sweeps == 1
    first = reads.pop("FORM:BORD SWAP")
    assert first.shape == (101,)
    for values in reads.values():
        np.testing.assert_allclose(values, first, rtol=1e-6)
