"""labpgt calibrate: field per ampere, hysteresis, mode spacing, drift, surrogate, loading API.

Runs the small calibration grid on the embedded virtual bench (SCPI over loopback) with the
ring's default parameters as the truth.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import h5py
import pytest
import torch
from labpgt.calibration import Calibration, check_drift, load_calibration
from labpgt.calibration.plan import CalibrationPlan
from labpgt.calibration.run import CalibrationResult, run_calibration
from labpgt.calibration.store import save_calibration
from labpgt.calibration.surrogate import SurrogateConfig
from labpgt.sim.params import RingParams

from labpgt.embedded import embedded_bench
from labpgt.errors import UserError
from labpgt.features import FeatureSpec
from labpgt.instrument_reservoir import InstrumentReservoir

TRUE_K = RingParams().field_per_current_oe_per_a
FAST_FIT = SurrogateConfig(steps=300)


def _calibrate(tmp: Path, res: InstrumentReservoir) -> tuple[CalibrationResult, Calibration]:
    result = run_calibration(res, CalibrationPlan.reduced(), surrogate_config=FAST_FIT)
    return result, load_calibration(save_calibration(result, tmp / "calib.h5"))


@pytest.fixture(scope="module")
def benches(tmp_path_factory) -> Iterator[dict[str, tuple]]:
    """Hysteresis off (bench closed again), then on (bench kept open for the drift checks).

    One embedded bench at a time: the benches share one VISA resource manager.
    """
    tmp = tmp_path_factory.mktemp("calibration")
    (tmp / "off").mkdir()
    # Hard bins: the grey-box surrogate these tests check draws the drive line into bins.
    bins = FeatureSpec(kind="bins", bins=32)
    with embedded_bench(seed=3, hysteresis=False, handle_signals=False, features=bins) as res:
        off = (res, *_calibrate(tmp / "off", res))
    with embedded_bench(seed=3, hysteresis=True, handle_signals=False, features=bins) as res:
        (tmp / "on").mkdir()
        yield {"on": (res, *_calibrate(tmp / "on", res)), "off": off}


@pytest.fixture(scope="module")
def with_hysteresis(benches):
    return benches["on"]


@pytest.fixture(scope="module")
def without_hysteresis(benches):
    return benches["off"]


def test_field_per_ampere_within_5_percent(with_hysteresis, without_hysteresis):
    for _, result, cal in (with_hysteresis, without_hysteresis):
        k = result.bias_sweep.field_fit.field_per_ampere_oe_per_a
        assert abs(k - TRUE_K) / TRUE_K < 0.05, k
        assert cal.field_per_ampere_oe_per_a == pytest.approx(k)


def test_hysteresis_detected_only_when_on(with_hysteresis, without_hysteresis):
    _, on, cal_on = with_hysteresis
    _, off, cal_off = without_hysteresis
    # falling leg sees +H_rem, rising -H_rem: offset 2·H_rem = 4 Oe on the default ring
    assert on.bias_sweep.hysteresis.detected and cal_on.hysteresis_detected
    assert 2.0 < on.bias_sweep.hysteresis.offset_oe < 6.0
    assert not off.bias_sweep.hysteresis.detected and not cal_off.hysteresis_detected
    assert abs(off.bias_sweep.hysteresis.offset_oe) < 0.5


def test_mode_spacing_within_5_percent(with_hysteresis):
    res, result, _ = with_hysteresis
    truth = res.virtual_bench.ring.mode_spacing_hz(result.operating.bias_a)
    assert abs(result.mode_spacing_hz - truth) / truth < 0.05, (result.mode_spacing_hz, truth)


def test_loading_api_for_training(with_hysteresis):
    res, result, cal = with_hysteresis
    f = res.feature_dim
    assert cal.feature_names == res.feature_names and cal.feature_spec.bins == 32
    assert cal.feature_mean.shape == cal.feature_std.shape == cal.noise_std.shape == (f,)
    assert (cal.feature_std > 0).all()
    for name in ("drive_hz", "drive_dbm", "bias_a"):
        lo, hi = cal.encoding_ranges[name]
        assert lo <= hi
    assert (
        cal.encoding_ranges["bias_a"][0] <= cal.operating_bias_a <= cal.encoding_ranges["bias_a"][1]
    )
    assert not cal.surrogate.training
    x = ((cal.setting_lower() + cal.setting_upper()) / 2).repeat(4, 1).requires_grad_(True)
    y = cal.surrogate(x)
    assert y.shape == (4, f) and y.dtype == torch.float64
    y.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # fitted at the operating bias only: no claimed slope along the bias
    assert cal.encoding_ranges["bias_a"][0] == cal.encoding_ranges["bias_a"][1]
    assert (x.grad[:, 2] == 0).all() and (x.grad[:, :2] != 0).any()
    assert cal.reference_settings.shape[1] == 3
    assert cal.baseline_features.shape == (cal.reference_settings.shape[0], f)
    assert cal.noise_db == pytest.approx(result.references.noise.rms_std)
    assert cal.surrogate_validation_over_noise == pytest.approx(
        result.surrogate.validation_rmse / result.references.noise.rms_std
    )
    z = cal.normalise(torch.as_tensor(result.response_features[0, 0]))
    assert torch.isfinite(z).all()


def test_drift_check_passes_without_drift_and_catches_injected_drift(with_hysteresis):
    res, _, cal = with_hysteresis
    calm = check_drift(res, cal, tolerance_mhz=1.0, tolerance_db=1.0, repeats=2)
    assert calm.within_tolerance, calm.summary()
    ring = res.virtual_bench.ring
    ring.inject_drift(field_oe=2.0)  # ≈ 8 MHz of comb shift
    try:
        moved = cal.check_drift(res, tolerance_mhz=1.0, tolerance_db=1.0, repeats=2)
    finally:
        ring.inject_drift(field_oe=-2.0)
    assert not moved.within_tolerance
    assert moved.frequency_drift_mhz > 4.0, moved.summary()


def test_drift_check_refuses_another_bench(with_hysteresis):
    # (a second embedded bench cannot be opened while the fixture's is: one VISA manager)
    _, _, cal = with_hysteresis
    from labpgt.sim.ring import RingModel

    from labpgt.simulated_reservoir import SimulatedReservoir

    with pytest.raises(UserError, match="recalibrate on this bench"):
        cal.check_drift(SimulatedReservoir(RingModel()))


def test_surrogate_error_reported_on_held_out_rows(with_hysteresis):
    """The reported error is the held-out RMS (dB) and beats predicting each feature's mean."""
    _, result, cal = with_hysteresis
    fit = result.surrogate
    idx = fit.validation_index
    x = torch.from_numpy(result.surrogate_settings)[idx]
    y = torch.from_numpy(result.surrogate_features)[idx]
    with torch.no_grad():
        err = float(((cal.surrogate(x) - y) ** 2).mean().sqrt())
    assert err == pytest.approx(cal.surrogate_validation_db, rel=1e-9)
    baseline = float(((y - y.mean(dim=0)) ** 2).mean().sqrt())
    assert err < 0.8 * baseline, (err, baseline)
    assert fit.n_validation >= 0.15 * (fit.n_train + fit.n_validation)


def test_surrogate_error_below_twice_the_noise(with_hysteresis, without_hysteresis):
    """Issue 5's target, on the small grid with the test's 300-step fit (a configuration a
    user can run: `labpgt calibrate --grid small --surrogate-steps 300`).

    Error: RMS over the held-out shots (random settings in the operating window, from the
    same draw as the training shots, never fitted) and all features, dB. Noise: the RMS
    shot-to-shot scatter of the reference passes, dB. A perfect surrogate scores ≈1 (the
    held-out shots carry their own noise).
    """
    for _, result, cal in (with_hysteresis, without_hysteresis):
        fit = result.surrogate
        assert fit.model.grey_box
        ratio = fit.validation_rmse / result.references.noise.rms_std
        assert ratio < 2.0, (fit.validation_rmse, result.references.noise.rms_std)
        assert cal.surrogate_validation_over_noise == pytest.approx(ratio)
        # it also spans the drive grid outside the window (for PAT), less accurately: there
        # the drive locks and pulls the comb; its error there is reported, not hidden
        assert math.isfinite(fit.context_validation_rmse)
        assert cal.summary["surrogate_grid_validation_db"] == pytest.approx(
            fit.context_validation_rmse
        )
        # the held-out shots lie inside the operating window the surrogate is for
        x = torch.from_numpy(result.surrogate_settings)[fit.validation_index]
        assert ((x >= cal.setting_lower() - 1e-6) & (x <= cal.setting_upper() + 1e-6)).all()
        # and they are a real sample: drive frequencies spread over several feature bins
        assert fit.n_validation >= 30
        span = cal.encoding_ranges["drive_hz"]
        assert span[1] - span[0] >= 3 * (cal.frequency_hz[-1] - cal.frequency_hz[0]) / 32


def test_grey_box_and_plain_mlp_each_score_their_own_model(with_hysteresis):
    """Fitted on the same window shots, the grey-box (with the line geometry) and the plain
    MLP (without) are two models of their own kind, held out on the same rows, with
    different errors (benchmarks/calibration.py's table once printed one error for both:
    its bench's features had stopped being bins, so there was no geometry)."""
    from labpgt.calibration.surrogate import fit_surrogate

    from labpgt.setting_bounds import SETTING_NAMES

    _, result, _ = with_hysteresis
    geometry = result.bias_sweep.geometry
    assert geometry is not None  # bins: the line is drawn
    s = torch.from_numpy(result.surrogate_settings)
    y = torch.from_numpy(result.surrogate_features)
    ranges = torch.tensor(
        [list(result.encoding_ranges[n]) for n in SETTING_NAMES], dtype=torch.float64
    )
    cfg = SurrogateConfig(steps=100)
    grey = fit_surrogate(s, y, ranges=ranges, config=cfg, geometry=geometry)
    plain = fit_surrogate(s, y, ranges=ranges, config=cfg)
    assert grey.model.grey_box and not plain.model.grey_box
    assert torch.equal(grey.validation_index, plain.validation_index)
    assert grey.validation_rmse != pytest.approx(plain.validation_rmse, rel=1e-3)
    with torch.no_grad():  # each error is its own model's on the held-out rows
        for fit in (grey, plain):
            idx = fit.validation_index
            err = float(((fit.model(s[idx]) - y[idx]) ** 2).mean().sqrt())
            assert err == pytest.approx(fit.validation_rmse, rel=1e-9)


def test_operating_window_avoids_the_locking_zone(with_hysteresis):
    """The drive window sits where the drive leaves the comb alone (interaction ≈ noise),
    and the grid does show a locking zone elsewhere at the operating bias."""
    from labpgt.calibration.analysis import INTERACTION_LIMIT, index_of

    _, result, cal = with_hysteresis
    op = result.operating
    assert op.window == "calm"  # hard bins: the calm window could be chosen, and was
    with h5py.File(cal.path, "r") as h5:
        assert json.loads(h5.attrs["operating"])["window"] == "calm"
    b = index_of(result.response_bias_a, op.bias_a)
    f0, f1 = index_of(result.drive_hz, op.drive_hz[0]), index_of(result.drive_hz, op.drive_hz[1])
    assert result.references.interaction is not None
    assert result.references.interaction[b, :, f0 : f1 + 1].max() <= INTERACTION_LIMIT
    assert result.references.interaction[b].max() > 3 * INTERACTION_LIMIT


def test_window_choice_on_a_synthetic_response():
    """interaction_map flags drive settings that disturb bins away from the drive tone;
    choose_operating_point keeps the drive window out of them, and falls back to
    sensitivity alone when no calm run of three frequencies exists."""
    import numpy as np
    from labpgt.calibration.analysis import choose_operating_point, interaction_map

    rng = np.random.default_rng(0)
    b, p, fq, f = 2, 3, 12, 12
    drive_bin = np.arange(fq)  # drive frequency j lands in bin j
    y = -90.0 + 0.25 * rng.standard_normal((b, p, fq, f))
    for j in range(fq):
        y[:, :, j, j] += np.array([4.0, 8.0, 12.0])[None, :]  # the drive tone itself
    y[:, :, 8:, 0] += rng.normal(0.0, 6.0, (b, p, 4))  # a far bin moves: locking/mixing
    y[1, :, 8:, 0] += 10.0  # bias 1 responds more: the most sensitive one
    noise = np.full(f, 0.25)
    inter = interaction_map(y, noise, drive_bin)
    assert inter[:, :, :7].max() < 2.0 and inter[1, :, 8:].min() > 5.0
    axes = (np.array([1.0, 2.0]), np.array([-20.0, -10.0, 0.0]), np.linspace(2e9, 2.3e9, fq))
    op = choose_operating_point(y, noise, *axes, interaction=inter)
    assert op.bias_a == 2.0 and op.drive_hz[1] <= axes[2][7]
    assert op.drive_hz[1] - op.drive_hz[0] >= 2 * (axes[2][1] - axes[2][0])
    everywhere = np.full_like(inter, 10.0)
    fallback = choose_operating_point(y, noise, *axes, interaction=everywhere)
    assert fallback == choose_operating_point(y, noise, *axes)
