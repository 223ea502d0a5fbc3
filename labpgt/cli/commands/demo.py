"""`labpgt demo` (what `make demo` runs): boundary training on digits, beside the readout baseline.

Runs on the embedded virtual bench (simulated ring behind SCPI servers on
loopback sockets, driven through the real instrument drivers) and writes
runs/demo, overwriting a previous demo. The readout starts from the ridge
baseline's fit (`--readout-init ridge`), so what the demo shows is how much
training the network around the ring adds to the classic reservoir readout.
Sized by a query budget: 20000 training measurements take about 70 s on two
idle CPU cores (about 300 shots/s through the scheduler, drivers and virtual
bench), plus the readout baseline and the warm-up batch.
"""

from __future__ import annotations

import time

import typer

from labpgt.cli.commands.train import console, run_training, summary_table, write_summary
from labpgt.training.config import make_config

DEMO_OUT = "runs/demo"


def demo_command(
    max_queries: int = typer.Option(
        20000, "--max-queries", help="Training query budget (20000: about 80 s in all)."
    ),
    seed: int = typer.Option(0, help="Seed."),
) -> None:
    """Train a dense network on digits with boundary perturbation through the virtual bench."""
    config = make_config(
        task="digits",
        model="dense",
        method="boundary",
        fast_sim=False,
        max_queries=max_queries,
        seed=seed,
        batch_size=32,
        channels=2,
        lr=0.003,
        readout_init="ridge",
        out=DEMO_OUT,
    )
    console.print(
        "labpgt demo: dense network on digits, boundary perturbation, "
        f"{max_queries} training queries on the embedded virtual bench",
        highlight=False,
    )
    t0 = time.perf_counter()
    result = run_training(config, resume=False, overwrite=True)
    write_summary(result)
    console.print(summary_table(result))
    console.print(
        f"demo finished in {time.perf_counter() - t0:.0f} s; curves, metrics and checkpoint in "
        f"{result.out_dir}/",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)
