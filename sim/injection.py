"""Injection locking of the ring's modes by the drive tone (Adler), with smooth transitions.

A mode at f_n (power P_n) and a drive at f_in (power P_in) with detuning d = f_in - f_n:

* |d| < D_n (locking half-range): the mode locks, its power appears at f_in;
* |d| > D_n: the mode is pulled toward the drive, to f_in - d*sqrt(1 - D_n^2/d^2)
  (Adler's beat frequency), and a four-wave-mixing idler appears at 2 f_n' - f_in
  with amplitude ratio D_n / (|d| + sqrt(d^2 - D_n^2)) to the pulled mode.

D_n = D_ref * sqrt(P_in * c(f_in) / P_in,ref) * sqrt(P_ref / P_n) (softened for weak modes),
with c(f_in) <= 1 the transducer coupling of the drive relative to its best. A sigmoid of
width ~5 % of D_n replaces the hard locking edge so everything stays differentiable.
"""

from __future__ import annotations

from labpgt.sim.arrays import Array, at_least, at_most, namespace, softplus
from labpgt.sim.params import RingParams

_EPS_HZ = 1e3  # smooths |d| at zero detuning
_SHARPNESS = 20.0  # softplus sharpness for the Adler square root at the locking edge


def locking_range_hz(drive_mw: Array, coupling: Array, mode_mw: Array, params: RingParams) -> Array:
    """Adler locking half-range of each mode, Hz; drive_mw, coupling (N,), mode_mw (N, M)."""
    ref_drive_mw = 10.0 ** (params.locking_reference_drive_dbm / 10.0)
    ref_mode_mw = 10.0 ** (params.locking_reference_mode_dbm / 10.0)
    xp = namespace(mode_mw)
    drive_factor = xp.sqrt(drive_mw * coupling / ref_drive_mw)[..., None]
    # sqrt(P_ref / P_n), capped at 2x for modes far weaker than the reference.
    mode_factor = xp.sqrt(1.25 * ref_mode_mw / (mode_mw + 0.25 * ref_mode_mw))
    return params.locking_range_hz * drive_factor * mode_factor


def injection_lines(
    mode_hz: Array,
    mode_mw: Array,
    drive_hz: Array,
    drive_mw: Array,
    coupling: Array,
    through_mw: Array,
    rf_on: Array,
    params: RingParams,
) -> tuple[Array, Array]:
    """Lines at the analyzer as (frequency_hz, power_mw), each (N, 1 + 2M).

    Column 0 is the drive line (transmitted drive plus all locked mode power), columns
    1..M the (pulled) modes, columns M+1..2M their idlers. mode_hz already contains
    the non-linear shift. rf_on (N,) is 1.0 with the drive on, 0.0 with it off.
    """
    xp = namespace(mode_hz)
    fin = drive_hz[..., None]
    rf = rf_on[..., None]
    detuning = fin - mode_hz
    abs_detuning = xp.sqrt(detuning**2 + _EPS_HZ**2)
    lock_hz = locking_range_hz(drive_mw, coupling, mode_mw, params) * rf
    width_hz = 0.05 * lock_hz + 20e3
    # a sigmoid; the exponent is capped where e^x would overflow (the sigmoid is 0 there)
    locked = rf / (1.0 + xp.exp(at_most(xp, (abs_detuning - lock_hz) / width_hz, 700.0)))

    # Deep inside the locking range the root is irrelevant (the mode is locked); the
    # clamp keeps softplus from underflowing to 0, where sqrt has an infinite slope.
    adler = at_least(xp, 1.0 - lock_hz**2 / abs_detuning**2, -2.0)
    adler_root = xp.sqrt(softplus(xp, _SHARPNESS * adler) / _SHARPNESS)
    # Only pull while RF is on; with RF off adler_root is 1 anyway (lock_hz = 0).
    pulled_hz = fin - detuning * adler_root
    idler_ratio = lock_hz / (abs_detuning * (1.0 + adler_root))
    free_mw = (1.0 - locked) * mode_mw
    idler_mw = free_mw * idler_ratio**2 * params.idler_efficiency * rf
    idler_hz = 2.0 * pulled_hz - fin

    drive_line_mw = (through_mw * rf_on + xp.sum(locked * mode_mw, axis=-1))[..., None]
    frequency = xp.concat([fin, pulled_hz, idler_hz], axis=-1)
    power = xp.concat([drive_line_mw, free_mw, idler_mw], axis=-1)
    return frequency, power
