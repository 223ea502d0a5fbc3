"""The records labpgt writes, each defined once, and the one way they become JSON.

A record is a pydantic model: the run metadata (sample, operator, notes), the provenance
and the task of a checkpoint, the operating point and the summary figures of a
calibration, and which bench it is (`BenchIdentity`, what an acquisition's and a
training's resume check compare). Run files
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

import ast
import json
from importlib.metadata import PackageNotFoundError, version
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, model_validator

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


IDN_FIELDS = ("vendor", "model", "serial", "firmware")


class BenchIdentity(Record):
    """Which bench this is: the one definition both resume checks derive from.

    A run file keeps it as its snapshot's ``identity`` (and with each resume), a trainer
    checkpoint as ``provenance.bench``. A resume of an acquisition compares
    `RESUME_FIELDS` (resources included: a bench file's addresses are its instruments),
    a resume of a training `CHECKPOINT_FIELDS` (not the addresses, which change with every
    virtual bench). `read` also takes the forms stored before this record existed.
    """

    bench: str | None = None
    """What bench, in words ("embedded virtual bench", "bench file"); never compared."""
    sim: dict[str, Any] | None = None
    """The embedded virtual bench's ring (seed, noise); None for any other bench."""
    calibration_sha256: str | None = None
    idn: dict[str, str] | None = None
    """Role -> ``*IDN?`` as "vendor,model,serial,firmware"; None: not known (not opened yet)."""
    resources: dict[str, str] | None = None
    """Role -> resource address ("embedded": the embedded bench's ephemeral ports)."""
    families: dict[str, str] | None = None
    """Role -> driver family."""
    reservoir: str | None = None
    """The reservoir's kind: "instrument" or "simulated" (the in-process ring)."""
    ring_params: dict[str, Any] | None = None
    """The simulated ring's parameters (``reservoir`` "simulated")."""
    grid: dict[str, Any] | None = None
    """The simulated ring's analyzer grid (``reservoir`` "simulated")."""
    features: dict[str, Any] | None = None
    """The feature settings."""

    RESUME_FIELDS: ClassVar[tuple[str, ...]] = (
        "resources",
        "families",
        "idn",
        "sim",
        "calibration_sha256",
    )
    CHECKPOINT_FIELDS: ClassVar[tuple[str, ...]] = (
        "reservoir",
        "families",
        "idn",
        "ring_params",
        "grid",
        "features",
    )
    KNOWN_WHEN_OPEN: ClassVar[tuple[str, ...]] = ("resources", "families", "idn")
    """Fields that may be None in a check before the bench opens: then not compared."""

    @classmethod
    def of_snapshot(
        cls,
        snapshot: dict[str, Any],
        *,
        bench: str | None = None,
        embedded: dict[str, Any] | None = None,
        calibration_sha256: str | None = None,
    ) -> BenchIdentity:
        """From a reservoir's ``snapshot()``; ``embedded``: the embedded bench's ring."""
        fields: dict[str, Any] = {"reservoir": snapshot.get("reservoir")}
        instruments = snapshot.get("bench")
        if isinstance(instruments, dict):
            roles = [r for r in INSTRUMENT_ROLES if isinstance(instruments.get(r), dict)]
            fields["idn"] = {r: idn_text(instruments[r].get("identity")) for r in roles}
            fields["resources"] = {
                r: "embedded" if embedded is not None else str(instruments[r].get("resource"))
                for r in roles
            }
            fields["families"] = {r: str(instruments[r].get("family")) for r in roles}
        else:
            fields.update(ring_params=snapshot.get("ring_params"), grid=snapshot.get("grid"))
        return cls(
            bench=bench,
            sim=embedded,
            calibration_sha256=calibration_sha256,
            features=snapshot.get("features"),
            **fields,
        )

    @classmethod
    def read(cls, stored: dict[str, Any] | None) -> BenchIdentity | None:
        """A stored identity: this record, or a form stored before it (see `_stored_form`)."""
        return None if stored is None else cls.model_validate(stored)

    @model_validator(mode="before")
    @classmethod
    def _stored_form(cls, data: Any) -> Any:
        # A run file's identity before this record is a subset of its fields. A checkpoint's
        # instrument bench before it held one "<family> <*IDN? identity>" per role.
        if not isinstance(data, dict) or not any(r in data for r in INSTRUMENT_ROLES):
            return data
        data = dict(data)
        texts = {r: str(data.pop(r)) for r in INSTRUMENT_ROLES if r in data}
        families = {r: text.split(" ", 1)[0] for r, text in texts.items()}
        idn = {r: _stored_idn(text.partition(" ")[2]) for r, text in texts.items()}
        return {**data, "families": families, "idn": idn}

    def resume_differences(self, current: BenchIdentity) -> list[str]:
        """`RESUME_FIELDS` that differ from ``current``'s (a field ``current`` does not
        know yet, before the bench opens, is not compared)."""
        return [
            key
            for key in self.RESUME_FIELDS
            if not (key in self.KNOWN_WHEN_OPEN and getattr(current, key) is None)
            and getattr(self, key) != getattr(current, key)
        ]

    def checkpoint_view(self) -> dict[str, Any]:
        """The fields a training's resume compares (`CHECKPOINT_FIELDS`)."""
        return {key: getattr(self, key) for key in self.CHECKPOINT_FIELDS}

    def describe(self) -> str:
        """One line: the bench, sim ring, calibration, then per instrument family/IDN/resource."""
        parts = [self.bench or "bench"]
        if self.sim:
            parts.append(", ".join(f"{k} {v}" for k, v in self.sim.items()))
        if self.calibration_sha256:
            parts.append(f"calibration sha256 {self.calibration_sha256[:12]}")
        idn, resources = self.idn or {}, self.resources or {}
        for role, family in (self.families or {}).items():
            who = idn.get(role)
            where = resources.get(role, "?")
            parts.append(f"{role} {family}" + (f" [{who}]" if who else "") + f" @ {where}")
        return "; ".join(parts)


def idn_text(identity: Any) -> str:
    """An instrument's ``*IDN?`` identity (a snapshot's dict) as "vendor,model,serial,firmware"."""
    if isinstance(identity, dict):
        return ",".join(str(identity.get(k, "")) for k in IDN_FIELDS)
    return str(identity)


def _stored_idn(text: str) -> str:
    """`idn_text` of an identity a checkpoint stored as text (a dict's repr, or plain text)."""
    if text.startswith("{"):
        try:
            return idn_text(ast.literal_eval(text))
        except (ValueError, SyntaxError):
            return text
    return text


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
    bench: BenchIdentity | None
    """Which bench the run measured on (None: none, e.g. a digital run)."""
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
    window: str | None = None
    """How the drive window was chosen ("calm" or "sensitivity"; None in older files)."""


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
