"""Feature extraction: fixed bins (differentiable) and strongest peaks."""

import pytest
import torch
from labpgt.sim.grid import AnalyzerGrid
from labpgt.sim.params import RingParams
from labpgt.sim.ring import RingModel
from pydantic import ValidationError

from labpgt.errors import UserError
from labpgt.features import FeatureExtractor, FeatureSpec
from labpgt.simulated_reservoir import SimulatedReservoir


def _axis(points: int = 101) -> torch.Tensor:
    return torch.linspace(2.0e9, 2.1e9, points, dtype=torch.float64)


def test_bins_are_mean_db_per_bin():
    f = _axis(101)
    traces = torch.arange(101, dtype=torch.float64).reshape(1, -1) - 100.0
    ex = FeatureExtractor(FeatureSpec(kind="bins", bins=4), f)
    feats = ex(traces)
    # 101 points in 4 bins of 25 MHz: [0..24], [25..49], [50..74], [75..100] (last closed)
    expected = torch.tensor(
        [
            traces[0, :25].mean(),
            traces[0, 25:50].mean(),
            traces[0, 50:75].mean(),
            traces[0, 75:].mean(),
        ]
    )
    torch.testing.assert_close(feats[0], expected.to(torch.float64))
    assert ex.dim == 4 and len(ex.names) == 4 and ex.names[0].endswith("GHz_dBm")


def test_bins_respect_start_stop_and_refuse_empty_bins():
    f = _axis(101)
    traces = torch.randn(3, 101, dtype=torch.float64)
    ex = FeatureExtractor(FeatureSpec(kind="bins", bins=2, start_hz=2.02e9, stop_hz=2.04e9), f)
    feats = ex(traces)
    torch.testing.assert_close(feats[:, 0], traces[:, 20:30].mean(dim=1))
    torch.testing.assert_close(feats[:, 1], traces[:, 30:41].mean(dim=1))
    with pytest.raises(UserError, match="holds no trace point"):
        FeatureExtractor(FeatureSpec(kind="bins", bins=500), f)
    with pytest.raises(ValidationError, match="stop_hz"):
        FeatureSpec(start_hz=2.1e9, stop_hz=2.0e9)
    with pytest.raises(UserError, match=r"\(N, 101\)"):
        ex(torch.zeros(2, 50, dtype=torch.float64))


def test_bins_are_differentiable_in_the_trace():
    f = _axis(101)
    traces = torch.randn(2, 101, dtype=torch.float64, requires_grad=True)
    ex = FeatureExtractor(FeatureSpec(kind="bins", bins=5), f)
    assert torch.autograd.gradcheck(ex, (traces,))


def _two_peaks(f: torch.Tensor, centres_hz: list[float], powers_dbm: list[float]) -> torch.Tensor:
    width_hz = 2e6
    lin = torch.zeros_like(f)
    for c, p in zip(centres_hz, powers_dbm, strict=True):
        lin = lin + 10 ** (p / 10) * torch.exp(-0.5 * ((f - c) / width_hz) ** 2)
    return 10 * torch.log10(lin + 1e-10)


def test_peaks_strongest_first_and_refined_off_grid():
    f = _axis(101)  # 1 MHz per point
    trace = _two_peaks(f, [2.0303e9, 2.0707e9], [-20.0, -10.0]).reshape(1, -1)
    ex = FeatureExtractor(FeatureSpec(kind="peaks", peaks=2), f)
    feats = ex(trace)[0]
    assert ex.names == [
        "peak1_frequency_GHz",
        "peak1_power_dBm",
        "peak2_frequency_GHz",
        "peak2_power_dBm",
    ]
    # A Gaussian is a parabola in dB, so the 3-point refinement is exact.
    assert feats[0].item() == pytest.approx(2.0707, abs=1e-6)
    assert feats[1].item() == pytest.approx(-10.0, abs=1e-6)
    assert feats[2].item() == pytest.approx(2.0303, abs=1e-6)
    assert feats[3].item() == pytest.approx(-20.0, abs=1e-6)


def test_peaks_of_a_trace_with_too_few_maxima_still_give_n_values():
    f = _axis(101)
    ramp = torch.linspace(-90, -80, 101, dtype=torch.float64).reshape(1, -1)
    feats = FeatureExtractor(FeatureSpec(kind="peaks", peaks=3), f)(ramp)
    assert feats.shape == (1, 6) and torch.isfinite(feats).all()
    # no interior maximum: the strongest points are the top end of the ramp
    assert feats[0, 1].item() == pytest.approx(-80.0)


def test_simulated_reservoir_features_come_from_its_traces():
    params = RingParams(noise=False, drift=False, hysteresis=False)
    grid = AnalyzerGrid()
    res = SimulatedReservoir(
        RingModel(params, seed=3), grid, FeatureSpec(kind="bins", bins=16), keep_traces=True
    )
    settings = torch.tensor([[2.1e9, -10.0, 1.8], [2.2e9, -20.0, 1.9]], dtype=torch.float64)
    out = res.measure(settings)
    assert out.traces_dbm is not None and out.traces_dbm.shape == (2, grid.points)
    torch.testing.assert_close(
        out.features,
        FeatureExtractor(FeatureSpec(kind="bins", bins=16), res.frequency_hz)(out.traces_dbm),
    )
    # noise, drift and hysteresis off: the bench path equals the pure, differentiable one
    torch.testing.assert_close(res.differentiable_features(settings), out.features)
