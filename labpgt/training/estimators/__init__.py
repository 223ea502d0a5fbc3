"""Gradient estimators by name: pgt, spsa, boundary, backprop (and later ones).

A new estimator subclasses `GradientEstimator`, implements ``passes_per_step``
and ``_estimate`` (write ``.grad``, return the clean loss and logits) and is
decorated with `register_estimator`; importing its module here makes it
available to `labpgt train --method NAME`.
"""

from labpgt.training.estimators import backprop, boundary, digital, perturbation
from labpgt.training.estimators.base import (
    ESTIMATORS,
    EstimatorContext,
    EstimatorOptions,
    GradientEstimator,
    StepResult,
    make_estimator,
    method_names,
    register_estimator,
)

__all__ = [
    "ESTIMATORS",
    "EstimatorContext",
    "EstimatorOptions",
    "GradientEstimator",
    "StepResult",
    "backprop",
    "boundary",
    "digital",
    "make_estimator",
    "method_names",
    "perturbation",
    "register_estimator",
]
