"""Encoding: network outputs u (real numbers) -> instrument settings, differentiably.

Each sample drives ``channels`` shots (k groups of settings, features
concatenated downstream), so a reservoir layer can be wider than one shot.
Within a channel, the settings named in ``driven`` take one u value each; the
others are fixed (per channel if a list is given). u is laid out channel-major:
``u[..., c*m + j]`` drives setting ``driven[j]`` (in `SETTING_NAMES` order) of
channel c.

Maps (both keep every setting inside the bench limits):
- ``affine``: u in [-1, 1] spans the range linearly; values outside are clamped
  (the gradient is zero there, as the instrument would not move either).
- ``sigmoid``: lo + (hi - lo) * sigmoid(gain * u); cannot leave the range.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from labpgt.errors import UserError
from labpgt.instruments.setting_defs import ROW_SETTINGS
from labpgt.setting_bounds import SETTING_NAMES, SETTING_UNITS, SettingBounds

DEFAULT_SETTING: dict[str, float] = {str(s.row_name): float(s.default) for s in ROW_SETTINGS}  # type: ignore[arg-type]
"""Value a setting takes when nothing else says (also the `labpgt acquire` defaults)."""


class EncodingSpec(BaseModel):
    """How u maps onto settings (pydantic; errors name the field)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    map: Literal["affine", "sigmoid"] = Field(
        "affine", description="'affine' (u in [-1, 1] spans the range, clamped) or 'sigmoid'."
    )
    sigmoid_gain: float = Field(
        2.0, gt=0, le=100, description="Slope of the sigmoid map: s = lo + (hi-lo)*sigmoid(gain*u)."
    )
    channels: int = Field(1, ge=1, le=64, description="Shots (groups of settings) per sample, k.")
    driven: tuple[str, ...] = Field(
        ("drive_hz", "drive_dbm"),
        min_length=1,
        description="Settings driven by u, one u value each per channel.",
    )
    ranges: dict[str, tuple[float, float]] = Field(
        default_factory=dict,
        description="Range u maps onto, per driven setting, in its unit (default: bench limits).",
    )
    fixed: dict[str, float | tuple[float, ...]] = Field(
        default_factory=lambda: {"bias_a": 1.8},
        description="Value of each setting not driven by u: one value, or one per channel. "
        f"Unlisted ones take {DEFAULT_SETTING}.",
    )

    @field_validator("driven")
    @classmethod
    def _known_driven(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if name not in SETTING_NAMES:
                raise ValueError(f"unknown setting {name!r}; valid: {', '.join(SETTING_NAMES)}")
        if len(set(value)) != len(value):
            raise ValueError(f"a setting is listed twice: {value}")
        return tuple(n for n in SETTING_NAMES if n in value)

    @field_validator("ranges", "fixed")
    @classmethod
    def _known_names(cls, value: dict) -> dict:
        for name in value:
            if name not in SETTING_NAMES:
                raise ValueError(f"unknown setting {name!r}; valid: {', '.join(SETTING_NAMES)}")
        return value


class Encoding(nn.Module):
    """u (..., k*m) -> settings (..., k, 3) float64 within ``bounds``; differentiable in u.

    Holds no parameters or buffers, so it adds nothing to a model's state_dict.
    """

    def __init__(self, spec: EncodingSpec | None = None, bounds: SettingBounds | None = None):
        super().__init__()
        self.spec = spec if spec is not None else EncodingSpec()
        self.bounds = bounds if bounds is not None else SettingBounds()
        k = self.spec.channels
        lo_b, hi_b = self.bounds.lower(), self.bounds.upper()
        self._driven_cols = [SETTING_NAMES.index(n) for n in self.spec.driven]
        lo, hi = [], []
        for name, col in zip(self.spec.driven, self._driven_cols, strict=True):
            r_lo, r_hi = self.spec.ranges.get(name, (lo_b[col].item(), hi_b[col].item()))
            unit = SETTING_UNITS[name]
            if not (lo_b[col].item() <= r_lo < r_hi <= hi_b[col].item()):
                raise UserError(
                    f"encoding range of {name} [{r_lo:.6g}, {r_hi:.6g}] {unit} must be increasing "
                    f"and inside the bench limits [{lo_b[col].item():.6g}, "
                    f"{hi_b[col].item():.6g}] {unit}"
                )
            lo.append(r_lo)
            hi.append(r_hi)
        self._lo = torch.tensor(lo, dtype=torch.float64)
        self._hi = torch.tensor(hi, dtype=torch.float64)
        # Base settings (k, 3): fixed values per channel; driven columns are overwritten.
        base = torch.empty(k, len(SETTING_NAMES), dtype=torch.float64)
        for col, name in enumerate(SETTING_NAMES):
            value = self.spec.fixed.get(name, DEFAULT_SETTING[name])
            values = list(value) if isinstance(value, tuple) else [value] * k
            if len(values) != k:
                raise UserError(
                    f"fixed {name} lists {len(values)} values; give one or one per channel "
                    f"(channels={k})"
                )
            base[:, col] = torch.tensor(values, dtype=torch.float64)
        # Driven columns sit at their range's low end here, which is inside the limits, so
        # a failure names a fixed value (row = channel).
        base[:, self._driven_cols] = self._lo
        try:
            self.bounds.check(base)
        except UserError as exc:
            raise UserError(f"encoding fixed settings (row = channel): {exc}") from None
        self._base = base
        self._driven_mask = torch.zeros(len(SETTING_NAMES), dtype=torch.bool)
        self._driven_mask[self._driven_cols] = True

    @property
    def channels(self) -> int:
        return self.spec.channels

    @property
    def dims_per_channel(self) -> int:
        """u values per channel, m."""
        return len(self._driven_cols)

    @property
    def input_dim(self) -> int:
        """u values per sample, k*m."""
        return self.channels * self.dims_per_channel

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """u (..., k*m) -> settings (..., k, 3) float64."""
        if u.shape[-1] != self.input_dim:
            raise UserError(
                f"encoding expects u with {self.input_dim} values per sample "
                f"(channels={self.channels} x driven {list(self.spec.driven)}); "
                f"got shape {tuple(u.shape)}"
            )
        z = u.to(torch.float64).reshape(*u.shape[:-1], self.channels, self.dims_per_channel)
        span = self._hi - self._lo
        if self.spec.map == "affine":
            driven = self._lo + span * (z.clamp(-1.0, 1.0) + 1.0) / 2.0
        else:
            driven = self._lo + span * torch.sigmoid(self.spec.sigmoid_gain * z)
        out = self._base.expand(*z.shape[:-1], len(SETTING_NAMES))
        # index_copy along the last dim keeps autograd through the driven columns only.
        return out.index_copy(-1, torch.tensor(self._driven_cols), driven)

    def inverse(self, settings: torch.Tensor) -> torch.Tensor:
        """Settings (..., k, 3) -> u (..., k*m): the u that gives these driven values."""
        s = settings.to(torch.float64)[..., self._driven_cols]
        x = ((s - self._lo) / (self._hi - self._lo)).clamp(0.0, 1.0)
        if self.spec.map == "affine":
            z = 2.0 * x - 1.0
        else:
            eps = torch.finfo(torch.float64).eps
            z = torch.logit(x, eps=eps) / self.spec.sigmoid_gain
        return z.reshape(*z.shape[:-2], -1)
