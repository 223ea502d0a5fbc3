"""Trace -> feature vector: soft (kernel) bins, hard bins or the strongest peaks.

One `FeatureExtractor` serves every reservoir (in-process ring, virtual bench,
real bench), so the same trace always gives the same features. Traces are
power in dBm on a frequency axis in Hz; features are in dBm (bins, kernel
bins, peak power) and GHz (peak frequency).

Why kernel bins are the default: the ring's lines are a few hundred kHz wide
and move with the drive. A hard bin's mean dB jumps when a line crosses its
edge and is flat in between, so its derivative in the drive is zero almost
everywhere and huge at the edges — no gradient estimator can follow it. A
kernel bin sums *linear* power under a Gaussian window before taking the log:
the power a line carries is conserved as it moves between trace points, and
the window turns its position into a smooth bump, so the feature is smooth at
the scale the estimators probe (docs/features.md has the measurements).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from labpgt.errors import UserError

_NOT_A_PEAK_DB = 1.0e6
"""Penalty that ranks every local maximum above every other trace point when picking peaks."""


class FeatureSpec(BaseModel):
    """Which features to take from a trace (pydantic; errors name the field)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["kernel", "bins", "peaks"] = Field(
        "kernel",
        description="'kernel': power (dBm) under Gaussian windows at equally spaced centres, "
        "summed in mW before the log (smooth in the drive); 'bins': mean of the trace in dB "
        "over equal frequency bins; 'peaks': frequency (GHz) and power (dBm) of the strongest "
        "local maxima.",
    )
    bins: int = Field(
        32, ge=1, le=10_000, description="Number of bins or windows (kind 'bins'/'kernel')."
    )
    kernel_width: float = Field(
        0.5,
        gt=0.0,
        le=10.0,
        description="Standard deviation of each Gaussian window, in units of the window spacing "
        "(kind='kernel').",
    )
    start_hz: float | None = Field(
        None,
        gt=0,
        description="Low edge of the binned range, Hz (default: the first trace point).",
    )
    stop_hz: float | None = Field(
        None,
        gt=0,
        description="High edge of the binned range, Hz (default: the last trace point).",
    )
    peaks: int = Field(4, ge=1, le=100, description="Number of peaks (kind='peaks').")

    @model_validator(mode="after")
    def _range(self) -> FeatureSpec:
        if self.start_hz is not None and self.stop_hz is not None and self.stop_hz <= self.start_hz:
            raise ValueError(
                f"stop_hz ({self.stop_hz} Hz) must exceed start_hz ({self.start_hz} Hz)"
            )
        return self

    def dim(self) -> int:
        """Features per trace."""
        return 2 * self.peaks if self.kind == "peaks" else self.bins

    def describe(self) -> str:
        """One line for logs and tables, e.g. 'kernel ×8 (σ 0.5 spacing)'."""
        if self.kind == "kernel":
            return f"kernel ×{self.bins} (σ {self.kernel_width:g} spacing)"
        if self.kind == "bins":
            return f"bins ×{self.bins}"
        return f"peaks ×{self.peaks}"


class FeatureExtractor:
    """Features of (N, P) traces in dBm on a fixed (P,) frequency axis in Hz.

    The bins path is one matrix product with a fixed averaging matrix, so it is
    differentiable in the trace (the backprop reference uses that). The peaks
    path picks the N strongest local maxima (strongest first) and refines each
    by a parabola through its three points, so peak frequency is not stuck on
    the analyzer's point grid.
    """

    def __init__(self, spec: FeatureSpec, frequency_hz: torch.Tensor) -> None:
        self.spec = spec
        self.frequency_hz = frequency_hz.to(torch.float64).flatten()
        points = self.frequency_hz.numel()
        if points < 3:
            raise UserError(f"a trace needs at least 3 points for features; got {points}")
        if spec.kind == "bins":
            self._weights, self._edges_hz = self._bin_weights()
        elif spec.kind == "kernel":
            self._weights, self._edges_hz = self._kernel_weights()
        elif spec.peaks > points:
            raise UserError(f"peaks={spec.peaks} exceeds the trace's {points} points")

    def _bin_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.frequency_hz
        start = self.spec.start_hz if self.spec.start_hz is not None else f[0].item()
        stop = self.spec.stop_hz if self.spec.stop_hz is not None else f[-1].item()
        edges = torch.linspace(start, stop, self.spec.bins + 1, dtype=torch.float64)
        # Bin from the position in units of bin width, with a tolerance far below one trace
        # step: a point that sits on an edge (common: 1001 points in 32 bins) lands in the
        # same bin whichever way its frequency was rounded (numpy vs torch linspace, or an
        # axis read back from an analyzer). Half-open bins [lo, hi); the last one is closed.
        position = (f - start) / ((stop - start) / self.spec.bins)
        tolerance = 1e-6
        index = torch.floor(position + tolerance).to(torch.int64)
        index = torch.where(
            (index == self.spec.bins) & (position <= self.spec.bins + tolerance),
            torch.full_like(index, self.spec.bins - 1),
            index,
        )
        inside = (index >= 0) & (index < self.spec.bins) & (position >= -tolerance)
        onehot = torch.zeros(f.numel(), self.spec.bins, dtype=torch.float64)
        rows = inside.nonzero().flatten()
        onehot[rows, index[rows]] = 1.0
        counts = onehot.sum(dim=0)
        if (counts == 0).any():
            empty = int((counts == 0).nonzero()[0])
            raise UserError(
                f"feature bin {empty} ({edges[empty].item() / 1e9:.6f}-"
                f"{edges[empty + 1].item() / 1e9:.6f} GHz) holds no trace point: use fewer bins "
                f"(bins={self.spec.bins}) or a wider start_hz/stop_hz range"
            )
        return onehot / counts, edges

    def _range_hz(self) -> tuple[float, float]:
        f = self.frequency_hz
        start = self.spec.start_hz if self.spec.start_hz is not None else f[0].item()
        stop = self.spec.stop_hz if self.spec.stop_hz is not None else f[-1].item()
        return start, stop

    def _kernel_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(P, bins) Gaussian windows, each summing to 1; edges are the spacing's midpoints.

        Window j is centred at start + (j + 1/2)·spacing with σ = kernel_width·spacing.
        Each column sums to one, so a flat trace at level L gives L in every feature
        (the displayed noise floor maps to itself).
        """
        f = self.frequency_hz
        start, stop = self._range_hz()
        spacing = (stop - start) / self.spec.bins
        edges = torch.linspace(start, stop, self.spec.bins + 1, dtype=torch.float64)
        centres = (edges[:-1] + edges[1:]) / 2
        sigma = self.spec.kernel_width * spacing
        z = (f[:, None] - centres[None, :]) / sigma
        weights = torch.exp(-0.5 * z.square())
        mass = weights.sum(dim=0)
        step = (f[-1] - f[0]).item() / max(f.numel() - 1, 1)
        if sigma < step or (mass < 1.0).any():
            raise UserError(
                f"kernel windows of σ {sigma / 1e6:.3g} MHz ({self.spec.bins} windows over "
                f"{(stop - start) / 1e6:.4g} MHz, kernel_width {self.spec.kernel_width:g}) are "
                f"narrower than the trace's point spacing ({step / 1e6:.3g} MHz) or miss it: use "
                "fewer windows, a wider kernel_width or a start_hz/stop_hz inside the trace"
            )
        return weights / mass, edges

    @property
    def dim(self) -> int:
        return self.spec.dim()

    @property
    def names(self) -> list[str]:
        """One label per feature column, with its unit."""
        if self.spec.kind == "bins":
            e = self._edges_hz / 1e9
            return [
                f"bin{i}_{e[i].item():.4f}-{e[i + 1].item():.4f}GHz_dBm"
                for i in range(self.spec.bins)
            ]
        if self.spec.kind == "kernel":
            c = (self._edges_hz[:-1] + self._edges_hz[1:]) / 2e9
            return [f"kernel{i}_{c[i].item():.4f}GHz_dBm" for i in range(self.spec.bins)]
        names: list[str] = []
        for i in range(1, self.spec.peaks + 1):
            names += [f"peak{i}_frequency_GHz", f"peak{i}_power_dBm"]
        return names

    def __call__(self, traces_dbm: torch.Tensor) -> torch.Tensor:
        """(N, P) traces in dBm -> (N, F) features (float64)."""
        traces = traces_dbm.to(torch.float64)
        if traces.ndim != 2 or traces.shape[1] != self.frequency_hz.numel():
            raise UserError(
                f"traces must be (N, {self.frequency_hz.numel()}) on the feature axis; "
                f"got {tuple(traces.shape)}"
            )
        if self.spec.kind == "bins":
            return traces @ self._weights
        if self.spec.kind == "kernel":
            # dBm -> mW, windowed sum, -> dBm. The windows never reach zero weight on the
            # noise floor, so the sum is strictly positive and the log is finite.
            return 10.0 * torch.log10(torch.pow(10.0, traces / 10.0) @ self._weights)
        return self._peaks(traces)

    def _peaks(self, traces: torch.Tensor) -> torch.Tensor:
        n, points = traces.shape
        inner = traces[:, 1:-1]
        is_max = (inner >= traces[:, :-2]) & (inner > traces[:, 2:])
        score = torch.full_like(traces, -_NOT_A_PEAK_DB)
        score[:, 1:-1] = torch.where(is_max, inner, inner - _NOT_A_PEAK_DB)
        score[:, 0] = traces[:, 0] - _NOT_A_PEAK_DB
        score[:, -1] = traces[:, -1] - _NOT_A_PEAK_DB
        _, idx = torch.topk(score, self.spec.peaks, dim=1)
        # Parabolic refinement through (i-1, i, i+1); at the trace ends use the point itself.
        centre = idx.clamp(1, points - 2)
        y0 = traces.gather(1, centre - 1)
        y1 = traces.gather(1, centre)
        y2 = traces.gather(1, centre + 1)
        denom = y0 - 2.0 * y1 + y2
        interior = (idx == centre) & (denom < 0)
        safe = torch.where(interior, denom, torch.full_like(denom, -1.0))
        delta = torch.where(interior, 0.5 * (y0 - y2) / safe, torch.zeros_like(denom))
        peak_db = torch.where(interior, y1 - 0.25 * (y0 - y2) * delta, traces.gather(1, idx))
        step_hz = self.frequency_hz[1:] - self.frequency_hz[:-1]
        f_centre = self.frequency_hz[centre]
        f_step = torch.where(delta >= 0, step_hz[centre], step_hz[centre - 1])
        peak_hz = torch.where(interior, f_centre + delta * f_step, self.frequency_hz[idx])
        return torch.stack([peak_hz / 1e9, peak_db], dim=2).reshape(n, -1)
