"""The setting space: names, units, bounds, resolution and settle times of a setting row.

A *setting* is one row ``[drive_hz, drive_dbm, bias_a]`` (float64): the signal
generator's drive frequency in Hz, its power in dBm, and the bias supply's
current in A. This module says which rows are allowed (`SettingBounds`), when two
rows are the same setting (`setting_keys`) and how long a change settles
(`SettleTimes`, `settle_times_s`).
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from labpgt.errors import UserError

SETTING_NAMES: tuple[str, ...] = ("drive_hz", "drive_dbm", "bias_a")
SETTING_UNITS: dict[str, str] = {"drive_hz": "Hz", "drive_dbm": "dBm", "bias_a": "A"}


class SettingBounds(BaseModel):
    """Allowed range and instrument resolution of each setting (units in the names)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    drive_hz: tuple[float, float] = Field((2.0e9, 2.3e9), description="Drive frequency range, Hz.")
    drive_dbm: tuple[float, float] = Field((-40.0, 0.0), description="Drive power range, dBm.")
    bias_a: tuple[float, float] = Field((0.0, 2.5), description="Bias current range, A.")
    resolution: tuple[float, float, float] = Field(
        (1.0, 0.01, 1e-4),
        description="Smallest step each instrument resolves: Hz, dB, A (used to de-duplicate).",
    )

    @model_validator(mode="after")
    def _ordered(self) -> SettingBounds:
        for name in SETTING_NAMES:
            lo, hi = getattr(self, name)
            if not lo <= hi:
                raise ValueError(f"{name}: lower bound {lo} exceeds upper bound {hi}")
        return self

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


class SettleTimes(BaseModel):
    """How long to wait after changing a setting before sweeping, in seconds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bias_s: float = Field(0.3, ge=0, le=60, description="Magnet settle after a bias change, s.")
    drive_s: float = Field(0.01, ge=0, le=10, description="Generator settle after a change, s.")


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
