"""Networks with a reservoir layer, split where the ring sits.

Every model is a `ReservoirModel` (an `nn.Module` whose ``forward(x)`` gives
logits): ``upstream`` (trainable, digital) maps the
input to the encoded drive u and an optional context, the `ReservoirLayer`
measures features, ``downstream`` (trainable, digital) maps the normalised
features (and the context) to logits. Estimators only use this split, so a new
model (e.g. a transformer whose residual stream rides in the context) is one
more `@register_model` builder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from labpgt.errors import UserError
from labpgt.training.reservoir_layer import ReservoirLayer

Params = dict[str, torch.Tensor]


@dataclass(frozen=True)
class ModelSpec:
    """What a model builder needs to know."""

    input_dim: int
    num_classes: int
    channels: int
    hidden: int
    downstream_hidden: int
    options: dict[str, Any] = field(default_factory=dict)
    """--model-opt KEY=VALUE values (typed); a builder refuses keys it does not know."""


class ReservoirModel(nn.Module):
    """upstream: x -> (u, ctx); reservoir: u -> raw features; downstream: (h, ctx) -> logits."""

    upstream: nn.Module
    reservoir: ReservoirLayer
    downstream: nn.Module
    class_names: list[str] | None = None
    """Set by `labpgt.load`: the task's class names, in logit order."""
    input_mean: torch.Tensor | None = None
    input_std: torch.Tensor | None = None
    """Set by `labpgt.load`: the training part's input standardisation (data units)."""
    provenance: dict[str, Any] | None = None
    """Set by `labpgt.load`: version, commit, bench identity and calibration hash."""

    def upstream_names(self) -> list[str]:
        return [f"upstream.{n}" for n, _ in self.upstream.named_parameters()]

    def downstream_names(self) -> list[str]:
        return [f"downstream.{n}" for n, _ in self.downstream.named_parameters()]

    def run_upstream(self, x: torch.Tensor, params: Params | None = None) -> tuple[Any, Any]:
        """(u (B, k*m), ctx); `params` (full names) overrides parameters functionally."""
        if params is None:
            return self.upstream(x)
        sub = {
            n.removeprefix("upstream."): p for n, p in params.items() if n.startswith("upstream.")
        }
        return functional_call(self.upstream, sub, (x,))

    def run_downstream(
        self, raw: torch.Tensor, ctx: Any, params: Params | None = None
    ) -> torch.Tensor:
        """Logits from raw features (B, k, F) (normalised here) and the context."""
        h = self.reservoir.features(raw)
        if params is None:
            return self.downstream(h, ctx)
        sub = {
            n.removeprefix("downstream."): p
            for n, p in params.items()
            if n.startswith("downstream.")
        }
        return functional_call(self.downstream, sub, (h, ctx))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, classes); backward crosses the ring per ``reservoir.gradient``.

        An ordinary module: any loss and any `torch.optim` optimizer train it
        (``gradient="boundary"`` measures the probes of the backward in the same
        scheduler batch as the forward shot).
        """
        u, ctx = self.upstream(x)
        return self.downstream(self.reservoir(u), ctx)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Logits with the features measured (no gradient): evaluation on the bench."""
        u, ctx = self.run_upstream(x)
        return self.run_downstream(self.reservoir.measure_u(u), ctx)

    @torch.no_grad()
    def classify(self, x: Any) -> list[str]:
        """Class names for inputs (N, D) in the data's own units (standardised here)."""
        if self.class_names is None or self.input_mean is None or self.input_std is None:
            raise RuntimeError("classify needs a model from labpgt.load (class names, scaling)")
        z = (torch.as_tensor(x, dtype=torch.float64) - self.input_mean) / self.input_std
        labels = self.predict(z.to(torch.float32)).argmax(dim=-1)
        return [self.class_names[int(i)] for i in labels]

    def close(self) -> None:
        """Leave the bench this model measures through safe (nothing to do on the sim)."""
        if self.reservoir.backend is not None:
            self.reservoir.backend.close()


def _dense(in_dim: int, hidden: int, out_dim: int, activation: type[nn.Module]) -> nn.Module:
    """One Linear layer (hidden 0), else Linear -> activation -> Linear."""
    if hidden > 0:
        return nn.Sequential(nn.Linear(in_dim, hidden), activation(), nn.Linear(hidden, out_dim))
    return nn.Linear(in_dim, out_dim)


class _Upstream(nn.Module):
    def __init__(self, input_dim: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.net = _dense(input_dim, hidden, out_dim, nn.Tanh)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        # tanh keeps u in (-1, 1), the encoding's domain, so no setting ever clips hard.
        return torch.tanh(self.net(x)), None


class _Downstream(nn.Module):
    def __init__(self, in_dim: int, hidden: int, num_classes: int) -> None:
        super().__init__()
        self.net = _dense(in_dim, hidden, num_classes, nn.ReLU)

    def forward(self, h: torch.Tensor, ctx: Any) -> torch.Tensor:
        return self.net(h)


class DenseReservoirModel(ReservoirModel):
    """input -> dense -> u -> reservoir layer -> features -> normalisation -> dense readout."""

    def __init__(self, spec: ModelSpec, reservoir: ReservoirLayer) -> None:
        super().__init__()
        if spec.options:
            raise UserError(
                f"--model-opt {', '.join(sorted(spec.options))}: model 'dense' takes no "
                "options (use --hidden, --downstream-hidden, --channels)"
            )
        self.upstream = _Upstream(spec.input_dim, spec.hidden, reservoir.input_dim)
        self.reservoir = reservoir
        self.downstream = _Downstream(
            reservoir.output_dim, spec.downstream_hidden, spec.num_classes
        )


Builder = Callable[[ModelSpec, ReservoirLayer], ReservoirModel]
MODELS: dict[str, Builder] = {"dense": DenseReservoirModel}


def register_model(name: str) -> Callable[[Builder], Builder]:
    def wrap(builder: Builder) -> Builder:
        MODELS[name] = builder
        return builder

    return wrap


def build_model(name: str, spec: ModelSpec, reservoir: ReservoirLayer) -> ReservoirModel:
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; valid models: {', '.join(sorted(MODELS))}")
    return MODELS[name](spec, reservoir)
