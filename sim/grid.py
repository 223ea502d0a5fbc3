"""The spectrum analyzer's frequency grid (what one sweep measures)."""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator


class AnalyzerGrid(BaseModel):
    """One sweep's frequency grid: centre/span, resolution bandwidth and point count."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    center_hz: float = Field(2.15e9, gt=0, le=50e9, description="Sweep centre frequency in Hz.")
    span_hz: float = Field(300e6, gt=0, le=10e9, description="Sweep span in Hz.")
    rbw_hz: float = Field(300e3, ge=1.0, le=10e6, description="Resolution bandwidth in Hz.")
    points: int = Field(1001, ge=11, le=100_001, description="Trace points per sweep.")

    @model_validator(mode="after")
    def _start_positive(self) -> AnalyzerGrid:
        if self.center_hz - self.span_hz / 2 <= 0:
            raise ValueError("center_hz - span_hz/2 must be > 0 Hz")
        return self

    @classmethod
    def from_start_stop(
        cls, start_hz: float, stop_hz: float, rbw_hz: float, points: int
    ) -> AnalyzerGrid:
        """Build a grid from start/stop frequencies in Hz."""
        if stop_hz <= start_hz:
            raise ValueError("stop_hz must be greater than start_hz")
        return cls(
            center_hz=(start_hz + stop_hz) / 2,
            span_hz=stop_hz - start_hz,
            rbw_hz=rbw_hz,
            points=points,
        )

    @property
    def start_hz(self) -> float:
        return self.center_hz - self.span_hz / 2

    @property
    def stop_hz(self) -> float:
        return self.center_hz + self.span_hz / 2

    @property
    def bin_hz(self) -> float:
        """Spacing between trace points in Hz."""
        return self.span_hz / (self.points - 1)

    @property
    def sweep_time_s(self) -> float:
        """Swept-analyzer sweep time, 2.5 * span / RBW^2, in seconds."""
        return 2.5 * self.span_hz / self.rbw_hz**2

    def frequencies_hz(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """The trace's frequency axis in Hz, shape (points,)."""
        return torch.linspace(self.start_hz, self.stop_hz, self.points, dtype=dtype)
