"""Assemble a run's pieces from its config: encoding, model, optimizer, normalisation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from labpgt.errors import UserError
from labpgt.training.config import TrainConfig
from labpgt.training.models import ModelSpec, ReservoirModel, build_model
from labpgt.training.reservoir_layer import MeasurementBackend, ReservoirLayer
from labpgt.training.tasks import Task


def make_encoding(config: TrainConfig, backend: MeasurementBackend) -> object:
    from labpgt.encoding import Encoding, EncodingSpec

    spec = EncodingSpec(channels=config.channels, driven=config.driven)
    return Encoding(spec, backend.reservoir.bounds)


def build_model_for(config: TrainConfig, task: Task, backend: MeasurementBackend) -> ReservoirModel:
    """The configured model, seeded by the caller, with the backend attached."""
    layer = ReservoirLayer(make_encoding(config, backend), config.channels, backend.feature_dim)
    layer.attach(backend)
    spec = ModelSpec(
        input_dim=task.input_dim,
        num_classes=task.num_classes,
        channels=config.channels,
        hidden=config.hidden,
        downstream_hidden=config.downstream_hidden,
    )
    return build_model(config.model, spec, layer)


def make_optimizer(config: TrainConfig, model: ReservoirModel) -> torch.optim.Optimizer:
    params = list(model.parameters())
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr)
    if config.optimizer == "momentum":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum)
    return torch.optim.SGD(params, lr=config.lr)


def normalise_features(
    config: TrainConfig,
    task: Task,
    model: ReservoirModel,
    backend: MeasurementBackend,
    note: Callable[[str], None],
) -> None:
    """Freeze the feature normalisation: from --calibration, else a warm-up batch."""
    norm = model.reservoir.normaliser
    if config.calibration is not None:
        mean, std = load_calibration_normalisation(Path(config.calibration), backend.feature_dim)
        norm.set(mean, std)
        note(f"feature normalisation from {config.calibration}")
        return
    n = min(config.warmup_samples, task.x_train.shape[0])
    with torch.no_grad():
        u, _ = model.run_upstream(task.x_train[:n])
        raw = model.reservoir.measure_u(u)
    norm.fit(raw)
    note(f"feature normalisation from a warm-up batch of {n} samples × {config.channels} channels")


def load_calibration_normalisation(
    path: Path, feature_dim: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature (mean, std) in dB from a calibration HDF5 file."""
    if not path.is_file():
        raise UserError(f"--calibration: file {path} does not exist")
    raise UserError(
        "--calibration: this build has no calibration-file loader yet; train without "
        "--calibration (normalisation from a warm-up batch)"
    )
