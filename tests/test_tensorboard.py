"""--tensorboard: scalars written through a TrainHooks consumer, training unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import labpgt
from labpgt.cli.app import main

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import (  # noqa: E402
    EventAccumulator,
)

TINY = {"channels": 1, "bins": 8, "hidden": 4, "batch_size": 16, "warmup_samples": 16}


def _scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_logs_the_run_and_leaves_it_unchanged(tmp_path: Path) -> None:
    opts = {"epochs": 1, "seed": 3, **TINY}
    plain = labpgt.train("dense", "iris", reservoir="sim", out=tmp_path / "plain", **opts)
    logged = labpgt.train(
        "dense", "iris", reservoir="sim", out=tmp_path / "tb", tensorboard=tmp_path / "log", **opts
    )
    for name, tensor in plain.model.state_dict().items():
        assert torch.equal(tensor, logged.model.state_dict()[name]), name
    assert [m.queries for m in plain.metrics] == [m.queries for m in logged.metrics]

    s = _scalars(tmp_path / "log")
    steps = len(s["step/loss"])
    assert steps == sum(1 for _ in (tmp_path / "tb" / "batches.csv").open()) - 1
    assert len(s["step/grad_norm"]) == steps and all(v > 0 for _, v in s["step/grad_norm"])
    cos = [v for _, v in s["step/grad_cos_true"]]
    assert len(cos) == steps and all(-1.0 <= v <= 1.0 for v in cos)
    assert sum(cos) / len(cos) > 0.3  # boundary estimates point along the true gradient
    assert [v for _, v in s["epoch/test_acc"]] == pytest.approx(
        [m.test_acc for m in logged.metrics[1:]]
    )
    assert s["step/queries"][-1][1] == logged.metrics[-1].queries


def test_cli_tensorboard_flag_on_the_virtual_bench_has_no_true_gradient(tmp_path: Path) -> None:
    argv = ["train", "--task", "iris", "--max-queries", "200", "--channels", "1", "--bins", "8"]
    argv += ["--hidden", "4", "--batch-size", "16", "--warmup-samples", "16"]
    main([*argv, "--out", str(tmp_path / "run"), "--tensorboard", str(tmp_path / "log")])
    s = _scalars(tmp_path / "log")
    assert s["step/loss"] and s["step/instrument_time_s"][-1][1] > 0
    assert "step/grad_cos_true" not in s  # only the in-process sim has a true gradient
