"""`labpgt train`: train a network with the ring in the loop (perturbative gradients)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from labpgt.cli.options import takes_options
from labpgt.cli.tables import print_table
from labpgt.cli.train_options import TrainOptions
from labpgt.errors import UserError
from labpgt.live.launch import start_live_view
from labpgt.runner import drift_summary, run_training, write_summary
from labpgt.storage import write_failure
from labpgt.training.config import TrainConfig, make_config, parse_options
from labpgt.training.trainer import RunResult

console = Console()


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


def drift_line(result: RunResult) -> str:
    """One line under the table: the drift checks, their shots apart from the budget."""
    d = drift_summary(result)
    text = (
        f"drift checks: {d['checks']} (every {d['every_epochs']} epochs), "
        f"{d['beyond_tolerance']} beyond tolerance (±{d['tolerance_mhz']:g} MHz, "
        f"±{d['tolerance_db']:g} dB); {d['drift_queries']} drift queries, not in the "
        "training budget"
    )
    if d["last_epoch"] is not None:
        text += (
            f"; after epoch {d['last_epoch']}: {d['last_frequency_drift_mhz']:+.3f} MHz, "
            f"{d['last_level_drift_db']:+.3f} dB"
        )
    return text


def _pct(value: float) -> str:
    return "-" if value != value else f"{100 * value:.1f}"


CLI_ONLY = ("resume", "resume_from", "tensorboard", "live")
"""Options of `labpgt train` that are not TrainConfig fields."""


def config_from_options(options: TrainOptions) -> TrainConfig:
    """The command's option values as a TrainConfig: paths as text, --driven split at
    commas, the repeatable KEY=VALUE options parsed (--method-opt -> method_opts ...)."""
    values = {k: v for k, v in dataclasses.asdict(options).items() if k not in CLI_ONLY}
    for name in ("data", "calibration"):
        values[name] = str(values[name]) if values[name] else None
    files = tuple(str(path) for path in values["bench"])
    values["bench"] = files[0] if len(files) == 1 else (files or None)
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

    if config.ray and config.address is not None:  # nothing answers: one line, not a hang
        from labpgt.studies.ray_runner import check_address

        check_address(config.address)
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
    if config.drift_every > 0:
        console.print(drift_line(result), highlight=False)
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
