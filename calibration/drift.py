"""Drift of the ring since calibration: re-measured reference settings against the stored ones.

Two figures, each with its own tolerance:
- frequency drift (MHz): how far the free-running comb moved, from the comb
  centroid of the reference "ladder" shots (low drive, a few biases around the
  operating point). A field drift moves the comb by df/dH·ΔH (≈ 4 MHz/Oe).
- level drift (dB): how far the strongest line's level moved, median over all
  reference settings (amplifier gain drift shows here).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from calibration.spectra import comb_centroid_hz


@dataclass(frozen=True)
class DriftReport:
    """Drift of the re-measured reference settings against calibration."""

    frequency_drift_mhz: float
    level_drift_db: float
    tolerance_mhz: float
    tolerance_db: float
    frequency_noise_mhz: float
    """Scatter of the per-setting frequency shifts (std), MHz: how well the drift is known."""
    level_noise_db: float
    """Scatter of the per-setting level shifts (std), dB."""

    @property
    def within_tolerance(self) -> bool:
        return (
            abs(self.frequency_drift_mhz) <= self.tolerance_mhz
            and abs(self.level_drift_db) <= self.tolerance_db
        )

    def summary(self) -> str:
        verdict = "within tolerance" if self.within_tolerance else "BEYOND TOLERANCE"
        return (
            f"frequency drift {self.frequency_drift_mhz:+.3f} MHz "
            f"(tolerance ±{self.tolerance_mhz:g} MHz, scatter {self.frequency_noise_mhz:.3f} MHz); "
            f"level drift {self.level_drift_db:+.3f} dB "
            f"(tolerance ±{self.tolerance_db:g} dB, scatter {self.level_noise_db:.3f} dB): "
            f"{verdict}"
        )

    def as_dict(self) -> dict[str, float | bool]:
        return {
            "frequency_drift_mhz": self.frequency_drift_mhz,
            "level_drift_db": self.level_drift_db,
            "tolerance_mhz": self.tolerance_mhz,
            "tolerance_db": self.tolerance_db,
            "frequency_noise_mhz": self.frequency_noise_mhz,
            "level_noise_db": self.level_noise_db,
            "within_tolerance": self.within_tolerance,
        }


def comb_centroids_hz(
    frequency_hz: np.ndarray, traces_dbm: np.ndarray, floor_dbm: float
) -> np.ndarray:
    """Comb centroid of every trace, Hz; ``traces_dbm`` is (..., P), result (...)."""
    t = np.asarray(traces_dbm, dtype=np.float64)
    flat = t.reshape(-1, t.shape[-1])
    c = np.array([comb_centroid_hz(frequency_hz, row, floor_dbm) for row in flat])
    return c.reshape(t.shape[:-1])


def peak_levels_dbm(features: np.ndarray, power_columns: np.ndarray) -> np.ndarray:
    """Strongest power feature of every shot, dBm; ``features`` is (..., F)."""
    f = np.asarray(features, dtype=np.float64)
    return f[..., np.asarray(power_columns)].max(axis=-1)


def compare(
    stored_centroid_hz: np.ndarray,
    new_centroid_hz: np.ndarray,
    stored_peak_dbm: np.ndarray,
    new_peak_dbm: np.ndarray,
    *,
    tolerance_mhz: float,
    tolerance_db: float,
) -> DriftReport:
    """Drift from per-shot figures; arrays are (repeats, settings) (repeat counts may differ).

    Each setting's shift is the difference of its mean over repeats; the drift is
    the median over settings, which a single mode hop cannot move.
    """
    df = np.nanmean(new_centroid_hz, axis=0) - np.nanmean(stored_centroid_hz, axis=0)
    df = df[np.isfinite(df)]
    if df.size == 0:
        raise ValueError("no reference trace shows the comb: cannot measure a frequency drift")
    dl = np.mean(new_peak_dbm, axis=0) - np.mean(stored_peak_dbm, axis=0)
    return DriftReport(
        frequency_drift_mhz=float(np.median(df)) / 1e6,
        level_drift_db=float(np.median(dl)),
        tolerance_mhz=float(tolerance_mhz),
        tolerance_db=float(tolerance_db),
        frequency_noise_mhz=float(np.std(df)) / 1e6 if df.size > 1 else 0.0,
        level_noise_db=float(np.std(dl)) if dl.size > 1 else 0.0,
    )
