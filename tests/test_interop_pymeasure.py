"""PyMeasure's own drivers, unchanged, against the virtual bench over loopback sockets.

PyMeasure 0.16 has drivers for two of the modelled instruments: the Agilent
E8257D PSG (`Agilent8257D`) and the Kepco BOP (`KepcoBOP3612`). Each is opened,
every property the model has is set and read back from the instrument, and the
error queue must be empty at the end. Skipped when the `[interop]` extra is absent.
"""

from __future__ import annotations

import pytest
from labpgt.sim.params import RingParams
from labpgt.sim.ring import RingModel
from labpgt.sim.virtual import VirtualBench

pymeasure = pytest.importorskip("pymeasure")
from pymeasure.instruments.agilent import Agilent8257D  # noqa: E402
from pymeasure.instruments.kepco import KepcoBOP3612  # noqa: E402

# Agilent8257D does not say whether it speaks SCPI; PyMeasure warns about that at open.
pytestmark = pytest.mark.filterwarnings("ignore:It is not known whether this device:FutureWarning")


def quiet_ring() -> RingModel:
    return RingModel(RingParams(noise=False, drift=False), seed=0)


def open_pymeasure(cls, resource: str, **kwargs):
    return cls(resource, visa_library="@py", **kwargs)


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
    with VirtualBench(quiet_ring(), generator_family="keysight_psg") as vb:
        gen = open_pymeasure(
            Agilent8257D, vb.resources["generator"], read_termination="\n", write_termination="\n"
        )
        try:
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
        finally:
            gen.adapter.close()


def test_kepco_bop_every_property_and_the_ring_sees_the_current():
    with VirtualBench(quiet_ring(), supply_family="kepco_bop") as vb:
        bop = open_pymeasure(KepcoBOP3612, vb.resources["supply"])
        try:
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
        finally:
            bop.adapter.close()
