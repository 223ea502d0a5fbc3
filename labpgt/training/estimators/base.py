"""The estimator contract: fill ``.grad`` from forward passes, count what it cost.

An estimator never steps the parameters: any `torch.optim` optimizer does that
(momentum, Adam, schedules and clipping come for free). Each estimator owns a
seeded `torch.Generator` for its perturbations; its state travels in the
checkpoint so a resumed run draws the same perturbations.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from labpgt.errors import UserError
from labpgt.training.models import ReservoirModel

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class EstimatorOptions(BaseModel):
    """Hyperparameters of the gradient estimators; each estimator reads the ones it needs.

    ``None`` means "the estimator's own default" (see each class's ``defaults``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    probes: int | None = Field(None, ge=1, le=4096, description="Probes q per step.")
    delta: float | None = Field(
        None, gt=0, le=10.0, description="Perturbation size δ (parameters, or u for boundary)."
    )
    perturb: Literal["all", "upstream"] | None = Field(
        None,
        description="Parameters perturbed by pgt/spsa: all (paper) or only those upstream of the "
        "reservoir (downstream ones then get exact autograd gradients).",
    )
    pgt_range: int = Field(1, ge=1, le=100, description="PGT perturbation entries in {-r..r}.")
    pgt_dropout: float = Field(
        0.0, ge=0.0, lt=1.0, description="PGT dropout scale p: P(entry zeroed)."
    )
    pgt_normalise: bool = Field(
        True, description="Divide the PGT estimate by E[PM²] = (1-p)·r(r+1)/3 (unbiased scale)."
    )
    directions: Literal["gaussian", "rademacher", "coordinate", "auto"] = Field(
        "auto",
        description="Probe directions: spsa gaussian|rademacher; boundary coordinate|rademacher|"
        "gaussian (auto: spsa rademacher, boundary coordinate when m <= probes).",
    )
    one_sided: bool = Field(
        False, description="SPSA: (L(θ+εz) - L0)/ε against the clean pass of the same batch."
    )
    spsa_gain: bool = Field(
        False, description="SPSA gain schedules a_k = a/(k+1+A)^0.602, c_k = c/(k+1)^0.101."
    )
    gain_a: float = Field(0.05, gt=0, description="SPSA gain a (learning-rate numerator).")
    gain_big_a: float = Field(10.0, ge=0, description="SPSA stability constant A, steps.")
    gain_c: float | None = Field(None, gt=0, description="SPSA c (defaults to δ).")


@dataclass
class StepResult:
    """What one estimate cost and what the clean pass gave."""

    loss: float
    logits: torch.Tensor
    queries: int
    forward_passes: int
    extra: dict[str, float] = field(default_factory=dict)


class GradientEstimator(ABC):
    """Fills ``.grad`` of every trainable parameter of a `ReservoirModel`."""

    name: ClassVar[str]
    summary: ClassVar[str]
    needs_differentiable: ClassVar[bool] = False
    """True when the estimator differentiates the ring itself (simulation only)."""
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, options: EstimatorOptions, *, seed: int) -> None:
        self.options = options
        self.generator = torch.Generator().manual_seed(seed)
        self.steps = 0
        self.forward_passes = 0

    def opt(self, key: str) -> Any:
        """An option, falling back to this estimator's default when it is None."""
        value = getattr(self.options, key)
        return self.defaults.get(key) if value is None else value

    @abstractmethod
    def passes_per_step(self, dims_per_channel: int) -> int:
        """Reservoir passes of the batch per step (each pass = B·k queries), given m."""

    def queries_per_step(self, batch_size: int, channels: int, dims_per_channel: int) -> int:
        """Queries one step costs: passes × batch × channels."""
        return self.passes_per_step(dims_per_channel) * batch_size * channels

    @abstractmethod
    def _estimate(
        self, model: ReservoirModel, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn
    ) -> tuple[float, torch.Tensor, dict[str, float]]:
        """Write ``.grad``; return (clean loss, clean logits, extra numbers)."""

    def estimate(
        self, model: ReservoirModel, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn
    ) -> StepResult:
        """Zero the gradients, estimate them, count queries and forward passes."""
        backend = model.reservoir.require_backend()
        for p in model.parameters():
            p.grad = None
        q0 = backend.queries
        loss, logits, extra = self._estimate(model, x, y, loss_fn)
        passes = self.passes_per_step(model.reservoir.dims_per_channel)
        self.steps += 1
        self.forward_passes += passes
        return StepResult(loss, logits.detach(), backend.queries - q0, passes, extra)

    def before_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Hook for gain schedules that set the optimizer's learning rate (default: none)."""
        return None

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.get_state(),
            "steps": self.steps,
            "forward_passes": self.forward_passes,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.steps = int(state["steps"])
        self.forward_passes = int(state["forward_passes"])


ESTIMATORS: dict[str, type[GradientEstimator]] = {}


def register_estimator(cls: type[GradientEstimator]) -> type[GradientEstimator]:
    """Class decorator: make an estimator available by its ``name`` (CLI --method)."""
    ESTIMATORS[cls.name] = cls
    return cls


def make_estimator(name: str, options: EstimatorOptions, *, seed: int) -> GradientEstimator:
    if name not in ESTIMATORS:
        raise UserError(f"unknown method {name!r}; valid methods: {', '.join(method_names())}")
    return ESTIMATORS[name](options, seed=seed)


def method_names() -> list[str]:
    """Gradient estimators plus the closed-form 'readout' baseline."""
    return sorted([*ESTIMATORS, "readout"])
