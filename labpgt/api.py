"""The Python API: train, load and build networks with the ring in them (docs/api.md).

```python
import labpgt

result = labpgt.train("dense", "iris", method="boundary", reservoir="sim", epochs=3)
print(result.accuracy)                       # the epoch chosen on validation, test part
model = labpgt.load(result.out_dir)          # a ReservoirModel on the sim, ready to predict
labels = model.classify(x)                   # x in the data's own units
```

`train` runs exactly what ``labpgt train`` runs (`run_training`), so the same seed
and options give the same figures. ``reservoir`` picks the backend: ``"sim"`` (the
in-process ring, ``--fast-sim``), ``"embedded"`` (a virtual bench on loopback
sockets through the real drivers; the CLI's default) or the path of a bench file.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from labpgt.errors import UserError
from labpgt.records import BenchIdentity, BestModelFile, TrainerCheckpoint
from labpgt.runner import run_training, write_summary
from labpgt.training.checkpoint import CHECKPOINT_NAME
from labpgt.training.config import TrainConfig, make_config
from labpgt.training.models import MODELS, ReservoirModel, register_model
from labpgt.training.reservoir_layer import MeasurementBackend
from labpgt.training.reservoir_layer import ReservoirLayer as ReservoirLayer  # re-exported
from labpgt.training.tasks import TASKS, Task, split_standardise
from labpgt.training.trainer import BEST_NAME, RunResult, TrainHooks

Data = str | Path | tuple[Any, Any]


def _where(reservoir: str | Path) -> dict[str, Any]:
    """Config fields of a reservoir choice: 'sim', 'embedded' or a bench file path."""
    if isinstance(reservoir, str) and reservoir in ("sim", "fast-sim"):
        return {"fast_sim": True, "bench": None}
    if isinstance(reservoir, str) and reservoir == "embedded":
        return {"fast_sim": False, "bench": None}
    path = Path(reservoir)
    if path.suffix != ".toml" and not path.is_file():
        raise UserError(
            f"reservoir {str(reservoir)!r}: expected 'sim', 'embedded' or a bench file (.toml)"
        )
    return {"fast_sim": False, "bench": str(path)}


def open_reservoir(
    reservoir: str | Path = "sim",
    *,
    seed: int = 0,
    bins: int = 16,
    features: str = "kernel",
    kernel_width: float = 0.5,
    noise: bool = True,
    drift: bool = True,
) -> MeasurementBackend:
    """Open the ring: the in-process sim, the embedded virtual bench or a bench file.

    Returns the measurement backend a `ReservoirLayer` measures through. Close it
    (``backend.close()`` or ``with``) to leave a bench safe; the sim needs nothing.
    """
    config = make_config(
        seed=seed,
        bins=bins,
        features=features,
        kernel_width=kernel_width,
        noise=noise,
        drift=drift,
        **_where(reservoir),
    )
    return _open(config)


def _open(config: TrainConfig) -> MeasurementBackend:
    from labpgt.training.environment import open_backend

    stack = ExitStack()
    backend = stack.enter_context(open_backend(config))
    backend._close = stack.close
    return backend


def run_identity(backend: MeasurementBackend) -> dict[str, Any] | None:
    """The bench identity checkpoints record and compare (`records.BenchIdentity`)."""
    return BenchIdentity.of_snapshot(backend.reservoir.snapshot()).as_dict()


def _builder_name(model: str | Callable[..., ReservoirModel]) -> str:
    """A model name; a builder (class or function) is registered under its own name."""
    if isinstance(model, str):
        return model
    name = str(getattr(model, "model_name", None) or getattr(model, "__name__", ""))
    if not name:
        raise UserError("model: give a registered name or a builder class/function")
    if MODELS.get(name) not in (None, model):
        raise UserError(f"model {name!r}: another builder is registered under that name")
    register_model(name)(model)
    return name


def _task_from_arrays(data: tuple[Any, Any], config: TrainConfig) -> Task:
    x, y = data
    x = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    y_raw = np.asarray(y.detach().cpu() if isinstance(y, torch.Tensor) else y)
    if x.ndim != 2 or y_raw.ndim != 1 or x.shape[0] != y_raw.shape[0]:
        raise UserError(f"data: expected (X (N, D), y (N,)); got X {x.shape} and y {y_raw.shape}")
    labels, y_idx = np.unique(y_raw, return_inverse=True)
    return split_standardise(
        config.task,
        x,
        y_idx.astype(np.int64),
        [str(v) for v in labels],
        test_fraction=config.test_fraction,
        seed=config.seed,
        val_fraction=config.val_fraction,
    )


class Trainer:
    """One configured run: ``Trainer(...).fit()`` (`train` is the one-call form).

    `config` is the `TrainConfig` (every ``labpgt train`` flag as a field); `task`
    the in-memory data set when one was given as arrays; `hooks` extra `TrainHooks`;
    `tensorboard` a folder for TensorBoard scalars (`labpgt.training.tensorboard`).
    """

    def __init__(
        self,
        model: str | Callable[..., ReservoirModel] = "dense",
        data: Data = "digits",
        *,
        method: str = "boundary",
        reservoir: str | Path = "embedded",
        out: str | Path | None = None,
        hooks: list[TrainHooks] | None = None,
        tensorboard: str | Path | None = None,
        **options: Any,
    ) -> None:
        fields: dict[str, Any] = {"model": _builder_name(model), "method": method}
        fields.update(_where(reservoir))
        if out is None:
            out = tempfile.mkdtemp(prefix="labpgt-run-")
        fields["out"] = str(out)
        self.task: Task | None = None
        if isinstance(data, tuple):
            fields["task"] = "arrays"
        elif isinstance(data, str) and data in TASKS:
            fields["task"] = data
        else:
            path = Path(data)
            if not path.is_file():
                raise UserError(
                    f"data {str(data)!r}: not a bundled task ({', '.join(sorted(TASKS))}) "
                    "nor a CSV file"
                )
            fields["data"] = str(path)
        for key in ("driven",):
            if key in options and isinstance(options[key], str):
                options[key] = (options[key],)
        self.config = make_config(**fields, **options)
        if isinstance(data, tuple):
            self.task = _task_from_arrays(data, self.config)
        self.hooks = list(hooks or [])
        self.tensorboard = None if tensorboard is None else Path(tensorboard)

    def fit(
        self, *, resume: bool = False, resume_from: str | Path | None = None, quiet: bool = True
    ) -> RunResult:
        """Train; `resume` continues the run in ``out`` (from `resume_from` if given:
        any checkpoint file of the run, e.g. a within-epoch one)."""
        hooks, log = list(self.hooks), None
        if self.tensorboard is not None:
            from labpgt.training.tensorboard import TensorBoardLog

            log = TensorBoardLog(self.tensorboard)
            hooks.append(log.hooks)
        try:
            result = run_training(
                self.config,
                resume=resume or resume_from is not None,
                overwrite=not (resume or resume_from is not None),
                resume_from=None if resume_from is None else Path(resume_from),
                quiet=quiet,
                task=self.task,
                extra_hooks=hooks,
            )
        finally:
            if log is not None:
                log.close()
        write_summary(result)
        return result


def train(
    model: str | Callable[..., ReservoirModel] = "dense",
    data: Data = "digits",
    *,
    method: str = "boundary",
    reservoir: str | Path = "embedded",
    out: str | Path | None = None,
    **options: Any,
) -> RunResult:
    """Train `model` (a registered name or a builder) on `data` and return the result.

    `data`: a bundled task name ("iris", "digits", ...), a CSV path (with
    ``target="column"``) or arrays ``(X (N, D), y (N,))``. `options`: any
    ``labpgt train`` flag with '_' for '-' (``epochs=3``, ``seed=1``, ``probes=8``...).
    The run directory is `out` (a fresh temporary one by default).
    """
    return Trainer(model, data, method=method, reservoir=reservoir, out=out, **options).fit()


def load(path: str | Path, *, reservoir: str | Path | None = None) -> ReservoirModel:
    """A trained model ready to predict, from a run directory or a checkpoint file.

    A directory gives the epoch chosen on validation (its best.pt, or the copy of
    that epoch in checkpoint.pt when no later epoch beat epoch 0); a checkpoint
    file gives the parameters it was saved with. `reservoir` attaches it to
    'sim', 'embedded' or a bench file (default: where it was trained).
    ``model.classify(x)`` takes inputs in the data's own units,
    ``model.predict(x)`` standardised ones; ``model.close()`` leaves a bench safe.
    """
    from labpgt.training.build import build_model_for
    from labpgt.training.checkpoint import check_same_run, load_model_state, read_trainer_file

    file = Path(path)
    from_dir = file.is_dir()
    if from_dir:
        file = file / BEST_NAME if (file / BEST_NAME).is_file() else file / CHECKPOINT_NAME
    if not file.is_file():
        raise UserError(f"load: no checkpoint at {file}")
    kind = BestModelFile if file.name == BEST_NAME else TrainerCheckpoint
    state = read_trainer_file(file, kind, action="load")
    config = TrainConfig.model_validate(state.config)
    meta = state.task
    if meta is None:
        raise UserError(f"load: {file} predates task metadata in checkpoints; retrain")
    if config.model not in MODELS:
        raise UserError(
            f"load: {file} holds model {config.model!r}, not registered in this process "
            "(register its builder first)"
        )
    same_place = reservoir is None
    if reservoir is not None:
        config = config.model_copy(update=_where(reservoir))
    backend = _open(config)
    try:
        saved = state.as_dict()
        if same_place:
            now = {"provenance": {**(saved["provenance"] or {}), "bench": run_identity(backend)}}
            check_same_run(file, saved, now, action="load")
        shape = SimpleNamespace(input_dim=meta.input_dim, num_classes=meta.num_classes)
        torch.manual_seed(config.seed)
        model = build_model_for(config, shape, backend)  # type: ignore[arg-type]
        weights = state.model
        best = state.best if isinstance(state, TrainerCheckpoint) else {}
        if from_dir and file.name == CHECKPOINT_NAME and "model" in best:
            weights = best["model"]  # no best.pt: the chosen epoch is in the checkpoint
        load_model_state(model, weights, file)
    except BaseException:
        backend.close()
        raise
    model.eval()
    model.class_names = list(meta.class_names)
    model.input_mean = meta.input_mean
    model.input_std = meta.input_std
    model.provenance = saved["provenance"]
    return model
