"""The same-shape digital yardstick: the ring replaced by a trainable digital layer.

``--method digital`` swaps what the reservoir layer computes: instead of
measuring the ring, each channel's m encoded numbers go through one shared
``Linear(m, F)`` and ``tanh`` (the ring is one physical map applied to every
channel, so the digital stand-in is one map too). Bottleneck (k·m numbers per
sample), output width (k·F features), normalisation, readout, split, optimizer
and budget are those of the ring run, and everything trains by exact autograd.
Whatever the ring run falls short of this network is the price of the ring and
of the gradient estimate, not of the network's shape.

A step costs one pass of the batch, counted as B·k queries (evaluations of the
digital layer), as backprop through the simulation counts its passes.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from labpgt.training.estimators.backprop import autograd_step
from labpgt.training.estimators.base import (
    EstimatorContext,
    GradientEstimator,
    LossFn,
    register_estimator,
)
from labpgt.training.models import ReservoirModel


class DigitalStandIn(nn.Module):
    """u (..., k·m) -> features (..., k, F): one Linear(m, F) + tanh shared by the channels."""

    def __init__(self, channels: int, dims_per_channel: int, feature_dim: int) -> None:
        super().__init__()
        self.channels = channels
        self.dims_per_channel = dims_per_channel
        self.map = nn.Linear(dims_per_channel, feature_dim)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        z = u.to(torch.float32).reshape(*u.shape[:-1], self.channels, self.dims_per_channel)
        return torch.tanh(self.map(z))


@register_estimator
class DigitalEstimator(GradientEstimator):
    name: ClassVar[str] = "digital"
    summary: ClassVar[str] = "yardstick: the ring replaced by a digital Linear+tanh, same shape"
    defaults: ClassVar[dict[str, Any]] = {}

    def bind(self, context: EstimatorContext) -> None:
        super().bind(context)
        layer = context.model.reservoir
        if layer.digital is None:
            layer.digital = DigitalStandIn(
                layer.channels, layer.dims_per_channel, layer.feature_dim
            )

    def passes_per_step(self, dims_per_channel: int) -> int:
        return 1

    def _estimate(
        self, model: ReservoirModel, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn
    ) -> tuple[float, torch.Tensor, dict[str, float]]:
        return autograd_step(model, x, y, loss_fn, model.reservoir.digital_features)
