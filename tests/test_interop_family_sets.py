"""Both family sets driven end to end by third-party drivers only (issue 14, "Targets").

Keysight set: PyMeasure `Agilent8257D` (or QCoDeS `AgilentE8257D`) drives the line,
PyMeasure `KepcoBOP3612` sets the bias, QCoDeS `KeysightN9030B` sweeps and reads the
trace. R&S set: QCoDeS `RohdeSchwarzSGS100A` drives the line and PyMeasure's R&S
FS-series driver (`FSL`) sweeps the FSV and reads the trace; the E3633A's bias is
set over raw SCPI (no third-party driver exists for it). Each trace must be the
ring's spectrum at what the drivers set, and every error queue must be empty.
Skipped without `[interop]`.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from labpgt.sim.grid import AnalyzerGrid
from labpgt.sim.params import RingParams
from labpgt.sim.raw_client import RawClient
from labpgt.sim.ring import RingModel
from labpgt.sim.virtual import VirtualBench

pytest.importorskip("pymeasure")
pytest.importorskip("qcodes")
from pymeasure.instruments.agilent import Agilent8257D  # noqa: E402
from pymeasure.instruments.kepco import KepcoBOP3612  # noqa: E402
from pymeasure.instruments.rohdeschwarz import FSL  # noqa: E402
from qcodes.instrument import Instrument  # noqa: E402
from qcodes.instrument_drivers.Keysight import KeysightN9030B  # noqa: E402
from qcodes.instrument_drivers.rohde_schwarz import RohdeSchwarzSGS100A  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:It is not known whether this device:FutureWarning")
_names = itertools.count()
TERMINATION = {"read_termination": "\n", "write_termination": "\n"}


@pytest.fixture(autouse=True)
def close_instruments():
    yield
    Instrument.close_all()


def quiet_ring() -> RingModel:
    return RingModel(RingParams(noise=False, drift=False), seed=0)


def qcodes_open(cls, resource: str):
    return cls(f"{cls.__name__}_{next(_names)}", resource, visalib="@py", terminator="\n")


def test_keysight_set_psg_kepco_and_x_series():
    ring = quiet_ring()
    with VirtualBench(
        ring,
        generator_family="keysight_psg",
        analyzer_family="keysight_x",
        supply_family="kepco_bop",
    ) as vb:
        gen = Agilent8257D(vb.resources["generator"], visa_library="@py", **TERMINATION)
        bop = KepcoBOP3612(vb.resources["supply"], visa_library="@py")
        try:
            gen.frequency, gen.power = 2.1e9, -10.0
            gen.enable()
            bop.operating_mode = "CURR"
            bop.voltage_setpoint = 20.0
            bop.current_setpoint = 1.2
            bop.output_enabled = True
            assert gen.ask("*OPC?").strip() == "1" and bop.ask("*OPC?").strip() == "1"
            sa = qcodes_open(KeysightN9030B, vb.resources["analyzer"])
            mode = sa.sa
            mode.setup_swept_sa_sweep(2.05e9, 2.25e9, 401)
            mode.res_bw(300e3)
            trace_dbm = mode.trace()  # a new sweep, then the trace
            grid = AnalyzerGrid(center_hz=2.15e9, span_hz=200e6, rbw_hz=300e3, points=401)
            expected = ring.evaluate(2.1e9, -10.0, 1.2, grid)[0].numpy()
            np.testing.assert_allclose(trace_dbm, expected, atol=1e-6)
            assert expected.max() > -60.0  # a real line, not the floor
            bop.current_setpoint = 0.0
            bop.output_enabled = False
            gen.disable()
            for ask in (gen.ask, bop.ask, sa.ask):
                assert ask("SYST:ERR:COUN?").strip() == "0"
        finally:
            gen.adapter.close()
            bop.adapter.close()


def test_rs_set_sgs_fsv_and_e3633a():
    ring = quiet_ring()
    with VirtualBench(
        ring, generator_family="rs_sgs", analyzer_family="rs_fsx", supply_family="keysight_e36xx"
    ) as vb:
        gen = qcodes_open(RohdeSchwarzSGS100A, vb.resources["generator"])
        gen.frequency(2.1e9)
        gen.power(-10.0)
        gen.status(True)
        # QCoDeS sets are writes: one query makes sure the source took them before the
        # analyzer (another connection, another server thread) sweeps.
        assert gen.ask("*OPC?") == "1"
        with RawClient(vb.resources["supply"]) as supply:
            # From the E3633A's *RST state (low range, 20 A): high range, 20 V, 0.8 A, on.
            assert supply.ask("VOLT:RANG HIGH;:APPL 20,0.8;:OUTP ON;*OPC?") == "1"
            sa = FSL(vb.resources["analyzer"], visa_library="@py", **TERMINATION)
            try:
                sa.continuous_sweep_enabled = False
                sa.freq_center, sa.freq_span = 2.15e9, 200e6
                sa.res_bandwidth = 300e3
                sa.single_sweep()
                _, power_dbm = sa.read_trace()
                grid = AnalyzerGrid(center_hz=2.15e9, span_hz=200e6, rbw_hz=300e3, points=1001)
                expected = ring.evaluate(2.1e9, -10.0, 0.8, grid)[0].numpy()
                np.testing.assert_allclose(power_dbm, expected, atol=1e-4)
                assert expected.max() > -60.0
                assert sa.ask("SYST:ERR:COUN?").strip() == "0"
            finally:
                sa.adapter.close()
            supply.send("OUTP OFF")
            assert supply.errors() == []
        gen.status(False)
        assert gen.ask("SYST:ERR:COUN?") == "0"


def test_keysight_set_with_qcodes_psg_driver():
    """The same Keysight set with QCoDeS's E8257D driver on the generator."""
    from qcodes.instrument_drivers.agilent import AgilentE8257D

    ring = quiet_ring()
    with VirtualBench(ring, generator_family="keysight_psg", analyzer_family="keysight_x") as vb:
        gen = qcodes_open(AgilentE8257D, vb.resources["generator"])
        gen.frequency(2.1e9)
        gen.power(-10.0)
        gen.output_enabled(True)
        assert gen.ask("*OPC?") == "1"
        sa = qcodes_open(KeysightN9030B, vb.resources["analyzer"])
        mode = sa.sa
        mode.setup_swept_sa_sweep(2.05e9, 2.25e9, 401)
        mode.res_bw(300e3)
        trace_dbm = mode.trace()
        grid = AnalyzerGrid(center_hz=2.15e9, span_hz=200e6, rbw_hz=300e3, points=401)
        expected = ring.evaluate(2.1e9, -10.0, 0.0, grid)[0].numpy()
        np.testing.assert_allclose(trace_dbm, expected, atol=1e-6)
        gen.output_enabled(False)
        assert gen.ask("SYST:ERR:COUN?") == "0" and sa.ask("SYST:ERR:COUN?") == "0"
