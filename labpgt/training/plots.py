"""PNG plots of a run: loss and accuracy against queries and against epochs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib.ticker import MaxNLocator  # noqa: E402

from labpgt.training.metrics import EpochMetrics  # noqa: E402


def _running_mean(values: list[float], window: int) -> list[float]:
    """Mean of the last `window` values at each point (fewer at the start)."""
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_run(
    rows: list[EpochMetrics],
    out_dir: Path,
    *,
    method: str,
    readout_test_acc: float | None,
    batches: list[list[float]] | None = None,
) -> list[Path]:
    """Write curves.png (2×2: loss/accuracy vs queries and vs epochs); return the paths.

    With `batches` ([step, queries, loss, accuracy] per training step) the panels
    against queries also show each batch's loss and the running mean of the last
    ten batches' loss and accuracy, between the per-epoch points.
    """
    if not rows:
        return []
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), constrained_layout=True)
    if batches:
        _plot_batches(axes[0, 0], axes[1, 0], batches)
    columns = [([r.queries for r in rows], "training queries"), ([r.epoch for r in rows], "epoch")]
    for col, (xs, xlabel) in enumerate(columns):
        _plot_epochs(axes[0, col], axes[1, col], xs, rows, readout_test_acc)
        for ax in (axes[0, col], axes[1, col]):
            ax.set_xlabel(xlabel)
            ax.grid(alpha=0.3)
            ax.legend()
            if col == 1:
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(f"labpgt train --method {method}: loss and accuracy against queries and epochs")
    path = out_dir / "curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def _plot_batches(ax_loss: Any, ax_acc: Any, batches: list[list[float]]) -> None:
    """Each batch's loss, and the running mean of ten batches' loss and accuracy."""
    batch_queries = [row[1] for row in batches]
    batch_loss = [row[2] for row in batches]
    ax_loss.plot(batch_queries, batch_loss, color="C0", alpha=0.2, lw=0.8)
    ax_loss.plot(
        batch_queries,
        _running_mean(batch_loss, 10),
        color="C0",
        lw=1.2,
        label="train batches (mean of 10)",
    )
    ax_acc.plot(
        batch_queries,
        [100 * a for a in _running_mean([row[3] for row in batches], 10)],
        color="C0",
        lw=1.2,
        alpha=0.6,
        label="train batches (mean of 10)",
    )


def _plot_epochs(
    ax_loss: Any,
    ax_acc: Any,
    xs: list[int],
    rows: list[EpochMetrics],
    readout_test_acc: float | None,
) -> None:
    """Per-epoch loss and accuracy of the train, validation and test parts against `xs`."""
    ax_loss.plot(xs, [r.train_loss for r in rows], "o-", label="train")
    ax_acc.plot(xs, [100 * r.train_acc for r in rows], "o-", label="train")
    # NaN points (no validation part; test measured only at the end) are not drawn.
    for name, marker in (("val", "^-"), ("test", "s-")):
        loss = [getattr(r, f"{name}_loss") for r in rows]
        if any(v == v for v in loss):
            label = "validation" if name == "val" else "test"
            ax_loss.plot(xs, loss, marker, label=label)
            ax_acc.plot(xs, [100 * getattr(r, f"{name}_acc") for r in rows], marker, label=label)
    ax_loss.set_ylabel("cross-entropy loss")
    if readout_test_acc is not None:
        ax_acc.axhline(100 * readout_test_acc, color="grey", ls="--", label="readout (test)")
    ax_acc.set_ylabel("accuracy (%)")
