"""labpgt's own drivers against pyvisa-sim definitions (issue 14, "What to build" 3).

pyvisa-sim answers each ';'-part of a program message on its own line, so
`SET;:GET?;:SYST:ERR?` gets two replies instead of one joined reply. The drivers
probe this at connect (`*OPC?;*OPC?`) and then send one command per message;
every exchange below must work that way, and a command the definition does not
know must come back as the -113 it queues (never as a silent success).
`tests/pyvisa_sim_bench.yaml` defines a Keysight MXG and a Kepco BOP with the
commands the drivers send. Skipped without the `[interop]` extra.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from labpgt.instruments.bias_supply import BiasSupply
from labpgt.instruments.instrument_errors import InstrumentError
from labpgt.instruments.limits import Limits
from labpgt.instruments.signal_generator import SignalGenerator

pytest.importorskip("pyvisa_sim")

VISA_LIBRARY = f"{Path(__file__).with_name('pyvisa_sim_bench.yaml')}@sim"
LIMITS = Limits(bias_min_a=-2.0, bias_max_a=2.0, ramp_rate_a_per_s=100.0, ramp_step_a=0.05)


def test_generator_driver_runs_one_command_per_message():
    gen = SignalGenerator.open(
        "TCPIP0::192.0.2.10::inst0::INSTR",
        family="keysight_mxg",
        visa_library=VISA_LIBRARY,
        timeout_s=0.5,
    )
    try:
        assert gen.compound_messages is False  # probed: "1", then "1" on its own line
        assert gen.identify()["model"] == "N5183B"
        assert gen.set_cw(2.1e9, -10.0) == (2.1e9, -10.0)
        gen.rf_on = True
        assert gen.settings() == {"frequency_hz": 2.1e9, "power_dbm": -10.0, "rf_on": True}
        gen.frequency_hz = 2.2e9
        assert gen.query_value("SOUR:FREQ?") == 2.2e9
        gen.write("SOUR:AM:STAT OFF")  # not in the definition: -113, raised as typed
        with pytest.raises(InstrumentError, match="-113"):
            gen.check_errors("probe")
        gen.safe_off()
        assert gen.rf_on is False
        assert gen.drain_errors() == []
    finally:
        gen.close()


def test_supply_driver_ramps_and_switches_one_command_per_message():
    supply = BiasSupply.open(
        "ASRL1::INSTR", family="kepco_bop", visa_library=VISA_LIBRARY, timeout_s=0.5, limits=LIMITS
    )
    try:
        assert supply.compound_messages is False
        supply.output_on = True
        supply.current_a = 0.3  # six ramp steps of 0.05 A, each confirmed
        assert supply.steps_sent >= 6
        assert supply.query_value("CURR?") == pytest.approx(0.3)
        assert supply.settings()["compliance_v"] == 20.0
        supply.safe_off()
        assert supply.query_value("CURR?") == 0.0
        assert supply.output_on is False
        assert supply.drain_errors() == []
    finally:
        supply.close()
