"""Hard limits from the bench file, enforced by the drivers before any byte is sent.

The `[limits]` table's fields (names, defaults, bounds, descriptions) come from the
setting definitions (`setting_defs`): a setting's limits are declared once, there.
"""

from __future__ import annotations

import math
from typing import Any

from labpgt.instruments.instrument_errors import LimitError
from labpgt.instruments.setting_defs import LIMITED_SETTINGS, LimitField, SettingDef, limit_fields
from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

_NUMBER = (int, float)  # a tuple: `int | float` would build a union object on every check


class _LimitChecks(BaseModel):
    """The checks of the `[limits]` table; its fields are added from the setting definitions."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="after")
    def _ordered(self) -> Any:
        for setting in LIMITED_SETTINGS:
            if isinstance(setting.low, LimitField) and setting.high is not None:
                low, high = setting.low.name, setting.high.name
                if getattr(self, low) > getattr(self, high):
                    raise ValueError(f"{low} ({getattr(self, low)}) must be <= {high}")
        return self

    def range_of(self, setting: SettingDef) -> tuple[float, float]:
        """The allowed (low, high) of a limited setting, in its unit."""
        low = setting.low
        low_value = getattr(self, low.name) if isinstance(low, LimitField) else low
        return low_value, getattr(self, setting.high.name)  # type: ignore[union-attr,return-value]

    def check(self, instrument: str, setting: SettingDef, value: float) -> None:
        """Raise `LimitError` unless the value lies within the setting's limits."""
        low, high = self.range_of(setting)
        if not (isinstance(value, _NUMBER) and math.isfinite(value) and low <= value <= high):
            raise LimitError(instrument, setting.name, float(value), low, high, setting.unit)

    def ramp_of(self, setting: SettingDef) -> tuple[float, float]:
        """(largest step, fastest rate per second) of a ramped setting."""
        assert setting.ramp is not None, f"{setting.name} is not ramped"
        return getattr(self, setting.ramp.step.name), getattr(self, setting.ramp.rate.name)


Limits = create_model(  # type: ignore[call-overload]
    "Limits",
    __base__=_LimitChecks,
    __doc__="The bench's hard limits (the `[limits]` table of the bench file).",
    __module__=__name__,
    **{
        f.name: (float, Field(f.default, description=f.description, **f.bounds))
        for f in limit_fields()
    },
)


def ramp_points(start: float, target: float, step: float) -> list[float]:
    """Intermediate and final setpoints from start to target, no step larger than `step`."""
    distance = target - start
    n_steps = max(1, math.ceil(abs(distance) / step - 1e-9))
    if distance == 0:
        return []
    return [start + distance * (i / n_steps) for i in range(1, n_steps + 1)]
