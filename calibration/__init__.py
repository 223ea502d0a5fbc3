"""Calibration of the ring: response curves, operating point, drift, surrogate."""
