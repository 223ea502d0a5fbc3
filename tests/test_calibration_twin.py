"""Physics-twin surrogate (`calibration.twin`) on the embedded bench, locking-zone window.

The embedded ring runs the model's default parameters, so the twin here starts from the
true physics class; the test checks the fit (field offset found by scan, offsets by Adam),
the held-out figure in the window sensitivity alone picks (the locking zone), gradients and
the store round trip. How the twin copes with a ring whose physics differs from its start
is measured in docs/calibration.md ("Physics twin").
"""

from __future__ import annotations

import pytest
import torch
from labpgt.calibration import load_calibration
from labpgt.calibration.plan import CalibrationPlan
from labpgt.calibration.run import run_calibration
from labpgt.calibration.store import save_calibration
from labpgt.calibration.surrogate import SurrogateConfig
from labpgt.calibration.twin import TwinSurrogate, twin_fit_steps

from labpgt.embedded import embedded_bench
from labpgt.errors import UserError
from labpgt.features import FeatureSpec

TWIN_FIT = SurrogateConfig(steps=300, seed=3, twin_rounds=0)


@pytest.fixture(scope="module")
def twin_cal(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("twin")
    # The twin draws the spectrum and applies the reservoir's own map: kernel windows, the
    # default (hard bins were once required, for their line geometry).
    kernel = FeatureSpec(kind="kernel", bins=32)
    with embedded_bench(seed=3, handle_signals=False, features=kernel) as res:
        result = run_calibration(
            res,
            CalibrationPlan.reduced(),
            surrogate_config=TWIN_FIT,
            surrogate_kind="twin",
            window="sensitivity",
            progress=lambda stage, done, total, _s: FIT_STEPS.append((stage, done, total)),
        )
    return result, load_calibration(save_calibration(result, tmp / "calib.h5"))


FIT_STEPS: list[tuple[str, int, int]] = []
"""Every progress report of the fixture's calibration."""


def test_the_twin_fit_reports_each_step_with_its_total_known_first(twin_cal):
    fit = [(done, total) for stage, done, total in FIT_STEPS if stage == "surrogate fit"]
    steps = twin_fit_steps(TWIN_FIT.twin_rounds)
    assert steps >= 2 and fit == [(k, steps) for k in range(steps + 1)]


def test_twin_held_out_error_below_twice_noise_in_locking_window(twin_cal):
    result, cal = twin_cal
    assert isinstance(result.surrogate.model, TwinSurrogate)
    noise = result.references.noise.rms_std
    ratio = result.surrogate.validation_rmse / noise
    assert ratio < 2.0, f"twin held-out {result.surrogate.validation_rmse:.3f} dB = {ratio:.2f}x"
    assert cal.surrogate_validation_over_noise == pytest.approx(ratio)
    assert cal.summary["surrogate_kind"] == "twin"
    assert cal.feature_spec.kind == "kernel"
    # the window is the locking zone: the drive moves the features strongly there
    assert result.operating.sensitivity_to_noise > 5.0


def test_twin_round_trip_and_gradient(twin_cal):
    result, cal = twin_cal
    x = torch.as_tensor(result.surrogate_settings[:8], dtype=torch.float64)
    with torch.no_grad():
        a = result.surrogate.model(x)
        b = cal.surrogate(x)
    assert torch.allclose(a, b, atol=1e-9)
    xg = x.clone().requires_grad_(True)
    cal.surrogate(xg).sum().backward()
    assert torch.isfinite(xg.grad).all()
    assert xg.grad[:, :2].abs().sum() > 0


def test_bad_kind_and_window_refused():
    with embedded_bench(seed=0, handle_signals=False) as res:
        with pytest.raises(UserError, match="surrogate kind"):
            run_calibration(res, CalibrationPlan.reduced(), surrogate_kind="spline")
        with pytest.raises(UserError, match="window"):
            run_calibration(res, CalibrationPlan.reduced(), window="widest")


def test_twin_vector_jacobian_product_as_pat_takes_it(twin_cal):
    """PAT's backward pass: torch.func.vjp through the loaded twin, against finite differences."""
    _, cal = twin_cal
    x = torch.as_tensor(cal.reference_settings[2:3], dtype=torch.float64)
    g = torch.randn(
        1,
        cal.surrogate(x).shape[-1],
        dtype=torch.float64,
        generator=torch.Generator().manual_seed(0),
    )
    _, vjp = torch.func.vjp(cal.surrogate, x)
    (gx,) = vjp(g)
    step = torch.tensor([[2e3, 1e-3, 0.0]], dtype=torch.float64)
    with torch.no_grad():
        fd = ((cal.surrogate(x + step) - cal.surrogate(x - step)) * g).sum() / 2
    assert torch.isfinite(gx).all()
    assert float((gx.detach() * step).sum()) == pytest.approx(float(fd), rel=0.05, abs=1e-6)
