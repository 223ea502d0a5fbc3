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
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
from labpgt.calibration.spectra import comb_centroid_hz, trace_shift_hz

from labpgt.errors import MeasurementError, UserError

if TYPE_CHECKING:
    from labpgt.reservoir import PhysicalReservoir


class Baseline(Protocol):
    """What a drift check needs of a calibration (`calibration.store.Calibration` is one):
    drift sits below the store, which calls it, and never imports it."""

    operating_bias_a: float

    def check_compatible(self, reservoir: PhysicalReservoir) -> None: ...

    def read_reference(self) -> dict[str, np.ndarray]: ...


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


def check_drift(
    reservoir: PhysicalReservoir,
    calibration: Baseline,
    *,
    tolerance_mhz: float = 1.0,
    tolerance_db: float = 1.0,
    repeats: int | None = None,
) -> DriftReport:
    """Re-measure the calibration's reference settings on ``reservoir``; drift in MHz and dB.

    The reservoir must be the calibrated bench (`Calibration.check_compatible`). The
    reference passes are measured exactly as at calibration (each behind a preset shot
    below the operating bias, so the magnet's remanence is the same). Frequency drift:
    median over the low-drive comb shots of the cross-correlation shift of each new trace
    against the stored mean trace. Level drift: median over all reference settings of
    the change of the strongest trace point, dBm. Works mid-training: the reservoir's
    ``keep_traces`` is restored afterwards.
    """
    from labpgt.calibration.measure import PRESET_DROP_A, StageMeasurer

    if tolerance_mhz <= 0 or tolerance_db <= 0:
        raise UserError("--tolerance-mhz and --tolerance-db must be > 0")
    calibration.check_compatible(reservoir)
    stored = calibration.read_reference()
    n = int(repeats or stored["features"].shape[0])
    low = max(reservoir.bounds.bias_a[0], calibration.operating_bias_a - PRESET_DROP_A)
    _, traces = StageMeasurer(reservoir).references(
        "drift check", torch.from_numpy(stored["settings"]).to(torch.float64), n, low
    )
    return compare_traces(
        stored["frequency_hz"],
        stored["traces_dbm"],
        traces,
        stored["comb"],
        float(stored["floor_dbm"]),
        tolerance_mhz=tolerance_mhz,
        tolerance_db=tolerance_db,
    )


def compare_traces(
    frequency_hz: np.ndarray,
    stored_dbm: np.ndarray,
    new_dbm: np.ndarray,
    comb: np.ndarray,
    floor_dbm: float,
    *,
    tolerance_mhz: float,
    tolerance_db: float,
) -> DriftReport:
    """Drift from reference traces (repeats, settings, P), stored against new."""
    ref = _mean_db(stored_dbm[:, comb])  # (Sc, P)
    shifts = np.array(
        [
            [
                trace_shift_hz(frequency_hz, ref[s], new_dbm[r, i], floor_dbm)
                for s, i in enumerate(np.nonzero(comb)[0])
            ]
            for r in range(new_dbm.shape[0])
        ]
    )
    base = np.array(
        [
            [
                trace_shift_hz(frequency_hz, ref[s], stored_dbm[r, i], floor_dbm)
                for s, i in enumerate(np.nonzero(comb)[0])
            ]
            for r in range(stored_dbm.shape[0])
        ]
    )
    df = np.nanmean(shifts, axis=0) - np.nanmean(base, axis=0)
    df = df[np.isfinite(df)]
    if df.size == 0:
        raise MeasurementError(
            "no reference trace shows the comb: cannot measure a frequency drift"
        )
    dl = stored_dbm.max(axis=-1).mean(axis=0) - 0.0
    dl = new_dbm.max(axis=-1).mean(axis=0) - dl
    scatter_f = np.nanstd(shifts) if shifts.size > 1 else 0.0
    return DriftReport(
        frequency_drift_mhz=float(np.median(df)) / 1e6,
        level_drift_db=float(np.median(dl)),
        tolerance_mhz=float(tolerance_mhz),
        tolerance_db=float(tolerance_db),
        frequency_noise_mhz=float(scatter_f) / 1e6,
        level_noise_db=float(np.std(dl)) if dl.size > 1 else 0.0,
    )


def _mean_db(traces_dbm: np.ndarray) -> np.ndarray:
    """Mean over axis 0 in linear power, back in dBm."""
    return 10.0 * np.log10(np.mean(10.0 ** (traces_dbm / 10.0), axis=0))
