"""Spin-wave physics of the ring's delay line: field, MSSW dispersion, loop phase, losses, modes.

All functions are pure and written against the array API (sim/arrays.py): the same
lines run on torch tensors (batched over leading dimensions, differentiable) and on
NumPy arrays (the one-shot path). Frequencies in Hz, fields in Oe, wavenumbers in rad/m.

Damon-Eshbach (MSSW) dispersion of a film of thickness d in an in-plane field H:

    f(k)^2 = f_H (f_H + f_M) + (f_M^2 / 4) (1 - exp(-2 k d)),   f_H = gamma H, f_M = gamma 4piMs

so the band runs from f_FMR = gamma sqrt(H (H + 4piMs)) (k -> 0) to f_DE = gamma (H + 2piMs)
(k -> infinity).
"""

from __future__ import annotations

import math

from labpgt.sim.arrays import Array, at_least, at_most, namespace, softplus, stop_gradient
from labpgt.sim.params import RingParams

_DB_PER_NEPER_POWER = 10.0 / math.log(10.0)  # 10*log10(e^x) = 4.343 x


def field_oe(bias_a: Array, remanence_sign: Array | float, params: RingParams) -> Array:
    """Field of the electromagnet H = k*I + sign*H_rem, Oe."""
    return params.field_per_current_oe_per_a * bias_a + remanence_sign * params.remanence_oe


def fmr_hz(field: Array, params: RingParams) -> Array:
    """Bottom of the MSSW band (k -> 0), Hz. Non-positive fields are clamped to 1e-3 Oe."""
    xp = namespace(field)
    h = at_least(xp, field, 1e-3)
    return params.gyro_hz_per_oe * xp.sqrt(h * (h + params.four_pi_ms_g))


def de_limit_hz(field: Array, params: RingParams) -> Array:
    """Top of the MSSW band (k -> infinity), Hz."""
    xp = namespace(field)
    return params.gyro_hz_per_oe * (at_least(xp, field, 1e-3) + params.four_pi_ms_g / 2)


def frequency_of_k(k: Array, field: Array, params: RingParams) -> Array:
    """MSSW frequency of wavenumber k (rad/m) in field H (Oe), Hz."""
    xp = namespace(k)
    f_m = params.gyro_hz_per_oe * params.four_pi_ms_g
    f_fmr = fmr_hz(field, params)
    return xp.sqrt(f_fmr**2 + 0.25 * f_m**2 * -xp.expm1(-2.0 * k * params.film_thickness_m))


def dfdk(k: Array, f: Array, params: RingParams) -> Array:
    """Slope df/dk of the dispersion at (k, f), Hz per rad/m (group velocity / 2pi)."""
    xp = namespace(k)
    f_m = params.gyro_hz_per_oe * params.four_pi_ms_g
    d = params.film_thickness_m
    return f_m**2 * d * xp.exp(-2.0 * k * d) / (4.0 * f)


def k_of_frequency(f: Array, field: Array, params: RingParams) -> Array:
    """Wavenumber of an MSSW at frequency f, rad/m, smoothly extended below the band.

    Inside the band this inverts the dispersion exactly. Below f_FMR no surface wave
    propagates; a softplus keeps k small and positive there so that the transducer
    loss (which grows as k -> 0) shuts the path smoothly instead of with a kink.
    """
    xp = namespace(f)
    f_m = params.gyro_hz_per_oe * params.four_pi_ms_g
    u = 4.0 * (f**2 - fmr_hz(field, params) ** 2) / f_m**2
    k_raw = -xp.log1p(-at_most(xp, u, 1.0 - 1e-9)) / (2.0 * params.film_thickness_m)
    soft_rad_per_m = 0.005 * params.transducer_k_low_rad_per_m
    return softplus(xp, k_raw / soft_rad_per_m) * soft_rad_per_m


def loop_phase_rad(k: Array, f: Array, params: RingParams) -> Array:
    """Total phase of one round trip, k*L + 2pi f tau_e + phi_amp, rad."""
    return (
        k * params.propagation_length_m
        + 2.0 * math.pi * f * params.electronics_delay_s
        + params.amplifier_phase_rad
    )


def group_delay_s(k: Array, f: Array, params: RingParams) -> Array:
    """Round-trip group delay d(phase)/d(omega) = L / v_g + tau_e, s."""
    return (
        params.propagation_length_m / (2.0 * math.pi * dfdk(k, f, params))
        + params.electronics_delay_s
    )


def relaxation_rate_per_s(field: Array, params: RingParams) -> Array:
    """Amplitude relaxation rate of MSSW, alpha * 2pi (f_H + f_M/2), 1/s."""
    f_h = params.gyro_hz_per_oe * at_least(namespace(field), field, 1e-3)
    f_m = params.gyro_hz_per_oe * params.four_pi_ms_g
    return params.gilbert_damping * 2.0 * math.pi * (f_h + 0.5 * f_m)


def transducer_loss_db(k: Array, params: RingParams) -> Array:
    """Coupling loss of the two transducers, dB: grows toward both band edges.

    Long waves (k -> 0, toward f_FMR) and short waves (k -> infinity, toward f_DE)
    couple poorly into finite antennas.
    """
    xp = namespace(k)
    k_lo = params.transducer_k_low_rad_per_m
    k_hi = params.transducer_k_high_rad_per_m
    k_safe = at_least(xp, k, 1e-6 * k_lo)
    return 20.0 * (xp.log10(1.0 + (k_lo / k_safe) ** 2) + xp.log10(1.0 + (k_safe / k_hi) ** 2))


def propagation_loss_db(k: Array, f: Array, field: Array, params: RingParams) -> Array:
    """Spin-wave loss of one pass, dB: damping over the transit time plus transducer loss."""
    transit_s = params.propagation_length_m / (2.0 * math.pi * dfdk(k, f, params))
    damping_db = 2.0 * _DB_PER_NEPER_POWER * relaxation_rate_per_s(field, params) * transit_s
    return damping_db + transducer_loss_db(k, params)


def best_k_rad_per_m(params: RingParams) -> float:
    """Wavenumber of least transducer loss, sqrt(k_low * k_high), rad/m."""
    return math.sqrt(params.transducer_k_low_rad_per_m * params.transducer_k_high_rad_per_m)


def solve_modes(field: Array, params: RingParams, newton_steps: int = 4) -> Array:
    """Wavenumbers of `mode_count` consecutive eigenmodes per field, shape field.shape + (M,).

    Mode n satisfies loop_phase(k) = 2 pi n. The window starts at half the low
    transducer wavenumber so that it covers the whole net-gain band. The loop phase
    is increasing and concave in k, so Newton from the left converges monotonically
    (after 2 steps to ~1e-9, after 3 to rounding). The iterations run on the field cut
    from autograd (`_newton_steps`); one final Newton step with autograd gives the exact
    implicit derivative dk/dH at the converged root.
    """
    xp = namespace(field)
    offsets = xp.arange(params.mode_count, dtype=field.dtype)
    k_start = 0.5 * params.transducer_k_low_rad_per_m
    h = stop_gradient(field)[..., None]
    k0 = xp.full(h.shape, k_start, dtype=field.dtype)
    phase0 = loop_phase_rad(k0, frequency_of_k(k0, h, params), params)
    target_rad = (xp.floor(phase0 / (2.0 * math.pi)) + 1.0 + offsets) * (2.0 * math.pi)
    k = _newton_steps(k0 + 0.0 * offsets, h, target_rad, params, newton_steps)
    return _newton_step(k, field[..., None], target_rad, params)


def _newton_steps(
    k: Array, field: Array, target_rad: Array, params: RingParams, steps: int
) -> Array:
    """`steps` Newton steps of `_newton_step` with e = exp(-2kd) shared (no autograd needed).

    f = sqrt(f_FMR^2 + q (1 - e)) with q = f_M^2 / 4, df/dk = q d e / f. 1 - e loses a
    few digits against -expm1 for small k d; the final exact step makes up for it.
    """
    xp = namespace(k)
    f_m = params.gyro_hz_per_oe * params.four_pi_ms_g
    q = 0.25 * f_m**2
    d = params.film_thickness_m
    length = params.propagation_length_m
    c = 2.0 * math.pi * params.electronics_delay_s
    top = fmr_hz(field, params) ** 2 + q  # f_FMR^2 + q, per field
    offset = params.amplifier_phase_rad - target_rad
    for _ in range(steps):
        e = xp.exp(k * (-2.0 * d))
        f = xp.sqrt(top - q * e)
        residual = offset + length * k + c * f
        k = k - residual / (c * q * d * e / f + length)
    return k


def _newton_step(k: Array, field: Array, target_rad: Array, params: RingParams) -> Array:
    f = frequency_of_k(k, field, params)
    slope = params.propagation_length_m + 2.0 * math.pi * params.electronics_delay_s * dfdk(
        k, f, params
    )
    return k - (loop_phase_rad(k, f, params) - target_rad) / slope
