"""The training loop: estimator fills .grad, a torch optimizer steps, every epoch a checkpoint.

`train()` is what `labpgt train` calls once the measurement backend is open.
A resumed run restores every state that influences the next step (parameters,
optimizer, estimator generator, all RNGs, data order, the simulated ring) so it
continues bit-identically on the in-process simulation.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from labpgt.errors import UserError
from labpgt.training.build import (
    build_model_for,
    load_calibration_file,
    make_optimizer,
    normalise_features,
)
from labpgt.training.checkpoint import (
    CHECKPOINT_NAME,
    capture_rng,
    check_same_run,
    load_checkpoint,
    load_model_state,
    restore_rng,
    run_metadata,
    save_checkpoint,
)
from labpgt.training.config import TrainConfig
from labpgt.training.estimators import EstimatorContext, GradientEstimator, make_estimator
from labpgt.training.metrics import EpochMetrics, accuracy, write_batches_csv, write_csv
from labpgt.training.models import ReservoirModel
from labpgt.training.plots import plot_run
from labpgt.training.readout import ReadoutResult, linear_readout, readout_baseline
from labpgt.training.reservoir_layer import MeasurementBackend
from labpgt.training.tasks import Task, load_task

CHECKPOINT_FORMAT = 2
BEST_NAME = "best.pt"
"""The model of the epoch chosen on validation (state dict, config, its validation figures)."""
RESUME_MAY_CHANGE = ("epochs", "max_queries", "out")


@dataclass
class TrainHooks:
    """Progress callbacks (the CLI draws a rich progress bar from these)."""

    on_start: Callable[[int, int], None] = lambda total_steps, done_steps: None
    on_step: Callable[[dict[str, float]], None] = lambda info: None
    on_epoch: Callable[[EpochMetrics], None] = lambda row: None
    on_note: Callable[[str], None] = lambda text: None
    on_gradient: Callable[..., None] = lambda model, x, y, step: None
    """After each estimate, before the optimizer steps: (model with .grad filled, batch x,
    batch y, 1-based step). It must not change the model or measure through the scheduler."""


def chain_hooks(all_hooks: list[TrainHooks]) -> TrainHooks:
    """One `TrainHooks` that calls each of `all_hooks` in turn (progress bar, TensorBoard...)."""

    def fan(name: str) -> Callable[..., None]:
        def call(*args: Any) -> None:
            for h in all_hooks:
                getattr(h, name)(*args)

        return call

    return TrainHooks(
        on_start=fan("on_start"),
        on_step=fan("on_step"),
        on_epoch=fan("on_epoch"),
        on_note=fan("on_note"),
        on_gradient=fan("on_gradient"),
    )


@dataclass
class RunResult:
    config: TrainConfig
    metrics: list[EpochMetrics]
    baseline: ReadoutResult
    model: ReservoirModel
    out_dir: Path
    stop_reason: str
    selected: EpochMetrics
    """The epoch chosen on validation, with its test figures (the run's reported result)."""
    files: list[Path] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        """Test accuracy of the epoch chosen on validation (the run's reported figure)."""
        return float(self.selected.test_acc)

    @property
    def best_path(self) -> Path:
        """best.pt, else checkpoint.pt (which then holds the chosen epoch 0 under "best")."""
        best = self.out_dir / BEST_NAME
        return best if best.is_file() else self.out_dir / CHECKPOINT_NAME


@dataclass
class _Counters:
    queries: int = 0
    forward_passes: int = 0
    eval_queries: int = 0
    instrument_time_s: float = 0.0
    wall_s: float = 0.0
    steps: int = 0


def _loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y)


@torch.no_grad()
def evaluate(model: ReservoirModel, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(loss, accuracy) with the features measured through the scheduler (one batch)."""
    logits = model.predict(x)
    return float(_loss(logits, y)), accuracy(logits, y)


def _evaluate_split(
    config: TrainConfig, model: ReservoirModel, task: Task, *, final: bool = False
) -> dict[str, float]:
    """Validation figures every epoch; test figures every epoch or only at the end.

    With ``eval_test='final'`` the test part is measured once, on the model chosen
    on validation, and its per-epoch columns stay NaN.
    """
    nan = float("nan")
    out = {"val_loss": nan, "val_acc": nan, "test_loss": nan, "test_acc": nan}
    if task.x_val is not None and task.y_val is not None and task.x_val.shape[0] and not final:
        out["val_loss"], out["val_acc"] = evaluate(model, task.x_val, task.y_val)
    if config.eval_test == "every-epoch" or final:
        out["test_loss"], out["test_acc"] = evaluate(model, task.x_test, task.y_test)
    return out


@torch.no_grad()
def _initial_train_scores(
    model: ReservoirModel, task: Task, baseline: ReadoutResult
) -> tuple[float, float]:
    """(loss, accuracy) of the initial model on the training part, from the features the
    readout baseline measured at these same parameters (no second measurement)."""
    raw = baseline.train_raw
    if raw is None:
        return evaluate(model, task.x_train, task.y_train)
    _, ctx = model.run_upstream(task.x_train)
    logits = model.run_downstream(raw, ctx)
    return float(_loss(logits, task.y_train)), accuracy(logits, task.y_train)


def _better(row: EpochMetrics, best: dict[str, Any]) -> bool:
    """Whether `row` beats the best epoch so far on validation (accuracy, then loss).

    Without a validation part every epoch is better than the one before: the last
    model is the chosen one.
    """
    if "epoch" not in best:
        return True
    if math.isnan(row.val_acc):
        return True
    if row.val_acc != best["val_acc"]:
        return row.val_acc > best["val_acc"]
    return row.val_loss < best["val_loss"]


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def planned_steps(
    n: int,
    batch_size: int,
    epochs: int,
    cost_of: Callable[[int], int],
    max_queries: int | None,
) -> int:
    """Optimizer steps a run takes: every batch of every epoch, or until the next step would
    pass ``max_queries`` (``cost_of(batch rows)`` queries each), as the training loop stops."""
    sizes = [min(batch_size, n - start) for start in range(0, n, batch_size)]
    if max_queries is None:
        return epochs * len(sizes)
    spent = steps = 0
    for _ in range(epochs):
        for size in sizes:
            cost = cost_of(size)
            if spent + cost > max_queries:
                return steps
            spent, steps = spent + cost, steps + 1
    return steps


def check_budget(config: TrainConfig, est: GradientEstimator) -> int:
    """Queries of one full step; refuse a --max-queries budget that cannot pay for one."""
    m = len(config.driven)
    per_step = est.queries_per_step(config.batch_size, config.channels, m)
    if config.max_queries is not None and config.max_queries < per_step:
        raise UserError(
            f"--max-queries {config.max_queries} is too small for one step: one {est.name} step "
            f"costs {per_step} queries ({est.passes_per_step(m)} passes × batch "
            f"{config.batch_size} × {config.channels} channels)"
        )
    return per_step


def task_for(config: TrainConfig) -> Task:
    """The configured task: a bundled one, or --data with --target."""
    return load_task(
        config.task if config.data is None else None,
        data=Path(config.data) if config.data else None,
        target=config.target,
        test_fraction=config.test_fraction,
        seed=config.seed,
        val_fraction=config.val_fraction,
        options=dict(config.task_opts),
    )


def preflight(config: TrainConfig, task: Task | None = None) -> Task:
    """Every check that needs no instrument: names, data, budget. Returns the task."""
    task = task if task is not None else task_for(config)
    if config.method != "readout":
        est = make_estimator(
            config.method, config.estimator, seed=config.seed, extra=dict(config.method_opts)
        )
        check_budget(config, est)
    return task


def train(
    config: TrainConfig,
    backend: MeasurementBackend,
    *,
    resume: bool,
    hooks: TrainHooks,
    task: Task | None = None,
    resume_from: Path | None = None,
) -> RunResult:
    """Train (or, for method 'readout', only fit the baseline); write the run directory.

    `resume_from` (with `resume`) continues from that checkpoint file instead of
    the run's last one: an epoch-end or a within-epoch (--checkpoint-every-min) one.
    """
    out = Path(config.out)
    task = task if task is not None else task_for(config)
    _seed_all(config.seed)
    model = build_model_for(config, task, backend)
    calibration = load_calibration_file(config.calibration)
    if config.readout_init == "ridge":
        linear_readout(model)  # refuse before anything is measured
    est = None
    if config.method != "readout":
        context = EstimatorContext(
            model=model,
            backend=backend,
            real_bench=backend.bench_kind == "bench",
            calibration=calibration,
        )
        est = make_estimator(
            config.method,
            config.estimator,
            seed=config.seed + 1,
            extra=dict(config.method_opts),
            context=context,
        )
        if est.needs_differentiable:
            backend.require_differentiable(config.method)
        check_budget(config, est)
    optimizer = make_optimizer(config, model)
    data_gen = torch.Generator().manual_seed(config.seed + 2)
    counters = _Counters()
    ckpt_path = out / CHECKPOINT_NAME
    out.mkdir(parents=True, exist_ok=True)
    meta = run_metadata(config, task, backend.reservoir)
    partial: dict[str, Any] | None = None
    if resume:
        src = Path(resume_from) if resume_from is not None else ckpt_path
        state = load_checkpoint(src)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise UserError(
                f"--resume: {src} was written by another labpgt version (checkpoint format "
                f"{state.get('format')}, this version reads {CHECKPOINT_FORMAT}); start a new run"
            )
        _check_resume_config(state["config"], config)
        check_same_run(src, state, meta, action="--resume")
        load_model_state(model, state["model"], src)
        partial = state.get("partial")
        optimizer.load_state_dict(state["optimizer"])
        if est is not None:
            est.load_state_dict(state["estimator"])
        restore_rng(state["rng"])
        data_gen.set_state(state["data_generator"])
        backend.load_sim_state(state["ring"])
        counters = _Counters(**state["counters"])
        metrics = [EpochMetrics(**row) for row in state["metrics"]]
        batches = [list(row) for row in state.get("batches", [])]
        baseline = ReadoutResult(**state["baseline"])
        best = dict(state["best"])
        start_epoch = int(state["epoch"])
        within = f", step {counters.steps}" if partial is not None else ""
        hooks.on_note(f"resumed from {src} after epoch {start_epoch}{within}")
    else:
        (out / "config.json").write_text(json.dumps(config.model_dump(mode="json"), indent=2))
        t0_wall, t0_inst = time.perf_counter(), backend.instrument_time_s
        normalise_features(config, task, model, backend, hooks.on_note, calibration)
        baseline = readout_baseline(
            model, task, seed=config.seed, warm_start=config.readout_init == "ridge"
        )
        hooks.on_note(
            f"readout baseline: test accuracy {100 * baseline.test_acc:.1f} % "
            f"({baseline.queries} queries, ridge λ={baseline.ridge_lambda:g})"
        )
        q_eval = backend.queries
        scores = _evaluate_split(config, model, task)
        train_loss, train_acc = _initial_train_scores(model, task, baseline)
        counters.eval_queries += backend.queries - q_eval
        counters.instrument_time_s += backend.instrument_time_s - t0_inst
        counters.wall_s += time.perf_counter() - t0_wall
        metrics = [_row(0, train_loss, train_acc, scores, counters, optimizer)]
        batches = []
        start_epoch = 0
        best = _best_state(metrics[0], model)
        _save(
            ckpt_path,
            config,
            0,
            model,
            optimizer,
            est,
            data_gen,
            backend,
            counters,
            metrics,
            batches,
            baseline,
            best,
            meta,
        )
    stop = "readout only" if est is None else "epochs done"
    if est is not None:
        stop = _loop(
            config,
            task,
            model,
            est,
            optimizer,
            data_gen,
            backend,
            counters,
            metrics,
            batches,
            baseline,
            best,
            start_epoch,
            ckpt_path,
            hooks,
            meta,
            partial,
        )
    selected = _select(config, model, task, metrics, best, backend, counters)
    write_csv(out / "metrics.csv", metrics)
    write_batches_csv(out / "batches.csv", batches)
    files = plot_run(
        metrics, out, method=config.method, readout_test_acc=baseline.test_acc, batches=batches
    )
    tables = [out / "metrics.csv", out / "batches.csv"]
    return RunResult(config, metrics, baseline, model, out, stop, selected, [*tables, *files])


def _loop(
    config: TrainConfig,
    task: Task,
    model: ReservoirModel,
    est: GradientEstimator,
    optimizer: torch.optim.Optimizer,
    data_gen: torch.Generator,
    backend: MeasurementBackend,
    counters: _Counters,
    metrics: list[EpochMetrics],
    batches: list[list[float]],
    baseline: ReadoutResult,
    best: dict[str, Any],
    start_epoch: int,
    ckpt_path: Path,
    hooks: TrainHooks,
    meta: dict[str, Any],
    partial: dict[str, Any] | None = None,
) -> str:
    n = task.x_train.shape[0]
    steps_per_epoch = -(-n // config.batch_size)
    epochs = config.epochs_or_default()
    total = epochs * steps_per_epoch
    if config.max_queries is not None:
        full_cost = check_budget(config, est)
        total = min(total, config.max_queries // full_cost)  # the learning-rate schedule's
    # The steps the run will take (a short last batch costs less than a full one, so a
    # budget pays for more steps than max_queries // full_cost): what the bar counts to.
    hooks.on_start(
        planned_steps(
            n,
            config.batch_size,
            epochs,
            lambda size: est.queries_per_step(size, config.channels, len(config.driven)),
            config.max_queries,
        ),
        counters.steps,
    )
    every_s = None if config.checkpoint_every_min is None else 60.0 * config.checkpoint_every_min
    for epoch in range(start_epoch + 1, epochs + 1):
        t0_wall, t0_inst = time.perf_counter(), backend.instrument_time_s
        first = 0
        if partial is not None:  # a within-epoch checkpoint: continue this epoch where it was
            perm, first = partial["perm"], int(partial["next_start"])
            losses, accs, sizes = (list(partial[k]) for k in ("losses", "accs", "sizes"))
            t0_wall -= float(partial["wall_in_epoch_s"])
            t0_inst -= float(partial["instrument_in_epoch_s"])
            last_ckpt_s = float(partial["last_checkpoint_instrument_s"])
            partial = None
        else:
            perm = torch.randperm(n, generator=data_gen)
            losses, accs, sizes = [], [], []
            last_ckpt_s = counters.instrument_time_s
        budget_hit = False
        for start in range(first, n, config.batch_size):
            idx = perm[start : start + config.batch_size]
            cost = est.queries_per_step(len(idx), config.channels, len(config.driven))
            if config.max_queries is not None and counters.queries + cost > config.max_queries:
                budget_hit = True
                break
            x, y = task.x_train[idx], task.y_train[idx]
            result = est.estimate(model, x, y, _loss)
            hooks.on_gradient(model, x, y, counters.steps + 1)
            _schedule_lr(config, optimizer, counters.steps, total)
            est.before_step(optimizer)
            optimizer.step()
            counters.queries += result.queries
            counters.forward_passes += result.forward_passes
            counters.steps += 1
            losses.append(result.loss)
            accs.append(accuracy(result.logits, y))
            sizes.append(len(idx))
            batches.append([counters.steps, counters.queries, result.loss, accs[-1]])
            hooks.on_step(
                {
                    "epoch": epoch,
                    "loss": result.loss,
                    "queries": counters.queries,
                    "instrument_time_s": counters.instrument_time_s
                    + backend.instrument_time_s
                    - t0_inst,
                }
            )
            inst_s = counters.instrument_time_s + backend.instrument_time_s - t0_inst
            if every_s is not None and inst_s - last_ckpt_s >= every_s and start + len(idx) < n:
                last_ckpt_s = inst_s
                _save(
                    ckpt_path.parent / f"checkpoint-step{counters.steps:06d}.pt",
                    config,
                    epoch - 1,
                    model,
                    optimizer,
                    est,
                    data_gen,
                    backend,
                    counters,
                    metrics,
                    batches,
                    baseline,
                    best,
                    meta,
                    partial={
                        "perm": perm,
                        "next_start": start + len(idx),
                        "losses": list(losses),
                        "accs": list(accs),
                        "sizes": list(sizes),
                        "wall_in_epoch_s": time.perf_counter() - t0_wall,
                        "instrument_in_epoch_s": backend.instrument_time_s - t0_inst,
                        "last_checkpoint_instrument_s": last_ckpt_s,
                    },
                )
        if not sizes:
            return "query budget reached"
        w = torch.tensor(sizes, dtype=torch.float64)
        train_loss = float((torch.tensor(losses, dtype=torch.float64) * w).sum() / w.sum())
        train_acc = float((torch.tensor(accs, dtype=torch.float64) * w).sum() / w.sum())
        q_eval = backend.queries
        scores = _evaluate_split(config, model, task)
        counters.eval_queries += backend.queries - q_eval
        counters.instrument_time_s += backend.instrument_time_s - t0_inst
        counters.wall_s += time.perf_counter() - t0_wall
        row = _row(epoch, train_loss, train_acc, scores, counters, optimizer)
        metrics.append(row)
        if _better(row, best):
            best.clear()
            best.update(_best_state(row, model))
            save_checkpoint(ckpt_path.parent / BEST_NAME, _best_file(config, best, meta))
        _save(
            ckpt_path,
            config,
            epoch,
            model,
            optimizer,
            est,
            data_gen,
            backend,
            counters,
            metrics,
            batches,
            baseline,
            best,
            meta,
        )
        write_csv(ckpt_path.parent / "metrics.csv", metrics)
        write_batches_csv(ckpt_path.parent / "batches.csv", batches)
        hooks.on_epoch(row)
        if budget_hit:
            return "query budget reached"
    return "epochs done"


def _schedule_lr(
    config: TrainConfig, optimizer: torch.optim.Optimizer, step: int, total_steps: int
) -> None:
    """Set the learning rate of step `step` (0-based) of `total_steps`: a function of the step
    count alone, so a resumed run continues the same schedule without extra state."""
    if config.lr_schedule == "constant" or total_steps <= 0:
        return
    lr = 0.5 * config.lr * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
    for group in optimizer.param_groups:
        group["lr"] = lr


def _select(
    config: TrainConfig,
    model: ReservoirModel,
    task: Task,
    metrics: list[EpochMetrics],
    best: dict[str, Any],
    backend: MeasurementBackend,
    counters: _Counters,
) -> EpochMetrics:
    """The row of the epoch chosen on validation, with its test figures.

    With ``eval_test='final'`` this is the one time the test part is measured: on
    the chosen model, whose state is loaded into `model` (the returned model).
    """
    row = next(m for m in metrics if m.epoch == best["epoch"])
    if config.eval_test != "final":
        return row
    model.load_state_dict(best["model"])
    q_eval = backend.queries
    scores = _evaluate_split(config, model, task, final=True)
    counters.eval_queries += backend.queries - q_eval
    values = row.to_dict()
    values.update(test_loss=scores["test_loss"], test_acc=scores["test_acc"])
    return EpochMetrics(**values)


def _best_state(row: EpochMetrics, model: ReservoirModel) -> dict[str, Any]:
    """The chosen epoch so far: its validation figures and a copy of the model's state."""
    return {
        "epoch": row.epoch,
        "val_acc": row.val_acc,
        "val_loss": row.val_loss,
        "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
    }


def _best_file(config: TrainConfig, best: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    return {
        **meta,
        "format": CHECKPOINT_FORMAT,
        "config": config.model_dump(mode="json"),
        "epoch": best["epoch"],
        "val_acc": best["val_acc"],
        "val_loss": best["val_loss"],
        "model": best["model"],
    }


def _row(
    epoch: int,
    train_loss: float,
    train_acc: float,
    scores: dict[str, float],
    c: _Counters,
    optimizer: torch.optim.Optimizer,
) -> EpochMetrics:
    return EpochMetrics(
        epoch=epoch,
        train_loss=train_loss,
        train_acc=train_acc,
        val_loss=scores["val_loss"],
        val_acc=scores["val_acc"],
        test_loss=scores["test_loss"],
        test_acc=scores["test_acc"],
        queries=c.queries,
        forward_passes=c.forward_passes,
        instrument_time_s=c.instrument_time_s,
        wall_s=c.wall_s,
        eval_queries=c.eval_queries,
        lr=float(optimizer.param_groups[0]["lr"]),
    )


def _save(
    path: Path,
    config: TrainConfig,
    epoch: int,
    model: ReservoirModel,
    optimizer: torch.optim.Optimizer,
    est: GradientEstimator | None,
    data_gen: torch.Generator,
    backend: MeasurementBackend,
    counters: _Counters,
    metrics: list[EpochMetrics],
    batches: list[list[float]],
    baseline: ReadoutResult,
    best: dict[str, Any],
    meta: dict[str, Any],
    partial: dict[str, Any] | None = None,
) -> None:
    """`partial` (within-epoch checkpoints only): the epoch's data order, position and
    running figures; `epoch` is then the last completed one."""
    save_checkpoint(
        path,
        {
            **meta,
            "partial": partial,
            "format": CHECKPOINT_FORMAT,
            "config": config.model_dump(mode="json"),
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "estimator": est.state_dict() if est is not None else {},
            "rng": capture_rng(),
            "data_generator": data_gen.get_state(),
            "ring": backend.sim_state(),
            "counters": vars(counters).copy(),
            "metrics": [m.to_dict() for m in metrics],
            "batches": [list(row) for row in batches],
            "baseline": baseline.to_dict(),
            "best": best,
        },
    )


def _check_resume_config(saved: dict[str, Any], config: TrainConfig) -> None:
    now = config.model_dump(mode="json")
    changed = [k for k in now if k not in RESUME_MAY_CHANGE and now[k] != saved.get(k)]
    if changed:
        flags = ", ".join("--" + k.replace("_", "-") for k in changed)
        raise UserError(
            f"--resume: {flags} differ from the checkpoint's run; resume with the same settings "
            "(only --epochs and --max-queries may change)"
        )
