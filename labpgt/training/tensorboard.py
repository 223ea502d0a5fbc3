"""TensorBoard logging of a training run, as a `TrainHooks` consumer (``--tensorboard DIR``).

Needs the optional extra: ``pip install 'labpgt[tensorboard]'``. The CSV metrics
are written whatever this does. Scalars, by training step unless named ``epoch/``:

- ``step/loss``, ``step/queries``, ``step/instrument_time_s``
- ``step/grad_norm``: L2 norm of the gradient estimate over every trainable parameter
- ``step/grad_cos_true``: its cosine with the true gradient through the differentiable
  simulation (in-process sim only; measured with noise off, outside the query counts)
- ``epoch/{train,val,test}_{loss,acc}``, ``epoch/queries``, ``epoch/instrument_time_s``,
  ``epoch/lr``

Logging never measures through the scheduler nor draws from a run's generators, so
a run with ``--tensorboard`` trains exactly as one without.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from labpgt.errors import UserError
from labpgt.training.metrics import EpochMetrics
from labpgt.training.trainer import TrainHooks, _loss


def _writer(log_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise UserError(
            f"--tensorboard needs the tensorboard package ({exc}); install it with "
            "pip install 'labpgt[tensorboard]'"
        ) from None
    return SummaryWriter(log_dir=str(log_dir))


def gradient_cosine(model: Any, x: torch.Tensor, y: torch.Tensor) -> float | None:
    """Cosine of the model's ``.grad`` with the true gradient; None off the in-process sim."""
    from labpgt.training.estimators.backprop import true_gradient

    layer = model.reservoir
    backend = layer.backend
    if (
        backend is None
        or layer.digital is not None
        or backend.bench_kind != "fast-sim"
        or not hasattr(backend.reservoir, "differentiable_features")
    ):
        return None
    queries, spent_s = backend.differentiable_queries, backend.differentiable_time_s
    try:
        true = true_gradient(model, x, y, _loss)
    finally:  # a diagnostic, not a measurement of the run: keep the run's counters
        backend.differentiable_queries, backend.differentiable_time_s = queries, spent_s
    est, ref = [], []
    for name, p in model.named_parameters():
        if p.grad is not None:
            est.append(p.grad.reshape(-1))
            ref.append(true[name].reshape(-1))
    if not est:
        return None
    a, b = torch.cat(est).double(), torch.cat(ref).double()
    denom = float(a.norm() * b.norm())
    return float(a @ b) / denom if denom > 0 else None


class TensorBoardLog:
    """Writes the scalars above; `hooks` is the `TrainHooks` to hand to the trainer."""

    def __init__(self, log_dir: str | Path, *, true_gradient: bool = True) -> None:
        self.log_dir = Path(log_dir)
        self.writer = _writer(self.log_dir)
        self.true_gradient = true_gradient
        self.step = 0
        self.hooks = TrainHooks(
            on_start=self._on_start,
            on_step=self._on_step,
            on_epoch=self._on_epoch,
            on_gradient=self._on_gradient,
        )

    def _on_start(self, total_steps: int, done_steps: int) -> None:
        self.step = done_steps

    def _on_gradient(self, model: Any, x: torch.Tensor, y: torch.Tensor, step: int) -> None:
        grads = [p.grad.reshape(-1) for p in model.parameters() if p.grad is not None]
        if grads:
            norm = float(torch.cat(grads).double().norm())
            self.writer.add_scalar("step/grad_norm", norm, step)
        if self.true_gradient:
            cos = gradient_cosine(model, x, y)
            if cos is not None:
                self.writer.add_scalar("step/grad_cos_true", cos, step)

    def _on_step(self, info: dict[str, float]) -> None:
        self.step += 1
        for key in ("loss", "queries", "instrument_time_s"):
            self.writer.add_scalar(f"step/{key}", float(info[key]), self.step)

    def _on_epoch(self, row: EpochMetrics) -> None:
        values = row.to_dict()
        for key in (
            "train_loss",
            "train_acc",
            "val_loss",
            "val_acc",
            "test_loss",
            "test_acc",
            "queries",
            "instrument_time_s",
            "lr",
            "drift_frequency_mhz",  # NaN (not logged) on epochs without a drift check
            "drift_level_db",
        ):
            value = float(values[key])
            if not math.isnan(value):
                self.writer.add_scalar(f"epoch/{key}", value, row.epoch)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
