"""Checkpoints: plain tensors and containers via torch.save, loaded with weights_only=True.

The outer layout is a record (`labpgt.records.TrainerCheckpoint`, `BestModelFile`): written
as its `as_dict`, read back through `read_trainer_file`.

Everything a resumed run needs to continue bit-identically: model (including
the frozen feature normalisation buffers) and optimizer state dicts, the
estimator's generator and counters, every RNG (torch, numpy, python random, the
data-order generator), the simulated ring's state (fast-sim), the metrics so
far and the run's cumulative counters.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from pydantic import ValidationError

from labpgt.errors import UserError
from labpgt.records import (
    CHECKPOINT_FORMAT,
    BenchIdentity,
    BestModelFile,
    Provenance,
    TaskRecord,
    TrainerCheckpoint,
)

TrainerFile = TypeVar("TrainerFile", TrainerCheckpoint, BestModelFile)

CHECKPOINT_NAME = "checkpoint.pt"


def capture_rng() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": (
            str(name),
            torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            int(pos),
            int(has_gauss),
            float(cached),
        ),
        "python": random.getstate(),
    }


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Atomic write: a kill during saving leaves the previous checkpoint intact."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"--resume: no checkpoint at {path}; start without --resume")
    try:
        return torch.load(path, weights_only=True)
    except Exception as exc:  # a truncated or foreign file: say which, not a pickle traceback
        raise UserError(f"--resume: cannot read checkpoint {path}: {exc}") from exc


def read_trainer_file(
    path: Path, record: type[TrainerFile], *, action: str, advice: str = ""
) -> TrainerFile:
    """A checkpoint (or best-model file) as its record; another checkpoint format, or a file
    that does not fit the record, is a one-line `UserError` (`advice` ends the former)."""
    state = load_checkpoint(path)
    found = state.get("format") if isinstance(state, dict) else None
    if found != CHECKPOINT_FORMAT:
        raise UserError(
            f"{action}: {path} was written by another labpgt version (checkpoint format "
            f"{found}, this version reads {CHECKPOINT_FORMAT}){advice}"
        )
    try:
        return record.model_validate(state)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(part) for part in err["loc"])
        raise UserError(
            f"{action}: {path} is not a labpgt checkpoint ({where}: {err['msg']})"
        ) from None


def git_state() -> tuple[str, bool]:
    """(commit of the labpgt source tree, 12 hex digits, or 'unknown'; tracked edits?)."""
    import subprocess

    root = Path(__file__).resolve().parent.parent.parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=10
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short=12", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return "unknown", False
    return (commit, dirty) if commit else ("unknown", False)


def git_commit() -> str:
    """The labpgt source tree's commit (12 hex digits, '+dirty' with edits), or 'unknown'."""
    commit, dirty = git_state()
    return commit + ("+dirty" if dirty and commit != "unknown" else "")


def file_sha256(path: str | Path | None) -> str | None:
    """sha256 (hex) of a file's bytes, or None without a path."""
    if path is None:
        return None
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def describe_difference(saved: dict[str, Any] | None, now: dict[str, Any] | None) -> str | None:
    """First differing key of two bench identities, as 'key: saved → now', or None."""
    if saved == now:
        return None
    saved, now = saved or {}, now or {}
    for key in sorted(set(saved) | set(now)):
        if saved.get(key) != now.get(key):
            a, b = saved.get(key), now.get(key)
            if isinstance(a, dict) and isinstance(b, dict):
                sub = describe_difference(a, b)
                return f"{key}.{sub}" if sub else key
            return f"{key}: {a!r} → {b!r}"
    return None


def run_metadata(config: Any, task: Any, reservoir: Any) -> dict[str, Any]:
    """What every checkpoint of a run carries besides its state: the task's shape and input
    standardisation (so `labpgt.load` needs no data), and the run's provenance."""
    snapshot = reservoir.snapshot() if hasattr(reservoir, "snapshot") else None
    return {
        "task": TaskRecord(
            name=task.name,
            input_dim=int(task.input_dim),
            num_classes=int(task.num_classes),
            class_names=[str(c) for c in task.class_names],
            input_mean=task.input_mean.detach().clone(),
            input_std=task.input_std.detach().clone(),
        ).as_dict(),
        "provenance": Provenance(
            git_commit=git_commit(),
            bench=None if snapshot is None else BenchIdentity.of_snapshot(snapshot),
            bench_snapshot=snapshot,
            calibration_sha256=file_sha256(config.calibration),
        ).as_dict(),
    }


def check_same_run(path: Path, saved: dict[str, Any], now: dict[str, Any], *, action: str) -> None:
    """Refuse (one line) a checkpoint from another labpgt version, bench or calibration."""
    a, b = saved.get("provenance") or {}, now.get("provenance") or {}
    if not a:
        raise UserError(
            f"{action}: {path} was written by an older labpgt (no provenance recorded); "
            f"this is labpgt {b.get('labpgt_version')}"
        )
    if a.get("labpgt_version") != b.get("labpgt_version"):
        raise UserError(
            f"{action}: {path} was written by labpgt {a.get('labpgt_version')} "
            f"(commit {a.get('git_commit')}); this is labpgt {b.get('labpgt_version')}"
        )
    diff = describe_difference(_compared_bench(a.get("bench")), _compared_bench(b.get("bench")))
    if diff is not None:
        raise UserError(f"{action}: {path} was measured on another bench ({diff})")
    if a.get("calibration_sha256") != b.get("calibration_sha256"):
        raise UserError(
            f"{action}: {path} used calibration sha256 {a.get('calibration_sha256')}; "
            f"this run's is {b.get('calibration_sha256')}"
        )


def _compared_bench(stored: dict[str, Any] | None) -> dict[str, Any] | None:
    """What a resume compares of a checkpoint's bench (`BenchIdentity.CHECKPOINT_FIELDS`),
    from the record or the form stored before it."""
    identity = BenchIdentity.read(stored)
    return None if identity is None else identity.checkpoint_view()


def load_model_state(model: torch.nn.Module, state: dict[str, Any], path: Path) -> None:
    """`model.load_state_dict` with a one-line `UserError` naming what does not fit."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:3])}")
        if shapes:
            k = shapes[0]
            parts.append(f"{k} is {tuple(state[k].shape)}, here {tuple(own[k].shape)}")
        raise UserError(f"{path} holds another model ({'; '.join(parts)})")
    model.load_state_dict(state)
