"""Calibration of the ring: response curves, operating point, drift, surrogate.

Stable API for training (see docs/calibration.md, "Using a calibration in training"):

    from labpgt.calibration import load_calibration, Calibration, DriftReport, check_drift

The names load on first use, so a light module of the package (``calibration.analysis``,
numpy only, which the live view uses) is imported without torch.
"""

from typing import Any

_API = {
    "DriftReport": "labpgt.calibration.drift",
    "check_drift": "labpgt.calibration.drift",
    "FORMAT": "labpgt.calibration.store",
    "Calibration": "labpgt.calibration.store",
    "load_calibration": "labpgt.calibration.store",
}

__all__ = ["FORMAT", "Calibration", "DriftReport", "check_drift", "load_calibration"]


def __getattr__(name: str) -> Any:
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'labpgt.calibration' has no attribute {name!r}")
