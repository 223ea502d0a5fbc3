"""The virtual generators' step sweeps and lists, over real loopback sockets.

A 5-point step sweep and a 3-point list per family (MXG, PSG, SMB), run single:
`*OPC?`, where the output rests afterwards, what `FREQ?` answers, the analyzer
seeing the drive point by point (stepped by bus triggers: deterministic), an
empty error queue, and the codes of what each model does not know or refuses.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from labpgt.sim.params import RingParams
from labpgt.sim.raw_client import RawClient
from labpgt.sim.ring import RingModel
from labpgt.sim.virtual import VirtualBench

SWEEP_HZ = (2.0e9, 2.05e9, 2.1e9, 2.15e9, 2.2e9)
LIST_HZ = (2.02e9, 2.18e9, 2.1e9)
LIST_DBM = (-10.0, -5.0, 0.0)
KEYSIGHT = ("keysight_mxg", "keysight_psg")


def bench(model: str, *, realtime: bool = False) -> VirtualBench:
    ring = RingModel(RingParams(noise=False, drift=False), seed=0)
    return VirtualBench(ring, generator_family=model, realtime=realtime)


def code(entry: str) -> int:
    return int(entry.split(",", 1)[0])


def refused(client: RawClient, command: str) -> int:
    client.send(command)
    errors = client.errors()
    assert len(errors) == 1, (command, errors)
    return code(errors[0])


def output(vb: VirtualBench) -> tuple[float, float]:
    state = vb.generator.source_state()
    return state.frequency_hz, state.power_dbm


def step_sweep_setup(model: str) -> str:
    """The 5-point sweep 2.0-2.2 GHz at 10 ms a point, in each family's words."""
    if model in KEYSIGHT:
        return "FREQ:STAR 2 GHZ;:FREQ:STOP 2.2 GHZ;:SWE:POIN 5;:SWE:DWEL 10 ms;:FREQ:MODE LIST"
    return (
        "FREQ:STAR 2 GHZ;:FREQ:STOP 2.2 GHZ;:SWE:FREQ:STEP 50 MHZ;:SWE:FREQ:DWEL 10 ms;"
        ":TRIG:FSW:SOUR SING;:FREQ:MODE SWE"
    )


def list_setup(model: str) -> str:
    values = ",".join(f"{f / 1e9:g} GHZ" for f in LIST_HZ)
    powers = ",".join(f"{p:g}" for p in LIST_DBM)
    if model in KEYSIGHT:
        return (
            f"LIST:TYPE LIST;:LIST:FREQ {values};:LIST:POW {powers};:LIST:DWEL 5 ms;"
            ":FREQ:MODE LIST;:POW:MODE LIST"
        )
    return (
        f"LIST:SEL '/var/user/ring3';:LIST:FREQ {values};:LIST:POW {powers};"
        ":LIST:DWEL 5 ms;:LIST:TRIG:SOUR SING;:FREQ:MODE LIST"
    )


@pytest.mark.parametrize("model", [*KEYSIGHT, "rs_smb"])
def test_single_step_sweep_runs_and_rests_where_the_model_rests(model):
    """Not in real time a single sweep is over at once; the MXG/PSG retrace to the first
    point (`LIST:RETR ON` at *RST), the SMB stays at the last (`SWE:RETR OFF` at *RST)."""
    start = "INIT" if model in KEYSIGHT else "SWE:FREQ:EXEC"
    with bench(model) as vb, RawClient(vb.resources["generator"]) as c:
        c.send("FREQ 2.3 GHZ;:POW -7")
        c.send(step_sweep_setup(model))
        assert c.ask("FREQ:MODE?") == ("LIST" if model in KEYSIGHT else "SWE")
        assert c.ask("*OPC?") == "1"
        assert output(vb) == (2.0e9, -7.0)  # armed, waiting: the first point
        assert c.ask(f"{start};*OPC?") == "1"
        rest_hz = 2.0e9 if model in KEYSIGHT else 2.2e9
        assert output(vb) == (rest_hz, -7.0)
        assert vb.generator.pending_until_s() == 0.0
        # FREQ? answers the CW setting on the MXG/PSG, the sweep's frequency on the SMB.
        frequency = float(c.ask("FREQ?"))
        assert frequency == (2.3e9 if model in KEYSIGHT else rest_hz)
        assert c.errors() == []
        c.send("*RST")
        assert c.ask("FREQ:MODE?") == "CW"
        assert output(vb) == (1e9, -30.0)
        assert c.errors() == []


@pytest.mark.parametrize("model", [*KEYSIGHT, "rs_smb"])
def test_single_list_runs_frequency_and_power_pairs(model):
    with bench(model) as vb, RawClient(vb.resources["generator"]) as c:
        c.send(list_setup(model))
        points = c.ask("LIST:FREQ:POIN?;:LIST:POW:POIN?")
        assert points == "3;3"
        assert [float(v) for v in c.ask("LIST:FREQ?").split(",")] == list(LIST_HZ)
        assert output(vb) == (LIST_HZ[0], LIST_DBM[0])
        if model in KEYSIGHT:
            c.send("LIST:RETR OFF;:INIT")
        else:
            c.send("LIST:TRIG:EXEC")
        assert c.ask("*OPC?") == "1"
        assert output(vb) == (LIST_HZ[-1], LIST_DBM[-1])  # the last pair (no retrace)
        assert c.errors() == []


@pytest.mark.parametrize("model", [*KEYSIGHT, "rs_smb"])
def test_the_analyzer_sees_each_point_of_a_bus_stepped_sweep(model):
    """Each `*TRG` moves the sweep one point; the analyzer's trace has the drive line there."""
    stepped = ";:LIST:TRIG:SOUR BUS;:INIT" if model in KEYSIGHT else ";:SWE:FREQ:MODE STEP"
    with (
        bench(model) as vb,
        RawClient(vb.resources["generator"]) as g,
        RawClient(vb.resources["analyzer"]) as a,
    ):
        a.send("INIT:CONT OFF;:FREQ:STAR 1.9 GHZ;:FREQ:STOP 2.4 GHZ;:SWE:POIN 1001")
        axis_hz = np.linspace(1.9e9, 2.4e9, 1001)
        g.send("POW 0;:OUTP ON;:" + step_sweep_setup(model) + stepped)
        seen = []
        for _ in SWEEP_HZ:
            assert g.ask("*OPC?") == "1"
            reply = a.ask("INIT;*OPC?;:TRAC? TRACE1").split(";", 1)[1]
            trace = np.array([float(v) for v in reply.split(",")])
            seen.append(float(axis_hz[np.argmax(trace)]))
            g.send("*TRG")
        assert seen == pytest.approx(SWEEP_HZ)
        assert g.errors() == [] and a.errors() == []


def test_keysight_continuous_sweep_runs_on_the_clock_and_init_is_then_ignored():
    with bench("keysight_mxg") as vb, RawClient(vb.resources["generator"]) as c:
        c.send(step_sweep_setup("keysight_mxg") + ";:SWE:DWEL 1 ms;:INIT:CONT ON")
        assert c.ask("INIT:CONT?") == "1"
        frequencies = set()
        deadline = time.monotonic() + 5.0
        while len(frequencies) < 2 and time.monotonic() < deadline:
            frequencies.add(output(vb)[0])
        assert frequencies <= set(SWEEP_HZ) and len(frequencies) >= 2
        assert c.ask("*OPC?") == "1"  # a continuous sweep is not an operation to wait for
        assert refused(c, "INIT") == -213
        assert c.ask("INIT:CONT OFF;:ABOR;*OPC?") == "1"
        assert output(vb)[0] == SWEEP_HZ[0]
        assert c.errors() == []


def test_realtime_opc_waits_for_the_end_of_a_single_sweep():
    """In real time `*OPC?` after `INIT` answers once the sweep's dwells are over; the
    analyzer sweeping meanwhile sees one of the sweep's points as its drive."""
    with (
        bench("keysight_mxg", realtime=True) as vb,
        RawClient(vb.resources["generator"]) as g,
        RawClient(vb.resources["analyzer"]) as a,
    ):
        a.send("INIT:CONT OFF;:FREQ:STAR 1.9 GHZ;:FREQ:STOP 2.4 GHZ;:SWE:POIN 1001")
        axis_hz = np.linspace(1.9e9, 2.4e9, 1001)
        g.send("FREQ 2.3 GHZ;:POW 0;:OUTP ON;:LIST:RETR OFF;:" + step_sweep_setup("keysight_mxg"))
        g.send("SWE:DWEL 100 ms;:INIT")
        assert g.ask("*ESR?") == "0"  # INIT taken (and no error)
        reply = a.ask("INIT;*OPC?;:TRAC? TRACE1").split(";", 1)[1]
        trace = np.array([float(v) for v in reply.split(",")])
        assert float(axis_hz[np.argmax(trace)]) in SWEEP_HZ
        assert g.ask("*OPC?") == "1"
        assert vb.generator.pending_until_s() <= time.monotonic()
        assert output(vb)[0] == SWEEP_HZ[-1]
        assert g.errors() == []


@pytest.mark.parametrize(
    ("model", "command", "expected"),
    [
        ("keysight_mxg", "SWE:FREQ:EXEC", -113),  # the SMB's words
        ("keysight_mxg", "TRIG:FSW:SOUR SING", -113),
        ("keysight_mxg", "LIST:SEL '/var/user/a'", -113),
        ("keysight_mxg", "SWE:GEN ANAL", -221),  # no ramp sweep on the virtual source
        ("keysight_mxg", "*TRG", -211),  # nothing waits for a bus trigger
        ("keysight_psg", "FREQ:MODE PULSE", -224),
        ("keysight_psg", "FREQ:MODE SWE", -224),  # LIST selects the sweep (LIST:TYPE)
        ("keysight_mxg", "POW:MODE SWE", -224),
        ("rs_smb", "INIT", -113),  # the SMB has no INITiate system
        ("rs_smb", "TSW", -113),
        ("rs_smb", "LIST:TYPE LIST", -113),
        ("rs_smb", "SWE:FREQ:EXEC", -221),  # not in sweep mode
        ("rs_smb", "LIST:FREQ 2 GHZ", -221),  # no list selected
        ("rs_smb", "FREQ:MODE LIST", -221),  # ... nor one to run
        ("rs_smb", "LIST:TRIG:SOUR EAUT", -224),  # sweeps only
        ("rs_smb", "*TRG", -211),
        ("rs_sgs", "FREQ:MODE SWE", -224),  # the SGS100A has no sweep and no list
        ("rs_sgs", "FREQ:MODE LIST", -224),
        ("rs_sgs", "SWE:FREQ:EXEC", -113),
        ("rs_sgs", "LIST:SEL '/var/user/a'", -113),
        ("rs_sgs", "TRIG:FSW:SOUR SING", -113),
        ("rs_sgs", "*TRG", -113),
    ],
)
def test_commands_a_model_does_not_know_or_refuses(model, command, expected):
    with bench(model) as vb, RawClient(vb.resources["generator"]) as c:
        assert refused(c, command) == expected


def test_keysight_list_lengths_must_agree_and_a_conflict_keeps_the_output_cw():
    with bench("keysight_mxg") as vb, RawClient(vb.resources["generator"]) as c:
        c.send("FREQ 2.3 GHZ;:LIST:TYPE LIST;:LIST:FREQ 2 GHZ,2.1 GHZ,2.2 GHZ;:LIST:POW -5,0")
        c.send("POW:MODE LIST;:FREQ:MODE LIST")
        assert c.errors() == []
        assert output(vb)[0] == 2.3e9
        assert refused(c, "INIT") == -221
        c.send("LIST:POW -5")  # one value: used at every point
        assert c.ask("INIT;*OPC?") == "1"
        assert output(vb) == (2.0e9, -5.0)  # retraced to the first point
        assert c.errors() == []


def test_smb_sweep_range_step_and_points_are_coupled():
    with bench("rs_smb") as vb, RawClient(vb.resources["generator"]) as c:
        assert c.ask("FREQ:STAR?;:FREQ:STOP?;:FREQ:CENT?;:FREQ:SPAN?") == (
            "100000000;500000000;300000000;400000000"
        )
        assert c.ask("SWE:STEP?;:SWE:POIN?") == "1000000;401"
        c.send("FREQ:CENT 2.1 GHZ;:FREQ:SPAN 200 MHZ;:SWE:POIN 5")
        assert c.ask("FREQ:STAR?;:FREQ:STOP?;:SWE:STEP?") == "2000000000;2200000000;50000000"
        assert refused(c, "FREQ:SPAN 45 GHZ") == -222
        c.send("SWE:SPAC LOG;:SWE:STEP:LOG 5 PCT")
        assert c.ask("SWE:POIN?") == "2"  # 2.0 GHz * 1.05 > 2.1 GHz: start plus one step
        assert vb.generator.source_state().frequency_hz == 1e9  # CW until FREQ:MODE SWE
        assert c.errors() == []


def test_smb_level_sweep_runs_and_one_sweep_at_a_time():
    with bench("rs_smb") as vb, RawClient(vb.resources["generator"]) as c:
        c.send("FREQ 2.1 GHZ;:FREQ:MODE SWE;:POW:STAR -20;:POW:STOP -10;:SWE:POW:STEP 2.5")
        c.send("SWE:POW:DWEL 5 ms;:TRIG:PSW:SOUR SING;:POW:MODE SWE")
        assert c.ask("FREQ:MODE?;:POW:MODE?;:SWE:POW:POIN?") == "CW;SWE;5"
        assert output(vb) == (2.1e9, -20.0)
        assert c.ask("SWE:POW:EXEC;*OPC?") == "1"
        assert output(vb) == (2.1e9, -10.0)  # the last point (SWE:POW:RETR OFF)
        c.send("SWE:POW:MODE STEP;*TRG;*TRG")
        assert c.ask("*OPC?") == "1"
        assert output(vb) == (2.1e9, -15.0)
        assert c.ask("FREQ:MODE SWE;:POW:MODE?") == "CW"
        assert refused(c, "SWE:POW:EXEC") == -221
        assert c.errors() == []


def test_smb_sweep_with_more_points_than_it_runs_is_a_conflict_not_a_hang():
    """A step of 0.01 Hz over 200 MHz asks for 2e10 points: the count is answered, but the
    sweep is a settings conflict (the output stays at its CW setting), never built."""
    with bench("rs_smb") as vb, RawClient(vb.resources["generator"]) as c:
        c.send(step_sweep_setup("rs_smb"))
        c.send("FREQ 2.1 GHZ;:SWE:FREQ:STEP 0.01 HZ")
        assert c.ask("SWE:POIN?") == "20000000001"
        assert output(vb)[0] == 2.1e9  # CW until the conflict is resolved
        assert refused(c, "SWE:FREQ:EXEC") == -221
        c.send("SWE:FREQ:STEP 50 MHZ")
        assert c.ask("SWE:FREQ:EXEC;*OPC?") == "1"
        assert c.errors() == []
