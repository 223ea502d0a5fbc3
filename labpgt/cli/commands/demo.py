"""`labpgt demo` (what `make demo` runs): the ring learning digits, beside its yardsticks.

Trains the default network (boundary perturbation, k = 8 channels of one drive
frequency each, 16 kernel features per trace) on the embedded virtual bench:
the simulated ring with noise and drift behind SCPI servers on loopback
sockets, driven through the real instrument drivers. Then it trains the
same-shape digital network (the ring replaced by a digital Linear+tanh) on
the same split and budget and fits logistic regression on the raw pixels, and
prints the three beside the readout-only reservoir baseline. Test figures are
measured once, on the epoch chosen on validation. Writes runs/demo (and
runs/demo/digital), overwriting a previous demo.
"""

from __future__ import annotations

import time

import typer
from rich.table import Table

from labpgt.cli.commands.train import console, summary_table
from labpgt.cli.tables import print_table
from labpgt.runner import run_training, write_summary
from labpgt.training.config import make_config

DEMO_OUT = "runs/demo"


def demo_command(
    max_queries: int = typer.Option(
        100_000, "--max-queries", help="Training query budget (100000: about 2.5 min in all)."
    ),
    seed: int = typer.Option(0, help="Seed."),
) -> None:
    """Train on digits with the ring in the loop through the virtual bench; print yardsticks."""
    from labpgt.studies.protocol import logistic_regression

    common = dict(
        task="digits", model="dense", max_queries=max_queries, seed=seed, eval_test="final"
    )
    config = make_config(method="boundary", fast_sim=False, out=DEMO_OUT, **common)
    console.print(
        "labpgt demo: dense network on digits, boundary perturbation, "
        f"{max_queries} training queries on the embedded virtual bench (noise and drift on)",
        highlight=False,
    )
    t0 = time.perf_counter()
    result = run_training(config, resume=False, overwrite=True)
    write_summary(result)
    print_table(console, summary_table(result))
    ring_s = time.perf_counter() - t0
    console.print("yardsticks: the same-shape digital network and logistic regression…")
    digital = run_training(
        make_config(method="digital", fast_sim=True, out=f"{DEMO_OUT}/digital", **common),
        resume=False,
        overwrite=True,
        quiet=True,
    )
    logistic = logistic_regression({"task": "digits", "seed": seed})
    table = Table(title=f"digits, seed {seed}: test accuracy of the epoch chosen on validation")
    table.add_column("network (same split; ring and digital: same shape and budget)")
    table.add_column("test acc %", justify="right")
    rows = [
        ("ring in the loop (boundary, embedded virtual bench)", result.selected.test_acc),
        ("same-shape digital network (ring replaced by Linear+tanh)", digital.selected.test_acc),
        ("logistic regression on the raw pixels", logistic["test_acc"]),
        (
            "readout only (ridge on the ring's features; reservoir computing)",
            result.baseline.test_acc,
        ),
    ]
    for label, acc in rows:
        table.add_row(label, f"{100 * acc:.1f}")
    print_table(console, table)
    console.print(
        f"demo finished in {time.perf_counter() - t0:.0f} s (ring run {ring_s:.0f} s); curves, "
        f"metrics and checkpoints in {result.out_dir}/",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)
