"""The setting space: names, units, bounds, resolution and settle times of a setting row.

A *setting* is one row ``[drive_hz, drive_dbm, bias_a]`` (float64): the signal
generator's drive frequency in Hz, its power in dBm, and the bias supply's
current in A. This module says which rows are allowed (`SettingBounds`), when two
rows are the same setting (`setting_keys`) and how long a change settles
(`SettleTimes`, `settle_times_s`). Names, units, default ranges and resolutions come
from the setting definitions (`instruments.setting_defs.ROW_SETTINGS`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from labpgt.errors import UserError
from labpgt.instruments.bench_file import SettleTimes
from labpgt.instruments.setting_defs import ROW_SETTINGS

if TYPE_CHECKING:
    from labpgt.instruments.limits import Limits

SETTING_NAMES: tuple[str, ...] = tuple(str(s.row_name) for s in ROW_SETTINGS)
SETTING_UNITS: dict[str, str] = {str(s.row_name): s.unit for s in ROW_SETTINGS}


class _BoundsChecks(BaseModel):
    """The checks of `SettingBounds`; its fields come from the setting definitions."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="after")
    def _ordered(self) -> Any:
        for name in SETTING_NAMES:
            lo, hi = getattr(self, name)
            if not lo <= hi:
                raise ValueError(f"{name}: lower bound {lo} exceeds upper bound {hi}")
        return self

    @classmethod
    def from_limits(cls, limits: Limits) -> Any:
        """A bench file's hard limits as bounds (instrument resolution: the defaults)."""
        return cls(**{str(s.row_name): limits.range_of(s) for s in ROW_SETTINGS})

    def check_within(self, outer: Any, what: str) -> None:
        """Raise `UserError` unless every range lies inside `outer`'s (`what` names outer)."""
        for name in SETTING_NAMES:
            (lo, hi), (outer_lo, outer_hi) = getattr(self, name), getattr(outer, name)
            if lo < outer_lo or hi > outer_hi:
                raise UserError(
                    f"bounds {name} [{lo:.6g}, {hi:.6g}] exceed {what} "
                    f"[{outer_lo:.6g}, {outer_hi:.6g}]"
                )

    def lower(self) -> torch.Tensor:
        return torch.tensor([getattr(self, n)[0] for n in SETTING_NAMES], dtype=torch.float64)

    def upper(self) -> torch.Tensor:
        return torch.tensor([getattr(self, n)[1] for n in SETTING_NAMES], dtype=torch.float64)

    def check(self, settings: torch.Tensor) -> None:
        """Raise `UserError` naming the first row and setting outside the bounds."""
        if settings.ndim != 2 or settings.shape[1] != len(SETTING_NAMES):
            raise UserError(
                f"settings must have shape (N, {len(SETTING_NAMES)}) with columns "
                f"{', '.join(SETTING_NAMES)}; got {tuple(settings.shape)}"
            )
        if not torch.isfinite(settings).all():
            row = int((~torch.isfinite(settings)).any(dim=1).nonzero()[0])
            raise UserError(f"setting row {row} is not finite: {settings[row].tolist()}")
        lo, hi = self.lower(), self.upper()
        bad = (settings < lo) | (settings > hi)
        if bad.any():
            row, col = (int(i) for i in bad.nonzero()[0])
            name = SETTING_NAMES[col]
            raise UserError(
                f"setting row {row}: {name}={settings[row, col].item():.6g} "
                f"{SETTING_UNITS[name]} is outside the allowed range "
                f"[{lo[col].item():.6g}, {hi[col].item():.6g}] {SETTING_UNITS[name]}"
            )


SettingBounds = create_model(  # type: ignore[call-overload]
    "SettingBounds",
    __base__=_BoundsChecks,
    __doc__="Allowed range and instrument resolution of each setting (units in the names).",
    __module__=__name__,
    **{
        str(s.row_name): (
            tuple[float, float],
            Field(
                (s.low.default, s.high.default),  # type: ignore[union-attr]
                description=f"Range of {s.row_name}, {s.unit} (default: the bench limits').",
            ),
        )
        for s in ROW_SETTINGS
    },
    resolution=(
        tuple[float, float, float],
        Field(
            tuple(s.resolution for s in ROW_SETTINGS),
            description="Smallest step each instrument resolves: "
            + ", ".join(s.unit for s in ROW_SETTINGS)
            + " (used to de-duplicate).",
        ),
    ),
)


def setting_keys(settings: torch.Tensor, bounds: SettingBounds) -> torch.Tensor:
    """(N, 3) settings -> (N, 3) int64 keys: two settings are the same when their keys are.

    A key is the setting in units of the instrument's resolution, rounded; so
    settings closer than half a resolution step (usually) share a key.
    """
    resolution = torch.tensor(bounds.resolution, dtype=torch.float64)
    return torch.round(settings.to(torch.float64) / resolution).to(torch.int64)


def transitions(
    keys: torch.Tensor, previous: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which shots change the bias, and which change only the drive, given the shot before.

    ``keys`` (N, 3) from `setting_keys` in measurement order; ``previous`` (3,)
    is the key of the last shot before them, or None when unknown (then the
    first shot counts as a bias change: the magnet state is not known).
    Returns boolean (N,) tensors ``bias_changed`` and ``drive_changed``
    (drive_changed is False where bias_changed is True).
    """
    bias_col = SETTING_NAMES.index("bias_a")
    drive_cols = [i for i, n in enumerate(SETTING_NAMES) if n != "bias_a"]
    if previous is None:
        before = torch.cat([keys[:1], keys[:-1]])
    else:
        before = torch.cat([previous.reshape(1, -1), keys[:-1]])
    bias_changed = keys[:, bias_col] != before[:, bias_col]
    if previous is None and keys.shape[0] > 0:
        bias_changed[0] = True
    drive_changed = (keys[:, drive_cols] != before[:, drive_cols]).any(dim=1) & ~bias_changed
    return bias_changed, drive_changed


def settle_times_s(
    keys: torch.Tensor, previous: torch.Tensor | None, settle: SettleTimes
) -> torch.Tensor:
    """(N,) settle time before each shot, s: bias change -> bias_s, else drive change -> drive_s.

    The two settles overlap in time (the generator settles while the magnet
    does), so a shot that changes both waits bias_s only.
    """
    bias_changed, drive_changed = transitions(keys, previous)
    zero = torch.zeros(keys.shape[0], dtype=torch.float64)
    return torch.where(
        bias_changed,
        torch.full_like(zero, settle.bias_s),
        torch.where(drive_changed, torch.full_like(zero, settle.drive_s), zero),
    )


def describe_setting(setting: torch.Tensor) -> str:
    """One setting row as 'drive_hz=2.1e+09 Hz, drive_dbm=-10 dBm, bias_a=1.8 A'."""
    values = setting.reshape(-1).tolist()
    return ", ".join(
        f"{n}={v:.10g} {SETTING_UNITS[n]}" for n, v in zip(SETTING_NAMES, values, strict=True)
    )
