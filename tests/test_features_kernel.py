"""Kernel feature map: Gaussian windows over linear power, smooth in where a line sits."""

from __future__ import annotations

import pytest
import torch
from labpgt.sim.grid import AnalyzerGrid
from labpgt.sim.params import RingParams
from labpgt.sim.spectrum import render_trace

from labpgt.errors import UserError
from labpgt.features import FeatureExtractor, FeatureSpec

GRID = AnalyzerGrid()


def _line_traces(line_hz: torch.Tensor, power_dbm: float = -30.0) -> torch.Tensor:
    """Noise-free traces of one line per row on the default grid."""
    mw = torch.full((line_hz.numel(), 1), 10 ** (power_dbm / 10), dtype=torch.float64)
    return render_trace(line_hz.reshape(-1, 1), mw, GRID, RingParams(), dtype=torch.float64)


def test_a_flat_trace_maps_to_its_own_level() -> None:
    ex = FeatureExtractor(FeatureSpec(kind="kernel", bins=8), GRID.frequencies_hz())
    feats = ex(torch.full((2, GRID.points), -71.5, dtype=torch.float64))
    torch.testing.assert_close(feats, torch.full((2, 8), -71.5, dtype=torch.float64))
    assert ex.names[0].startswith("kernel0_2.0187GHz")


def test_kernel_features_follow_a_moving_line_smoothly_where_bins_jump() -> None:
    # A line walked over 6 MHz in 20 kHz steps (well below one 300 kHz trace step),
    # across the hard-bin edge at 2.1125 GHz.
    f = torch.linspace(2.109e9, 2.115e9, 301, dtype=torch.float64)  # across an edge
    traces = _line_traces(f)
    kernel = FeatureExtractor(FeatureSpec(kind="kernel", bins=8), GRID.frequencies_hz())(traces)
    bins = FeatureExtractor(FeatureSpec(kind="bins", bins=8), GRID.frequencies_hz())(traces)

    def concentration(feats: torch.Tensor) -> float:
        # Share of the total change (summed over features) made in the 5 % largest steps:
        # 0.05 for a straight line, 1 for a jump.
        steps = feats.diff(dim=0).abs().sum(dim=1)
        top = steps.sort(descending=True).values[: len(steps) // 20]
        return float(top.sum() / steps.sum())

    smooth, jagged = concentration(kernel), concentration(bins)
    assert smooth < 0.07, smooth
    assert jagged > 3 * smooth, (jagged, smooth)


def test_kernel_features_are_differentiable_in_the_trace() -> None:
    ex = FeatureExtractor(FeatureSpec(kind="kernel", bins=4), GRID.frequencies_hz())
    traces = _line_traces(torch.tensor([2.12e9], dtype=torch.float64)).requires_grad_(True)
    ex(traces).sum().backward()
    assert traces.grad is not None and torch.isfinite(traces.grad).all()


def test_windows_narrower_than_a_trace_step_are_refused() -> None:
    with pytest.raises(UserError, match="narrower than the trace's point spacing"):
        FeatureExtractor(
            FeatureSpec(kind="kernel", bins=1000, kernel_width=0.1), GRID.frequencies_hz()
        )
