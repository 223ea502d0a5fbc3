"""What a calibration measures: the sweeps, as plain (N, 3) settings tensors.

The plan only says *what* to measure; `calibration.measure` measures it (through the
PerturbationScheduler) and `calibration.run` composes the stages. The later stages are
planned from earlier results (reference settings and surrogate shots from the operating
point). Settings rows are ``[drive_hz, drive_dbm, bias_a]``.
"""

from __future__ import annotations

import numpy as np
import torch
from labpgt.calibration.analysis import OperatingPoint
from pydantic import BaseModel, ConfigDict, Field, model_validator

from labpgt.setting_bounds import SETTING_NAMES, SettingBounds


class CalibrationPlan(BaseModel):
    """The calibration grid. Defaults suit the ring of docs/ring-physics.md on the default
    analyzer."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    drive_hz: tuple[float, float] = Field(
        (2.0e9, 2.3e9), description="Drive frequency range swept by the response curves, Hz."
    )
    drive_points: int = Field(25, ge=2, le=1000, description="Drive frequencies per curve.")
    drive_dbm: tuple[float, float] = Field(
        (-30.0, 0.0), description="Drive power range swept by the response curves, dBm."
    )
    power_points: int = Field(7, ge=2, le=200, description="Drive powers per curve.")
    response_bias_a: tuple[float, ...] = Field(
        (1.4, 1.6, 1.8, 2.0, 2.2),
        min_length=1,
        max_length=50,
        description="Bias currents at which the drive response is swept, A.",
    )
    bias_sweep_a: tuple[float, float] = Field(
        (1.5, 2.1), description="Bias range of the hysteresis sweep (up, then down), A."
    )
    bias_points: int = Field(25, ge=3, le=2000, description="Bias values per leg of the sweep.")
    bias_sweep_drive_dbm: float = Field(
        -40.0,
        description="Drive power during the bias sweep, dBm (low: the free-running comb shows).",
    )
    reference_points: int = Field(
        3, ge=1, le=50, description="Reference settings re-measured for noise and --check."
    )
    repeats: int = Field(
        6, ge=2, le=1000, description="Passes over the reference settings (shot-to-shot noise)."
    )
    surrogate_points: int = Field(
        300,
        ge=20,
        le=100_000,
        description="Random settings inside the operating window the surrogate is fitted to "
        "(a share of them held out for its validation error).",
    )

    @model_validator(mode="after")
    def _ordered(self) -> CalibrationPlan:
        for name in ("drive_hz", "drive_dbm", "bias_sweep_a"):
            lo, hi = getattr(self, name)
            if not lo < hi:
                raise ValueError(f"{name}: lower end {lo} must be below upper end {hi}")
        return self

    @classmethod
    def reduced(cls) -> CalibrationPlan:
        """A small grid (tests, quick looks): about a fifth of the default's shots."""
        return cls(
            drive_points=13,
            power_points=4,
            response_bias_a=(1.5, 1.8, 2.1),
            bias_points=13,
            repeats=4,
            surrogate_points=200,
        )

    def check_within(self, bounds: SettingBounds) -> None:
        """Raise ValueError naming the plan field that leaves the reservoir's bounds."""
        pairs = {
            "drive_hz": (self.drive_hz, bounds.drive_hz),
            "drive_dbm": (self.drive_dbm, bounds.drive_dbm),
            "bias_sweep_a": (self.bias_sweep_a, bounds.bias_a),
            "response_bias_a": (
                (min(self.response_bias_a), max(self.response_bias_a)),
                bounds.bias_a,
            ),
            "bias_sweep_drive_dbm": ((self.bias_sweep_drive_dbm,) * 2, bounds.drive_dbm),
        }
        for name, ((lo, hi), (blo, bhi)) in pairs.items():
            if lo < blo or hi > bhi:
                raise ValueError(
                    f"calibration plan {name}=[{lo:.6g}, {hi:.6g}] leaves the reservoir's "
                    f"allowed range [{blo:.6g}, {bhi:.6g}]"
                )

    # -- the sweeps -------------------------------------------------------------------
    def drive_axes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(drive frequencies in Hz, drive powers in dBm) of the response grid."""
        f = torch.linspace(*self.drive_hz, self.drive_points, dtype=torch.float64)
        p = torch.linspace(*self.drive_dbm, self.power_points, dtype=torch.float64)
        return f, p

    def response_settings(self) -> torch.Tensor:
        """(B·P·F, 3) settings: every bias × power × frequency of the response grid."""
        f, p = self.drive_axes()
        b = torch.tensor(self.response_bias_a, dtype=torch.float64)
        bb, pp, ff = torch.meshgrid(b, p, f, indexing="ij")
        return torch.stack([ff.reshape(-1), pp.reshape(-1), bb.reshape(-1)], dim=1)

    def bias_legs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(up, down) settings of the hysteresis sweep, each (bias_points, 3), in measuring order.

        The drive sits at the low end of the drive range at low power so the spectrum
        is dominated by the ring's own comb, which tracks the field, and the drive
        tone stays clear of it.
        """
        bias = torch.linspace(*self.bias_sweep_a, self.bias_points, dtype=torch.float64)
        drive_hz = self.drive_hz[0]
        up = torch.stack(
            [
                torch.full_like(bias, drive_hz),
                torch.full_like(bias, self.bias_sweep_drive_dbm),
                bias,
            ],
            dim=1,
        )
        return up, up.flip(0)

    def ranges(self) -> torch.Tensor:
        """(3, 2) low/high of each setting over the whole plan."""
        lo_b = min(min(self.response_bias_a), self.bias_sweep_a[0])
        hi_b = max(max(self.response_bias_a), self.bias_sweep_a[1])
        lo_p = min(self.drive_dbm[0], self.bias_sweep_drive_dbm)
        hi_p = max(self.drive_dbm[1], self.bias_sweep_drive_dbm)
        return torch.tensor([list(self.drive_hz), [lo_p, hi_p], [lo_b, hi_b]], dtype=torch.float64)


# -- the stages planned from earlier results -----------------------------------------------
COMB_DRIVE_DBM = -40.0
"""Drive power of the comb reference shots, dBm: too weak to lock or pull the comb."""


def reference_settings_for(op: OperatingPoint, plan: CalibrationPlan) -> torch.Tensor:
    """(S, 3) reference settings: two low-drive comb shots, then drive points in the window.

    All at the operating bias. The comb shots (drive at the ends of the drive range, at
    `COMB_DRIVE_DBM`) show the free-running comb for the frequency drift; the others
    (``reference_points`` drive frequencies across the operating window, at the middle of
    its power range) give the level drift and the shot-to-shot noise training will see.
    """
    b = op.bias_a
    rows = [
        [plan.drive_hz[0], COMB_DRIVE_DBM, b],
        [plan.drive_hz[1], COMB_DRIVE_DBM, b],
    ]
    p_mid = 0.5 * (op.drive_dbm[0] + op.drive_dbm[1])
    n = plan.reference_points
    for f in (
        np.linspace(op.drive_hz[0], op.drive_hz[1], n + 2)[1:-1]
        if n > 1
        else [0.5 * (op.drive_hz[0] + op.drive_hz[1])]
    ):
        rows.append([float(f), float(np.round(p_mid, 2)), b])
    return torch.tensor(rows, dtype=torch.float64)


def encoding_ranges(op: OperatingPoint, bias_axis: np.ndarray) -> dict[str, tuple[float, float]]:
    """Recommended encoding ranges: the drive window, at the operating bias.

    The bias is held at the operating point: one response-grid step of bias moves the comb
    by several feature bins (≈ 4.3 MHz per 0.01 A near 1.8 A), so neither the window's
    calm (no locking) nor the surrogate carries over to a neighbouring bias.
    """
    return {
        "drive_hz": (float(op.drive_hz[0]), float(op.drive_hz[1])),
        "drive_dbm": (float(op.drive_dbm[0]), float(op.drive_dbm[1])),
        "bias_a": (float(op.bias_a), float(op.bias_a)),
    }


def surrogate_sample(
    ranges: dict[str, tuple[float, float]], points: int, *, seed: int = 0
) -> torch.Tensor:
    """(points, 3) settings drawn uniformly (seeded) inside the encoding ranges."""
    gen = torch.Generator().manual_seed(int(seed))
    u = torch.rand(points, len(SETTING_NAMES), generator=gen, dtype=torch.float64)
    lo = torch.tensor([ranges[n][0] for n in SETTING_NAMES], dtype=torch.float64)
    hi = torch.tensor([ranges[n][1] for n in SETTING_NAMES], dtype=torch.float64)
    return lo + u * (hi - lo)
