"""One setting of the ring in NumPy float64: the latency path of `RingModel.measure`.

The virtual analyzer measures one setting per sweep. Through torch that costs
~1500 small tensor operations of 2-5 us each (the 48 competition steps alone are
~500), ~5 ms per sweep, which caps the virtual bench at ~165 sweeps/s. The same
arithmetic on NumPy arrays of one row (M modes, L = 1 + 2M lines, P trace points)
costs ~1 us per operation.

Every function here mirrors its batched torch original line by line, in float64
(the torch fast path runs the competition and trace in float32): `mode_wavenumbers`
is `dispersion.solve_modes`, `competition` the no-grad loop of
`competition.steady_state`, `lines` is `RingModel._lines_core` with
`injection.injection_lines`, and `render` is `spectrum.render_trace` with the fast
path's window (lines drawn out to 8 standard deviations, where the float64 torch
path goes to 13). The random draws are the caller's (torch, same generator, same
order), so a seed gives the same noise either way. tests/test_ring_one_setting.py
pins the agreement with the float64 torch path (~1e-10 dB wherever the window's
edge is far below the noise floor; up to ~1e-3 dB for a +19 dBm line on a very fine
grid) and with the float32 fast path.
"""

from __future__ import annotations

import math

import numpy as np
from labpgt.sim import competition as torch_competition
from labpgt.sim import dispersion
from labpgt.sim.dispersion import _DB_PER_NEPER_POWER
from labpgt.sim.grid import AnalyzerGrid
from labpgt.sim.injection import _EPS_HZ, _SHARPNESS
from labpgt.sim.params import RingParams
from labpgt.sim.spectrum import _NEPER_PER_DB, _WINDOW_SIGMAS, line_sigma_hz, noise_floor_mw


def _softplus(x: np.ndarray | float) -> np.ndarray | float:
    """log(1 + e^x) without overflow."""
    return np.logaddexp(0.0, x)


# --------------------------------------------------------------------- dispersion


def fmr_hz(field: float, p: RingParams) -> float:
    h = max(field, 1e-3)
    return p.gyro_hz_per_oe * math.sqrt(h * (h + p.four_pi_ms_g))


def frequency_of_k(k: np.ndarray, field: float, p: RingParams) -> np.ndarray:
    f_m = p.gyro_hz_per_oe * p.four_pi_ms_g
    f_fmr = fmr_hz(field, p)
    return np.sqrt(f_fmr**2 + 0.25 * f_m**2 * -np.expm1(-2.0 * k * p.film_thickness_m))


def dfdk(k: np.ndarray, f: np.ndarray, p: RingParams) -> np.ndarray:
    f_m = p.gyro_hz_per_oe * p.four_pi_ms_g
    d = p.film_thickness_m
    return f_m**2 * d * np.exp(-2.0 * k * d) / (4.0 * f)


def k_of_frequency(f: float, field: float, p: RingParams) -> float:
    f_m = p.gyro_hz_per_oe * p.four_pi_ms_g
    u = 4.0 * (f**2 - fmr_hz(field, p) ** 2) / f_m**2
    k_raw = -math.log1p(-min(u, 1.0 - 1e-9)) / (2.0 * p.film_thickness_m)
    soft = 0.005 * p.transducer_k_low_rad_per_m
    return float(_softplus(k_raw / soft)) * soft


def relaxation_rate_per_s(field: float, p: RingParams) -> float:
    f_h = p.gyro_hz_per_oe * max(field, 1e-3)
    f_m = p.gyro_hz_per_oe * p.four_pi_ms_g
    return p.gilbert_damping * 2.0 * math.pi * (f_h + 0.5 * f_m)


def transducer_loss_db(k: np.ndarray | float, p: RingParams):
    k_lo, k_hi = p.transducer_k_low_rad_per_m, p.transducer_k_high_rad_per_m
    k_safe = np.maximum(k, 1e-6 * k_lo)
    return 20.0 * (np.log10(1.0 + (k_lo / k_safe) ** 2) + np.log10(1.0 + (k_safe / k_hi) ** 2))


def propagation_loss_db(k, f, field: float, p: RingParams):
    transit_s = p.propagation_length_m / (2.0 * math.pi * dfdk(k, f, p))
    damping_db = 2.0 * _DB_PER_NEPER_POWER * relaxation_rate_per_s(field, p) * transit_s
    return damping_db + transducer_loss_db(k, p)


def mode_wavenumbers(field: float, p: RingParams, newton_steps: int = 4) -> np.ndarray:
    """(M,) wavenumbers of the eigenmodes, rad/m (`dispersion.solve_modes` for one field)."""
    m = p.mode_count
    k_start = 0.5 * p.transducer_k_low_rad_per_m
    k0 = np.array([k_start])
    phase0 = float(dispersion.loop_phase_rad(k0, frequency_of_k(k0, field, p), p)[0])
    target = (math.floor(phase0 / (2.0 * math.pi)) + 1.0 + np.arange(m, dtype=np.float64)) * (
        2.0 * math.pi
    )
    f_m = p.gyro_hz_per_oe * p.four_pi_ms_g
    q = 0.25 * f_m**2
    d = p.film_thickness_m
    length = p.propagation_length_m
    c = 2.0 * math.pi * p.electronics_delay_s
    top = fmr_hz(field, p) ** 2 + q
    offset = p.amplifier_phase_rad - target
    k = np.full(m, k_start)
    for _ in range(newton_steps):
        e = np.exp(k * (-2.0 * d))
        f = np.sqrt(top - q * e)
        residual = offset + length * k + c * f
        k = k - residual / (c * q * d * e / f + length)
    # the final exact step, as `dispersion._newton_step`
    f = frequency_of_k(k, field, p)
    slope = length + c * dfdk(k, f, p)
    return k - (dispersion.loop_phase_rad(k, f, p) - target) / slope


# --------------------------------------------------------------------- lines


def lines(
    p: RingParams,
    best_transducer_loss_db: float,
    fin: float,
    dbm: float,
    field: float,
    dgain: float,
    rf: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Lines at the analyzer, (L,) Hz and (L,) mW, for one setting (`_lines_core`).

    field: the magnet's field including remanence and drift, Oe; dgain: the gain
    offset (drift), dB; rf: 1.0 with the drive on, 0.0 with it off.
    """
    gain_db = p.amplifier_gain_db + dgain - p.fixed_loss_db
    k_modes = mode_wavenumbers(field, p)
    mode_hz = frequency_of_k(k_modes, field, p)
    mode_net_db = gain_db - propagation_loss_db(k_modes, mode_hz, field, p)

    drive_mw = 10.0 ** (dbm / 10.0)
    k_in = k_of_frequency(fin, field, p)
    coupling = 10.0 ** (-(float(transducer_loss_db(k_in, p)) - best_transducer_loss_db) / 10)
    drive_saturation = (
        drive_mw * 10.0 ** (-(p.drive_coupling_loss_db + p.saturation_power_dbm) / 10.0)
    ) * (coupling * rf)
    spacing_hz = (mode_hz[-1] - mode_hz[0]) / (p.mode_count - 1)
    drive_separation = (fin - mode_hz) / spacing_hz
    power = torch_competition.steady_state(
        (mode_net_db / p.gain_scale_db)[None, :],
        drive_separation[None, :],
        np.array([drive_saturation]),
        p,
    )[0]
    mode_mw = power * 10.0 ** (p.saturation_power_dbm / 10.0)
    shifted_hz = mode_hz + p.nonlinear_shift_hz_per_mw * mode_mw

    f_k_in = float(frequency_of_k(np.array([k_in]), field, p)[0])
    drive_net_db = gain_db - float(propagation_loss_db(k_in, f_k_in, field, p))
    rho = p.ring_resonance_max * 10.0 ** (-float(_softplus(-drive_net_db)) / 20.0)
    phase = dispersion.loop_phase_rad(k_in, fin, p)
    resonance = 1.0 / (1.0 - 2.0 * rho * math.cos(phase) + rho**2)
    through_mw = (
        drive_mw
        * 10.0 ** (-p.drive_through_loss_db / 10.0)
        * (coupling * resonance + 10.0 ** (p.drive_leakage_db / 10.0))
    )
    return _injection(shifted_hz, mode_mw, fin, drive_mw, coupling, through_mw, rf, p)


def _injection(
    mode_hz: np.ndarray,
    mode_mw: np.ndarray,
    fin: float,
    drive_mw: float,
    coupling: float,
    through_mw: float,
    rf: float,
    p: RingParams,
) -> tuple[np.ndarray, np.ndarray]:
    """`injection.injection_lines` for one setting: (1 + 2M,) Hz and mW."""
    ref_drive_mw = 10.0 ** (p.locking_reference_drive_dbm / 10.0)
    ref_mode_mw = 10.0 ** (p.locking_reference_mode_dbm / 10.0)
    drive_factor = math.sqrt(drive_mw * coupling / ref_drive_mw)
    mode_factor = np.sqrt(1.25 * ref_mode_mw / (mode_mw + 0.25 * ref_mode_mw))
    lock_hz = p.locking_range_hz * drive_factor * mode_factor * rf
    detuning = fin - mode_hz
    abs_detuning = np.sqrt(detuning**2 + _EPS_HZ**2)
    width_hz = 0.05 * lock_hz + 20e3
    # sigmoid; the exponent is capped where e^x would overflow (the sigmoid is 0 there)
    locked = rf / (1.0 + np.exp(np.minimum((abs_detuning - lock_hz) / width_hz, 700.0)))
    adler = np.maximum(1.0 - lock_hz**2 / abs_detuning**2, -2.0)
    adler_root = np.sqrt(_softplus(_SHARPNESS * adler) / _SHARPNESS)
    pulled_hz = fin - detuning * adler_root
    idler_ratio = lock_hz / (abs_detuning * (1.0 + adler_root))
    free_mw = (1.0 - locked) * mode_mw
    idler_mw = free_mw * idler_ratio**2 * p.idler_efficiency * rf
    idler_hz = 2.0 * pulled_hz - fin
    drive_line_mw = through_mw * rf + float((locked * mode_mw).sum())
    frequency = np.concatenate(([fin], pulled_hz, idler_hz))
    power = np.concatenate(([drive_line_mw], free_mw, idler_mw))
    return frequency, power


# --------------------------------------------------------------------- trace


def render(
    line_hz: np.ndarray,
    line_mw: np.ndarray,
    grid: AnalyzerGrid,
    p: RingParams,
    jitter: np.ndarray | None = None,
    scatter: np.ndarray | None = None,
) -> np.ndarray:
    """(P,) trace in dBm of (L,) lines (`spectrum.render_trace` for one row, float64,
    with the float32 fast path's 8-sigma window).

    jitter (L,) and scatter (P,) are the standard-normal draws of the line
    amplitudes and of the noise floor (None: no noise of that kind).
    """
    points, bin_hz = grid.points, grid.bin_hz
    sigma_hz = line_sigma_hz(grid)
    half = min(int(math.ceil(_WINDOW_SIGMAS * sigma_hz / bin_hz)), points)
    pad = 2 * half + 1
    with np.errstate(divide="ignore"):
        log_amplitude = np.log(line_mw)
    if jitter is not None:
        log_amplitude = log_amplitude + jitter * (_NEPER_PER_DB * p.jitter_db)
    position = (line_hz - grid.start_hz) / bin_hz
    centre = np.clip(np.round(position), -half - 1, points + half)
    residual = (centre - position) * (bin_hz / sigma_hz)
    offsets = np.arange(-half, half + 1) * (bin_hz / sigma_hz)
    distance = residual[:, None] + offsets
    window = np.exp(log_amplitude[:, None] - 0.5 * distance * distance)
    index = (centre.astype(np.int64) + pad)[:, None] + np.arange(-half, half + 1)
    summed = np.bincount(index.ravel(), weights=window.ravel(), minlength=points + 2 * pad)
    floor = noise_floor_mw(grid, p)
    if scatter is None:
        base = np.full(points, floor)
    else:
        base = np.exp(scatter * (_NEPER_PER_DB * p.noise_floor_std_db)) * floor
    return 10.0 * np.log10(base + summed[pad : pad + points])
