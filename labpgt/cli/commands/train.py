"""`labpgt train`: train a network with the ring in the loop (perturbative gradients)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from labpgt.cli.bench_access import check_bench_file, check_calibration_file
from labpgt.cli.progress import advance_to, make_progress, new_task
from labpgt.cli.tables import print_table
from labpgt.errors import UserError
from labpgt.live.launch import LIVE_OPTION, start_live_view
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

    progress = make_progress(console, disable=quiet)
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
        bar["id"] = new_task(
            progress, f"train {config.method}", total, unit="steps", completed=done
        )
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

    hooks = TrainHooks(
        on_start=on_start,
        on_step=on_step,
        on_epoch=on_epoch,
        on_note=lambda text: None if quiet else progress.console.print(f"[dim]{text}[/dim]"),
    )
    if extra_hooks:
        hooks = chain_hooks([hooks, *extra_hooks])
    with progress, open_backend(config) as backend:
        result = train(
            config, backend, resume=resume, hooks=hooks, task=task, resume_from=resume_from
        )
    return result


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


def train_command(
    task: str = typer.Option("digits", help=f"Bundled task: {', '.join(sorted(TASKS))}."),
    data: Path | None = typer.Option(None, help="Your own CSV (header row; numeric inputs)."),
    target: str | None = typer.Option(None, help="Class-label column of --data."),
    model: str = typer.Option("dense", help=f"Model: {', '.join(sorted(MODELS))}."),
    method: str = typer.Option("boundary", help=f"Method: {', '.join(method_names())}."),
    bench: Path | None = typer.Option(None, help="Bench file (TOML): train on that bench."),
    fast_sim: bool = typer.Option(False, "--fast-sim", help="In-process simulated ring."),
    noise: bool = typer.Option(True, help="Simulated noise on (sim benches)."),
    drift: bool = typer.Option(True, help="Simulated drift on (sim benches)."),
    epochs: int | None = typer.Option(None, help="Epochs (default 10, or until --max-queries)."),
    max_queries: int | None = typer.Option(None, help="Training query budget (measurements)."),
    seed: int = typer.Option(0, help="Seed of data split, init, perturbations and the sim."),
    optimizer: str = typer.Option("adam", help="adam | sgd | momentum."),
    lr: float = typer.Option(0.01, help="Learning rate."),
    momentum: float = typer.Option(0.9, help="Momentum for --optimizer momentum."),
    batch_size: int = typer.Option(32, help="Samples per step."),
    channels: int = typer.Option(8, help="Reservoir channels k per sample."),
    driven: str = typer.Option(
        "drive_hz",
        help="Settings u drives in each channel, comma-separated: drive_hz, drive_dbm, bias_a.",
    ),
    bins: int = typer.Option(16, help="Features per trace (kernel windows or bins)."),
    features: str = typer.Option(
        "kernel", help="Feature map: kernel (smooth Gaussian windows) | bins (mean dB per bin)."
    ),
    kernel_width: float = typer.Option(0.5, help="Kernel window σ, in window spacings."),
    hidden: int = typer.Option(32, help="Upstream hidden width (0: one linear layer)."),
    downstream_hidden: int = typer.Option(0, help="Readout hidden width (0: linear readout)."),
    probes: int | None = typer.Option(None, help="Probes q per step (method default if unset)."),
    delta: float | None = typer.Option(None, help="Perturbation size δ (method default)."),
    perturb: str | None = typer.Option(None, help="pgt/spsa: all | upstream."),
    pgt_range: int = typer.Option(1, help="PGT: perturbation entries in {-r..r}."),
    pgt_dropout: float = typer.Option(0.0, help="PGT: dropout scale p."),
    pgt_normalise: bool = typer.Option(True, help="PGT: divide by E[PM²]."),
    directions: str = typer.Option("auto", help="gaussian | rademacher | coordinate | auto."),
    one_sided: bool = typer.Option(False, "--one-sided", help="SPSA one-sided differences."),
    spsa_gain: bool = typer.Option(False, "--spsa-gain", help="SPSA gain schedules a_k, c_k."),
    gain_a: float = typer.Option(0.05, help="SPSA gain a."),
    gain_big_a: float = typer.Option(10.0, help="SPSA stability constant A."),
    gain_c: float | None = typer.Option(None, help="SPSA c (default δ)."),
    warmup_samples: int = typer.Option(128, help="Samples measured for normalisation."),
    calibration: Path | None = typer.Option(None, help="Calibration file for normalisation."),
    readout_init: str = typer.Option(
        "random", help="Readout to start from: random | ridge (the baseline's fit)."
    ),
    test_fraction: float = typer.Option(0.25, help="Held-out fraction of the data."),
    val_fraction: float = typer.Option(
        0.15, help="Fraction of the training part held out for validation (0: none)."
    ),
    eval_test: str = typer.Option(
        "every-epoch",
        help="every-epoch: test figures each epoch (curves only) | final: measured once, "
        "on the epoch chosen on validation.",
    ),
    lr_schedule: str = typer.Option("cosine", help="cosine (from --lr to 0) | constant."),
    method_opt: list[str] = typer.Option(
        [], "--method-opt", help="Estimator option KEY=VALUE (repeatable; int/float/bool/str)."
    ),
    model_opt: list[str] = typer.Option(
        [], "--model-opt", help="Model option KEY=VALUE (repeatable)."
    ),
    task_opt: list[str] = typer.Option(
        [], "--task-opt", help="Task option KEY=VALUE (repeatable)."
    ),
    out: Path = typer.Option(Path("runs/train"), help="Run directory."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out."),
    checkpoint_every_min: float | None = typer.Option(
        None, help="Also checkpoint within epochs every this many minutes of instrument time."
    ),
    resume_from: Path | None = typer.Option(
        None, help="Continue the run in --out from this checkpoint file (implies --resume)."
    ),
    tensorboard: Path | None = typer.Option(
        None, help="Also log to TensorBoard in this folder (needs labpgt[tensorboard])."
    ),
    live: bool = LIVE_OPTION,
) -> None:
    """Train a network with the magnonic ring in the loop (perturbative gradients)."""
    config = make_config(
        task=task,
        data=str(data) if data else None,
        target=target,
        model=model,
        method=method,
        bench=str(bench) if bench else None,
        fast_sim=fast_sim,
        noise=noise,
        drift=drift,
        epochs=epochs,
        max_queries=max_queries,
        seed=seed,
        optimizer=optimizer,
        lr=lr,
        momentum=momentum,
        batch_size=batch_size,
        channels=channels,
        driven=tuple(name.strip() for name in driven.split(",") if name.strip()),
        bins=bins,
        features=features,
        kernel_width=kernel_width,
        hidden=hidden,
        downstream_hidden=downstream_hidden,
        probes=probes,
        delta=delta,
        perturb=perturb,
        pgt_range=pgt_range,
        pgt_dropout=pgt_dropout,
        pgt_normalise=pgt_normalise,
        directions=directions,
        one_sided=one_sided,
        spsa_gain=spsa_gain,
        gain_a=gain_a,
        gain_big_a=gain_big_a,
        gain_c=gain_c,
        warmup_samples=warmup_samples,
        calibration=str(calibration) if calibration else None,
        readout_init=readout_init,
        test_fraction=test_fraction,
        val_fraction=val_fraction,
        eval_test=eval_test,
        lr_schedule=lr_schedule,
        method_opts=parse_options("--method-opt", method_opt),
        model_opts=parse_options("--model-opt", model_opt),
        task_opts=parse_options("--task-opt", task_opt),
        out=str(out),
        checkpoint_every_min=checkpoint_every_min,
    )
    from labpgt.instruments.bench import ShutdownError

    if live:
        start_live_view(out, "train")
    log = None
    if tensorboard is not None:
        from labpgt.training.tensorboard import TensorBoardLog

        log = TensorBoardLog(tensorboard)
    try:
        result = run_training(
            config,
            resume=resume or resume_from is not None,
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
