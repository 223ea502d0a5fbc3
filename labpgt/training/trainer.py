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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from labpgt.errors import UserError
from labpgt.records import BestModelFile, TrainerCheckpoint
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
    load_model_state,
    read_trainer_file,
    restore_rng,
    run_metadata,
    save_checkpoint,
)
from labpgt.training.config import TrainConfig
from labpgt.training.drift_checks import DriftCheck, check_after_epoch
from labpgt.training.drift_checks import due as drift_due
from labpgt.training.estimators import EstimatorContext, GradientEstimator, make_estimator
from labpgt.training.metrics import EpochMetrics, accuracy, write_batches_csv, write_csv
from labpgt.training.models import ReservoirModel
from labpgt.training.plots import plot_run
from labpgt.training.readout import ReadoutResult, linear_readout, readout_baseline
from labpgt.training.reservoir_layer import MeasurementBackend
from labpgt.training.tasks import Task, load_task

BEST_NAME = "best.pt"
"""The model of the epoch chosen on validation (state dict, config, its validation figures)."""
RESUME_MAY_CHANGE = (
    "epochs",
    "max_queries",
    "out",
    "ray",
    "address",
    "bench_resources",
    "drift_every",
    "drift_tolerance_mhz",
    "drift_tolerance_db",
    "on_drift",
)
"""Config fields a resume may change: the budget, the folder, where the same embedded
benches run (in this process or in Ray actors) and the drift checks (they measure apart from
training: a run stopped by one may go on with --on-drift warn)."""


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
    on_drift: Callable[[DriftCheck], None] = lambda check: None
    """After an epoch's drift check (--drift-every), after that epoch's `on_epoch`."""


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
        on_drift=fan("on_drift"),
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
    drift_queries: int = 0
    """Shots of the drift checks (--drift-every): not training queries, not in the budget."""
    drift_instrument_s: float = 0.0


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


@dataclass
class _TrainingRun:
    """What one training run carries from step to step: all a checkpoint saves, and where."""

    config: TrainConfig
    task: Task
    model: ReservoirModel
    est: GradientEstimator | None
    optimizer: torch.optim.Optimizer
    data_gen: torch.Generator
    backend: MeasurementBackend
    hooks: TrainHooks
    out: Path
    meta: dict[str, Any]
    counters: _Counters = field(default_factory=_Counters)
    metrics: list[EpochMetrics] = field(default_factory=list)
    batches: list[list[float]] = field(default_factory=list)
    baseline: ReadoutResult | None = None
    best: dict[str, Any] = field(default_factory=dict)
    """The epoch chosen on validation so far (`_best_state`)."""
    calibration: Any = None
    """The --calibration file's `Calibration` (normalisation, drift checks), or None."""

    @property
    def checkpoint_path(self) -> Path:
        return self.out / CHECKPOINT_NAME

    @contextmanager
    def eval_queries(self) -> Iterator[None]:
        """Count the queries measured inside as evaluation queries, not training ones."""
        before = self.backend.queries
        yield
        self.counters.eval_queries += self.backend.queries - before

    def add_time(self, t0_wall: float, t0_inst: float) -> None:
        """Add the wall and instrument time since (t0_wall, t0_inst) to the counters."""
        self.counters.instrument_time_s += self.backend.instrument_time_s - t0_inst
        self.counters.wall_s += time.perf_counter() - t0_wall

    def save(self, path: Path, epoch: int, partial: dict[str, Any] | None = None) -> None:
        """Checkpoint after `epoch`. `partial` (within-epoch checkpoints only): the epoch's
        data order, position and running figures; `epoch` is then the last completed one."""
        assert self.baseline is not None
        record = TrainerCheckpoint(
            **self.meta,
            partial=partial,
            config=self.config.model_dump(mode="json"),
            epoch=epoch,
            model=self.model.state_dict(),
            optimizer=self.optimizer.state_dict(),
            estimator=self.est.state_dict() if self.est is not None else {},
            rng=capture_rng(),
            data_generator=self.data_gen.get_state(),
            ring=self.backend.sim_state(),
            counters=vars(self.counters).copy(),
            metrics=[m.to_dict() for m in self.metrics],
            batches=[list(row) for row in self.batches],
            baseline=self.baseline.to_dict(),
            best=self.best,
        )
        save_checkpoint(path, record.as_dict())

    def write_tables(self) -> list[Path]:
        """metrics.csv (one row an epoch) and batches.csv (one row a step), as they are now."""
        tables = [self.out / "metrics.csv", self.out / "batches.csv"]
        write_csv(tables[0], self.metrics, drift_checks=self.config.drift_every > 0)
        write_batches_csv(tables[1], self.batches)
        return tables


@dataclass
class _EpochState:
    """Where the current epoch is: its data order, next batch, running figures, start times."""

    perm: torch.Tensor
    next_start: int
    losses: list[float]
    accs: list[float]
    sizes: list[int]
    t0_wall: float
    t0_inst: float
    """perf_counter and backend instrument time at the epoch's start (shifted on resume)."""
    last_checkpoint_s: float
    """Run instrument time of the last within-epoch checkpoint (or of the epoch's start)."""

    @classmethod
    def begin(cls, run: _TrainingRun) -> _EpochState:
        """A new epoch: a fresh data order from the run's data generator."""
        t0_wall, t0_inst = time.perf_counter(), run.backend.instrument_time_s
        perm = torch.randperm(run.task.x_train.shape[0], generator=run.data_gen)
        return cls(perm, 0, [], [], [], t0_wall, t0_inst, run.counters.instrument_time_s)

    @classmethod
    def resume(cls, run: _TrainingRun, partial: dict[str, Any]) -> _EpochState:
        """The epoch a within-epoch checkpoint stopped in, continued where it was."""
        return cls(
            perm=partial["perm"],
            next_start=int(partial["next_start"]),
            losses=list(partial["losses"]),
            accs=list(partial["accs"]),
            sizes=list(partial["sizes"]),
            t0_wall=time.perf_counter() - float(partial["wall_in_epoch_s"]),
            t0_inst=run.backend.instrument_time_s - float(partial["instrument_in_epoch_s"]),
            last_checkpoint_s=float(partial["last_checkpoint_instrument_s"]),
        )

    def as_partial(self, run: _TrainingRun, next_start: int) -> dict[str, Any]:
        """What a within-epoch checkpoint stores of this epoch (read back by `resume`)."""
        return {
            "perm": self.perm,
            "next_start": next_start,
            "losses": list(self.losses),
            "accs": list(self.accs),
            "sizes": list(self.sizes),
            "wall_in_epoch_s": time.perf_counter() - self.t0_wall,
            "instrument_in_epoch_s": run.backend.instrument_time_s - self.t0_inst,
            "last_checkpoint_instrument_s": self.last_checkpoint_s,
        }

    def instrument_s(self, run: _TrainingRun) -> float:
        """The run's instrument time so far, this epoch's included."""
        return run.counters.instrument_time_s + run.backend.instrument_time_s - self.t0_inst


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
    est = _training_estimator(config, model, backend, calibration)
    optimizer = make_optimizer(config, model)
    data_gen = torch.Generator().manual_seed(config.seed + 2)
    out.mkdir(parents=True, exist_ok=True)
    meta = run_metadata(config, task, backend.reservoir)
    run = _TrainingRun(config, task, model, est, optimizer, data_gen, backend, hooks, out, meta)
    run.calibration = calibration
    if config.drift_every > 0 and calibration is not None:
        calibration.check_compatible(backend.reservoir)  # before an epoch, also on --resume
    if resume:
        start_epoch, partial = _restore(
            run, run.checkpoint_path if resume_from is None else resume_from
        )
    else:
        _start(run, calibration)
        start_epoch, partial = 0, None
    stop = "readout only" if est is None else _loop(run, est, start_epoch, partial)
    return _finish(run, stop)


def _training_estimator(
    config: TrainConfig, model: ReservoirModel, backend: MeasurementBackend, calibration: Any
) -> GradientEstimator | None:
    """The run's estimator (None for method 'readout'), its backend and budget checked."""
    if config.method == "readout":
        return None
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
    return est


def _start(run: _TrainingRun, calibration: Any) -> None:
    """A new run: config.json, feature normalisation, the readout baseline and epoch 0."""
    config, task, model, backend = run.config, run.task, run.model, run.backend
    (run.out / "config.json").write_text(json.dumps(config.model_dump(mode="json"), indent=2))
    t0_wall, t0_inst = time.perf_counter(), backend.instrument_time_s
    normalise_features(config, task, model, backend, run.hooks.on_note, calibration)
    run.baseline = readout_baseline(
        model, task, seed=config.seed, warm_start=config.readout_init == "ridge"
    )
    run.hooks.on_note(
        f"readout baseline: test accuracy {100 * run.baseline.test_acc:.1f} % "
        f"({run.baseline.queries} queries, ridge λ={run.baseline.ridge_lambda:g})"
    )
    with run.eval_queries():
        scores = _evaluate_split(config, model, task)
        train_loss, train_acc = _initial_train_scores(model, task, run.baseline)
    run.add_time(t0_wall, t0_inst)
    run.metrics.append(_row(0, train_loss, train_acc, scores, run.counters, run.optimizer))
    run.best = _best_state(run.metrics[0], model)
    run.save(run.checkpoint_path, 0)


def _restore(run: _TrainingRun, src: Path) -> tuple[int, dict[str, Any] | None]:
    """Load the checkpoint `src` into `run`: (its last completed epoch, its within-epoch
    state or None). Refuses a checkpoint of another format, config or run."""
    src = Path(src)
    state = read_trainer_file(src, TrainerCheckpoint, action="--resume", advice="; start a new run")
    _check_resume_config(state.config, run.config)
    check_same_run(src, state.as_dict(), run.meta, action="--resume")
    load_model_state(run.model, state.model, src)
    run.optimizer.load_state_dict(state.optimizer)
    if run.est is not None:
        run.est.load_state_dict(state.estimator)
    restore_rng(state.rng)
    run.data_gen.set_state(state.data_generator)
    run.backend.load_sim_state(state.ring)
    run.counters = _Counters(**state.counters)
    run.metrics = [EpochMetrics(**row) for row in state.metrics]
    run.batches = [list(row) for row in state.batches]
    run.baseline = ReadoutResult(**state.baseline)
    run.best = dict(state.best)
    start_epoch, partial = state.epoch, state.partial
    within = f", step {run.counters.steps}" if partial is not None else ""
    run.hooks.on_note(f"resumed from {src} after epoch {start_epoch}{within}")
    return start_epoch, partial


def _finish(run: _TrainingRun, stop: str) -> RunResult:
    """The chosen epoch's figures, the final tables and plots: the run's result."""
    assert run.baseline is not None
    selected = _select(run)
    tables = run.write_tables()
    files = plot_run(
        run.metrics,
        run.out,
        method=run.config.method,
        readout_test_acc=run.baseline.test_acc,
        batches=run.batches,
    )
    return RunResult(
        run.config, run.metrics, run.baseline, run.model, run.out, stop, selected, [*tables, *files]
    )


def _loop(
    run: _TrainingRun, est: GradientEstimator, start_epoch: int, partial: dict[str, Any] | None
) -> str:
    """Epochs from `start_epoch + 1` (the first one from `partial` when given) until the
    epochs or the query budget run out; returns why it stopped."""
    config = run.config
    n, epochs = run.task.x_train.shape[0], config.epochs_or_default()
    # The steps the run will take (a short last batch costs less than a full one, so a
    # budget pays for more steps than max_queries // full_cost): what the bar counts to.
    run.hooks.on_start(
        planned_steps(
            n,
            config.batch_size,
            epochs,
            lambda size: est.queries_per_step(size, config.channels, len(config.driven)),
            config.max_queries,
        ),
        run.counters.steps,
    )
    schedule_steps = _schedule_length(config, est, n)
    for epoch in range(start_epoch + 1, epochs + 1):
        state = _EpochState.begin(run) if partial is None else _EpochState.resume(run, partial)
        partial = None
        budget_hit = _train_epoch(run, est, epoch, state, schedule_steps)
        if not state.sizes:
            return "query budget reached"
        drift_stop = _end_epoch(run, epoch, state)
        if drift_stop:
            return drift_stop
        if budget_hit:
            return "query budget reached"
    return "epochs done"


def _schedule_length(config: TrainConfig, est: GradientEstimator, n: int) -> int:
    """Steps the learning-rate schedule spans: every batch of every epoch, or as many full
    batches as the query budget pays for."""
    total = config.epochs_or_default() * -(-n // config.batch_size)
    if config.max_queries is not None:
        total = min(total, config.max_queries // check_budget(config, est))
    return total


def _train_epoch(
    run: _TrainingRun, est: GradientEstimator, epoch: int, state: _EpochState, schedule_steps: int
) -> bool:
    """The epoch's remaining steps; True when the query budget stopped it early."""
    config, n = run.config, run.task.x_train.shape[0]
    every_s = None if config.checkpoint_every_min is None else 60.0 * config.checkpoint_every_min
    for start in range(state.next_start, n, config.batch_size):
        idx = state.perm[start : start + config.batch_size]
        cost = est.queries_per_step(len(idx), config.channels, len(config.driven))
        if config.max_queries is not None and run.counters.queries + cost > config.max_queries:
            return True
        _train_step(run, est, epoch, idx, state, schedule_steps)
        if every_s is not None and start + len(idx) < n:
            _checkpoint_within_epoch(run, epoch, state, start + len(idx), every_s)
    return False


def _train_step(
    run: _TrainingRun,
    est: GradientEstimator,
    epoch: int,
    idx: torch.Tensor,
    state: _EpochState,
    schedule_steps: int,
) -> None:
    """One optimizer step on the batch `idx`: estimate, step, count, report."""
    x, y = run.task.x_train[idx], run.task.y_train[idx]
    counters = run.counters
    result = est.estimate(run.model, x, y, _loss)
    run.hooks.on_gradient(run.model, x, y, counters.steps + 1)
    _schedule_lr(run.config, run.optimizer, counters.steps, schedule_steps)
    est.before_step(run.optimizer)
    run.optimizer.step()
    counters.queries += result.queries
    counters.forward_passes += result.forward_passes
    counters.steps += 1
    state.losses.append(result.loss)
    state.accs.append(accuracy(result.logits, y))
    state.sizes.append(len(idx))
    run.batches.append([counters.steps, counters.queries, result.loss, state.accs[-1]])
    run.hooks.on_step(
        {
            "epoch": epoch,
            "loss": result.loss,
            "queries": counters.queries,
            "instrument_time_s": state.instrument_s(run),
        }
    )


def _checkpoint_within_epoch(
    run: _TrainingRun, epoch: int, state: _EpochState, next_start: int, every_s: float
) -> None:
    """A checkpoint-stepNNNNNN.pt once `every_s` of instrument time passed since the last."""
    instrument_s = state.instrument_s(run)
    if instrument_s - state.last_checkpoint_s < every_s:
        return
    state.last_checkpoint_s = instrument_s
    path = run.out / f"checkpoint-step{run.counters.steps:06d}.pt"
    run.save(path, epoch - 1, partial=state.as_partial(run, next_start))


def _end_epoch(run: _TrainingRun, epoch: int, state: _EpochState) -> str:
    """The epoch's row (train figures over its steps, validation/test measured now), the
    best model if it is one, the epoch's checkpoint and tables; then the drift check if one
    is due. Returns why the run stops here ("": it goes on)."""
    sizes = torch.tensor(state.sizes, dtype=torch.float64)
    train_loss = _weighted_mean(state.losses, sizes)
    train_acc = _weighted_mean(state.accs, sizes)
    with run.eval_queries():
        scores = _evaluate_split(run.config, run.model, run.task)
    run.add_time(state.t0_wall, state.t0_inst)
    row = _row(epoch, train_loss, train_acc, scores, run.counters, run.optimizer)
    run.metrics.append(row)
    if _better(row, run.best):
        run.best = _best_state(row, run.model)
        save_checkpoint(run.out / BEST_NAME, _best_file(run.config, run.best, run.meta))
    run.save(run.checkpoint_path, epoch)
    run.write_tables()
    check = _drift_check(run, epoch)
    run.hooks.on_epoch(run.metrics[-1])
    if check is None:
        return ""
    run.hooks.on_drift(check)
    stop = run.config.on_drift == "stop" and not check.within_tolerance
    return check.stop_reason() if stop else ""


def _drift_check(run: _TrainingRun, epoch: int) -> DriftCheck | None:
    """The drift check due after `epoch` (--drift-every), or None. It runs once the epoch is
    checkpointed (a bench failing in it loses no training); its figures and shots (counted
    apart from training) then go into the epoch's row, checkpoint (with the ring's state
    after the check, for a bit-identical resume on the sim) and tables."""
    if run.calibration is None or not drift_due(run.config, epoch):
        return None
    check = check_after_epoch(run.backend, run.calibration, run.config, epoch)
    run.counters.drift_queries += check.shots
    run.counters.drift_instrument_s += check.instrument_s
    figures = {**check.figures(), "drift_queries": run.counters.drift_queries}
    run.metrics[-1] = EpochMetrics(**{**run.metrics[-1].to_dict(), **figures})
    run.save(run.checkpoint_path, epoch)
    run.write_tables()
    return check


def _weighted_mean(values: list[float], weights: torch.Tensor) -> float:
    return float((torch.tensor(values, dtype=torch.float64) * weights).sum() / weights.sum())


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


def _select(run: _TrainingRun) -> EpochMetrics:
    """The row of the epoch chosen on validation, with its test figures.

    With ``eval_test='final'`` this is the one time the test part is measured: on
    the chosen model, whose state is loaded into the run's model (the returned model).
    """
    row = next(m for m in run.metrics if m.epoch == run.best["epoch"])
    if run.config.eval_test != "final":
        return row
    run.model.load_state_dict(run.best["model"])
    with run.eval_queries():
        scores = _evaluate_split(run.config, run.model, run.task, final=True)
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
    return BestModelFile(
        **meta,
        config=config.model_dump(mode="json"),
        epoch=best["epoch"],
        val_acc=best["val_acc"],
        val_loss=best["val_loss"],
        model=best["model"],
    ).as_dict()


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
        drift_queries=c.drift_queries,
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
