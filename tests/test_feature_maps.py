"""Feature-map measurements (smoothness, SNR, rank) and the refusal of unusable maps."""

from __future__ import annotations

import pytest
import torch
from labpgt.calibration.feature_maps import (
    assess,
    check_features,
    choose_map,
    plan_settings,
    qualifies,
)
from labpgt.sim.params import RingParams
from labpgt.sim.ring import RingModel

from labpgt.errors import UserError
from labpgt.features import FeatureSpec
from labpgt.simulated_reservoir import SimulatedReservoir


@pytest.fixture(scope="module")
def walk() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Traces of the standard walk on the in-process ring with noise on."""
    res = SimulatedReservoir(RingModel(RingParams(drift=False), seed=2), keep_traces=True)
    settings = plan_settings((2.0e9, 2.3e9), power_dbm=-10.0, bias_a=1.8, step_hz=7.5e6)
    out = res.measure(settings)
    assert out.traces_dbm is not None
    return out.traces_dbm, res.frequency_hz, settings


def test_kernel_windows_are_smoother_and_cleaner_than_hard_bins(walk) -> None:
    traces, freq, settings = walk
    kw = {"base_points": 40, "repeats": 3}
    kernel = assess(traces, freq, settings, FeatureSpec(kind="kernel", bins=16), **kw)
    bins = assess(traces, freq, settings, FeatureSpec(kind="bins", bins=16), **kw)
    assert kernel.smoothness > 0.8 > bins.smoothness
    assert kernel.snr_db > bins.snr_db + 5
    assert qualifies(kernel) and not qualifies(bins)
    # The map in use is kept when it qualifies; a failing one gives way to a qualifying one.
    assert choose_map([bins, kernel], FeatureSpec(kind="kernel", bins=16)) is kernel
    assert choose_map([bins, kernel], FeatureSpec(kind="bins", bins=16)) is kernel


def test_a_constant_or_non_finite_feature_is_refused_with_its_name_and_settings() -> None:
    settings = torch.tensor([[2.1e9, -10.0, 1.8], [2.2e9, -10.0, 1.8]], dtype=torch.float64)
    feats = torch.tensor([[1.0, -90.0], [2.0, -90.0]], dtype=torch.float64)
    with pytest.raises(UserError, match=r"feature k1 stays at -90 over every setting from "):
        check_features(feats, ["k0", "k1"], settings, where="test")
    feats[1, 0] = float("nan")
    with pytest.raises(UserError, match=r"feature k0 is nan at drive_hz=2200000000 Hz"):
        check_features(feats, ["k0", "k1"], settings, where="test")
