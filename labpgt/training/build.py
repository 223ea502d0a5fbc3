"""Assemble a run's pieces from its config: encoding, model, optimizer, normalisation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

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
        options=dict(config.model_opts),
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
    calibration: Any | None = None,
) -> None:
    """Freeze the feature normalisation: from the --calibration file, else a warm-up batch."""
    norm = model.reservoir.normaliser
    if calibration is not None:
        check = getattr(calibration, "check_compatible", None)
        if callable(check):
            check(backend.reservoir)
        mean = torch.as_tensor(calibration.feature_mean).reshape(-1)
        std = torch.as_tensor(calibration.feature_std).reshape(-1)
        if mean.numel() != backend.feature_dim:
            raise UserError(
                f"--calibration {config.calibration}: its normalisation has {mean.numel()} "
                f"features but this run measures {backend.feature_dim} (--bins must match the "
                "calibration's feature spec)"
            )
        norm.set(mean, std)
        note(f"feature normalisation from {config.calibration}")
        return
    n = min(config.warmup_samples, task.x_train.shape[0])
    with torch.no_grad():
        u, _ = model.run_upstream(task.x_train[:n])
        raw = model.reservoir.measure_u(u)
    if model.reservoir.digital is None:
        # The feature map must give finite features that move with the drive on this bench
        # before anything is trained through it (calibration.feature_maps.check_features).
        from labpgt.calibration.feature_maps import check_features

        names = list(getattr(backend.reservoir, "feature_names", []))
        names = names or [f"feature {i}" for i in range(raw.shape[-1])]
        check_features(
            raw.reshape(-1, raw.shape[-1]),
            names,
            model.reservoir.settings(u).reshape(-1, 3),
            where="warm-up batch",
        )
    norm.fit(raw)
    note(f"feature normalisation from a warm-up batch of {n} samples × {config.channels} channels")


def load_calibration_file(path: str | None) -> Any | None:
    """The calibration in `path` via `calibration.load_calibration`, or None without a path."""
    if path is None:
        return None
    file = Path(path)
    if not file.is_file():
        raise UserError(f"--calibration: file {file} does not exist")
    from labpgt.calibration import load_calibration

    return load_calibration(file)
