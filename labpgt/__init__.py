"""labpgt: hardware-in-the-loop Perturbative Gradient Training with a magnonic ring reservoir.

The public Python API (docs/api.md) is importable from here: `train`, `Trainer`,
`load`, `open_reservoir`, `ReservoirLayer`, `ReservoirModel`, `RunResult`,
`TrainHooks`. It loads on first use, so ``import labpgt`` stays light.
"""

from typing import Any

from labpgt.records import LABPGT_VERSION as __version__

_API = (
    "ReservoirLayer",
    "ReservoirModel",
    "RunResult",
    "TrainHooks",
    "Trainer",
    "load",
    "open_reservoir",
    "train",
)
"""The public Python API (defined in `labpgt.api`; this list is its one index)."""

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        from labpgt import api

        return getattr(api, name)
    raise AttributeError(f"module 'labpgt' has no attribute {name!r}")
