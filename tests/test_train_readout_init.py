"""`--readout-init ridge`: training starts from the ridge readout baseline instead of chance."""

from __future__ import annotations

from pathlib import Path

import pytest

from labpgt.errors import UserError
from labpgt.runner import run_training
from labpgt.training.config import make_config


def _config(tmp_path: Path, name: str, **overrides: object):
    settings: dict[str, object] = dict(
        task="digits", method="boundary", fast_sim=True, channels=2, bins=8, hidden=16,
        batch_size=32, max_queries=320, lr=0.003, seed=1, out=str(tmp_path / name),
    )  # fmt: skip
    settings.update(overrides)
    return make_config(**settings)


def test_ridge_readout_makes_epoch_zero_the_baseline(tmp_path: Path) -> None:
    warm = run_training(_config(tmp_path, "warm", readout_init="ridge"), resume=False, quiet=True)
    cold = run_training(_config(tmp_path, "cold"), resume=False, quiet=True)
    # Same seed, same upstream, same features: the baselines agree ...
    assert warm.baseline.test_acc == pytest.approx(cold.baseline.test_acc)
    # ... and the warm-started model scores what the baseline scores before any step
    # (features re-measured with fresh noise, so within a few points), far above chance.
    start_warm, start_cold = warm.metrics[0], cold.metrics[0]
    assert start_warm.test_acc == pytest.approx(warm.baseline.test_acc, abs=0.06)
    assert start_warm.test_acc > start_cold.test_acc + 0.1
    # The logit scale is chosen by cross-entropy, so the start is no worse than uniform.
    assert start_warm.train_loss < start_cold.train_loss


def test_ridge_readout_needs_a_linear_readout(tmp_path: Path) -> None:
    config = _config(tmp_path, "deep", readout_init="ridge", downstream_hidden=8)
    with pytest.raises(UserError, match="--readout-init ridge"):
        run_training(config, resume=False, quiet=True)


def test_unknown_readout_init_names_the_flag(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--readout-init"):
        _config(tmp_path, "bad", readout_init="zeros")
