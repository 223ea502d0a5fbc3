"""Tasks for the sequence model and the scaling study: ``seq-digits`` and ``parity``.

- ``seq-digits``: scikit-learn's 8×8 digit images, flattened row-major so that the
  transformer's tokens (``--channels 8``) are the image rows, top to bottom.
- ``parity``: n-bit parity, y = (Σ bits) mod 2. The full truth table (2^n rows) is
  repeated ``repeat`` times so the stratified split puts every pattern in training
  and in test (parity is a memorisation benchmark); for n > 12 ``samples`` random
  strings are drawn instead (seeded). ``--task-opt bits=N repeat=R samples=S seed=K``;
  the hidden width is ``--hidden``.
"""

from __future__ import annotations

import numpy as np

from labpgt.errors import UserError
from labpgt.training.tasks import register_task


def seq_digits() -> tuple[np.ndarray, np.ndarray, list[str]]:
    import sklearn.datasets

    bunch = sklearn.datasets.load_digits()
    x = bunch.images.reshape(len(bunch.images), -1).astype(np.float64)  # rows = tokens
    return x, bunch.target.astype(np.int64), [str(c) for c in bunch.target_names]


def parity(
    bits: int = 4, repeat: int = 4, samples: int = 2048, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    for key, value, lo in (("bits", bits, 1), ("repeat", repeat, 1), ("samples", samples, 8)):
        if type(value) is not int or value < lo:
            raise UserError(f"--task-opt {key}={value!r}: parity needs an integer ≥ {lo}")
    if bits > 24:
        raise UserError(f"--task-opt bits={bits}: parity supports 1..24 bits")
    if bits <= 12:
        table = (np.arange(2**bits)[:, None] >> np.arange(bits)[None, :]) & 1
        x = np.tile(table, (repeat, 1))
    else:
        x = np.random.default_rng(seed).integers(0, 2, size=(samples, bits))
    y = x.sum(axis=1) % 2
    return x.astype(np.float64), y.astype(np.int64), ["even", "odd"]


def register() -> None:
    """Make ``--task seq-digits`` and ``--task parity`` available (from ``__init__``)."""
    register_task("seq-digits")(seq_digits)
    register_task("parity")(parity)
