"""Classic reservoir-computing baseline: fixed random upstream map, ridge readout in closed form.

Features of every training and test sample are acquired once through the
scheduler (one batch each) at the model's *initial* upstream parameters, so the
baseline sees the same task, reservoir, normalisation and seed as the trained run.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import torch

from labpgt.errors import UserError
from labpgt.training.models import ReservoirModel
from labpgt.training.tasks import Task

RIDGE_LAMBDAS: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)


@dataclass
class ReadoutResult:
    """The baseline's scores and cost (queries = shots measured to acquire the features)."""

    train_acc: float
    test_acc: float
    ridge_lambda: float
    queries: int
    instrument_time_s: float
    wall_s: float

    train_raw: torch.Tensor | None = field(default=None, repr=False, compare=False)
    """Raw features (N, k, F) of the training inputs as measured for the fit (not saved):
    the trainer scores the initial model on them instead of measuring them again."""

    def to_dict(self) -> dict[str, float]:
        return {k: v for k, v in asdict(self).items() if k != "train_raw"}


def ridge_fit(h: torch.Tensor, targets: torch.Tensor, lam: float) -> torch.Tensor:
    """W (F+1, C) minimising ‖[h 1]W − T‖² + λ‖W_h‖² (the bias column is not penalised)."""
    h1 = torch.cat([h, torch.ones(h.shape[0], 1, dtype=h.dtype)], dim=1)
    reg = lam * torch.eye(h1.shape[1], dtype=h.dtype)
    reg[-1, -1] = 0.0
    return torch.linalg.solve(h1.T @ h1 + reg, h1.T @ targets)


def ridge_predict(h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return torch.cat([h, torch.ones(h.shape[0], 1, dtype=h.dtype)], dim=1) @ w


def choose_lambda(h: torch.Tensor, y: torch.Tensor, num_classes: int, seed: int) -> float:
    """λ with the best accuracy on a seeded 20 % hold-out of the training features."""
    n = h.shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = max(1, n // 5)
    val, fit = perm[:n_val], perm[n_val:]
    targets = torch.nn.functional.one_hot(y[fit], num_classes).to(h.dtype)
    best, best_acc = RIDGE_LAMBDAS[0], -1.0
    for lam in RIDGE_LAMBDAS:
        w = ridge_fit(h[fit], targets, lam)
        acc = float((ridge_predict(h[val], w).argmax(1) == y[val]).double().mean())
        if acc > best_acc:  # strict: ties keep the smaller λ
            best, best_acc = lam, acc
    return best


@torch.no_grad()
def acquire_features(model: ReservoirModel, x: torch.Tensor) -> torch.Tensor:
    """Normalised features (N, k·F) float64 of inputs x, measured in one scheduler batch."""
    return model.reservoir.features(acquire_raw(model, x)).to(torch.float64)


@torch.no_grad()
def acquire_raw(model: ReservoirModel, x: torch.Tensor) -> torch.Tensor:
    """Raw features (N, k, F) of inputs x, measured in one scheduler batch."""
    u, _ = model.run_upstream(x)
    return model.reservoir.measure_u(u)


LOGIT_SCALES: tuple[float, ...] = tuple(float(2**k) for k in range(11))  # 1 ... 1024


def linear_readout(model: ReservoirModel) -> torch.nn.Linear:
    """The model's readout when it is one linear layer on the features (else UserError)."""
    readout = getattr(getattr(model, "downstream", None), "net", None)
    if not isinstance(readout, torch.nn.Linear):
        raise UserError(
            "--readout-init ridge needs a single linear readout after the reservoir "
            "(model 'dense' with --downstream-hidden 0)"
        )
    return readout


@torch.no_grad()
def warm_start_readout(
    model: ReservoirModel, h: torch.Tensor, y: torch.Tensor, w: torch.Tensor
) -> float:
    """Copy the ridge readout W (F+1, C) into the model's linear readout; returns its scale.

    Ridge fits one-hot targets, so its outputs sit near [0, 1] and would make
    near-uniform logits; they are multiplied by the scale (from 1, 2, ... 1024)
    with the lowest cross-entropy on the training features `h` (labels `y`), so
    training starts from the baseline's accuracy at a sensible loss.
    """
    readout = linear_readout(model)
    logits = ridge_predict(h, w)
    losses = [float(torch.nn.functional.cross_entropy(s * logits, y)) for s in LOGIT_SCALES]
    scale = LOGIT_SCALES[min(range(len(losses)), key=losses.__getitem__)]
    readout.weight.copy_((scale * w[:-1]).T.to(readout.weight.dtype))
    readout.bias.copy_((scale * w[-1]).to(readout.bias.dtype))
    return scale


def readout_baseline(
    model: ReservoirModel, task: Task, *, seed: int, warm_start: bool = False
) -> ReadoutResult:
    """Fit the ridge readout on features of the model's current (random) upstream map.

    With `warm_start`, the fitted readout also becomes the model's readout
    (`warm_start_readout`), so training starts from the baseline instead of chance.
    """
    backend = model.reservoir.require_backend()
    q0, t0, w0 = backend.queries, backend.instrument_time_s, time.perf_counter()
    raw_train = acquire_raw(model, task.x_train)
    h_train = model.reservoir.features(raw_train).to(torch.float64)
    h_test = acquire_features(model, task.x_test)
    lam = choose_lambda(h_train, task.y_train, task.num_classes, seed)
    w = ridge_fit(
        h_train, torch.nn.functional.one_hot(task.y_train, task.num_classes).to(h_train.dtype), lam
    )
    train_acc = float((ridge_predict(h_train, w).argmax(1) == task.y_train).double().mean())
    test_acc = float((ridge_predict(h_test, w).argmax(1) == task.y_test).double().mean())
    if warm_start:
        warm_start_readout(model, h_train, task.y_train, w)
    return ReadoutResult(
        train_acc=train_acc,
        test_acc=test_acc,
        ridge_lambda=lam,
        queries=backend.queries - q0,
        instrument_time_s=backend.instrument_time_s - t0,
        wall_s=time.perf_counter() - w0,
        train_raw=raw_train,
    )
