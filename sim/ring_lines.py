"""The lines a ring shows the analyzer for N settings: eigenmodes, competition, drive.

Written once against the array API (sim/arrays.py): `RingModel` calls it on torch
tensors (batched, differentiable in the drive settings), and the one-shot path of
`RingModel.measure` on NumPy arrays of one row. It chains sim.dispersion (the
eigenmodes and their net gain), sim.competition (their steady-state powers and the
drive's share of the gain) and sim.injection (locking, pulling, idlers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

from labpgt.sim import dispersion
from labpgt.sim.arrays import Array, namespace, softplus
from labpgt.sim.competition import steady_state
from labpgt.sim.injection import injection_lines
from labpgt.sim.params import RingParams


def best_transducer_loss_db(params: RingParams) -> float:
    """Transducer loss at the wavenumber of least loss, dB (the drive coupling's reference)."""
    k_lo, k_hi = params.transducer_k_low_rad_per_m, params.transducer_k_high_rad_per_m
    k = dispersion.best_k_rad_per_m(params)
    return 20.0 * (math.log10(1.0 + (k_lo / k) ** 2) + math.log10(1.0 + (k / k_hi) ** 2))


class Modes(NamedTuple):
    """The eigenmodes of N settings and what the mode competition needs of the drive."""

    mode_hz: Array
    """(N, M) small-signal eigenmode frequencies, Hz."""
    growth: Array
    """(N, M) growth rates: net round-trip gain in units of `gain_scale_db`."""
    drive_separation: Array
    """(N, M) detuning of the drive from each mode in mode spacings."""
    drive_saturation: Array
    """(N,) the injected drive's power in units of the saturated power (0 with RF off)."""
    drive_mw: Array
    """(N,) generator power, mW."""
    coupling: Array
    """(N,) transducer coupling of the drive relative to its best (<= 1)."""
    k_in: Array
    """(N,) wavenumber of the drive, rad/m."""
    gain_db: Array
    """(N,) amplifier gain minus the fixed loss, dB."""


@dataclass(frozen=True, eq=False, slots=True)
class RingConditions:
    """What the ring is driven with, for N settings: every field an (N,) array (or a scalar).

    drive_hz and drive_dbm: the drive's frequency (Hz) and power (dBm); field_oe: the
    magnet's field including remanence and drift (Oe); gain_offset_db: the amplifier's
    gain offset (drift, dB); rf_on: 1.0 with the drive on, 0.0 with it off.
    """

    drive_hz: Array
    drive_dbm: Array
    field_oe: Array
    gain_offset_db: Array
    rf_on: Array


def ring_modes(params: RingParams, conditions: RingConditions) -> Modes:
    """The eigenmodes of N settings and the competition's inputs."""
    p = params
    drive_hz, drive_dbm, field_oe = conditions.drive_hz, conditions.drive_dbm, conditions.field_oe
    gain_offset_db, rf_on = conditions.gain_offset_db, conditions.rf_on
    gain_db = p.amplifier_gain_db + gain_offset_db - p.fixed_loss_db
    k_modes = dispersion.solve_modes(field_oe, p)
    h = field_oe[..., None]
    mode_hz = dispersion.frequency_of_k(k_modes, h, p)
    mode_net_db = gain_db[..., None] - dispersion.propagation_loss_db(k_modes, mode_hz, h, p)

    drive_mw = 10.0 ** (drive_dbm / 10.0)
    k_in = dispersion.k_of_frequency(drive_hz, field_oe, p)
    transducer_db = dispersion.transducer_loss_db(k_in, p)
    coupling = 10.0 ** (-(transducer_db - best_transducer_loss_db(p)) / 10.0)
    drive_saturation = (
        drive_mw * 10.0 ** (-(p.drive_coupling_loss_db + p.saturation_power_dbm) / 10.0)
    ) * (coupling * rf_on)
    spacing_hz = (mode_hz[..., -1] - mode_hz[..., 0]) / (p.mode_count - 1)
    return Modes(
        mode_hz=mode_hz,
        growth=mode_net_db / p.gain_scale_db,
        drive_separation=(drive_hz[..., None] - mode_hz) / spacing_hz[..., None],
        drive_saturation=drive_saturation,
        drive_mw=drive_mw,
        coupling=coupling,
        k_in=k_in,
        gain_db=gain_db,
    )


def ring_lines(
    params: RingParams, conditions: RingConditions, *, fast: bool = False
) -> tuple[Array, Array]:
    """Lines at the analyzer as (frequency_hz, power_mw), each (N, 1 + 2M).

    fast: the competition iterates in float32 (no autograd).
    """
    p = params
    drive_hz, field_oe, rf_on = conditions.drive_hz, conditions.field_oe, conditions.rf_on
    xp = namespace(field_oe)
    m = ring_modes(p, conditions)
    power = steady_state(m.growth, m.drive_separation, m.drive_saturation, p, fast=fast)
    mode_mw = power * 10.0 ** (p.saturation_power_dbm / 10.0)
    shifted_hz = m.mode_hz + p.nonlinear_shift_hz_per_mw * mode_mw

    # The drive tone also passes the ring as a small signal: a comb of loop
    # resonances whose contrast follows the net gain at the drive frequency.
    f_k_in = dispersion.frequency_of_k(m.k_in, field_oe, p)
    drive_net_db = m.gain_db - dispersion.propagation_loss_db(m.k_in, f_k_in, field_oe, p)
    rho = p.ring_resonance_max * 10.0 ** (-softplus(xp, -drive_net_db) / 20.0)
    phase = dispersion.loop_phase_rad(m.k_in, drive_hz, p)
    resonance = 1.0 / (1.0 - 2.0 * rho * xp.cos(phase) + rho**2)
    through_mw = (
        m.drive_mw
        * 10.0 ** (-p.drive_through_loss_db / 10.0)
        * (m.coupling * resonance + 10.0 ** (p.drive_leakage_db / 10.0))
    )
    return injection_lines(
        shifted_hz, mode_mw, drive_hz, m.drive_mw, m.coupling, through_mw, rf_on, p
    )
