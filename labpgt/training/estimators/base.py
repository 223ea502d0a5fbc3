"""The estimator contract: fill ``.grad`` from forward passes, count what it cost.

An estimator never steps the parameters: any `torch.optim` optimizer does that
(momentum, Adam, schedules and clipping come for free). Each estimator owns a
seeded `torch.Generator` for its perturbations; its state travels in the
checkpoint so a resumed run draws the same perturbations.

Extension points (stable; new methods, models and tasks plug in here without
editing the CLI or the trainer — import the new module from
``labpgt/training/__init__.py`` so its decorators run):

Estimators — ``labpgt train --method NAME [--method-opt KEY=VALUE ...]``
    Subclass `GradientEstimator`, set ``name``/``summary``, implement
    ``passes_per_step(m)`` and ``_estimate(model, x, y, loss_fn)`` (write ``.grad`` of
    every trainable parameter; return clean loss, clean logits, extra numbers) and
    decorate with `register_estimator`. ``extra_options`` declares the keys accepted
    through ``--method-opt KEY=VALUE`` with their defaults (the default's type is
    the value's type: int, float, bool or str; ints are accepted for floats); an
    unknown key or a wrong type is refused naming ``--method-opt``. They arrive merged
    with the defaults in ``self.extra``. The constructor is
    ``cls(options, seed=..., extra=..., context=...)``; ``make_estimator`` builds it.
    ``context`` (`EstimatorContext`) is None when the estimator is built only to
    price a step (preflight budget check) and otherwise carries the model, the
    measurement backend (``.scheduler`` — the `PerturbationScheduler` — and
    ``.reservoir``), ``real_bench`` (True on a bench file) and the loaded
    calibration (or None). ``passes_per_step`` must work without a context.
    Override ``bind(context)`` for set-up that needs the model or bench; ``state_dict``
    / ``load_state_dict`` (call super) for extra state that must survive --resume.
    ``needs_differentiable = True`` makes the CLI refuse the method off --fast-sim.

Models — ``--model NAME [--model-opt KEY=VALUE ...]``
    ``@register_model("name")`` on a builder ``(spec: ModelSpec, reservoir:
    ReservoirLayer) -> ReservoirModel`` (`labpgt.training.models`). The parsed
    ``--model-opt`` values are in ``spec.options`` (a dict); refuse unknown keys
    with `UserError` naming ``--model-opt``.

Tasks — ``--task NAME [--task-opt KEY=VALUE ...]``
    ``@register_task("name")`` on a loader returning ``(X (N, D), y (N,) int, class
    names)`` (`labpgt.training.tasks`). ``--task-opt`` values are passed to the
    loader as keyword arguments; keys the loader's signature does not take are
    refused naming ``--task-opt`` and listing the accepted ones.

The CLI lists valid names from the registries (`ESTIMATORS` + "readout",
`MODELS`, `TASKS`) at run time, so registered additions appear in its messages.
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


OptionValue = int | float | bool | str


@dataclass
class EstimatorContext:
    """What an estimator may need beyond its options: handed over by the trainer."""

    model: ReservoirModel
    backend: Any
    """`MeasurementBackend`: ``.scheduler`` (PerturbationScheduler), ``.reservoir``,
    ``.measure(settings)`` in one scheduler batch, ``.bench_kind``."""
    real_bench: bool
    """True on the instruments of a bench file (no simulation internals available)."""
    calibration: Any | None = None
    """The object `calibration.load_calibration` returned for --calibration, or None."""

    @property
    def scheduler(self) -> Any:
        return self.backend.scheduler

    @property
    def reservoir(self) -> Any:
        return self.backend.reservoir


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
    extra_options: ClassVar[dict[str, OptionValue]] = {}
    """Keys accepted by --method-opt KEY=VALUE, with their defaults (and hence types)."""

    def __init__(
        self,
        options: EstimatorOptions,
        *,
        seed: int,
        extra: dict[str, OptionValue] | None = None,
        context: EstimatorContext | None = None,
    ) -> None:
        self.options = options
        self.extra = check_extra_options(self.name, self.extra_options, extra or {})
        self.generator = torch.Generator().manual_seed(seed)
        self.steps = 0
        self.forward_passes = 0
        self.context: EstimatorContext | None = None
        if context is not None:
            self.bind(context)

    def bind(self, context: EstimatorContext) -> None:
        """Receive the model, backend, bench kind and calibration (override to set up)."""
        self.context = context

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


def check_extra_options(
    method: str, accepted: dict[str, OptionValue], given: dict[str, OptionValue]
) -> dict[str, OptionValue]:
    """Merge --method-opt values over the defaults; refuse unknown keys and wrong types."""
    out = dict(accepted)
    for key, value in given.items():
        if key not in accepted:
            valid = ", ".join(sorted(accepted)) or "none"
            raise UserError(
                f"--method-opt {key}: unknown for method {method!r}; valid keys: {valid}"
            )
        want = type(accepted[key])
        if want is float and type(value) is int:
            value = float(value)
        if type(value) is not want:
            raise UserError(
                f"--method-opt {key}={value!r}: method {method!r} expects a {want.__name__}"
            )
        out[key] = value
    return out


def make_estimator(
    name: str,
    options: EstimatorOptions,
    *,
    seed: int,
    extra: dict[str, OptionValue] | None = None,
    context: EstimatorContext | None = None,
) -> GradientEstimator:
    """The registered estimator `name`; context None = only to price a step."""
    if name not in ESTIMATORS:
        raise UserError(f"unknown method {name!r}; valid methods: {', '.join(method_names())}")
    return ESTIMATORS[name](options, seed=seed, extra=extra, context=context)


def method_names() -> list[str]:
    """Gradient estimators plus the closed-form 'readout' baseline."""
    return sorted([*ESTIMATORS, "readout"])
