"""Classification tasks: bundled scikit-learn data sets or a user CSV, never downloaded.

A task is a seeded, stratified train/test split with inputs standardised on the
training statistics. Tasks are looked up by name in `TASKS`; a later task is one
more `@register_task` function.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from labpgt.csv_text import read_csv_text
from labpgt.errors import UserError


@dataclass
class Task:
    """A split, standardised classification data set (float32 inputs, int64 labels).

    Three disjoint parts: train (the steps), validation (every choice: learning-rate
    search, best checkpoint) and test (the reported figure only). Validation is carved
    from the training part, so the test part is the same whatever the validation
    fraction.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    class_names: list[str]
    input_mean: torch.Tensor
    input_std: torch.Tensor
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None

    @property
    def input_dim(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


Loader = Callable[..., tuple[np.ndarray, np.ndarray, list[str]]]
"""Called with the --task-opt values as keyword arguments."""
TASKS: dict[str, Loader] = {}


def register_task(name: str) -> Callable[[Loader], Loader]:
    """Add a loader returning (X (N, D) float, y (N,) int class indices, class names)."""

    def wrap(fn: Loader) -> Loader:
        TASKS[name] = fn
        return fn

    return wrap


def _sklearn(loader_name: str) -> Loader:
    def load() -> tuple[np.ndarray, np.ndarray, list[str]]:
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, loader_name)()
        names = [str(n) for n in getattr(bunch, "target_names", np.unique(bunch.target))]
        return bunch.data.astype(np.float64), bunch.target.astype(np.int64), names

    return load


register_task("digits")(_sklearn("load_digits"))
register_task("iris")(_sklearn("load_iris"))
register_task("wine")(_sklearn("load_wine"))


def load_csv(path: Path, target: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read a CSV with a header; every column but `target` must be numeric."""
    if not path.is_file():
        raise UserError(f"--data: file {path} does not exist")
    rows = _read_csv_rows(path)
    if len(rows) < 2:
        raise UserError(f"--data: {path} needs a header row and at least one data row")
    header = [h.strip() for h in rows[0]]
    if target not in header:
        raise UserError(
            f"--target: column {target!r} is not in {path.name}; columns: {', '.join(header)}"
        )
    body = [r for r in rows[1:] if any(c.strip() for c in r)]
    if not body:
        raise UserError(f"--data: {path} has a header but no data rows")
    if any(len(r) != len(header) for r in body):
        bad = next(i for i, r in enumerate(body) if len(r) != len(header))
        raise UserError(
            f"--data: data row {bad + 1} of {path.name} has {len(body[bad])} fields, "
            f"the header has {len(header)}"
        )
    t_col = header.index(target)
    feature_cols = [i for i in range(len(header)) if i != t_col]
    if not feature_cols:
        raise UserError(f"--data: {path.name} has no input columns besides the target")
    non_numeric = []
    for i in feature_cols:
        try:
            [float(r[i]) for r in body]
        except ValueError:
            non_numeric.append(header[i])
    if non_numeric:
        raise UserError(
            f"--data: non-numeric input column(s) in {path.name}: {', '.join(non_numeric)} "
            "(inputs must be numbers; only the --target column may hold labels)"
        )
    x = np.array([[float(r[i]) for i in feature_cols] for r in body], dtype=np.float64)
    x = x.reshape(len(body), len(feature_cols))
    bad_rows, bad_cols = np.nonzero(~np.isfinite(x))
    if bad_rows.size:
        row, col = int(bad_rows[0]), int(bad_cols[0])
        raise UserError(
            f"--data: {path} data row {row + 1} (line {_line_of(rows, body[row])}), column "
            f"{header[feature_cols[col]]!r}: {body[row][feature_cols[col]].strip()!r} is not a "
            f"finite number ({bad_rows.size} such value(s) in the file)"
        )
    labels = [r[t_col].strip() for r in body]
    classes = sorted(set(labels), key=_label_key)
    if len(classes) < 2:
        raise UserError(f"--target: column {target!r} has a single class; need at least 2")
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[v] for v in labels], dtype=np.int64)
    return x, y, classes


def _read_csv_rows(path: Path) -> list[list[str]]:
    """Every row of a UTF-8 CSV (a byte-order mark is dropped); one-line errors otherwise."""
    text = read_csv_text(path, "--data")
    if "\0" in text:
        raise UserError(f"--data: {path} holds NUL bytes; not a text CSV file")
    try:
        return list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise UserError(f"--data: {path} is not a readable CSV file: {exc}") from None


def _line_of(rows: list[list[str]], row: list[str]) -> int:
    """1-based line of `row` (an element of `rows`, counted as one line each)."""
    return next(i for i, r in enumerate(rows) if r is row) + 1


def _label_key(label: str) -> tuple[int, float | str]:
    # Numeric labels sort numerically ("2" before "10"), others alphabetically.
    try:
        return (0, float(label))
    except ValueError:
        return (1, label)


def split_standardise(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    class_names: list[str],
    *,
    test_fraction: float,
    seed: int,
    val_fraction: float = 0.0,
) -> Task:
    """Seeded stratified split; inputs standardised with the training mean/std.

    ``val_fraction`` of the training part (not of the whole) becomes the validation
    part, stratified and seeded too; 0 leaves no validation part.
    """
    from sklearn.model_selection import train_test_split

    counts = np.bincount(y)
    if counts.min() < 2:
        raise UserError(
            f"task {name}: class {class_names[int(counts.argmin())]!r} has fewer than 2 samples; "
            "a stratified train/test split needs at least 2 per class"
        )
    try:
        x_tr, x_te, y_tr, y_te = train_test_split(
            x, y, test_size=test_fraction, random_state=seed, stratify=y
        )
    except ValueError as exc:
        raise UserError(f"--test-fraction {test_fraction}: {exc}") from exc
    x_va = y_va = None
    if val_fraction > 0:
        try:
            x_tr, x_va, y_tr, y_va = train_test_split(
                x_tr, y_tr, test_size=val_fraction, random_state=seed + 1, stratify=y_tr
            )
        except ValueError as exc:
            raise UserError(f"--val-fraction {val_fraction}: {exc}") from exc
    mean = x_tr.mean(axis=0)
    std = x_tr.std(axis=0)
    std[std == 0] = 1.0  # constant columns (digits' blank corners) stay 0 instead of NaN
    return Task(
        name=name,
        x_train=torch.tensor((x_tr - mean) / std, dtype=torch.float32),
        y_train=torch.tensor(y_tr, dtype=torch.int64),
        x_test=torch.tensor((x_te - mean) / std, dtype=torch.float32),
        y_test=torch.tensor(y_te, dtype=torch.int64),
        class_names=class_names,
        input_mean=torch.tensor(mean, dtype=torch.float64),
        input_std=torch.tensor(std, dtype=torch.float64),
        x_val=None if x_va is None else torch.tensor((x_va - mean) / std, dtype=torch.float32),
        y_val=None if y_va is None else torch.tensor(y_va, dtype=torch.int64),
    )


def load_task(
    name: str | None,
    *,
    data: Path | None = None,
    target: str | None = None,
    test_fraction: float = 0.25,
    seed: int = 0,
    options: dict[str, object] | None = None,
    val_fraction: float = 0.0,
) -> Task:
    """A named bundled task, or the CSV in `data` with its `target` column."""
    if not 0.05 <= test_fraction <= 0.9:
        raise UserError(f"--test-fraction must be in [0.05, 0.9]; got {test_fraction}")
    if data is not None:
        if not target:
            raise UserError("--data needs --target COLUMN (the column holding the class labels)")
        if options:
            raise UserError(f"--task-opt {', '.join(sorted(options))}: not used with --data")
        x, y, classes = load_csv(Path(data), target)
        return split_standardise(
            Path(data).stem,
            x,
            y,
            classes,
            test_fraction=test_fraction,
            seed=seed,
            val_fraction=val_fraction,
        )
    if name not in TASKS:
        raise UserError(
            f"unknown task {name!r}; valid tasks: {', '.join(sorted(TASKS))} "
            "(or --data file.csv --target COLUMN)"
        )
    x, y, classes = TASKS[name](**check_task_options(name, TASKS[name], options or {}))
    return split_standardise(
        name, x, y, classes, test_fraction=test_fraction, seed=seed, val_fraction=val_fraction
    )


def check_task_options(name: str, loader: Loader, options: dict[str, object]) -> dict[str, object]:
    """Refuse --task-opt keys the loader's signature does not accept (listing those it does)."""
    import inspect

    params = inspect.signature(loader).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return options
    accepted = [n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise UserError(
            f"--task-opt {', '.join(unknown)}: unknown for task {name!r}; valid keys: "
            f"{', '.join(accepted) or 'none'}"
        )
    return options
