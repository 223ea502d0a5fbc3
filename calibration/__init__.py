"""Calibration of the ring: response curves, operating point, drift, surrogate.

Stable API for training (see docs/calibration.md, "Using a calibration in training"):

    from labpgt.calibration import load_calibration, Calibration, DriftReport, check_drift
"""

from labpgt.calibration.drift import DriftReport, check_drift
from labpgt.calibration.store import FORMAT, Calibration, load_calibration

__all__ = ["FORMAT", "Calibration", "DriftReport", "check_drift", "load_calibration"]
