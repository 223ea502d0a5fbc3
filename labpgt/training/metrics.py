"""Per-epoch metrics of a training run: the row, the CSV writer, accuracy/loss helpers."""

from __future__ import annotations

import csv
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch


@dataclass
class EpochMetrics:
    """One metrics.csv row. Queries/forward passes are training costs, cumulative.

    val_* are NaN without a validation part; test_* are NaN when the test part is
    measured only once, at the end (``eval_test='final'``).
    """

    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    test_loss: float
    test_acc: float
    queries: int
    forward_passes: int
    instrument_time_s: float
    wall_s: float
    eval_queries: int
    lr: float
    drift_frequency_mhz: float = math.nan
    """Frequency drift of this epoch's drift check (--drift-every), MHz; NaN: none."""
    drift_level_db: float = math.nan
    """Level drift of this epoch's drift check, dB; NaN: none (or it could not measure)."""
    drift_within_tolerance: float = math.nan
    """1 within tolerance, 0 beyond it (or the check failed), NaN: no check this epoch."""
    drift_queries: int = 0
    """Shots the drift checks measured so far, cumulative (not in ``queries``)."""

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


DRIFT_COLUMNS: list[str] = [
    "drift_frequency_mhz",
    "drift_level_db",
    "drift_within_tolerance",
    "drift_queries",
]
"""metrics.csv columns of the drift checks: written only by runs with --drift-every."""
COLUMNS: list[str] = [f.name for f in fields(EpochMetrics) if f.name not in DRIFT_COLUMNS]
"""metrics.csv columns of every run."""


def columns(drift_checks: bool) -> list[str]:
    """The metrics.csv columns of a run (and its summary rows): the drift ones only for a run
    with drift checks, so a run without them writes the file it always did."""
    return COLUMNS + DRIFT_COLUMNS if drift_checks else COLUMNS


def row_dict(row: EpochMetrics, drift_checks: bool) -> dict[str, float]:
    """The row's figures under ``columns(drift_checks)``."""
    values = row.to_dict()
    return {name: values[name] for name in columns(drift_checks)}


BATCH_COLUMNS: list[str] = ["step", "queries", "batch_loss", "batch_acc"]
"""batches.csv: one row per training step (its batch's loss and accuracy, queries so far)."""


def write_batches_csv(path: Path, batches: list[list[float]]) -> None:
    """Rewrite batches.csv from [step, queries, batch loss, batch accuracy] rows."""
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(BATCH_COLUMNS)
        for step, queries, loss, acc in batches:
            writer.writerow([int(step), int(queries), f"{loss:.6g}", f"{acc:.6g}"])
    tmp.replace(path)


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(dim=1) == y).double().mean())


def write_csv(path: Path, rows: list[EpochMetrics], *, drift_checks: bool = False) -> None:
    """Rewrite the whole file (a resumed run keeps exactly the rows of its checkpoint);
    with ``drift_checks`` the `DRIFT_COLUMNS` too."""
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns(drift_checks))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _fmt(v) for k, v in row_dict(row, drift_checks).items()})
    tmp.replace(path)


def _fmt(v: float) -> str | float:
    return f"{v:.6g}" if isinstance(v, float) else v


def read_csv(path: Path) -> list[dict[str, float]]:
    with path.open(newline="") as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]
