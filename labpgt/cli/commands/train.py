"""`labpgt train`: train a network with the ring in the loop (perturbative gradients)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from labpgt.cli.bench_access import check_bench_file, check_calibration_file
from labpgt.cli.options import takes_options
from labpgt.cli.progress import advance_to, make_progress, new_task
from labpgt.cli.tables import print_table
from labpgt.cli.train_options import TrainOptions
from labpgt.errors import UserError
from labpgt.live.launch import start_live_view
from labpgt.storage import write_failure
from labpgt.training.config import TrainConfig, make_config, parse_options
from labpgt.training.estimators import ESTIMATORS, method_names
from labpgt.training.metrics import EpochMetrics
from labpgt.training.models import MODELS
from labpgt.training.tasks import TASKS, Task
from labpgt.training.trainer import RunResult, TrainHooks, chain_hooks

console = Console()

# What a run directory holds; --overwrite removes exactly these (nothing else the user put there).
RUN_FILES = (
    "checkpoint.pt",
    "metrics.csv",
    "batches.csv",
    "config.json",
    "curves.png",
    "summary.json",
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
    from labpgt.training.trainer import preflight, train

    check_choices(config, task_given=task is not None)
    task = preflight(config, task)
    _prepare_out(Path(config.out), resume=resume, overwrite=overwrite)
    progress = make_progress(console, disable=quiet)
    hooks = _TrainProgress(progress, config.method, quiet).hooks()
    if extra_hooks:
        hooks = chain_hooks([hooks, *extra_hooks])
    with progress, open_backend(config) as backend:
        result = train(
            config, backend, resume=resume, hooks=hooks, task=task, resume_from=resume_from
        )
    return result


def check_choices(config: TrainConfig, *, task_given: bool) -> None:
    """Refuse, before anything is opened, an unknown task, method or model, a method the
    chosen bench cannot run, and a bench or calibration file that cannot be used."""
    if not task_given and config.data is None and config.task not in TASKS:
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
    est_cls = ESTIMATORS.get(config.method)
    if est_cls is not None and est_cls.needs_differentiable and config.bench_kind() != "fast-sim":
        where = "a bench file (--bench)" if config.bench else "the embedded virtual bench"
        raise UserError(
            f"method {config.method!r} differentiates the ring itself, which is only possible "
            f"with --fast-sim; on {where} use pgt, spsa or boundary"
        )
    if config.bench is not None:
        check_bench_file(Path(config.bench))  # one line for a bench file that cannot be used
    if config.calibration is not None:
        check_calibration_file(Path(config.calibration))


def _prepare_out(out: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to start over a run unless asked; --overwrite removes that run's files only."""
    if (out / "checkpoint.pt").exists() and not resume and not overwrite:
        raise UserError(
            f"--out {out} already holds a run; add --resume to continue it or choose another --out"
        )
    if overwrite and not resume and out.exists():
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
        for path in [*out.glob("checkpoint-step*.pt"), out / "best.pt"]:
            path.unlink(missing_ok=True)


class _TrainProgress:
    """The progress bar and the per-epoch lines a training run draws (its TrainHooks)."""

    def __init__(self, progress: Any, method: str, quiet: bool) -> None:
        self.progress, self.method, self.quiet = progress, method, quiet
        # Until the trainer knows its step count (bench opened, baseline readout fitted) a
        # pulsing bar says what is going on, never a count of "0/?".
        self.preparing = new_task(
            progress, "preparing (bench, baseline readout)", None, unit="", instrument_s=None
        )
        self.bar: Any = None
        self.figures = "val acc -"

    def hooks(self) -> TrainHooks:
        return TrainHooks(
            on_start=self.on_start,
            on_step=self.on_step,
            on_epoch=self.on_epoch,
            on_note=self.on_note,
        )

    def on_start(self, total: int, done: int) -> None:
        self.progress.update(self.preparing, total=1, completed=1, visible=False)
        # instrument_s counts from the run's start (a resume included): start_count 0
        self.bar = new_task(
            self.progress, f"train {self.method}", total, unit="steps", completed=done
        )
        self.progress.update(self.bar, start_count=0)

    def on_step(self, info: dict[str, float]) -> None:
        tasks = self.progress.tasks
        done = tasks[[t.id for t in tasks].index(self.bar)].completed + 1
        advance_to(
            self.progress,
            self.bar,
            done,
            instrument_s=info["instrument_time_s"],
            info=f"epoch {int(info['epoch'])} loss {info['loss']:.3f} · {self.figures} · "
            f"{int(info['queries'])} queries",
        )

    def on_epoch(self, row: EpochMetrics) -> None:
        # The figures of the epoch just finished, named with it; a split not measured this
        # epoch is left out rather than shown with an older value.
        parts = [f"train loss {row.train_loss:.3f} acc {100 * row.train_acc:.1f}%"]
        shown = []
        for name in ("val", "test"):
            loss, acc = getattr(row, f"{name}_loss"), getattr(row, f"{name}_acc")
            if acc == acc:  # not NaN
                parts.append(f"{name} loss {loss:.3f} acc {100 * acc:.1f}%")
                shown.append(f"{name} {100 * acc:.1f}%")
        self.figures = f"ep. {row.epoch}: " + (", ".join(shown) if shown else "train only")
        if self.bar is not None:
            self.progress.update(
                self.bar,
                info=f"epoch {row.epoch} done · {self.figures} · {row.queries} queries",
            )
        if not self.quiet:
            self.progress.console.print(
                f"epoch {row.epoch}: {' | '.join(parts)} | {row.queries} queries, "
                f"{row.instrument_time_s:.1f} s instrument, {row.wall_s:.1f} s wall",
                highlight=False,
            )

    def on_note(self, text: str) -> None:
        if not self.quiet:
            self.progress.console.print(f"[dim]{text}[/dim]")


def summary_table(result: RunResult) -> Table:
    """The final table: the epoch chosen on validation beside the readout baseline."""
    cfg = result.config
    table = Table(
        title=f"{cfg.data or cfg.task} · {cfg.model} · {cfg.bench_kind()} · seed {cfg.seed}"
    )
    for col in (
        "method",
        "test acc %",
        "val acc %",
        "epoch",
        "queries",
        "passes",
        "instr. s",
        "wall s",
    ):
        table.add_column(col, justify="left" if col == "method" else "right", overflow="fold")
    b = result.baseline
    if cfg.method != "readout":
        chosen, last = result.selected, result.metrics[-1]
        table.add_row(
            cfg.method,
            _pct(chosen.test_acc),
            _pct(chosen.val_acc),
            f"{chosen.epoch}/{last.epoch}",
            f"{last.queries}",
            f"{last.forward_passes}",
            f"{last.instrument_time_s:.0f}",
            f"{last.wall_s:.0f}",
        )
    table.add_row(
        "readout",
        _pct(b.test_acc),
        "-",
        "-",
        f"{b.queries}",
        "1",
        f"{b.instrument_time_s:.0f}",
        f"{b.wall_s:.0f}",
    )
    return table


def _pct(value: float) -> str:
    return "-" if value != value else f"{100 * value:.1f}"


def write_summary(result: RunResult) -> Path:
    import json

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


CLI_ONLY = ("resume", "resume_from", "tensorboard", "live")
"""Options of `labpgt train` that are not TrainConfig fields."""


def config_from_options(options: TrainOptions) -> TrainConfig:
    """The command's option values as a TrainConfig: paths as text, --driven split at
    commas, the repeatable KEY=VALUE options parsed (--method-opt -> method_opts ...)."""
    values = {k: v for k, v in dataclasses.asdict(options).items() if k not in CLI_ONLY}
    for name in ("data", "bench", "calibration"):
        values[name] = str(values[name]) if values[name] else None
    values["out"] = str(values["out"])
    values["driven"] = tuple(name.strip() for name in values["driven"].split(",") if name.strip())
    for kind in ("method", "model", "task"):
        values[f"{kind}_opts"] = parse_options(f"--{kind}-opt", values.pop(f"{kind}_opt"))
    return make_config(**values)


@takes_options(TrainOptions)
def train_command(**values: Any) -> None:
    """Train a network with the magnonic ring in the loop (perturbative gradients)."""
    options = TrainOptions(**values)
    config = config_from_options(options)
    out, resume_from, tensorboard = Path(config.out), options.resume_from, options.tensorboard
    from labpgt.instruments.bench import ShutdownError

    if options.live:
        start_live_view(out, "train")
    log = None
    if tensorboard is not None:
        from labpgt.training.tensorboard import TensorBoardLog

        log = TensorBoardLog(tensorboard)
    try:
        result = run_training(
            config,
            resume=options.resume or resume_from is not None,
            resume_from=resume_from,
            extra_hooks=None if log is None else [log.hooks],
        )
        write_summary(result)
    except ShutdownError as exc:
        _record_shutdown_failure(out, exc)
        raise  # reported at length by the entry point, exit 3
    except OSError as exc:
        where = exc.filename if exc.filename else f"--out {out}"
        raise UserError(f"{where}: {write_failure(exc)}") from None
    finally:
        if log is not None:
            log.close()
    print_table(console, summary_table(result))
    console.print(f"run directory: {result.out_dir} ({result.stop_reason})", highlight=False)


def _record_shutdown_failure(out: Path, exc: Exception) -> None:
    """Append the failed shutdown to <out>/shutdown_failures.json (best effort)."""
    import datetime as _dt
    import json

    path = out / "shutdown_failures.json"
    try:
        records = json.loads(path.read_text()) if path.is_file() else []
        if not isinstance(records, list):
            records = []
    except (OSError, ValueError):
        records = []
    records.append(
        {
            "time_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "failures": [f.as_dict() for f in getattr(exc, "failures", [])],
            "during": None if exc.__cause__ is None else " ".join(str(exc.__cause__).split()),
        }
    )
    try:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(records, indent=2))
    except OSError:
        pass  # the report on screen is what matters; the record is a convenience


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
