"""The options of `labpgt train`, one row each (`takes_options` gives them to the command).

Each name is a `TrainConfig` field (or its KEY=VALUE list, or one that only the command
uses: --resume, --resume-from, --tensorboard, --live); see `config_from_options`.
"""

from __future__ import annotations

from pathlib import Path

import typer

from labpgt.cli.options import CommandOption
from labpgt.live.launch import LIVE_OPTION
from labpgt.training.estimators import method_names
from labpgt.training.models import MODELS
from labpgt.training.tasks import TASKS

TRAIN_OPTIONS = (
    CommandOption(
        "task", str, typer.Option("digits", help=f"Bundled task: {', '.join(sorted(TASKS))}.")
    ),
    CommandOption(
        "data", Path | None, typer.Option(None, help="Your own CSV (header row; numeric inputs).")
    ),
    CommandOption("target", str | None, typer.Option(None, help="Class-label column of --data.")),
    CommandOption("model", str, typer.Option("dense", help=f"Model: {', '.join(sorted(MODELS))}.")),
    CommandOption(
        "method", str, typer.Option("boundary", help=f"Method: {', '.join(method_names())}.")
    ),
    CommandOption(
        "bench", Path | None, typer.Option(None, help="Bench file (TOML): train on that bench.")
    ),
    CommandOption(
        "fast_sim", bool, typer.Option(False, "--fast-sim", help="In-process simulated ring.")
    ),
    CommandOption("noise", bool, typer.Option(True, help="Simulated noise on (sim benches).")),
    CommandOption("drift", bool, typer.Option(True, help="Simulated drift on (sim benches).")),
    CommandOption(
        "epochs",
        int | None,
        typer.Option(None, help="Epochs (default 10, or until --max-queries)."),
    ),
    CommandOption(
        "max_queries", int | None, typer.Option(None, help="Training query budget (measurements).")
    ),
    CommandOption(
        "seed", int, typer.Option(0, help="Seed of data split, init, perturbations and the sim.")
    ),
    CommandOption("optimizer", str, typer.Option("adam", help="adam | sgd | momentum.")),
    CommandOption("lr", float, typer.Option(0.01, help="Learning rate.")),
    CommandOption("momentum", float, typer.Option(0.9, help="Momentum for --optimizer momentum.")),
    CommandOption("batch_size", int, typer.Option(32, help="Samples per step.")),
    CommandOption("channels", int, typer.Option(8, help="Reservoir channels k per sample.")),
    CommandOption(
        "driven",
        str,
        typer.Option(
            "drive_hz",
            help="Settings u drives in each channel, comma-separated: drive_hz, drive_dbm, bias_a.",
        ),
    ),
    CommandOption(
        "bins", int, typer.Option(16, help="Features per trace (kernel windows or bins).")
    ),
    CommandOption(
        "features",
        str,
        typer.Option(
            "kernel", help="Feature map: kernel (smooth Gaussian windows) | bins (mean dB per bin)."
        ),
    ),
    CommandOption(
        "kernel_width", float, typer.Option(0.5, help="Kernel window σ, in window spacings.")
    ),
    CommandOption(
        "hidden", int, typer.Option(32, help="Upstream hidden width (0: one linear layer).")
    ),
    CommandOption(
        "downstream_hidden", int, typer.Option(0, help="Readout hidden width (0: linear readout).")
    ),
    CommandOption(
        "probes",
        int | None,
        typer.Option(None, help="Probes q per step (method default if unset)."),
    ),
    CommandOption(
        "delta", float | None, typer.Option(None, help="Perturbation size δ (method default).")
    ),
    CommandOption("perturb", str | None, typer.Option(None, help="pgt/spsa: all | upstream.")),
    CommandOption("pgt_range", int, typer.Option(1, help="PGT: perturbation entries in {-r..r}.")),
    CommandOption("pgt_dropout", float, typer.Option(0.0, help="PGT: dropout scale p.")),
    CommandOption("pgt_normalise", bool, typer.Option(True, help="PGT: divide by E[PM²].")),
    CommandOption(
        "directions", str, typer.Option("auto", help="gaussian | rademacher | coordinate | auto.")
    ),
    CommandOption(
        "one_sided", bool, typer.Option(False, "--one-sided", help="SPSA one-sided differences.")
    ),
    CommandOption(
        "spsa_gain", bool, typer.Option(False, "--spsa-gain", help="SPSA gain schedules a_k, c_k.")
    ),
    CommandOption("gain_a", float, typer.Option(0.05, help="SPSA gain a.")),
    CommandOption("gain_big_a", float, typer.Option(10.0, help="SPSA stability constant A.")),
    CommandOption("gain_c", float | None, typer.Option(None, help="SPSA c (default δ).")),
    CommandOption(
        "warmup_samples", int, typer.Option(128, help="Samples measured for normalisation.")
    ),
    CommandOption(
        "calibration", Path | None, typer.Option(None, help="Calibration file for normalisation.")
    ),
    CommandOption(
        "readout_init",
        str,
        typer.Option("random", help="Readout to start from: random | ridge (the baseline's fit)."),
    ),
    CommandOption(
        "test_fraction", float, typer.Option(0.25, help="Held-out fraction of the data.")
    ),
    CommandOption(
        "val_fraction",
        float,
        typer.Option(0.15, help="Fraction of the training part held out for validation (0: none)."),
    ),
    CommandOption(
        "eval_test",
        str,
        typer.Option(
            "every-epoch",
            help="every-epoch: test figures each epoch (curves only) | final: measured once, "
            "on the epoch chosen on validation.",
        ),
    ),
    CommandOption(
        "lr_schedule", str, typer.Option("cosine", help="cosine (from --lr to 0) | constant.")
    ),
    CommandOption(
        "method_opt",
        list[str],
        typer.Option(
            [], "--method-opt", help="Estimator option KEY=VALUE (repeatable; int/float/bool/str)."
        ),
    ),
    CommandOption(
        "model_opt",
        list[str],
        typer.Option([], "--model-opt", help="Model option KEY=VALUE (repeatable)."),
    ),
    CommandOption(
        "task_opt",
        list[str],
        typer.Option([], "--task-opt", help="Task option KEY=VALUE (repeatable)."),
    ),
    CommandOption("out", Path, typer.Option(Path("runs/train"), help="Run directory.")),
    CommandOption(
        "resume", bool, typer.Option(False, "--resume", help="Continue the run in --out.")
    ),
    CommandOption(
        "checkpoint_every_min",
        float | None,
        typer.Option(
            None, help="Also checkpoint within epochs every this many minutes of instrument time."
        ),
    ),
    CommandOption(
        "resume_from",
        Path | None,
        typer.Option(
            None, help="Continue the run in --out from this checkpoint file (implies --resume)."
        ),
    ),
    CommandOption(
        "tensorboard",
        Path | None,
        typer.Option(
            None, help="Also log to TensorBoard in this folder (needs labpgt[tensorboard])."
        ),
    ),
    CommandOption("live", bool, LIVE_OPTION),
)
