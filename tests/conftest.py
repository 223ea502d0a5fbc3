"""Shared test configuration and the small models several estimator tests train."""

import os
from collections.abc import Iterator
from typing import Any

import pytest
import torch

torch.set_num_threads(2)

# Rich reads these when a Console is built - for the CLI's module-level consoles, at
# import: a CI shell that exports them would fix every console's width (COLUMNS=80 wraps
# one-line errors) or force colour codes into captured output (FORCE_COLOR=1 splits
# "shots done 15 / 48"). Tests that need a width set COLUMNS themselves.
for _name in ("COLUMNS", "LINES", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
    os.environ.pop(_name, None)


@pytest.fixture(autouse=True)
def _cli_errors_follow_capture(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let the CLI's error console write to the current sys.stderr (capsys) in every test.

    Rich resolves sys.stderr at each write only while the console's ``_file`` is None;
    setting ``_file`` (not the ``file`` property) keeps monkeypatch's undo from pinning
    the console to a finished test's capture stream.
    """
    from labpgt.cli import app

    monkeypatch.setattr(app.err_console, "_file", None)
    # Rich fixes the width at construction when COLUMNS is set (as some CI shells export
    # it); unset, the console reads COLUMNS at each write, so a test's COLUMNS applies.
    monkeypatch.setattr(app.err_console, "_width", None)


@pytest.fixture(scope="module")
def toy_setup() -> Iterator[tuple[Any, torch.Tensor, torch.Tensor, Any]]:
    """(model, x, y, backend): a dense model (hidden 6, 1 channel, 8 bins) on a synthetic
    3-class task of 4 inputs, 16 training rows, in-process ring with noise and drift off."""
    from labpgt.training.build import build_model_for, normalise_features
    from labpgt.training.config import make_config
    from labpgt.training.environment import open_backend
    from labpgt.training.tasks import split_standardise

    config = make_config(
        fast_sim=True,
        noise=False,
        drift=False,
        channels=1,
        driven=("drive_hz", "drive_dbm"),  # m = 2: random and coordinate directions differ
        bins=8,
        hidden=6,
        seed=3,
    )
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(60, 4, generator=gen).numpy()
    y = ((x[:, 0] > 0).astype(int) + (x[:, 1] > 0.3).astype(int)).astype(int)
    task = split_standardise("toy", x, y, ["a", "b", "c"], test_fraction=0.25, seed=0)
    torch.manual_seed(3)
    with open_backend(config) as backend:
        model = build_model_for(config, task, backend)
        normalise_features(config, task, model, backend, lambda _: None)
        yield model, task.x_train[:16], task.y_train[:16], backend


@pytest.fixture(scope="module")
def iris_setup() -> Iterator[tuple[Any, Any, Any]]:
    """(model, task, backend): iris, 1 channel, 8 bins, linear upstream (37 parameters,
    5 pre-activation nodes), in-process ring with noise and drift off."""
    from labpgt.training.build import build_model_for, normalise_features
    from labpgt.training.config import make_config
    from labpgt.training.environment import open_backend
    from labpgt.training.tasks import load_task

    cfg = make_config(
        fast_sim=True,
        noise=False,
        drift=False,
        channels=1,
        driven=("drive_hz", "drive_dbm"),
        bins=8,
        hidden=0,
        task="iris",
        warmup_samples=16,
    )
    task = load_task("iris")
    with open_backend(cfg) as backend:
        torch.manual_seed(0)
        model = build_model_for(cfg, task, backend)
        normalise_features(cfg, task, model, backend, lambda _: None)
        yield model, task, backend
