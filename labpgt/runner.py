"""One training run as `labpgt train` runs it: the checks before it starts, the progress
bar, the summary file; and the one-line check of a calibration file (a bench file's:
`labpgt.benches.check_bench_file`).

`labpgt.api` (`train`, `Trainer.fit`), the train and demo commands and the studies run
their trainings through `run_training`, so the same config gives the same run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress

from labpgt.benches import check_bench_file
from labpgt.errors import UserError
from labpgt.progress import advance_to, make_progress, new_task
from labpgt.training.config import TrainConfig
from labpgt.training.estimators import ESTIMATORS, method_names
from labpgt.training.metrics import EpochMetrics
from labpgt.training.models import MODELS
from labpgt.training.tasks import TASKS, Task
from labpgt.training.trainer import RunResult, TrainHooks, chain_hooks

_console = Console()

# What a run directory holds; --overwrite removes exactly these (nothing else the user put there).
RUN_FILES = (
    "checkpoint.pt",
    "metrics.csv",
    "batches.csv",
    "config.json",
    "curves.png",
    "summary.json",
    "benches.json",
)


def run_training(
    config: TrainConfig,
    *,
    resume: bool,
    overwrite: bool = False,
    quiet: bool = False,
    task: Task | None = None,
    extra_hooks: list[TrainHooks] | None = None,
    resume_from: Path | None = None,
) -> RunResult:
    """Validate names, open the bench (or simulation), train with a progress bar.

    `task` replaces the configured one (the Python API's in-memory arrays); `extra_hooks`
    are called beside the progress bar's.
    """
    from labpgt.training.environment import open_backend
    from labpgt.training.trainer import train as train_run

    task = check_run(config, task, resume=resume, overwrite=overwrite)
    progress = make_progress(_console, disable=quiet)
    hooks = progress_hooks(progress, config.method, quiet=quiet)
    if extra_hooks:
        hooks = chain_hooks([hooks, *extra_hooks])
    with progress, open_backend(config) as backend:
        result = train_run(
            config, backend, resume=resume, hooks=hooks, task=task, resume_from=resume_from
        )
    return result


def check_run(config: TrainConfig, task: Task | None, *, resume: bool, overwrite: bool) -> Task:
    """Refuse a run that cannot start (one-line `UserError`), load its task, and clear the
    run files of ``out`` for ``overwrite``."""
    from labpgt.training.trainer import preflight

    if task is None and config.data is None and config.task not in TASKS:
        raise UserError(
            f"unknown task {config.task!r}; valid tasks: {', '.join(sorted(TASKS))} "
            "(or --data file.csv --target COLUMN)"
        )
    if config.method not in method_names():
        raise UserError(
            f"unknown method {config.method!r}; valid methods: {', '.join(method_names())}"
        )
    if config.model not in MODELS:
        raise UserError(
            f"unknown model {config.model!r}; valid models: {', '.join(sorted(MODELS))}"
        )
    if config.bench is not None and config.fast_sim:
        raise UserError("--bench and --fast-sim exclude each other: pick one")
    check_benches(config)
    est_cls = ESTIMATORS.get(config.method)
    if est_cls is not None and est_cls.needs_differentiable and config.bench_kind() != "fast-sim":
        where = "a bench file (--bench)" if config.bench else "the embedded virtual bench"
        raise UserError(
            f"method {config.method!r} differentiates the ring itself, which is only possible "
            f"with --fast-sim; on {where} use pgt, spsa or boundary"
        )
    seen: set[Path] = set()
    for name in config.bench_files():  # one line for a bench file that cannot be used
        if Path(name).resolve() in seen:
            raise UserError(f"--bench {name} is given twice: each bench file is one bench")
        seen.add(Path(name).resolve())
        check_bench_file(Path(name))
    if config.calibration is not None:
        check_calibration_file(Path(config.calibration))
    task = preflight(config, task)
    out = Path(config.out)
    if (out / "checkpoint.pt").exists() and not resume and not overwrite:
        raise UserError(
            f"--out {out} already holds a run; add --resume to continue it or choose another --out"
        )
    if overwrite and not resume and out.exists():
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
        for path in [*out.glob("checkpoint-step*.pt"), out / "best.pt"]:
            path.unlink(missing_ok=True)
    return task


def check_benches(config: TrainConfig) -> None:
    """Refuse, in one line, benches that cannot be opened as asked: --benches beside a bench
    file or --fast-sim, --ray with --fast-sim, --address without --ray, --calibration with
    --ray.
    (Ray missing or not starting is refused where the benches open, `multibench.start_ray`;
    an address where nothing answers by `labpgt train` first.)"""
    kind = config.bench_kind()
    other = "--bench" if config.bench else "--fast-sim"
    if config.benches > 1 and kind != "embedded":
        raise UserError(
            f"--benches {config.benches} runs that many embedded virtual benches; it does not "
            f"go with {other}"
        )
    if config.ray and kind == "fast-sim":
        raise UserError("--ray runs benches in Ray actors; not with --fast-sim")
    if config.address is not None and not config.ray:
        raise UserError("--address is the Ray cluster of --ray: add --ray (and --benches N)")
    if config.ray and config.calibration is not None:
        raise UserError("--calibration checks the bench in this process; not with --ray")


def progress_hooks(progress: Progress, method: str, *, quiet: bool) -> TrainHooks:
    """The training bar on ``progress``: preparing, then steps with the epoch's figures;
    with ``quiet`` off, one line per epoch and the trainer's notes."""
    # Until the trainer knows its step count (bench opened, baseline readout fitted) a
    # pulsing bar says what is going on, never a count of "0/?".
    preparing = new_task(
        progress, "preparing (bench, baseline readout)", None, unit="", instrument_s=None
    )
    bar: dict[str, Any] = {}
    last = {"figures": "val acc -"}

    def on_start(total: int, done: int) -> None:
        progress.update(preparing, total=1, completed=1, visible=False)
        # instrument_s counts from the run's start (a resume included): start_count 0
        bar["id"] = new_task(progress, f"train {method}", total, unit="steps", completed=done)
        progress.update(bar["id"], start_count=0)

    def on_step(info: dict[str, float]) -> None:
        task_id = bar["id"]
        done = progress.tasks[[t.id for t in progress.tasks].index(task_id)].completed + 1
        advance_to(
            progress,
            task_id,
            done,
            instrument_s=info["instrument_time_s"],
            info=f"epoch {int(info['epoch'])} loss {info['loss']:.3f} · {last['figures']} · "
            f"{int(info['queries'])} queries",
        )

    def on_epoch(row: EpochMetrics) -> None:
        # The figures of the epoch just finished, named with it; a split not measured this
        # epoch is left out rather than shown with an older value.
        parts = [f"train loss {row.train_loss:.3f} acc {100 * row.train_acc:.1f}%"]
        shown = []
        for name in ("val", "test"):
            loss, acc = getattr(row, f"{name}_loss"), getattr(row, f"{name}_acc")
            if acc == acc:  # not NaN
                parts.append(f"{name} loss {loss:.3f} acc {100 * acc:.1f}%")
                shown.append(f"{name} {100 * acc:.1f}%")
        last["figures"] = f"ep. {row.epoch}: " + (", ".join(shown) if shown else "train only")
        if "id" in bar:
            progress.update(
                bar["id"],
                info=f"epoch {row.epoch} done · {last['figures']} · {row.queries} queries",
            )
        if not quiet:
            progress.console.print(
                f"epoch {row.epoch}: {' | '.join(parts)} | {row.queries} queries, "
                f"{row.instrument_time_s:.1f} s instrument, {row.wall_s:.1f} s wall",
                highlight=False,
            )

    return TrainHooks(
        on_start=on_start,
        on_step=on_step,
        on_epoch=on_epoch,
        on_note=lambda text: None if quiet else progress.console.print(f"[dim]{text}[/dim]"),
    )


def write_summary(result: RunResult) -> Path:
    """summary.json of a finished run: the last epoch, the epoch chosen, the readout."""
    path = result.out_dir / "summary.json"
    last = result.metrics[-1]
    path.write_text(
        json.dumps(
            {
                "method": result.config.method,
                "stop_reason": result.stop_reason,
                "final": last.to_dict(),
                "selected": result.selected.to_dict(),
                "readout": result.baseline.to_dict(),
            },
            indent=2,
        )
    )
    return path


def check_calibration_file(path: Path, option: str = "--calibration") -> None:
    """Refuse, in one line, a calibration file that cannot be loaded (missing, damaged)."""
    from labpgt.calibration import load_calibration

    if not path.is_file():
        raise UserError(f"{option}: file {path} does not exist")
    try:
        load_calibration(path)
    except UserError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
        # RuntimeError: torch refusing a surrogate state of the wrong shape.
        what = f"missing {exc}" if isinstance(exc, KeyError) else " ".join(str(exc).split())
        raise UserError(f"{option}: {path} is a damaged calibration file: {what[:300]}") from None
