"""`TrainConfig`: every setting of a training run (pydantic; stored as config.json)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from labpgt.errors import UserError
from labpgt.training.estimators import EstimatorOptions

OptionValue = bool | int | float | str


class TrainConfig(BaseModel):
    """A training run. Field names are the CLI flags with '-' for '_'."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task: str = Field("digits", description="Bundled task name (ignored with --data).")
    data: str | None = Field(None, description="User CSV with a header row.")
    target: str | None = Field(None, description="Class-label column of --data.")
    test_fraction: float = Field(0.25, ge=0.05, le=0.9, description="Held-out fraction.")
    eval_test: Literal["every-epoch", "final"] = Field(
        "every-epoch",
        description="every-epoch: test figures in every metrics row (curves; no choice reads "
        "them); final: the test part is measured once, on the model chosen on validation.",
    )
    val_fraction: float = Field(
        0.15,
        ge=0.0,
        le=0.5,
        description="Fraction of the training part held out for validation (every choice: "
        "best checkpoint, learning-rate search); 0: none.",
    )
    model: str = Field("dense", description="Model name.")
    hidden: int = Field(32, ge=0, le=4096, description="Upstream hidden width (0: linear).")
    downstream_hidden: int = Field(0, ge=0, le=4096, description="Readout hidden width.")
    channels: int = Field(8, ge=1, le=64, description="Reservoir channels k per sample.")
    driven: tuple[str, ...] = Field(
        ("drive_hz",),
        min_length=1,
        max_length=3,
        description="Settings driven by u per channel (m of them); the others stay fixed.",
    )
    bins: int = Field(16, ge=1, le=1000, description="Features per trace (windows or bins).")
    features: Literal["kernel", "bins"] = Field(
        "kernel",
        description="Feature map: kernel (Gaussian windows summed in mW, then dBm; smooth in the "
        "drive) or bins (mean dB per hard bin).",
    )
    kernel_width: float = Field(
        0.5, gt=0.0, le=10.0, description="Kernel window σ in units of the window spacing."
    )
    method: str = Field("boundary", description="Training method.")
    bench: str | tuple[str, ...] | None = Field(
        None,
        description="Bench file (TOML): the real bench; several (--bench given more than "
        "once) measure each batch together (the multi-bench scheduler).",
    )
    fast_sim: bool = Field(False, description="In-process SimulatedReservoir.")
    noise: bool = Field(True, description="Simulated measurement noise (sim benches).")
    drift: bool = Field(True, description="Simulated drift (sim benches).")
    benches: int = Field(
        1,
        ge=1,
        le=16,
        description="Embedded virtual benches that measure each batch together (the "
        "multi-bench scheduler); their rings take seeds seed, seed+1, ...",
    )
    ray: bool = Field(False, description="Each embedded bench in its own Ray actor.")
    address: str | None = Field(
        None, description="Ray cluster the --ray actors start on (HOST:PORT; default local)."
    )
    bench_resources: tuple[str, ...] = Field(
        (),
        description="With --ray: per bench, in order, a custom Ray resource its actor needs "
        "(one unit), so it starts on the node that offers it (e.g. the PC wired to that bench).",
    )
    epochs: int | None = Field(None, ge=1, le=100_000, description="Epochs to train.")
    max_queries: int | None = Field(None, ge=1, description="Training query budget.")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed of everything.")
    optimizer: Literal["adam", "sgd", "momentum"] = Field("adam", description="torch.optim.")
    lr: float = Field(0.01, gt=0, le=10.0, description="Learning rate.")
    momentum: float = Field(0.9, ge=0, lt=1, description="Momentum (optimizer momentum).")
    lr_schedule: Literal["cosine", "constant"] = Field(
        "cosine",
        description="cosine: the learning rate falls from --lr to 0 over the run's steps "
        "(half a cosine); constant: --lr throughout.",
    )
    batch_size: int = Field(32, ge=1, le=65536, description="Samples per step.")
    warmup_samples: int = Field(
        128, ge=2, le=100_000, description="Training samples measured for the normalisation."
    )
    calibration: str | None = Field(None, description="Calibration file for normalisation.")
    drift_every: int = Field(
        0,
        ge=0,
        le=100_000,
        description="Every this many epochs, re-measure the --calibration's reference settings "
        "on the bench (its drift check; shots counted apart from the budget); 0: never.",
    )
    drift_tolerance_mhz: float = Field(
        1.0, gt=0, description="Drift checks: allowed frequency drift, MHz."
    )
    drift_tolerance_db: float = Field(
        1.0, gt=0, description="Drift checks: allowed level drift, dB."
    )
    on_drift: Literal["warn", "stop"] = Field(
        "warn",
        description="A drift check beyond tolerance: warn (and train on) or stop after the epoch.",
    )
    readout_init: Literal["random", "ridge"] = Field(
        "random",
        description="Readout before training: random, or the ridge baseline's fit (warm start).",
    )
    estimator: EstimatorOptions = Field(default_factory=EstimatorOptions)
    method_opts: dict[str, OptionValue] = Field(
        default_factory=dict, description="--method-opt KEY=VALUE for the estimator."
    )
    model_opts: dict[str, OptionValue] = Field(
        default_factory=dict, description="--model-opt KEY=VALUE for the model builder."
    )
    task_opts: dict[str, OptionValue] = Field(
        default_factory=dict, description="--task-opt KEY=VALUE for the task loader."
    )
    out: str = Field("runs/train", description="Run directory.")
    checkpoint_every_min: float | None = Field(
        None,
        gt=0,
        description="Also checkpoint within an epoch after every this many minutes of "
        "instrument time (checkpoint-stepNNNNNN.pt; --resume-from any of them).",
    )

    def epochs_or_default(self) -> int:
        if self.epochs is not None:
            return self.epochs
        return 1_000_000 if self.max_queries is not None else 10

    def bench_files(self) -> tuple[str, ...]:
        """The bench files, in the order given (none: fast-sim or embedded benches)."""
        if self.bench is None:
            return ()
        return (self.bench,) if isinstance(self.bench, str) else self.bench

    def bench_kind(self) -> str:
        if self.bench is not None:
            return "bench"
        return "fast-sim" if self.fast_sim else "embedded"


def parse_options(flag: str, items: list[str] | None) -> dict[str, OptionValue]:
    """Repeatable ``KEY=VALUE`` flags -> dict; values typed bool, int, float, else str."""
    out: dict[str, OptionValue] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key.replace("_", "").replace("-", "").isalnum():
            raise UserError(f"{flag} {item!r}: expected KEY=VALUE (e.g. {flag} probes=8)")
        out[key.replace("-", "_")] = parse_value(text.strip())
    return out


def parse_value(text: str) -> OptionValue:
    """'true'/'false' -> bool, then int, then float, else the string itself."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def flag_name(loc: tuple[object, ...]) -> str:
    field = str(loc[-1]) if loc else "?"
    return "--" + field.replace("_", "-")


def make_config(**kwargs: object) -> TrainConfig:
    """Build a TrainConfig; a bad value becomes a `UserError` naming the flag."""
    est_fields = set(EstimatorOptions.model_fields)
    est = {k: kwargs.pop(k) for k in list(kwargs) if k in est_fields}
    try:
        options = EstimatorOptions(**est)
    except ValidationError as exc:
        raise UserError(_first(exc)) from None
    try:
        return TrainConfig(estimator=options, **kwargs)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise UserError(_first(exc)) from None


def _first(exc: ValidationError) -> str:
    err = exc.errors()[0]
    return f"{flag_name(tuple(err['loc']))} {err.get('input')!r}: {err['msg']}"
