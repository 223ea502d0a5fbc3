"""The records labpgt writes, each defined once, and the one way they become JSON.

A record is a pydantic model: the run metadata (sample, operator, notes), the provenance
and the task of a checkpoint, the operating point and the summary figures of a
calibration; `bench_identity` derives the bench identity from a snapshot. Run files
(`labpgt.storage`), calibration files (`labpgt.calibration.store`) and trainer checkpoints
(`labpgt.training.checkpoint`, whose outer layout is `TrainerCheckpoint`) store them through
`to_json` (HDF5 attributes) or `Record.as_dict` (``torch.save`` of plain values and
tensors); the layouts are in docs/data-format.md.
A settings snapshot taken during a run (on a change of a fixed setting, at the end) is a
`SettingsSnapshot`: its time and the reservoir's snapshot, whose inner dictionary stays
free-form (every driver adds its own settings); it goes through `to_json` too.

This module sits at the bottom of the package (it imports nothing of labpgt), so every
layer can use it.
"""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

try:
    LABPGT_VERSION = version("labpgt")
except PackageNotFoundError:  # running from a source tree that is not installed
    LABPGT_VERSION = "0.0.0+unknown"

ACQUIRE_FORMAT = "labpgt-acquire/1"
"""Root attribute ``format`` of a run file (`labpgt acquire`)."""

CALIBRATION_FORMAT = "labpgt-calibration/1"
"""Root attribute ``format`` of a calibration file; bumped (…/2) whenever the layout or the
meaning of a stored figure changes (files of another format are refused)."""

CALIBRATION_PREFIX = "labpgt-calibration/"

CHECKPOINT_FORMAT = 2
"""Key ``format`` of a trainer checkpoint (`TrainerCheckpoint`, `BestModelFile`); bumped
whenever their layout changes (files of another format are refused)."""

INSTRUMENT_ROLES = ("generator", "analyzer", "supply")


def json_default(value: Any) -> Any:
    """What `json.dumps` cannot write itself: tensors and arrays as lists, numpy scalars as
    numbers, records as their fields, paths and anything else as text."""
    if isinstance(value, np.ndarray | np.generic) or _is_tensor(value):
        return value.tolist()
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return str(value)


def _is_tensor(value: Any) -> bool:
    # torch is not imported here: a tensor is recognised by its type's module
    return type(value).__module__.startswith("torch") and hasattr(value, "tolist")


def to_json(value: Any, **kwargs: Any) -> str:
    """``value`` as JSON text, the one serialisation of every record labpgt stores."""
    return json.dumps(value, default=json_default, **kwargs)


class Record(BaseModel):
    """A stored record: known fields only, written in field order."""

    model_config = ConfigDict(extra="forbid")

    def as_dict(self) -> dict[str, Any]:
        """The fields as plain Python values (what ``torch.save`` and JSON take)."""
        return self.model_dump()

    def to_json(self) -> str:
        return to_json(self.as_dict())


class RunMetadata(Record):
    """Who and what a run is about: sample, operator, notes and free key=value pairs."""

    sample: str | None = None
    operator: str | None = None
    notes: str | None = None
    extra: dict[str, str] = {}


class SettingsSnapshot(Record):
    """A settings snapshot taken during a run: when, and the reservoir's ``snapshot()``.

    A run file stores one at the start (inside the run's own root snapshot), on every
    change of a fixed setting and at the end (/entry/snapshots). The drivers' settings
    inside ``reservoir`` stay free-form: every driver adds its own.
    """

    time_utc: str
    reservoir: dict[str, Any]


def bench_identity(snapshot: dict[str, Any] | None) -> dict[str, Any] | None:
    """What makes two benches the same bench, from a reservoir `snapshot()`.

    Simulated: the ring's parameters, grid and feature spec. Instruments: each
    role's family and *IDN? identity (not its resource address, which changes with
    every virtual bench, nor its live settings), plus the feature spec.
    """
    if snapshot is None:
        return None
    if snapshot.get("reservoir") == "instrument":
        bench = snapshot.get("bench", {})
        return {
            "reservoir": "instrument",
            **{
                role: f"{bench[role].get('family')} {bench[role].get('identity')}"
                for role in INSTRUMENT_ROLES
                if isinstance(bench.get(role), dict)
            },
            "features": snapshot.get("features"),
        }
    keep = ("reservoir", "ring_params", "grid", "features")
    return {k: snapshot.get(k) for k in keep}


def instrument_identities(snapshot: dict[str, Any]) -> dict[str, Any] | None:
    """Role -> ``*IDN?`` identity of each instrument in a snapshot (None: no instruments)."""
    bench = snapshot.get("bench")
    if not isinstance(bench, dict):
        return None
    return {
        role: bench[role].get("identity")
        for role in INSTRUMENT_ROLES
        if isinstance(bench.get(role), dict)
    }


class Provenance(Record):
    """Where a checkpoint's run comes from (``provenance`` in every checkpoint)."""

    labpgt_version: str = LABPGT_VERSION
    git_commit: str
    bench: dict[str, Any] | None
    bench_snapshot: dict[str, Any] | None
    calibration_sha256: str | None


class TaskRecord(Record):
    """What every checkpoint keeps of its task (``task``), so `labpgt.load` needs no data:
    its shape, class names and input standardisation (tensors, stored as they are)."""

    name: str
    input_dim: int
    num_classes: int
    class_names: list[str]
    input_mean: Any
    input_std: Any


class OperatingRecord(Record):
    """The operating point of a calibration (root attribute ``operating``)."""

    bias_a: float
    drive_hz: list[float]
    drive_dbm: list[float]
    sensitivity_to_noise: float


class CalibrationSummary(Record):
    """Every scalar figure of a calibration, units in the names (root attribute ``summary``)."""

    field_per_ampere_oe_per_a: float
    field_per_ampere_std_oe_per_a: float
    field_fit_rms_residual_hz: float
    hysteresis_offset_oe: float
    hysteresis_offset_std_oe: float
    hysteresis_detected: bool
    hysteresis_threshold_oe: float
    mode_spacing_hz: float
    noise_floor_dbm: float
    noise_rms_db: float
    noise_repeats: int
    operating_bias_a: float
    sensitivity_to_noise: float
    sensitivity_by_bias: list[float]
    surrogate_validation_db: float
    surrogate_train_db: float
    surrogate_validation_over_noise: float
    surrogate_rows_train: int
    surrogate_rows_validation: int
    surrogate_grid_validation_db: float
    surrogate_grid_validation_over_noise: float
    surrogate_grey_box: bool
    surrogate_kind: str
    surrogate_line_sigma_hz: float
    line_sigma_hz: float
    shots: int
    instrument_time_s: float
    wall_s: float
    stage_instrument_s: dict[str, float]


class _TrainerFile(Record):
    """What a trainer's checkpoint and its best-model file share (``torch.save`` of
    `as_dict`, read back with ``weights_only=True``). Tensors and state dicts are kept as
    they are (``Any``): the record fixes the layout, torch serialises the values."""

    format: int = CHECKPOINT_FORMAT
    task: TaskRecord | None = None
    """None: a checkpoint from before task metadata (`labpgt.load` refuses it in one line)."""
    provenance: Provenance | None = None
    """None: a checkpoint from before provenance (a resume or load refuses it in one line)."""
    config: dict[str, Any]
    """The run's `TrainConfig` as JSON values."""
    epoch: int
    model: dict[str, Any]
    """The model's state dict."""


class TrainerCheckpoint(_TrainerFile):
    """checkpoint.pt (after an epoch) and checkpoint-stepNNNNNN.pt (within one): everything
    a resumed run needs to continue bit-identically (labpgt/training/checkpoint.py)."""

    partial: dict[str, Any] | None = None
    """Within-epoch checkpoints: the epoch's data order, position and running figures."""
    optimizer: dict[str, Any]
    estimator: dict[str, Any]
    rng: dict[str, Any]
    data_generator: Any
    ring: dict[str, Any] | None
    """The simulated ring's state (fast-sim), else None."""
    counters: dict[str, Any]
    metrics: list[dict[str, Any]]
    batches: list[list[Any]]
    baseline: dict[str, Any]
    best: dict[str, Any]
    """The epoch chosen on validation so far: its figures and a copy of the model's state."""


class BestModelFile(_TrainerFile):
    """best.pt: the model of the epoch chosen on validation, with its validation figures."""

    val_acc: float
    val_loss: float
