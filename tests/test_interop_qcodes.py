"""QCoDeS's own drivers, unchanged, against the virtual bench over loopback sockets.

For every modelled instrument QCoDeS has a driver for (Keysight N5183B MXG,
Agilent E8257D PSG, R&S SGS100A, Keysight N9030B X-series): open it, set and
read back every parameter the model has, run a sweep where there is one, and
end with an empty error queue. Skipped when the `[interop]` extra is absent.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from labpgt.sim.grid import AnalyzerGrid
from labpgt.sim.params import RingParams
from labpgt.sim.ring import RingModel
from labpgt.sim.virtual import VirtualBench

qcodes = pytest.importorskip("qcodes")
from qcodes.instrument import Instrument  # noqa: E402
from qcodes.instrument_drivers.agilent import AgilentE8257D  # noqa: E402
from qcodes.instrument_drivers.Keysight import KeysightN5183B, KeysightN9030B  # noqa: E402
from qcodes.instrument_drivers.rohde_schwarz import RohdeSchwarzSGS100A  # noqa: E402

_names = itertools.count()


def quiet_ring() -> RingModel:
    return RingModel(RingParams(noise=False, drift=False), seed=0)


def open_qcodes(cls, resource: str, **kwargs):
    return cls(f"{cls.__name__}_{next(_names)}", resource, visalib="@py", terminator="\n", **kwargs)


@pytest.fixture(autouse=True)
def close_instruments():
    yield
    Instrument.close_all()


def assert_no_errors(instrument) -> None:
    assert instrument.ask("SYST:ERR:COUN?") == "0", instrument.ask("SYST:ERR:ALL?")
    assert instrument.ask("SYST:ERR?") in ('+0,"No error"', '0,"No error"')


def round_trip(instrument, values: dict) -> None:
    """Set each parameter, then read it back from the instrument (not from the cache)."""
    for name, value in values.items():
        parameter = instrument.parameters[name]
        parameter(value)
        got = parameter.get()
        if isinstance(value, float):
            assert got == pytest.approx(value), name
        elif isinstance(value, str):
            # SCPI character data: any case, and read back in its short form.
            assert got and value.upper().startswith(got.upper()), (name, got)
        else:
            assert got == value, name
    assert_no_errors(instrument)


def test_keysight_n5183b_mxg():
    with VirtualBench(quiet_ring(), generator_family="keysight_mxg") as vb:
        gen = open_qcodes(KeysightN5183B, vb.resources["generator"])
        assert gen.get_idn()["model"] == "N5183B"
        gen.frequency.validate(20e9)  # option 520 read from *OPT?
        with pytest.raises(ValueError):
            gen.frequency.validate(20.1e9)
        round_trip(
            gen,
            {
                "frequency": 2.1e9,
                "power": -10.0,
                "phase_offset": 0.25,
                "auto_freq_ref": False,
                "rf_output": True,
            },
        )
        state = vb.generator.source_state()
        assert (state.frequency_hz, state.power_dbm, state.rf_on) == (2.1e9, -10.0, True)
        gen.rf_output(False)
        # The driver's set is a plain write: wait for the instrument to have taken it
        # (as a script would before relying on it) before looking at the virtual state.
        assert gen.ask("*OPC?").strip() == "1"
        assert vb.generator.source_state().rf_on is False
        assert_no_errors(gen)


def test_agilent_e8257d_psg():
    with VirtualBench(quiet_ring(), generator_family="keysight_psg") as vb:
        gen = open_qcodes(AgilentE8257D, vb.resources["generator"])
        assert gen.get_idn()["model"] == "E8257D"
        # Ranges from DIAG:CPU:INFO:OPT:DET? (option 520 with the 1E1 attenuator).
        gen.power.validate(-135)
        with pytest.raises(ValueError):
            gen.frequency.validate(21e9)
        round_trip(
            gen,
            {"frequency": 2.2e9, "phase": 90.0, "power": -20.0, "output_enabled": True},
        )
        assert vb.generator.source_state().frequency_hz == 2.2e9
        gen.output_enabled(False)
        assert_no_errors(gen)


def test_rohde_schwarz_sgs100a_every_parameter():
    with VirtualBench(quiet_ring(), generator_family="rs_sgs") as vb:
        gen = open_qcodes(RohdeSchwarzSGS100A, vb.resources["generator"])
        assert gen.get_idn()["model"] == "SGS100A"
        round_trip(
            gen,
            {
                "frequency": 2.15e9,
                "phase": 30.0,
                "power": -5.0,
                "status": True,
                "IQ_state": False,
                "pulsemod_state": False,
                "pulsemod_source": "EXT",
                "ref_osc_source": "EXT",
                "LO_source": "EXT",
                "ref_LO_out": "LO",
                "ref_osc_output_freq": "100MHz",
                "ref_osc_external_freq": "1000MHz",
                "IQ_impairments": True,
                "I_offset": 1.5,
                "Q_offset": -2.0,
                "IQ_gain_imbalance": 0.5,
                "IQ_angle": -3.0,
                "trigger_connector_mode": "PVO",
                "pulsemod_delay": 1e-6,
                "pulsemod_double_delay": 2e-6,
                "pulsemod_double_width": 3e-7,
                "pulsemod_mode": "DOUB",
                "pulsemod_period": 1e-4,
                "pulsemod_polarity": "INV",
                "pulsemod_trig_ext_gate_polarity": "INV",
                "pulsemod_trig_ext_impedance": "G10K",
                "pulsemod_trig_ext_slope": "NEG",
                "pulsemod_trig_mode": "EGAT",
                "pulsemod_width": 5e-6,
                "operation_mode": "BBBYpass",
            },
        )
        every = set(gen.parameters) - {"IDN", "timeout"}
        assert every <= set(gen.snapshot(update=True)["parameters"])
        assert_no_errors(gen)  # the snapshot read every parameter without an error
        state = vb.generator.source_state()
        assert (state.frequency_hz, state.power_dbm, state.rf_on) == (2.15e9, -5.0, True)
        # The virtual source is a carrier: switching IQ on is refused, and says so.
        gen.write("IQ:STAT ON")
        assert gen.ask("SYST:ERR?").startswith("-221,")
        gen.status(False)
        assert_no_errors(gen)


def test_keysight_n9030b_swept_sa_trace_is_the_ring_spectrum():
    ring = quiet_ring()
    with VirtualBench(ring, analyzer_family="keysight_x") as vb:
        gen = open_qcodes(KeysightN5183B, vb.resources["generator"])
        gen.frequency(2.1e9)
        gen.power(-10.0)
        gen.rf_output(True)
        sa = open_qcodes(KeysightN9030B, vb.resources["analyzer"])
        assert sa.available_modes() == ("SA",)
        assert sa.available_meas() == ("SAN",)
        assert sa.options()[0] == "526"
        mode = sa.sa
        mode.setup_swept_sa_sweep(2.05e9, 2.25e9, 401)
        assert sa.mode() == "SA" and sa.measurement() == "SAN"
        round_trip(
            mode,
            {
                "mech_attenuation": 20,
                "preamp": "FULL",
                "preamp_enabled": True,
                "res_bw": 300e3,
                "video_bw": 100e3,
                "res_bw_type": "DB6",
                "detector": "POS",
                "average_type": "RMS",
                "auto_sweep_type_enabled": False,
                "sweep_type": "sweep",
                "sweep_time": 0.5,
                "auto_sweep_time_enabled": True,
                "center": 2.15e9,
                "span": 200e6,
                "npts": 401,
            },
        )
        assert mode.start() == pytest.approx(2.05e9) and mode.stop() == pytest.approx(2.25e9)
        mode.mech_attenuation(10)  # 20 dB lifted the analyzer's floor by 10 dB: *RST's 10
        sweeps = vb.analyzer.sweeps
        trace_dbm = mode.trace()  # READ:SAN1? (a new sweep), REAL,64 little-endian pairs
        assert vb.analyzer.sweeps == sweeps + 1
        frequency_hz = mode.freq_axis()
        np.testing.assert_allclose(frequency_hz, np.linspace(2.05e9, 2.25e9, 401))
        grid = AnalyzerGrid(center_hz=2.15e9, span_hz=200e6, rbw_hz=300e3, points=401)
        expected = ring.evaluate(2.1e9, -10.0, 0.0, grid)[0].numpy()
        np.testing.assert_allclose(trace_dbm, expected, atol=1e-6)
        # With auto_sweep off, FETCh reads the same sweep again without sweeping.
        sa.auto_sweep(False)
        np.testing.assert_array_equal(mode.trace(), trace_dbm)
        assert vb.analyzer.sweeps == sweeps + 1
        assert_no_errors(sa)
        gen.rf_output(False)
        assert_no_errors(gen)
