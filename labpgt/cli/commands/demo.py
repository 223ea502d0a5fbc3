"""`labpgt demo` (what `make demo` runs): boundary training on digits, beside the readout baseline.

Runs on the embedded virtual bench (simulated ring behind SCPI servers on
loopback sockets, driven through the real instrument drivers) and writes
runs/demo, overwriting a previous demo. Sized to finish in a few minutes on
two CPU cores.
"""

from __future__ import annotations

import importlib.util
import time

import typer

from labpgt.cli.commands.train import console, run_training, summary_table, write_summary
from labpgt.training.config import make_config

DEMO_OUT = "runs/demo"


def demo_command(
    epochs: int = typer.Option(2, help="Epochs (the default fits in about 3 minutes)."),
    seed: int = typer.Option(0, help="Seed."),
) -> None:
    """Train a dense network on digits with boundary perturbation through the virtual bench."""
    embedded = importlib.util.find_spec("labpgt.embedded") is not None
    config = make_config(
        task="digits",
        model="dense",
        method="boundary",
        fast_sim=not embedded,
        epochs=epochs,
        seed=seed,
        batch_size=32,
        channels=2,
        lr=0.01,
        out=DEMO_OUT,
    )
    where = "the embedded virtual bench" if embedded else "the in-process simulation (--fast-sim)"
    console.print(
        f"labpgt demo: dense network on digits, boundary perturbation, {epochs} epochs on {where}",
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
