"""One definition per setting: the bench limits, the setting rows and the drivers derive from it."""

from __future__ import annotations

import pytest
from labpgt.instruments.bench_file import BenchConfigError, validate_bench
from labpgt.instruments.bias_supply import KepcoBOP
from labpgt.instruments.instrument_errors import LimitError
from labpgt.instruments.limits import Limits
from labpgt.instruments.replay import ReplayTransport
from labpgt.instruments.setting_defs import (
    BIAS_CURRENT,
    DRIVE_FREQUENCY,
    LIMITED_SETTINGS,
    RBW,
    ROW_SETTINGS,
    limit_fields,
)
from labpgt.instruments.signal_generator import KeysightMXG
from labpgt.instruments.spectrum_analyzer import KeysightX, RohdeSchwarzFSx, SpectrumAnalyzer

from labpgt.setting_bounds import SETTING_NAMES, SETTING_UNITS, SettingBounds


def test_the_limits_table_is_made_of_the_definitions_fields():
    fields = limit_fields()
    assert list(Limits.model_fields) == [f.name for f in fields]
    limits = Limits()
    for field in fields:
        assert getattr(limits, field.name) == field.default
        assert Limits.model_fields[field.name].description == field.description
    for setting in LIMITED_SETTINGS:
        assert limits.range_of(setting)[1] == setting.high.default


def test_a_definitions_bounds_on_its_limit_fields_reach_the_bench_file():
    # DRIVE_FREQUENCY's limit fields must be > 0: the bench file refuses 0 Hz, naming the field.
    resources = {"resource": "TCPIP::127.0.0.1::1::SOCKET"}
    data = {role: resources for role in ("generator", "analyzer", "supply")}
    with pytest.raises(BenchConfigError, match="limits.frequency_min_hz: must be > 0"):
        validate_bench({**data, "limits": {"frequency_min_hz": 0.0}})


def test_setting_rows_take_names_units_ranges_and_resolution_from_the_definitions():
    assert SETTING_NAMES == ("drive_hz", "drive_dbm", "bias_a")
    assert SETTING_UNITS == {"drive_hz": "Hz", "drive_dbm": "dBm", "bias_a": "A"}
    bounds = SettingBounds()
    assert bounds == SettingBounds.from_limits(Limits())
    assert bounds.resolution == tuple(s.resolution for s in ROW_SETTINGS)
    narrow = SettingBounds.from_limits(Limits(frequency_max_hz=2.2e9, bias_min_a=-1.0))
    assert narrow.drive_hz == (2.0e9, 2.2e9) and narrow.bias_a == (-1.0, 2.5)


def test_bounds_wider_than_the_bench_limits_are_refused_naming_the_setting():
    limits = SettingBounds.from_limits(Limits())
    wide = SettingBounds(drive_hz=(1.9e9, 2.3e9))
    with pytest.raises(Exception, match=r"bounds drive_hz \[1\.9e\+09, 2\.3e\+09\] exceed"):
        wide.check_within(limits, "the bench file's limits")


def test_the_drivers_controls_speak_the_definitions_scpi_per_family():
    assert KeysightMXG.frequency_hz.setting is DRIVE_FREQUENCY
    assert (KeysightMXG.frequency_hz.get_command, KeysightMXG.frequency_hz.set_command) == (
        DRIVE_FREQUENCY.scpi
    )
    assert SpectrumAnalyzer.rbw_hz.get_command == KeysightX.rbw_hz.get_command == "BAND?"
    assert RohdeSchwarzFSx.rbw_hz.setting is RBW
    assert RohdeSchwarzFSx.rbw_hz.set_text(300e3) == "BAND:RES 300000"
    assert KepcoBOP.current_a.setting.ramp is BIAS_CURRENT.ramp


def test_a_value_outside_the_definitions_limits_is_refused_before_any_byte():
    generator = KeysightMXG(ReplayTransport([]), limits=Limits(frequency_max_hz=2.2e9))
    generator.conn.open()
    with pytest.raises(LimitError, match=r"frequency_hz=2\.25e\+09 Hz refused.*2\.2e\+09\] Hz"):
        generator.frequency_hz = 2.25e9
    with pytest.raises(LimitError):
        generator.set_controls(frequency_hz=2.1e9, power_dbm=5.0)  # power above its 0 dBm
