"""PyMeasure's own drivers, unchanged, against the virtual bench over loopback sockets.

PyMeasure 0.16 has drivers for three of the modelled instruments: the Agilent
E8257D PSG (`Agilent8257D`), the Kepco BOP (`KepcoBOP3612`) and, through its
R&S FS-series driver (`FSL`, "FS Series of spectrum analyzers like FSL and FSW"),
the FSV. Each is opened, every property the model has is set and read back from
the instrument, and the error queue must be empty at the end. Skipped when the
`[interop]` extra is absent.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest
from labpgt.sim.grid import AnalyzerGrid
from labpgt.sim.params import RingParams
from labpgt.sim.raw_client import RawClient
from labpgt.sim.ring import RingModel
from labpgt.sim.virtual import VirtualBench

pymeasure = pytest.importorskip("pymeasure")
from pymeasure.instruments.agilent import Agilent8257D  # noqa: E402
from pymeasure.instruments.kepco import KepcoBOP3612  # noqa: E402
from pymeasure.instruments.rohdeschwarz import FSL  # noqa: E402

# Agilent8257D does not say whether it speaks SCPI; PyMeasure warns about that at open.
pytestmark = pytest.mark.filterwarnings("ignore:It is not known whether this device:FutureWarning")


def quiet_ring() -> RingModel:
    return RingModel(RingParams(noise=False, drift=False), seed=0)


@contextmanager
def pymeasure_driver(cls, resource: str, **kwargs):
    """PyMeasure's driver `cls` on `resource` through pyvisa-py; its adapter closed after."""
    instrument = cls(resource, visa_library="@py", **kwargs)
    try:
        yield instrument
    finally:
        instrument.adapter.close()


NEWLINE = {"read_termination": "\n", "write_termination": "\n"}
"""The drivers that set no termination of their own are told the bench's."""


def round_trip(instrument, values: dict) -> None:
    """Set each property, then read it back from the instrument."""
    for name, value in values.items():
        setattr(instrument, name, value)
        got = getattr(instrument, name)
        if isinstance(value, float):
            assert got == pytest.approx(value), name
        else:
            assert got == value, name


def assert_no_errors(instrument) -> None:
    assert instrument.ask("SYST:ERR:COUN?").strip() == "0", instrument.ask("SYST:ERR:ALL?")
    assert instrument.check_errors() == []


def test_agilent_8257d_psg_every_modelled_property():
    with (
        VirtualBench(quiet_ring(), generator_family="keysight_psg") as vb,
        pymeasure_driver(Agilent8257D, vb.resources["generator"], **NEWLINE) as gen,
    ):
        assert "E8257D" in gen.id
        round_trip(
            gen,
            {
                "power": -12.0,
                "frequency": 2.1e9,
                "start_frequency": 2.0e9,
                "center_frequency": 2.1e9,
                "stop_frequency": 2.2e9,
                "start_power": -20.0,
                "stop_power": -10.0,
                "dwell_time": 0.005,
                "step_points": 201,
                "amplitude_depth": 30.0,
                "amplitude_source": "external 2",
                "pulse_source": "scalar",
                "pulse_input": "free-run",
                "pulse_frequency": 1e3,
                "low_freq_out_amplitude": 1.5,
                "low_freq_out_source": "function",
                "internal_frequency": 2e3,
                "internal_shape": "triangle",
            },
        )
        assert gen.is_enabled is False
        gen.enable()
        assert gen.is_enabled is True
        assert vb.generator.source_state().rf_on is True
        gen.disable_modulation()
        gen.disable_amplitude_modulation()
        gen.disable_pulse_modulation()
        assert gen.has_modulation is False
        assert gen.has_amplitude_modulation is False
        assert gen.has_pulse_modulation is False
        gen.config_low_freq_out("internal", 2.0)
        gen.disable_low_freq_out()
        state = vb.generator.source_state()
        assert (state.frequency_hz, state.power_dbm) == (2.1e9, -12.0)
        gen.disable()
        assert gen.is_enabled is False  # the reply also says the OFF was taken
        assert vb.generator.source_state().rf_on is False
        assert_no_errors(gen)
        # A modulation the virtual carrier cannot apply is refused, with its error.
        gen.enable_amplitude_modulation()
        assert gen.check_errors()[0][0] == -221
        assert gen.has_amplitude_modulation is False


def test_agilent_8257d_step_sweep_through_the_driver():
    """The driver's sweep properties and methods: `config_step_sweep`, the retrace switches
    (LIST:RETR) and `single_sweep` (TSW). `config_step_sweep` sends `FREQ:MODE SWE`, which
    the PSG does not have (LIST selects its step sweep): -224, as the real one answers; its
    other two commands (SWE:GEN STEP, SWE:MODE AUTO) are taken. Not in real time a single
    sweep is over at once."""
    with (
        VirtualBench(quiet_ring(), generator_family="keysight_psg") as vb,
        pymeasure_driver(Agilent8257D, vb.resources["generator"], **NEWLINE) as gen,
    ):
        round_trip(
            gen,
            {
                "start_frequency": 2.0e9,
                "stop_frequency": 2.2e9,
                "step_points": 5,
                "dwell_time": 0.01,
                "power": -7.0,
                "frequency": 2.3e9,
            },
        )
        gen.config_step_sweep()
        assert [entry[0] for entry in gen.check_errors()] == [-224]
        gen.write(":SOUR:FREQ:MODE LIST")  # the PSG's word for it
        gen.disable_retrace()
        gen.single_sweep()
        assert gen.ask("*OPC?").strip() == "1"
        state = vb.generator.source_state()
        assert (state.frequency_hz, state.power_dbm) == (2.2e9, -7.0)  # stays at the last point
        gen.enable_retrace()
        gen.single_sweep()
        assert gen.ask("*OPC?").strip() == "1"
        assert vb.generator.source_state().frequency_hz == 2.0e9  # back to the first point
        assert gen.frequency == pytest.approx(2.3e9)  # FREQ? answers the CW setting
        assert_no_errors(gen)


def test_kepco_bop_every_property_and_the_ring_sees_the_current():
    with (
        VirtualBench(quiet_ring(), supply_family="kepco_bop") as vb,
        pymeasure_driver(KepcoBOP3612, vb.resources["supply"]) as bop,
    ):
        assert bop.id.startswith("KEPCO,BOP")
        assert bop.operating_mode == "VOLT"  # the BOP's power-on mode, read as 0
        round_trip(
            bop,
            {
                "operating_mode": "CURR",
                "voltage_setpoint": 20.0,
                "current_setpoint": -1.25,
                "output_enabled": True,
            },
        )
        assert bop.current == pytest.approx(-1.25)  # MEASure:CURRent? into 4 Ohm
        assert bop.voltage == pytest.approx(-5.0)
        assert vb.supply.applied_current_a() == pytest.approx(-1.25)
        assert int(bop.confidence_test) == 0
        bop.beep()
        bop.wait_to_continue()
        bop.current_setpoint = 0.0
        bop.output_enabled = False
        assert bop.current == 0.0
        assert vb.supply.applied_current_a() == 0.0
        assert_no_errors(bop)


def test_rs_fs_series_driver_on_the_fsv_every_property_markers_and_trace():
    ring = quiet_ring()
    with VirtualBench(ring, generator_family="rs_smb", analyzer_family="rs_fsx") as vb:
        with RawClient(vb.resources["generator"]) as gen:
            assert gen.ask("FREQ 2.1 GHz;:POW -10;:OUTP ON;*OPC?") == "1"
        with pymeasure_driver(FSL, vb.resources["analyzer"], **NEWLINE) as sa:
            assert "FSV" in sa.id
            round_trip(
                sa,
                {
                    "freq_center": 2.15e9,
                    "freq_span": 200e6,
                    "freq_start": 2.05e9,
                    "freq_stop": 2.25e9,
                    "attenuation": 20.0,
                    "res_bandwidth": 300e3,
                    "video_bandwidth": 100e3,
                    "sweep_time": 0.05,
                    "continuous_sweep_enabled": False,
                    "trace_mode": "MAXH",
                },
            )
            sa.trace_mode = "WRIT"
            # 20 dB of attenuation lifted the analyzer's floor by 10 dB: back to *RST's 10.
            sa.attenuation = 10
            sa.video_bandwidth = "AUTO"  # BAND:VID:AUTO ON: VBW follows RBW again
            assert sa.video_bandwidth == pytest.approx(300e3)
            sa.sweep_time = "AUTO"
            assert sa.sweep_time == pytest.approx(2.5 * 200e6 / 300e3**2)
            sweeps = vb.analyzer.sweeps
            sa.single_sweep()  # INIT; *WAI
            sa.continue_single_sweep()  # INIT:CONM; *WAI
            assert sa.ask("*OPC?").strip() == "1"  # the writes above were taken
            assert vb.analyzer.sweeps == sweeps + 2
            frequency_hz, power_dbm = sa.read_trace()  # TRAC1? TRACE1, ASCII
            grid = AnalyzerGrid(center_hz=2.15e9, span_hz=200e6, rbw_hz=300e3, points=1001)
            np.testing.assert_allclose(frequency_hz, grid.frequencies_hz().numpy())
            expected = ring.evaluate(2.1e9, -10.0, 0.0, grid)[0].numpy()
            np.testing.assert_allclose(power_dbm, expected, atol=1e-4)
            peak = int(np.argmax(expected))
            marker = sa.create_marker(2)  # CALC:MARK2:STAT ON
            marker.to_trace(1)
            marker.peak_excursion = 3.0
            assert marker.peak_excursion == pytest.approx(3.0)
            marker.to_peak()
            assert marker.x == pytest.approx(grid.frequencies_hz()[peak].item())
            assert marker.y == pytest.approx(float(expected[peak]), abs=1e-4)
            marker.to_next_peak("right")
            marker.to_next_peak("left")
            marker.zoom(2)
            marker.x = 2.2e9
            assert marker.x == pytest.approx(2.2e9, abs=grid.span_hz / (grid.points - 1))
            delta = sa.create_marker(2, is_delta_marker=True)  # CALC:DELT2:STAT ON
            delta.to_peak()
            # The delta level is read against marker 1 (switched on with the delta marker).
            reference = float(expected[grid.points // 2])
            assert delta.y == pytest.approx(float(expected[peak]) - reference, abs=1e-4)
            delta.disable()
            marker.disable()
            assert_no_errors(sa)
