"""Tasks: bundled data sets and user CSVs, seeded stratified splits, standardisation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from labpgt.errors import UserError
from labpgt.training.tasks import load_task


@pytest.mark.parametrize(
    ("name", "dim", "classes"), [("digits", 64, 10), ("iris", 4, 3), ("wine", 13, 3)]
)
def test_bundled_tasks_split_and_standardise(name: str, dim: int, classes: int) -> None:
    task = load_task(name, seed=3)
    assert task.input_dim == dim and task.num_classes == classes
    n = task.x_train.shape[0] + task.x_test.shape[0]
    assert abs(task.x_test.shape[0] / n - 0.25) < 0.02
    # Standardised on the training split: mean 0, std 1 for every non-constant column.
    mean = task.x_train.mean(0)
    std = task.x_train.std(0, unbiased=False)
    assert mean.abs().max() < 1e-4
    assert ((std - 1).abs() < 1e-3).logical_or(std < 1e-6).all()
    # Stratified: every class in both splits in about the same proportion.
    p_train = torch.bincount(task.y_train, minlength=classes) / task.y_train.numel()
    p_test = torch.bincount(task.y_test, minlength=classes) / task.y_test.numel()
    assert (p_train - p_test).abs().max() < 0.05


def test_split_is_seeded() -> None:
    a, b, c = load_task("iris", seed=1), load_task("iris", seed=1), load_task("iris", seed=2)
    assert torch.equal(a.x_train, b.x_train)
    assert not torch.equal(a.x_train, c.x_train)


def test_unknown_task_lists_the_valid_ones() -> None:
    with pytest.raises(UserError, match="valid tasks: digits, iris, parity, seq-digits, wine"):
        load_task("mnist")


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_csv_task_with_string_labels(tmp_path: Path) -> None:
    rows = ["a,b,label"] + [f"{i},{i % 3 * 2.5},{'yes' if i % 2 else 'no'}" for i in range(40)]
    task = load_task(None, data=_write(tmp_path / "d.csv", "\n".join(rows)), target="label")
    assert task.class_names == ["no", "yes"]
    assert task.input_dim == 2
    assert task.x_train.shape[0] + task.x_test.shape[0] == 40


def test_csv_non_numeric_columns_are_named(tmp_path: Path) -> None:
    rows = ["a,colour,b,shape,y"] + [f"{i},red,{i},sq,{i % 2}" for i in range(10)]
    with pytest.raises(UserError, match="non-numeric input column.*colour, shape"):
        load_task(None, data=_write(tmp_path / "d.csv", "\n".join(rows)), target="y")


def test_csv_missing_target_column_names_the_columns(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.csv", "a,b\n1,2\n3,4\n")
    with pytest.raises(UserError, match="--target: column 'y' is not in d.csv; columns: a, b"):
        load_task(None, data=path, target="y")
    with pytest.raises(UserError, match="--data needs --target"):
        load_task(None, data=path)
    with pytest.raises(UserError, match="does not exist"):
        load_task(None, data=tmp_path / "nope.csv", target="y")
