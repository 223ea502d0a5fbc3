"""One training run as `labpgt train` runs it: the checks before it starts, the progress
bar, the summary file; and the one-line check of a calibration file (a bench file's:
`labpgt.benches.check_bench_file`).

The bench files are read once, by the checks (`check_run`); the bench configs they give are
what the run opens.

`labpgt.api` (`train`, `Trainer.fit`), the train and demo commands and the studies run
their trainings through `run_training`, so the same config gives the same run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress

from labpgt.benches import load_bench_files
from labpgt.errors import UserError
from labpgt.instruments.bench_file import BenchConfig
from labpgt.progress import advance_to, make_progress, new_task
from labpgt.training.config import TrainConfig
from labpgt.training.drift_checks import DriftCheck
from labpgt.training.estimators import ESTIMATORS, method_names
from labpgt.training.metrics import EpochMetrics, row_dict
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

    task, benches = check_run(config, task, resume=resume, overwrite=overwrite)
    progress = make_progress(_console, disable=quiet)
    hooks = progress_hooks(progress, config.method, quiet=quiet)
    if extra_hooks:
        hooks = chain_hooks([hooks, *extra_hooks])
    with progress, open_backend(config, benches) as backend:
        result = train_run(
            config, backend, resume=resume, hooks=hooks, task=task, resume_from=resume_from
        )
    return result


def check_run(
    config: TrainConfig, task: Task | None, *, resume: bool, overwrite: bool
) -> tuple[Task, list[BenchConfig]]:
    """Refuse a run that cannot start (one-line `UserError`), load its task and its bench
    files (each read once: the configs returned are what the run opens), and clear the run
    files of ``out`` for ``overwrite``."""
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
    check_drift_options(config)
    est_cls = ESTIMATORS.get(config.method)
    if est_cls is not None and est_cls.needs_differentiable and config.bench_kind() != "fast-sim":
        where = "a bench file (--bench)" if config.bench else "the embedded virtual bench"
        raise UserError(
            f"method {config.method!r} differentiates the ring itself, which is only possible "
            f"with --fast-sim; on {where} use pgt, spsa or boundary"
        )
    benches = load_bench_files(config.bench_files())  # one line for a file that cannot be used
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
    return task, benches


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
    check_bench_resources(config)


def check_bench_resources(config: TrainConfig) -> None:
    """--bench-resource: only with --ray, one per bench, no name twice (one line each)."""
    names = config.bench_resources
    if not names:
        return
    if not config.ray:
        raise UserError("--bench-resource places a bench's Ray actor: add --ray")
    count = len(config.bench_files()) or config.benches
    if len(names) != count:
        raise UserError(
            f"--bench-resource is given {len(names)} times for {count} benches: give one per "
            "bench, in the order of the benches"
        )
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UserError(f"--bench-resource {twice[0]} is given twice: one bench per node resource")


def check_drift_options(config: TrainConfig) -> None:
    """Refuse, in one line, drift checks that cannot run: no --calibration to check against,
    or several benches (a calibration is of one bench; checking each is not supported)."""
    if config.drift_every == 0:
        return
    if config.calibration is None:
        raise UserError(
            "--drift-every re-measures the reference settings of a calibration: add "
            "--calibration calib.h5 (from labpgt calibrate on this bench)"
        )
    if config.benches > 1 or len(config.bench_files()) > 1 or config.ray:
        raise UserError(
            "--drift-every checks the one bench its --calibration was measured on; with several "
            "benches (--benches, --bench given more than once, --ray) it is not supported"
        )


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
        on_drift=lambda check: None if quiet else print_drift_check(progress, check),
    )


def print_drift_check(progress: Progress, check: DriftCheck) -> None:
    """A drift check's line under the progress bar: green within tolerance, else red."""
    colour = "green" if check.within_tolerance else "red"
    progress.console.print(f"[{colour}]{check.line()}[/{colour}]", highlight=False)


def write_summary(result: RunResult) -> Path:
    """summary.json of a finished run: the last epoch, the epoch chosen, the readout."""
    path = result.out_dir / "summary.json"
    drift = result.config.drift_every > 0
    summary: dict[str, Any] = {
        "method": result.config.method,
        "stop_reason": result.stop_reason,
        "final": row_dict(result.metrics[-1], drift),
        "selected": row_dict(result.selected, drift),
        "readout": result.baseline.to_dict(),
    }
    if drift:
        summary["drift_checks"] = drift_summary(result)
    path.write_text(json.dumps(summary, indent=2))
    return path


def drift_summary(result: RunResult) -> dict[str, Any]:
    """The run's drift checks: how many, how many beyond tolerance, their shots (apart from
    the training ``queries``) and the last one's figures."""
    checked = [m for m in result.metrics if m.drift_within_tolerance == m.drift_within_tolerance]
    last = checked[-1] if checked else None
    return {
        "every_epochs": result.config.drift_every,
        "checks": len(checked),
        "beyond_tolerance": sum(1 for m in checked if m.drift_within_tolerance == 0.0),
        "drift_queries": result.metrics[-1].drift_queries,
        "tolerance_mhz": result.config.drift_tolerance_mhz,
        "tolerance_db": result.config.drift_tolerance_db,
        "on_drift": result.config.on_drift,
        "last_epoch": None if last is None else last.epoch,
        "last_frequency_drift_mhz": None if last is None else last.drift_frequency_mhz,
        "last_level_drift_db": None if last is None else last.drift_level_db,
    }


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
