"""Field from current: the field-per-ampere coefficient and the hysteresis, from the comb.

Each eigenmode of the ring has a fixed wavenumber k_n (its loop phase is fixed),
so its frequency follows the Damon-Eshbach dispersion at fixed k·d as the field
changes:

    (f / γ)² = (H + 2πMs)² − (2πMs)²·exp(−2 k d)     (k d → 0: Kittel f_FMR)

With H = k_I·I + H_0 and the YIG constants γ, 4πMs known, the comb frequency
measured against the bias current fixes k_I (Oe/A) and a constant B that absorbs
the wavenumber. A remanent field shows as a different H_0 on the falling leg.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares


@dataclass(frozen=True)
class YigConstants:
    """Known material constants used to turn frequency into field."""

    four_pi_ms_g: float = 1750.0
    gyro_hz_per_oe: float = 2.8e6


@dataclass(frozen=True)
class FieldFit:
    """Field-per-ampere fit of comb frequency against bias current."""

    field_per_ampere_oe_per_a: float
    field_per_ampere_std_oe_per_a: float
    dispersion_constant_oe2: float
    """B in (f/γ)² = (k_I·I + 2πMs + H_0)² − B, Oe²."""
    rms_residual_hz: float
    points: int
    leg_offsets_oe: tuple[float, ...] = ()
    """Field offset of each further leg (falling, ...) against the rising one, Oe."""


def fit_field_per_ampere(
    bias_a: np.ndarray,
    comb_hz: np.ndarray,
    leg: np.ndarray | None = None,
    yig: YigConstants = YigConstants(),
) -> FieldFit:
    """Fit k_I (Oe/A) to comb frequencies measured at several bias currents.

    ``leg`` (0 = rising, 1 = falling, ...) gives each leg of a bias sweep its own
    field offset, so a remanent field (hysteresis) does not bend the slope. The
    rising leg's offset is fixed at zero: it shifts the slope by H_0/(k_I·I + 2πMs)
    < 0.5 %, well below what the comb's scatter allows. A robust (soft-L1) loss
    keeps a mode hop from pulling the fit. NaN comb values are skipped.
    """
    i = np.asarray(bias_a, dtype=np.float64)
    f = np.asarray(comb_hz, dtype=np.float64)
    g = np.zeros(i.shape, dtype=int) if leg is None else np.asarray(leg, dtype=int)
    ok = np.isfinite(f)
    i, f, g = i[ok], f[ok], g[ok]
    legs = int(g.max()) + 1 if g.size else 1
    if i.size < 3 + legs or np.ptp(i) <= 0:
        raise ValueError(
            f"need the comb inside the analyzer span at >= {3 + legs} bias currents to fit "
            f"the field per ampere, got {i.size}: widen the bias sweep or add points"
        )
    half_ms = yig.four_pi_ms_g / 2
    p = (f / yig.gyro_hz_per_oe) ** 2

    def model(x: np.ndarray) -> np.ndarray:
        k, b = x[0], x[1]
        offset = np.concatenate([[0.0], x[2:]])[g]
        h = k * i + half_ms + offset
        return np.sqrt(np.clip(h**2 - b, 1.0, None)) * yig.gyro_hz_per_oe

    # Start: Kittel (B = (2πMs)²) and the slope of the field inverted from it.
    h_kittel = np.sqrt(p + half_ms**2) - half_ms
    k0 = max(float(np.polyfit(i, h_kittel, 1)[0]), 1.0)
    fit = least_squares(
        lambda x: (model(x) - f) / 1e6,
        x0=[k0, half_ms**2] + [0.0] * (legs - 1),
        loss="soft_l1",
        f_scale=2.0,
    )
    resid_hz = model(fit.x) - f
    std = float("nan")
    try:
        dof = max(1, i.size - fit.x.size)
        cov = np.linalg.inv(fit.jac.T @ fit.jac) * float(np.sum((resid_hz / 1e6) ** 2)) / dof
        std = float(np.sqrt(cov[0, 0]))
    except np.linalg.LinAlgError:
        pass
    return FieldFit(
        float(fit.x[0]),
        std,
        float(fit.x[1]),
        float(np.sqrt(np.mean(resid_hz**2))),
        int(i.size),
        tuple(float(v) for v in fit.x[2:]),
    )


def field_oe(comb_hz: np.ndarray, fit: FieldFit, yig: YigConstants = YigConstants()) -> np.ndarray:
    """Invert the fitted dispersion: the field (Oe) at which the comb sits at ``comb_hz``."""
    p = (np.asarray(comb_hz, dtype=np.float64) / yig.gyro_hz_per_oe) ** 2
    return np.sqrt(p + fit.dispersion_constant_oe2) - yig.four_pi_ms_g / 2


@dataclass(frozen=True)
class Hysteresis:
    """Field offset between the falling and the rising leg of a bias sweep."""

    offset_oe: float
    """Median field on the falling leg minus on the rising leg at equal current, Oe."""
    offset_std_oe: float
    """Standard error of that median (from the spread of the per-current offsets), Oe."""
    detected: bool
    threshold_oe: float
    pairs: int


def hysteresis_offset(
    bias_up_a: np.ndarray,
    comb_up_hz: np.ndarray,
    bias_down_a: np.ndarray,
    comb_down_hz: np.ndarray,
    fit: FieldFit,
    *,
    min_offset_oe: float = 0.5,
    yig: YigConstants = YigConstants(),
) -> Hysteresis:
    """Compare the field seen on the two legs at the same currents.

    The per-current offsets' median resists the few points right after the turn
    (where the remanence has not flipped yet) and the odd mode hop. Detected when
    the offset exceeds both ``min_offset_oe`` and four standard errors.
    """
    up = dict(zip(np.round(bias_up_a, 6), field_oe(comb_up_hz, fit, yig), strict=True))
    down = dict(zip(np.round(bias_down_a, 6), field_oe(comb_down_hz, fit, yig), strict=True))
    common = [b for b in up if b in down and np.isfinite(up[b]) and np.isfinite(down[b])]
    if len(common) < 3:
        raise ValueError(
            f"only {len(common)} currents have the comb on both legs: cannot judge hysteresis"
        )
    d = np.array([down[b] - up[b] for b in common])
    med = float(np.median(d))
    # 1.4826·MAD estimates the std; the median's standard error is ~1.25·std/√n.
    spread = 1.4826 * float(np.median(np.abs(d - med)))
    std = 1.25 * spread / np.sqrt(d.size)
    threshold = max(min_offset_oe, 4.0 * std)
    return Hysteresis(med, float(std), abs(med) > threshold, float(threshold), int(d.size))
