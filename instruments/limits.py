"""Hard limits from the bench file, enforced by the drivers before any byte is sent."""

from __future__ import annotations

import math

from labpgt.instruments.instrument_errors import LimitError
from pydantic import BaseModel, ConfigDict, Field, model_validator


class Limits(BaseModel):
    """The bench's hard limits (the `[limits]` table of the bench file)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bias_min_a: float = Field(0.0, ge=-100, le=100, description="Lowest bias current, A.")
    bias_max_a: float = Field(2.5, ge=-100, le=100, description="Highest bias current, A.")
    ramp_rate_a_per_s: float = Field(
        2.0, gt=0, le=1000, description="Fastest bias change, A/s (the magnet is an inductor)."
    )
    ramp_step_a: float = Field(
        0.05, gt=0, le=100, description="Largest single bias step while ramping, A."
    )
    compliance_v: float = Field(
        20.0, gt=0, le=1000, description="Supply voltage limit (compliance), V."
    )
    power_min_dbm: float = Field(-40.0, ge=-200, le=50, description="Lowest drive power, dBm.")
    power_max_dbm: float = Field(
        0.0, ge=-200, le=50, description="Drive power ceiling (protects amplifier and YIG), dBm."
    )
    frequency_min_hz: float = Field(2.0e9, gt=0, le=1e12, description="Lowest drive frequency, Hz.")
    frequency_max_hz: float = Field(
        2.3e9, gt=0, le=1e12, description="Highest drive frequency, Hz."
    )

    @model_validator(mode="after")
    def _ordered(self) -> Limits:
        for low, high in (
            ("bias_min_a", "bias_max_a"),
            ("power_min_dbm", "power_max_dbm"),
            ("frequency_min_hz", "frequency_max_hz"),
        ):
            if getattr(self, low) > getattr(self, high):
                raise ValueError(f"{low} ({getattr(self, low)}) must be <= {high}")
        return self

    def check_frequency(self, instrument: str, frequency_hz: float) -> None:
        check_range(
            instrument,
            "frequency_hz",
            frequency_hz,
            self.frequency_min_hz,
            self.frequency_max_hz,
            "Hz",
        )

    def check_power(self, instrument: str, power_dbm: float) -> None:
        check_range(
            instrument, "power_dbm", power_dbm, self.power_min_dbm, self.power_max_dbm, "dBm"
        )

    def check_current(self, instrument: str, current_a: float) -> None:
        check_range(instrument, "current_a", current_a, self.bias_min_a, self.bias_max_a, "A")

    def check_compliance(self, instrument: str, compliance_v: float) -> None:
        check_range(instrument, "compliance_v", compliance_v, 0.0, self.compliance_v, "V")


def check_range(
    instrument: str, quantity: str, value: float, low: float, high: float, unit: str
) -> None:
    """Raise `LimitError` unless low <= value <= high (NaN is always refused)."""
    if not (isinstance(value, int | float) and math.isfinite(value) and low <= value <= high):
        raise LimitError(instrument, quantity, float(value), low, high, unit)


def ramp_points(start_a: float, target_a: float, step_a: float) -> list[float]:
    """Intermediate and final setpoints from start to target, no step larger than step_a."""
    distance = target_a - start_a
    n_steps = max(1, math.ceil(abs(distance) / step_a - 1e-9))
    if distance == 0:
        return []
    return [start_a + distance * (i / n_steps) for i in range(1, n_steps + 1)]
