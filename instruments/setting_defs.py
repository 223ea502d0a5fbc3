"""Every setting of the bench defined once: name, unit, limits, ramp and SCPI per family.

A `SettingDef` is what the rest of the code derives from:

* the drivers' controls (`scpi.Control(DRIVE_FREQUENCY)` is the generator's
  `frequency_hz`, with its SCPI for the instrument's family);
* the `[limits]` table of the bench file (`limits.Limits`: its fields, defaults,
  bounds and descriptions come from `limit_fields` below) and the range check
  every driver runs before a byte is sent;
* labpgt's setting rows (`labpgt.setting_bounds`: `row_name` "drive_hz" …, the
  unit, the default range and the resolution), the encoding bounds, the units
  stored with the data and the CLI's defaults.

Plain Python only: the lowest layer (drivers import it, never the other way round).
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field

ScpiPair = tuple[str, str | None]
"""(query, set template): the template holds one bare "{}" for the value; None = read-only."""


@dataclass(frozen=True)
class LimitField:
    """One field of the bench file's `[limits]` table."""

    name: str
    default: float
    description: str
    bounds: dict[str, float]
    """pydantic constraints on the field itself (gt/ge/le), e.g. {"gt": 0, "le": 1e12}."""


@dataclass(frozen=True)
class Ramp:
    """A setting that must move in steps while its output is live (the magnet is an inductor).

    `step` and `rate` are the `[limits]` fields holding the largest step and the
    fastest change per second, in the setting's unit.
    """

    step: LimitField
    rate: LimitField


@dataclass(frozen=True)
class SettingDef:
    """One setting: the driver property, its unit, limits, ramp and SCPI per family."""

    name: str
    """Driver property, unit in the name (frequency_hz, power_dbm, current_a …)."""
    unit: str
    doc: str
    scpi: ScpiPair
    """The SCPI every family speaks unless `family_scpi` says otherwise."""
    kind: type = float
    family_scpi: dict[str, ScpiPair] = field(default_factory=dict)
    low: LimitField | float | None = None
    """Lowest allowed value: a `[limits]` field, a fixed number, or None (no check)."""
    high: LimitField | None = None
    ramp: Ramp | None = None
    row_name: str | None = None
    """Its column in labpgt's setting rows (drive_hz, drive_dbm, bias_a), if it is one."""
    resolution: float | None = None
    """Smallest step the instrument resolves, in `unit` (two rows closer are one setting)."""
    default: float | None = None
    """The value a setting row takes when nothing else says."""
    choices: tuple[str, ...] = ()
    """The words a `kind=str` setting may be set to (upper case)."""

    def __post_init__(self) -> None:
        for query, template in (self.scpi, *self.family_scpi.values()):
            _check_commands(query, template)

    def commands(self, family: str) -> ScpiPair:
        """(query, set template) for an instrument of `family`."""
        return self.family_scpi.get(family, self.scpi)

    @property
    def limited(self) -> bool:
        return self.high is not None


def _check_commands(query: str, template: str | None) -> None:
    # Settings messages are one template per combination of controls, filled in order:
    # each set command must hold exactly one bare "{}" and a query none, or a value could
    # land in another command's place.
    if "{" in query or "}" in query:
        raise ValueError(f"query command {query!r} must not contain braces")
    if template is not None:
        fields = [
            (name, spec, conversion)
            for _, name, spec, conversion in string.Formatter().parse(template)
            if name is not None
        ]
        if fields != [("", "", None)]:
            raise ValueError(f"set command {template!r} must contain exactly one bare '{{}}'")


def _limit(name: str, default: float, description: str, **bounds: float) -> LimitField:
    return LimitField(name, default, description, bounds)


# -- the three settings a setting row holds --------------------------------------------------

_BIAS_RANGE = {"ge": -100, "le": 100}
BIAS_CURRENT = SettingDef(
    "current_a",
    "A",
    "Current setpoint; setting it ramps at <= the bench's ramp rate",
    ("CURR?", "CURR {}"),
    low=_limit("bias_min_a", 0.0, "Lowest bias current, A.", **_BIAS_RANGE),
    high=_limit("bias_max_a", 2.5, "Highest bias current, A.", **_BIAS_RANGE),
    ramp=Ramp(
        step=_limit(
            "ramp_step_a", 0.05, "Largest single bias step while ramping, A.", gt=0, le=100
        ),
        rate=_limit(
            "ramp_rate_a_per_s",
            2.0,
            "Fastest bias change, A/s (the magnet is an inductor).",
            gt=0,
            le=1000,
        ),
    ),
    row_name="bias_a",
    resolution=1e-4,
    default=1.8,
)
COMPLIANCE = SettingDef(
    "compliance_v",
    "V",
    "Voltage limit (compliance)",
    ("VOLT?", "VOLT {}"),
    low=0.0,
    high=_limit("compliance_v", 20.0, "Supply voltage limit (compliance), V.", gt=0, le=1000),
)
_POWER_RANGE = {"ge": -200, "le": 50}
DRIVE_POWER = SettingDef(
    "power_dbm",
    "dBm",
    "CW output power",
    ("SOUR:POW?", "SOUR:POW {}"),
    low=_limit("power_min_dbm", -40.0, "Lowest drive power, dBm.", **_POWER_RANGE),
    high=_limit(
        "power_max_dbm",
        0.0,
        "Drive power ceiling (protects amplifier and YIG), dBm.",
        **_POWER_RANGE,
    ),
    row_name="drive_dbm",
    resolution=0.01,
    default=-10.0,
)
_FREQUENCY_RANGE = {"gt": 0, "le": 1e12}
DRIVE_FREQUENCY = SettingDef(
    "frequency_hz",
    "Hz",
    "CW output frequency",
    ("SOUR:FREQ?", "SOUR:FREQ {}"),
    low=_limit("frequency_min_hz", 2.0e9, "Lowest drive frequency, Hz.", **_FREQUENCY_RANGE),
    high=_limit("frequency_max_hz", 2.3e9, "Highest drive frequency, Hz.", **_FREQUENCY_RANGE),
    row_name="drive_hz",
    resolution=1.0,
    default=2.1e9,
)

# -- outputs and read-only values --------------------------------------------------------------

RF_ON = SettingDef("rf_on", "", "RF output enabled", ("OUTP:STAT?", "OUTP:STAT {}"), kind=bool)
OUTPUT_ON = SettingDef(
    "output_on",
    "",
    "Output enabled (switched at 0 A; the current is ramped back after)",
    ("OUTP?", "OUTP {}"),
    kind=bool,
)
VOLTAGE_RANGE = SettingDef(
    "voltage_range",
    "",
    "Output range of a two-range supply (set LOW or HIGH; read back as the range's name, "
    "e.g. P8V or P20V)",
    ("VOLT:RANG?", "VOLT:RANG {}"),
    kind=str,
    choices=("LOW", "HIGH"),
)
MEASURED_CURRENT = SettingDef(
    "measured_current_a", "A", "Measured output current", ("MEAS:CURR?", None)
)
MEASURED_VOLTAGE = SettingDef(
    "measured_voltage_v", "V", "Measured output voltage", ("MEAS:VOLT?", None)
)

# -- the analyzer's sweep ------------------------------------------------------------------------

CENTER = SettingDef("center_hz", "Hz", "Sweep centre frequency", ("FREQ:CENT?", "FREQ:CENT {}"))
SPAN = SettingDef("span_hz", "Hz", "Sweep span", ("FREQ:SPAN?", "FREQ:SPAN {}"))
RBW = SettingDef(
    "rbw_hz",
    "Hz",
    "Resolution bandwidth",
    ("BAND?", "BAND {}"),
    family_scpi={"rs_fsx": ("BAND:RES?", "BAND:RES {}")},
)
VBW = SettingDef("vbw_hz", "Hz", "Video bandwidth", ("BAND:VID?", "BAND:VID {}"))
POINTS = SettingDef("points", "", "Trace points", ("SWE:POIN?", "SWE:POIN {}"), kind=int)
CONTINUOUS = SettingDef(
    "continuous", "", "Continuous sweeping", ("INIT:CONT?", "INIT:CONT {}"), kind=bool
)
SWEEP_TIME = SettingDef("sweep_time_s", "s", "Sweep time (set by span/RBW)", ("SWE:TIME?", None))

ROW_SETTINGS: tuple[SettingDef, ...] = (DRIVE_FREQUENCY, DRIVE_POWER, BIAS_CURRENT)
"""The settings of one setting row, in column order: drive_hz, drive_dbm, bias_a."""

LIMITED_SETTINGS: tuple[SettingDef, ...] = (BIAS_CURRENT, COMPLIANCE, DRIVE_POWER, DRIVE_FREQUENCY)
"""The settings with bench limits, in the order the `[limits]` table lists them."""


def limit_fields() -> list[LimitField]:
    """Every `[limits]` field, in table order (each setting's low, high, then its ramp)."""
    fields: list[LimitField] = []
    for setting in LIMITED_SETTINGS:
        for part in (setting.low, setting.high):
            if isinstance(part, LimitField):
                fields.append(part)
        if setting.ramp is not None:
            fields.extend((setting.ramp.rate, setting.ramp.step))
    return fields
