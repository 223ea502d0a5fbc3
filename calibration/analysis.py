"""Feature-level analysis: shot-to-shot noise, sensitivity, and the operating point.

Inputs are measured features (torch or numpy, float64) on the response grid of
`calibration.plan.CalibrationPlan`, reshaped to (bias, power, frequency, F).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Below this a feature's noise is taken as this value (dB or the feature's unit):
# a feature that never changes must not make a sensitivity/noise ratio infinite.
NOISE_FLOOR_OF_RATIO = 0.05

INTERACTION_LIMIT = 2.5
"""Above this `interaction_map` value (noise units; ≈1 where the drive leaves the rest of the
spectrum alone) the drive tone locks, pulls or mixes with the ring's comb at a grid point."""


@dataclass(frozen=True)
class Repeatability:
    """Shot-to-shot scatter of repeated settings."""

    feature_std: np.ndarray
    """(F,) pooled standard deviation of each feature over repeats, feature units."""
    rms_std: float
    """RMS over features of ``feature_std`` — one noise figure, feature units (dB)."""
    repeats: int
    settings: int


def repeatability(features: np.ndarray) -> Repeatability:
    """Noise from repeated shots: ``features`` is (R repeats, S settings, F features).

    The variance is pooled over the settings (each setting keeps its own mean), so
    settings that respond differently do not inflate the noise.
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 3 or x.shape[0] < 2:
        raise ValueError(f"need (repeats>=2, settings, features) features, got shape {x.shape}")
    var = x.var(axis=0, ddof=1).mean(axis=0)
    std = np.sqrt(var)
    return Repeatability(std, float(np.sqrt(np.mean(var))), x.shape[0], x.shape[1])


def sensitivity_map(response: np.ndarray, noise_std: np.ndarray) -> np.ndarray:
    """Sensitivity/noise at every response grid point: (B, P, Fq).

    ``response`` is (B bias, P power, Fq frequency, F features). The gradient of
    each feature along the power and frequency axes, per grid step, is divided by
    that feature's noise; the value at a point is the RMS over features of the
    gradient norm in noise units: how many noise standard deviations one grid step
    moves a typical feature.
    """
    y = np.asarray(response, dtype=np.float64)
    sigma = np.maximum(np.asarray(noise_std, dtype=np.float64), NOISE_FLOOR_OF_RATIO)
    grads = []
    for axis in (1, 2):
        if y.shape[axis] >= 2:
            grads.append(np.gradient(y, axis=axis))
    g2 = sum(g**2 for g in grads) / sigma**2
    return np.sqrt(g2.mean(axis=-1))


@dataclass(frozen=True)
class OperatingPoint:
    """Where training should drive the ring, and how strongly it responds there."""

    bias_a: float
    drive_hz: tuple[float, float]
    drive_dbm: tuple[float, float]
    sensitivity_to_noise: float
    """Mean over the chosen drive window of `sensitivity_map` (noise std per grid step)."""
    sensitivity_by_bias: tuple[float, ...]
    """The same figure over the whole drive grid, per response bias, in plan order."""
    window: str = "sensitivity"
    """How the drive window was chosen: "calm" (the drive leaves the comb alone) or
    "sensitivity" (sensitivity/noise alone)."""


def interaction_map(
    response: np.ndarray, noise_std: np.ndarray, drive_bin: np.ndarray
) -> np.ndarray:
    """How much the drive disturbs the spectrum away from its own tone: (B, P, Fq), noise units.

    ``drive_bin`` (Fq,) is the feature bin each drive frequency falls in. At each grid
    point, the features more than one bin from the drive tone are compared with their
    median over the bias's whole grid (the free-running comb: most drive settings leave
    it alone); the value is the RMS of that difference in units of each feature's noise.
    About 1 where the drive only adds its own tone; well above 1 where it locks, pulls
    or mixes with the comb (idlers), which changes the spectrum on the scale of the mode
    spacing and is not resolved by the response grid.
    """
    y = np.asarray(response, dtype=np.float64)
    b, p, fq, f = y.shape
    sigma = np.maximum(np.asarray(noise_std, dtype=np.float64), NOISE_FLOOR_OF_RATIO)
    free = np.median(y.reshape(b, p * fq, f), axis=1)  # (B, F)
    z = (y - free[:, None, None, :]) / sigma
    away = np.abs(np.arange(f)[None, :] - np.asarray(drive_bin)[:, None]) > 1  # (Fq, F)
    z2 = np.where(away[None, None], z**2, 0.0)
    return np.sqrt(z2.sum(axis=-1) / np.maximum(away.sum(axis=-1), 1)[None, None])


def choose_operating_point(
    response: np.ndarray,
    noise_std: np.ndarray,
    bias_a: np.ndarray,
    power_dbm: np.ndarray,
    drive_hz: np.ndarray,
    *,
    keep_fraction: float = 0.5,
    interaction: np.ndarray | None = None,
    interaction_limit: float = INTERACTION_LIMIT,
) -> OperatingPoint:
    """Pick the bias where the drive moves the features most (in noise units), then drive ranges.

    The bias maximises the mean sensitivity/noise over its drive grid. Within it,
    each drive axis keeps the contiguous window around its most sensitive value
    where the mean sensitivity stays above ``keep_fraction`` of that maximum (at
    least three grid points, so an encoding has room to move).

    With ``interaction`` (`interaction_map`), the drive-frequency window only spans
    frequencies where the drive does not lock, pull or mix with the comb at any power
    (`interaction` at most ``interaction_limit``): there the features are the comb plus
    the drive's own tone, a map the surrogate can learn from a finite sample. The window
    is the widest such run of at least three grid frequencies (ties: the more sensitive)
    at the chosen bias, or at the next most sensitive bias that has one; with none
    anywhere, the choice falls back to sensitivity alone.
    """
    s = sensitivity_map(response, noise_std)  # (B, P, Fq)
    by_bias = s.mean(axis=(1, 2))
    b = int(np.argmax(by_bias))
    lo_f = hi_f = -1
    if interaction is not None:
        calm = np.asarray(interaction).max(axis=1) <= interaction_limit  # (B, Fq)
        for cand in np.argsort(-by_bias, kind="stable"):
            runs = _runs(calm[cand], 3)
            if runs:
                lo_f, hi_f = max(
                    runs, key=lambda r: (r[1] - r[0], s[cand, :, r[0] : r[1] + 1].mean())
                )
                b = int(cand)
                break
    sb = s[b]
    calm_found = lo_f >= 0
    if not calm_found:
        lo_f, hi_f = _window(sb.mean(axis=0), keep_fraction)
    lo_p, hi_p = _window(sb[:, lo_f : hi_f + 1].mean(axis=1), keep_fraction)
    inside = sb[lo_p : hi_p + 1, lo_f : hi_f + 1]
    return OperatingPoint(
        bias_a=float(bias_a[b]),
        drive_hz=(float(drive_hz[lo_f]), float(drive_hz[hi_f])),
        drive_dbm=(float(power_dbm[lo_p]), float(power_dbm[hi_p])),
        sensitivity_to_noise=float(inside.mean()),
        sensitivity_by_bias=tuple(float(v) for v in by_bias),
        window="calm" if calm_found else "sensitivity",
    )


def _runs(mask: np.ndarray, min_length: int) -> list[tuple[int, int]]:
    """(first, last) index of each run of True in ``mask`` at least ``min_length`` long."""
    runs, start = [], None
    for i, ok in enumerate(list(mask) + [False]):
        if ok and start is None:
            start = i
        elif not ok and start is not None:
            if i - start >= min_length:
                runs.append((start, i - 1))
            start = None
    return runs


def _window(profile: np.ndarray, keep_fraction: float) -> tuple[int, int]:
    """Contiguous index window around the maximum of ``profile`` above keep_fraction·max."""
    n = profile.size
    if n <= 3:
        return 0, n - 1
    # Light smoothing so one noisy grid point neither starts nor ends the window.
    smooth = np.convolve(np.pad(profile, 1, mode="edge"), np.ones(3) / 3, mode="valid")
    peak = int(np.argmax(smooth))
    cut = keep_fraction * smooth[peak]
    lo = peak
    while lo > 0 and smooth[lo - 1] >= cut:
        lo -= 1
    hi = peak
    while hi < n - 1 and smooth[hi + 1] >= cut:
        hi += 1
    while hi - lo < 2:  # widen to three points toward the larger neighbour
        left = smooth[lo - 1] if lo > 0 else -np.inf
        right = smooth[hi + 1] if hi < n - 1 else -np.inf
        if right >= left:
            hi += 1
        else:
            lo -= 1
    return lo, hi


def feature_normalisation(
    response: np.ndarray,
    bias_index: int,
    power_window: tuple[int, int],
    frequency_window: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature (mean, std) over a power x frequency window of the grid at one bias."""
    y = np.asarray(response, dtype=np.float64)
    (p0, p1), (f0, f1) = power_window, frequency_window
    w = y[bias_index, p0 : p1 + 1, f0 : f1 + 1].reshape(-1, y.shape[-1])
    return w.mean(axis=0), np.maximum(w.std(axis=0), 1e-9)


def index_of(values: np.ndarray, value: float) -> int:
    """Index of the grid value nearest ``value``."""
    return int(np.argmin(np.abs(np.asarray(values, dtype=np.float64) - value)))
