"""The options of `labpgt train`, declared once as the fields of `TrainOptions`.

Each name is a `TrainConfig` field (or its KEY=VALUE list, or one that only the command
uses: --resume, --resume-from, --tensorboard, --live); `config_from_options` in
cli/commands/train.py maps them. `takes_options` gives them to the command.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import typer

from labpgt.live.launch import LIVE_OPTION
from labpgt.training.estimators import method_names
from labpgt.training.models import MODELS
from labpgt.training.tasks import TASKS


@dataclass(frozen=True)
class TrainOptions:
    """The options of `labpgt train` (each field's default is its typer declaration)."""

    task: str = typer.Option("digits", help=f"Bundled task: {', '.join(sorted(TASKS))}.")
    data: Path | None = typer.Option(None, help="Your own CSV (header row; numeric inputs).")
    target: str | None = typer.Option(None, help="Class-label column of --data.")
    model: str = typer.Option("dense", help=f"Model: {', '.join(sorted(MODELS))}.")
    method: str = typer.Option("boundary", help=f"Method: {', '.join(method_names())}.")
    bench: list[Path] = typer.Option(
        [],
        "--bench",
        help="Bench file (TOML): train on that bench; repeat it to measure on several at once.",
    )
    fast_sim: bool = typer.Option(False, "--fast-sim", help="In-process simulated ring.")
    benches: int = typer.Option(
        1, help="Embedded virtual benches measuring each batch together (seeds seed, seed+1 …)."
    )
    ray: bool = typer.Option(
        False,
        "--ray",
        help="Each bench (--benches N, or each --bench file) in its own Ray actor "
        "(Ray: the scale extra).",
    )
    address: str | None = typer.Option(
        None, help="With --ray: the Ray cluster to start the actors on (default a local Ray)."
    )
    bench_resources: list[str] = typer.Option(
        [],
        "--bench-resource",
        help="With --ray, once per bench in order: a custom resource of the Ray node that "
        "must host that bench's actor (the node was started with ray start --resources).",
    )
    noise: bool = typer.Option(True, help="Simulated noise on (sim benches).")
    drift: bool = typer.Option(True, help="Simulated drift on (sim benches).")
    epochs: int | None = typer.Option(None, help="Epochs (default 10, or until --max-queries).")
    max_queries: int | None = typer.Option(None, help="Training query budget (measurements).")
    seed: int = typer.Option(0, help="Seed of data split, init, perturbations and the sim.")
    optimizer: str = typer.Option("adam", help="adam | sgd | momentum.")
    lr: float = typer.Option(0.01, help="Learning rate.")
    momentum: float = typer.Option(0.9, help="Momentum for --optimizer momentum.")
    batch_size: int = typer.Option(32, help="Samples per step.")
    channels: int = typer.Option(8, help="Reservoir channels k per sample.")
    driven: str = typer.Option(
        "drive_hz",
        help="Settings u drives in each channel, comma-separated: drive_hz, drive_dbm, bias_a.",
    )
    bins: int = typer.Option(16, help="Features per trace (kernel windows or bins).")
    features: str = typer.Option(
        "kernel", help="Feature map: kernel (smooth Gaussian windows) | bins (mean dB per bin)."
    )
    kernel_width: float = typer.Option(0.5, help="Kernel window σ, in window spacings.")
    hidden: int = typer.Option(32, help="Upstream hidden width (0: one linear layer).")
    downstream_hidden: int = typer.Option(0, help="Readout hidden width (0: linear readout).")
    probes: int | None = typer.Option(None, help="Probes q per step (method default if unset).")
    delta: float | None = typer.Option(None, help="Perturbation size δ (method default).")
    perturb: str | None = typer.Option(None, help="pgt/spsa: all | upstream.")
    pgt_range: int = typer.Option(1, help="PGT: perturbation entries in {-r..r}.")
    pgt_dropout: float = typer.Option(0.0, help="PGT: dropout scale p.")
    pgt_normalise: bool = typer.Option(True, help="PGT: divide by E[PM²].")
    directions: str = typer.Option("auto", help="gaussian | rademacher | coordinate | auto.")
    one_sided: bool = typer.Option(False, "--one-sided", help="SPSA one-sided differences.")
    spsa_gain: bool = typer.Option(False, "--spsa-gain", help="SPSA gain schedules a_k, c_k.")
    gain_a: float = typer.Option(0.05, help="SPSA gain a.")
    gain_big_a: float = typer.Option(10.0, help="SPSA stability constant A.")
    gain_c: float | None = typer.Option(None, help="SPSA c (default δ).")
    warmup_samples: int = typer.Option(128, help="Samples measured for normalisation.")
    calibration: Path | None = typer.Option(None, help="Calibration file for normalisation.")
    drift_every: int = typer.Option(
        0,
        help="Every N epochs re-measure the --calibration's reference settings (drift check; "
        "0: never).",
    )
    drift_tolerance_mhz: float = typer.Option(
        1.0, help="Drift checks: allowed frequency drift, MHz."
    )
    drift_tolerance_db: float = typer.Option(1.0, help="Drift checks: allowed level drift, dB.")
    on_drift: str = typer.Option(
        "warn", help="A drift check beyond tolerance: warn | stop (after the epoch, checkpointed)."
    )
    readout_init: str = typer.Option(
        "random", help="Readout to start from: random | ridge (the baseline's fit)."
    )
    test_fraction: float = typer.Option(0.25, help="Held-out fraction of the data.")
    val_fraction: float = typer.Option(
        0.15, help="Fraction of the training part held out for validation (0: none)."
    )
    eval_test: str = typer.Option(
        "every-epoch",
        help="every-epoch: test figures each epoch (curves only) | final: measured once, "
        "on the epoch chosen on validation.",
    )
    lr_schedule: str = typer.Option("cosine", help="cosine (from --lr to 0) | constant.")
    method_opt: list[str] = typer.Option(
        [], "--method-opt", help="Estimator option KEY=VALUE (repeatable; int/float/bool/str)."
    )
    model_opt: list[str] = typer.Option(
        [], "--model-opt", help="Model option KEY=VALUE (repeatable)."
    )
    task_opt: list[str] = typer.Option([], "--task-opt", help="Task option KEY=VALUE (repeatable).")
    out: Path = typer.Option(Path("runs/train"), help="Run directory.")
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out.")
    checkpoint_every_min: float | None = typer.Option(
        None, help="Also checkpoint within epochs every this many minutes of instrument time."
    )
    resume_from: Path | None = typer.Option(
        None, help="Continue the run in --out from this checkpoint file (implies --resume)."
    )
    tensorboard: Path | None = typer.Option(
        None, help="Also log to TensorBoard in this folder (needs labpgt\\[tensorboard])."
    )
    live: bool = LIVE_OPTION
