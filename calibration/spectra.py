"""Trace-level analysis: noise floor, spectral lines, comb spacing, frequency shift.

All functions take analyzer traces in dBm on a uniform frequency axis in Hz
(numpy arrays) and return plain numbers in Hz / dBm.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import find_peaks


def noise_floor_dbm(traces_dbm: np.ndarray) -> float:
    """The analyzer noise floor, dBm: median of all trace points.

    Lines cover a few percent of a trace at most, so the median sits on the floor;
    it is robust to the lines, unlike a mean.
    """
    return float(np.median(np.asarray(traces_dbm, dtype=np.float64)))


def find_lines(
    frequency_hz: np.ndarray,
    trace_dbm: np.ndarray,
    floor_dbm: float,
    *,
    min_height_db: float = 15.0,
    min_prominence_db: float = 10.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Spectral lines of one trace: (frequencies in Hz, powers in dBm), ascending in frequency.

    A line is a local maximum at least ``min_height_db`` above the floor and
    ``min_prominence_db`` above its surroundings; its frequency is refined by a
    parabola through the three points around the maximum (sub-bin accuracy).
    """
    f = np.asarray(frequency_hz, dtype=np.float64)
    y = np.asarray(trace_dbm, dtype=np.float64)
    idx, _ = find_peaks(y, height=floor_dbm + min_height_db, prominence=min_prominence_db)
    if idx.size == 0:
        return np.empty(0), np.empty(0)
    df = f[1] - f[0]
    inner = (idx > 0) & (idx < len(y) - 1)
    offset = np.zeros(idx.shape)
    i = idx[inner]
    offset[inner] = parabola_vertex(y[i - 1], y[i], y[i + 1])
    return f[idx] + offset * df, y[idx]


def parabola_vertex(left: np.ndarray, centre: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Where the parabola through three equally spaced points peaks, in units of their
    spacing from the centre point, within ±0.5; 0 where the points do not curve down."""
    denom = left - 2 * centre + right
    with np.errstate(divide="ignore", invalid="ignore"):
        off = np.where(denom < 0, 0.5 * (left - right) / denom, 0.0)
    return np.clip(off, -0.5, 0.5)


def comb_centroid_hz(
    frequency_hz: np.ndarray, trace_dbm: np.ndarray, floor_dbm: float, **line_kw: float
) -> float:
    """Power-weighted mean frequency of a trace's lines, Hz (NaN when none is found).

    Where the ring's comb sits: weighting by linear power follows the gain
    maximum, which moves with the field, and smooths over which single mode wins.
    """
    f_lines, p_lines = find_lines(frequency_hz, trace_dbm, floor_dbm, **line_kw)
    if f_lines.size == 0:
        return float("nan")
    w = 10.0 ** (p_lines / 10.0)
    return float(np.sum(w * f_lines) / np.sum(w))


def trace_shift_hz(
    frequency_hz: np.ndarray,
    reference_dbm: np.ndarray,
    trace_dbm: np.ndarray,
    floor_dbm: float,
    *,
    max_shift_hz: float = 40e6,
) -> float:
    """How far ``trace`` is shifted in frequency against ``reference``, Hz (positive: upward).

    Cross-correlation of the power above the floor (linear, so the lines dominate
    and the floor's noise does not), refined by a parabola around the best lag.
    """
    f = np.asarray(frequency_hz, dtype=np.float64)
    df = f[1] - f[0]

    def _lin(y: np.ndarray) -> np.ndarray:
        p = 10.0 ** ((np.asarray(y, dtype=np.float64) - floor_dbm) / 10.0) - 1.0
        return np.clip(p, 0.0, None)

    a, b = _lin(reference_dbm), _lin(trace_dbm)
    if not a.any() or not b.any():
        return float("nan")
    max_lag = min(int(max_shift_hz / df), len(f) - 2)
    lags = np.arange(-max_lag, max_lag + 1)
    corr = np.array(
        [
            np.dot(a[max(0, -lag) : len(a) - max(0, lag)], b[max(0, lag) : len(b) - max(0, -lag)])
            for lag in lags
        ]
    )
    k = int(np.argmax(corr))
    frac = 0.0
    if 0 < k < len(corr) - 1:
        frac = float(parabola_vertex(corr[k - 1], corr[k], corr[k + 1]))
    return float((lags[k] + frac) * df)


def comb_inside_span(
    frequency_hz: np.ndarray,
    trace_dbm: np.ndarray,
    floor_dbm: float,
    *,
    envelope_db: float = 25.0,
    margin_hz: float = 10e6,
) -> bool:
    """Whether the comb's strong part lies inside the trace, clear of both ends.

    A comb cut by a span edge has a biased centroid; its strong part is the lines
    within ``envelope_db`` of the strongest.
    """
    f_lines, p_lines = find_lines(frequency_hz, trace_dbm, floor_dbm)
    if f_lines.size == 0:
        return False
    strong = f_lines[p_lines >= p_lines.max() - envelope_db]
    f = np.asarray(frequency_hz)
    return bool(strong.min() - f[0] >= margin_hz and f[-1] - strong.max() >= margin_hz)


def adjacent_spacing_hz(
    frequency_hz: np.ndarray, trace_dbm: np.ndarray, floor_dbm: float, *, envelope_db: float = 40.0
) -> float:
    """Mode spacing from one trace: median gap between neighbouring strong comb lines, Hz.

    Only lines within ``envelope_db`` of the strongest count (the comb near its gain
    maximum; the spacing changes across a wide comb). Gaps wider than 1.5 times the
    median gap (a missing line, a distant drive tone) are dropped before the final
    median. NaN with fewer than four such lines.
    """
    f_lines, p_lines = find_lines(frequency_hz, trace_dbm, floor_dbm)
    if f_lines.size == 0:
        return float("nan")
    strong = np.sort(f_lines[p_lines >= p_lines.max() - envelope_db])
    if strong.size < 4:
        return float("nan")
    gaps = np.diff(strong)
    gaps = gaps[gaps <= 1.5 * np.median(gaps)]
    return float(np.median(gaps))


def line_sigma_hz(frequency_hz: np.ndarray, traces_dbm: np.ndarray, floor_dbm: float) -> float:
    """Standard deviation of the displayed line shape, Hz, from the strongest line of each trace.

    Near its maximum a Gaussian line is a parabola in dB: y = top - (10/ln 10)·Δf²/(2σ²).
    The curvature through the three points around each trace's strongest point (at least
    30 dB above the floor, so the floor does not flatten it) gives σ; the median over the
    traces is returned. NaN when no trace has such a line.
    """
    f = np.asarray(frequency_hz, dtype=np.float64)
    df = f[1] - f[0]
    sigmas = []
    for trace in np.asarray(traces_dbm, dtype=np.float64):
        i = int(np.argmax(trace))
        if not 0 < i < len(trace) - 1 or trace[i] < floor_dbm + 30.0:
            continue
        curvature = (trace[i - 1] - 2 * trace[i] + trace[i + 1]) / df**2
        if curvature < 0:
            sigmas.append(np.sqrt(-(10.0 / np.log(10.0)) / curvature))
    return float(np.median(sigmas)) if sigmas else float("nan")
