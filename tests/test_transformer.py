"""The reservoir transformer: every estimator fills its gradients; a short CLI run lowers loss."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from labpgt.errors import UserError
from labpgt.training.build import make_encoding, normalise_features
from labpgt.training.config import make_config
from labpgt.training.environment import open_backend
from labpgt.training.estimators import ESTIMATORS, EstimatorOptions
from labpgt.training.estimators.backprop import true_gradient
from labpgt.training.estimators.mgd import MGDEstimator
from labpgt.training.models import ModelSpec
from labpgt.training.reservoir_layer import ReservoirLayer
from labpgt.training.sequence_tasks import parity, seq_digits
from labpgt.training.tasks import Task, split_standardise
from labpgt.training.transformer import TransformerReservoirModel

ROOT = Path(__file__).resolve().parents[1]

# The real CLI in a fresh interpreter with the issue-7 names registered first (this test
# process keeps the registries as they are, so other tests' name lists stay unchanged).
CLI = (
    "import sys, labpgt.training.transformer as t, labpgt.training.sequence_tasks as s; "
    "t.register(); s.register(); from labpgt.cli.app import main; main(sys.argv[1:])"
)


def _task() -> Task:
    x, y, names = seq_digits()
    return split_standardise("seq-digits", x, y, names, test_fraction=0.25, seed=0)


def _model(cfg, task: Task, backend) -> TransformerReservoirModel:
    layer = ReservoirLayer(make_encoding(cfg, backend), cfg.channels, backend.feature_dim)
    layer.attach(backend)
    spec = ModelSpec(task.input_dim, task.num_classes, cfg.channels, cfg.hidden, 0)
    return TransformerReservoirModel(spec, layer)


def _loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y)


def test_every_estimator_trains_the_transformer() -> None:
    cfg = make_config(
        fast_sim=True,
        noise=False,
        drift=False,
        channels=2,
        bins=4,
        task="seq-digits",
        model="transformer",
        warmup_samples=8,
    )
    task = _task()
    x, y = task.x_train[:4], task.y_train[:4]
    with open_backend(cfg) as backend:
        torch.manual_seed(0)
        model = _model(cfg, task, backend)
        normalise_features(cfg, task, model, backend, lambda _: None)
        truth = true_gradient(model, x, y, _loss)
        assert set(truth) >= {"upstream.embed.weight", "downstream.head.weight"}
        for name in ("backprop", "boundary", "pgt", "spsa"):
            est = ESTIMATORS[name](EstimatorOptions(), seed=0)
            est.estimate(model, x, y, _loss)
            missing = [n for n, p in model.named_parameters() if p.grad is None]
            assert not missing, (name, missing)
        est = MGDEstimator(
            EstimatorOptions(delta=1e-5), seed=0, method_opts={"mode": "node", "tau_theta": 2}
        )
        est.estimate(model, x, y, _loss)
        assert all(p.grad is not None for p in model.parameters())


def test_token_split_is_checked() -> None:
    cfg = make_config(fast_sim=True, channels=3, bins=4, task="seq-digits", model="transformer")
    with open_backend(cfg) as backend, pytest.raises(UserError, match="--channels 3"):
        _model(cfg, _task(), backend)


def test_parity_task() -> None:
    x, y, names = parity(bits=3, repeat=2)
    assert x.shape == (16, 3) and names == ["even", "odd"]
    assert (y == x.sum(axis=1) % 2).all()


def test_transformer_trains_on_seq_digits_via_cli(tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = (
        "train --task seq-digits --model transformer --channels 2 --bins 4 --fast-sim "
        "--method boundary --batch-size 32 --epochs 1 --max-queries 3000 --lr 0.02 "
        f"--warmup-samples 32 --seed 0 --out {out}"
    ).split()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120"}
    proc = subprocess.run(
        [sys.executable, "-c", CLI, *argv], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert len(rows) == 2 and int(rows[1]["queries"]) > 0
    assert float(rows[1]["train_loss"]) < float(rows[0]["train_loss"])
    assert float(rows[1]["test_loss"]) < float(rows[0]["test_loss"])
