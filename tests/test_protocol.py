"""The fair protocol: a validation part carved from training, the chosen epoch, test once,
and the same-shape digital yardstick."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from labpgt.runner import run_training
from labpgt.training.config import make_config
from labpgt.training.tasks import load_task


def test_validation_is_carved_from_training_and_leaves_test_unchanged() -> None:
    plain = load_task("digits", seed=4)
    split = load_task("digits", seed=4, val_fraction=0.2)
    assert split.x_val is not None and split.y_val is not None
    torch.testing.assert_close(split.y_test, plain.y_test)
    assert split.x_train.shape[0] + split.x_val.shape[0] == plain.x_train.shape[0]
    # Disjoint: no validation row is also a training row.
    distance = torch.cdist(split.x_val, split.x_train)
    assert float(distance.min()) > 0.0
    # Stratified: every class is in the validation part.
    assert set(split.y_val.tolist()) == set(range(10))


def _config(tmp_path: Path, **kw: object):
    base = dict(
        task="iris", fast_sim=True, channels=1, bins=8, hidden=4, batch_size=16,
        warmup_samples=16, epochs=4, lr=0.02, seed=1, out=str(tmp_path / "r"),
    )  # fmt: skip
    base.update(kw)
    return make_config(**base)


def test_the_chosen_epoch_is_the_best_on_validation_and_test_is_measured_once(
    tmp_path: Path,
) -> None:
    result = run_training(_config(tmp_path, eval_test="final"), resume=False, quiet=True)
    assert all(math.isnan(m.test_acc) for m in result.metrics)
    assert all(not math.isnan(m.val_acc) for m in result.metrics)
    best_val = max(m.val_acc for m in result.metrics)
    assert result.selected.val_acc == best_val
    assert 0.0 <= result.selected.test_acc <= 1.0
    saved = torch.load(tmp_path / "r" / "best.pt", weights_only=True)
    assert saved["epoch"] == result.selected.epoch
    # The returned model is the chosen one.
    for key, value in saved["model"].items():
        torch.testing.assert_close(result.model.state_dict()[key], value)


def test_the_digital_yardstick_trains_a_stand_in_of_the_same_shape(tmp_path: Path) -> None:
    result = run_training(_config(tmp_path, method="digital", epochs=6), resume=False, quiet=True)
    state = result.model.state_dict()
    # One Linear(m=1 -> F=8) shared by the channels replaces the ring.
    assert tuple(state["reservoir.digital.map.weight"].shape) == (8, 1)
    first, last = result.metrics[0], result.metrics[-1]
    assert last.train_loss < first.train_loss
    # One pass per step, each sample-channel counted once: 6 epochs of the training part.
    n_train = load_task("iris", seed=1, val_fraction=0.15).x_train.shape[0]
    assert last.queries == 6 * n_train


def test_the_protocol_flags_reach_the_run(tmp_path: Path) -> None:
    import json

    from labpgt.cli.app import main

    out = tmp_path / "cli"
    main(
        ["train", "--task", "iris", "--fast-sim", "--epochs", "1", "--eval-test", "final"]
        + ["--val-fraction", "0.2", "--lr-schedule", "constant", "--out", str(out)]
    )
    config = json.loads((out / "config.json").read_text())
    assert (config["eval_test"], config["val_fraction"], config["lr_schedule"]) == (
        "final",
        0.2,
        "constant",
    )
    summary = json.loads((out / "summary.json").read_text())
    assert math.isnan(summary["final"]["test_acc"]) or summary["final"]["test_acc"] is None
    assert 0.0 <= summary["selected"]["test_acc"] <= 1.0
