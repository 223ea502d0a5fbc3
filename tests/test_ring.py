"""sim.ring physics: parameters, field and MSSW band, eigenmode comb, threshold, competition."""

from __future__ import annotations

import math

import pytest
import torch
from labpgt.sim import dispersion
from labpgt.sim.grid import AnalyzerGrid
from labpgt.sim.params import RingParams
from labpgt.sim.ring import RingModel
from labpgt.sim.spectrum import noise_floor_mw
from pydantic import ValidationError

GRID = AnalyzerGrid()
QUIET = RingParams(noise=False, drift=False)


def quiet_ring(**changes: object) -> RingModel:
    return RingModel(QUIET.model_copy(update=changes) if changes else QUIET)


def free_running(ring: RingModel, bias_a: float = 1.8, sign: float = -1.0):
    """Lines with the drive off: (frequency_hz, power_dbm) of the M modes."""
    with torch.no_grad():
        lines = ring.lines(2.0e9, -40.0, bias_a, rf_on=False, remanence_sign=sign)
    m = ring.params.mode_count
    return lines.frequency_hz[0, 1 : m + 1], lines.power_dbm[0, 1 : m + 1]


# ---------------------------------------------------------------- parameters


def test_defaults_follow_ring_physics() -> None:
    p = RingParams()
    assert p.four_pi_ms_g == 1750.0
    assert p.gyro_hz_per_oe == 2.8e6
    assert p.gilbert_damping == 2e-4
    assert p.field_per_current_oe_per_a == pytest.approx(150.0)
    assert 1.0 <= p.remanence_oe <= 3.0
    assert p.noise_floor_dbm_at_100khz == -95.0
    assert p.jitter_db == 0.2
    assert p.field_drift_oe_per_min == 0.05
    assert p.gain_drift_db_per_hour == 0.1
    assert p.locking_range_hz == 11e6 and p.locking_reference_drive_dbm == -10.0
    assert p.noise and p.drift and p.hysteresis


def test_params_frozen_forbid_extra_and_described() -> None:
    p = RingParams()
    with pytest.raises(ValidationError):
        p.gilbert_damping = 1e-3  # type: ignore[misc]
    with pytest.raises(ValidationError, match="not_a_field"):
        RingParams(not_a_field=1.0)  # type: ignore[call-arg]
    for name, field in RingParams.model_fields.items():
        assert field.description, f"{name} has no description"


@pytest.mark.parametrize(
    ("field", "value", "bound"),
    [
        ("gilbert_damping", -1e-4, "greater than 0"),
        ("four_pi_ms_g", 1e6, "less than or equal to 25000"),
        ("field_per_current_oe_per_a", 0.0, "greater than 1"),
        ("propagation_length_m", 1.0, "less than or equal to 0.2"),
        ("mode_count", 2, "greater than or equal to 4"),
    ],
)
def test_invalid_param_names_field_and_range(field: str, value: float, bound: str) -> None:
    with pytest.raises(ValidationError) as info:
        RingParams(**{field: value})
    text = str(info.value)
    assert field in text and bound in text


def test_transducer_wavenumbers_must_be_ordered() -> None:
    with pytest.raises(ValidationError, match="transducer_k_low_rad_per_m"):
        RingParams(transducer_k_low_rad_per_m=2e4, transducer_k_high_rad_per_m=1e4)


# ---------------------------------------------------------------- field and band


def test_fmr_at_1p8_a_is_2p07_ghz() -> None:
    for hysteresis in (True, False):
        ring = RingModel(RingParams(hysteresis=hysteresis))
        ring.set_bias(1.8)
        assert ring.fmr_hz(1.8) == pytest.approx(2.07e9, rel=0.02)
    field = torch.tensor(270.0, dtype=torch.float64)
    p = RingParams()
    assert float(dispersion.fmr_hz(field, p)) == pytest.approx(
        2.8e6 * math.sqrt(270.0 * 2020.0), rel=1e-12
    )
    assert float(dispersion.de_limit_hz(field, p)) == pytest.approx(2.8e6 * (270 + 875), rel=1e-12)


def test_field_is_k_i_plus_signed_remanence() -> None:
    ring = quiet_ring()
    assert float(ring.field_oe(1.8, remanence_sign=1.0)) == pytest.approx(272.0)
    assert float(ring.field_oe(1.8, remanence_sign=-1.0)) == pytest.approx(268.0)
    off = RingModel(RingParams(hysteresis=False))
    off.set_bias(2.0)
    off.set_bias(1.0)
    assert float(off.field_oe(1.8)) == pytest.approx(270.0)


def test_dispersion_inverts_and_spans_the_band() -> None:
    p = RingParams()
    field = torch.tensor([240.0, 270.0, 300.0], dtype=torch.float64).unsqueeze(-1)
    k = torch.tensor([300.0, 3e3, 3e4, 3e5], dtype=torch.float64)
    f = dispersion.frequency_of_k(k, field, p)
    assert torch.all(f > dispersion.fmr_hz(field, p))
    assert torch.all(f < dispersion.de_limit_hz(field, p))
    assert torch.all(torch.diff(f, dim=-1) > 0)
    k_back = dispersion.k_of_frequency(f, field, p)
    torch.testing.assert_close(k_back, k.expand_as(f), rtol=1e-6, atol=0)
    # below the band no surface wave propagates: k stays tiny, the transducers shut
    below = dispersion.fmr_hz(field, p) - 5e6
    k_below = dispersion.k_of_frequency(below, field, p)
    assert torch.all((k_below > 0) & (k_below < 1.0))
    assert torch.all(dispersion.transducer_loss_db(k_below, p) > 100.0)


# ---------------------------------------------------------------- eigenmodes


@pytest.mark.parametrize("bias_a", [1.6, 1.8, 2.0])
def test_mode_comb_spacing_is_inverse_group_delay(bias_a: float) -> None:
    p = RingParams()
    field = torch.tensor(p.field_per_current_oe_per_a * bias_a, dtype=torch.float64)
    k = dispersion.solve_modes(field, p)
    f = dispersion.frequency_of_k(k, field, p)
    # every mode satisfies the loop phase condition k L + phi = 2 pi n
    turns = dispersion.loop_phase_rad(k, f, p) / (2 * math.pi)
    torch.testing.assert_close(turns, torch.round(turns), rtol=0, atol=1e-9)
    assert torch.all(torch.diff(torch.round(turns)) == 1)
    spacing = torch.diff(f)
    k_mid, f_mid = (k[1:] + k[:-1]) / 2, (f[1:] + f[:-1]) / 2
    delay = dispersion.group_delay_s(k_mid, f_mid, p)
    assert torch.all((delay > 100e-9) & (delay < 300e-9))
    assert torch.all((spacing * delay - 1).abs() < 0.05)


def test_mode_spacing_near_5_mhz_and_group_delay_near_200_ns() -> None:
    ring = quiet_ring()
    ring.set_bias(1.8)
    assert ring.mode_spacing_hz(1.8) == pytest.approx(5.0e6, rel=0.05)
    assert ring.group_delay_s(1.8) == pytest.approx(200e-9, rel=0.05)
    assert ring.mode_spacing_hz(1.8) * ring.group_delay_s(1.8) == pytest.approx(1.0, abs=0.05)


def test_modes_move_up_with_bias() -> None:
    ring = quiet_ring()
    low = ring.mode_frequencies_hz(1.8)
    ring.inject_drift(field_oe=0.15)  # +0.001 A worth of field: far less than a spacing
    high = ring.mode_frequencies_hz(1.8)
    nearest = high[torch.argmin((high.unsqueeze(0) - low.unsqueeze(1)).abs(), dim=1)]
    assert torch.all(nearest > low)
    strongest = []
    for bias in (1.6, 1.7, 1.8, 1.9, 2.0):
        f, p = free_running(ring, bias)
        strongest.append(float(f[p.argmax()]))
    assert strongest == sorted(strongest)


# ---------------------------------------------------------------- threshold and competition


def test_above_threshold_a_few_modes_survive_in_the_default_grid() -> None:
    ring = quiet_ring()
    f, p = free_running(ring)
    strong = p > -30.0
    assert 1 <= int(strong.sum()) <= 5
    assert torch.all((f[strong] > GRID.start_hz) & (f[strong] < GRID.stop_hz))
    assert float(p.max()) <= 0.0 and float(p.max()) >= -30.0
    # far more modes have net gain than survive the competition
    params = ring.params
    field = ring.field_oe(1.8, remanence_sign=-1.0)
    k = dispersion.solve_modes(field, params)
    fk = dispersion.frequency_of_k(k, field, params)
    net_db = (
        params.amplifier_gain_db
        - params.fixed_loss_db
        - dispersion.propagation_loss_db(k, fk, field, params)
    )
    assert int((net_db > 0).sum()) >= 3 * int(strong.sum())
    # survivors stand well clear of the suppressed modes
    assert float(p.max()) - float(p[~strong].max()) > 20.0


def test_propagation_loss_grows_toward_both_band_edges() -> None:
    p = RingParams()
    field = torch.tensor(270.0, dtype=torch.float64)
    k = torch.logspace(2, 6, 400, dtype=torch.float64)
    loss = dispersion.propagation_loss_db(k, dispersion.frequency_of_k(k, field, p), field, p)
    best = int(loss.argmin())
    assert 0 < best < len(k) - 1
    assert torch.all(torch.diff(loss[:best]) < 0) and torch.all(torch.diff(loss[best:]) > 0)


@pytest.mark.parametrize("change", [{"amplifier_gain_db": 28.0}, {}])
def test_below_threshold_the_trace_is_noise_floor_only(change: dict) -> None:
    ring = quiet_ring(**change)
    # low gain: no mode has net gain; default gain at 0.5 A: the band sits near 1 GHz
    bias_a = 1.8 if change else 0.5
    floor_dbm = 10 * math.log10(noise_floor_mw(GRID, ring.params))
    with torch.no_grad():
        trace = ring.evaluate(2.15e9, -20.0, bias_a, GRID, rf_on=False)
        lines = ring.lines(2.15e9, -20.0, bias_a, rf_on=False)
    in_grid = (lines.frequency_hz > GRID.start_hz - 1e6) & (lines.frequency_hz < GRID.stop_hz + 1e6)
    assert float(lines.power_dbm[in_grid].max()) < floor_dbm - 3.0
    assert float((trace - floor_dbm).abs().max()) < 1.0
    if change:  # the same ring with its normal gain does oscillate
        with torch.no_grad():
            loud = quiet_ring().evaluate(2.15e9, -20.0, bias_a, GRID, rf_on=False)
        assert float(loud.max()) > -30.0


def test_nonlinear_shift_moves_modes_up_with_power() -> None:
    linear = quiet_ring(nonlinear_shift_hz_per_mw=0.0)
    shifted = quiet_ring()
    f0, p0 = free_running(linear)
    f1, p1 = free_running(shifted)
    torch.testing.assert_close(p0, p1)
    shift = f1 - f0
    expected = shifted.params.nonlinear_shift_hz_per_mw * 10 ** (p1 / 10)
    torch.testing.assert_close(shift, expected, rtol=1e-6, atol=1.0)
    assert float(shift[p1.argmax()]) > 1e6  # ~0.5 mW -> a few MHz
    # more gain, more power, larger shift of the strongest mode
    louder = quiet_ring(amplifier_gain_db=shifted.params.amplifier_gain_db + 1.0)
    f2, p2 = free_running(louder)
    assert float(p2.max()) > float(p1.max())
    assert float(f2[p2.argmax()] - f0[p2.argmax()]) > float(shift[p1.argmax()])
