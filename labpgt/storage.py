"""HDF5 acquisition runs: fixed shot list, incremental writes, exact resume.

Layout of one run file (all plain h5py; units in the names):

```
/                      attrs: format, created_utc, snapshot (JSON), sweeps (JSON),
                              resumes (JSON list, one entry per --resume)
/frequency_hz          (P,)   float64  analyzer frequency axis, Hz
/inputs                (N, 3) float64  requested settings, caller's order
                                       (columns drive_hz, drive_dbm, bias_a)
/shots/settings        (M, 3) float64  every shot, in measurement order
/shots/input_index     (M,)   int64    row of /inputs each shot measures
/shots/repeat_index    (M,)   int64    0 .. repeats-1
/shots/done            (M,)   bool     the shot's trace is stored
/shots/timestamp_s     (M,)   float64  Unix time the trace was read (NaN until done)
/shots/instrument_time_s (M,) float64  settle + sweep time of the shot, s (NaN until done)
/traces_dbm            (M, P) float32  analyzer traces, dBm (NaN until done)
/shots/shot_index      (M,)   int64    0 .. M-1, the dimension scale of every per-shot dataset
/entry                 NeXus NXentry (@default "data"): start_time, end_time, program_name,
                       sample (NXsample: name), user (NXuser: name), notes (NXnote),
                       metadata (NXcollection of free key=value strings),
                       snapshots (NXcollection: 16 preallocated slots json, reason,
                       time_utc, shots_done for the settings snapshots taken at start,
                       on any change of a fixed setting, and at end)
/entry/data            NeXus NXdata, @signal "traces_dbm", @axes ["shot_index",
                       "frequency_hz"]: hard links to /traces_dbm, /frequency_hz,
                       /shots/shot_index, /shots/done, plus drive_hz, drive_dbm, bias_a
                       (M,) the settings of each trace row (trace order)
```

Every numeric dataset has a ``units`` attribute (UDUNITS spelling, "1" for counts and
flags); /frequency_hz and /shots/shot_index are HDF5 dimension scales attached to the
axes of /traces_dbm and the per-shot datasets. The root carries @NX_class NXroot and
@default "entry", so NeXus viewers (silx, h5web) plot the traces against frequency.
Files written before the NeXus part (no /entry) are read as before.

The shot list is written at creation and never changes, so `--resume` only
measures the shots whose ``done`` flag is false. Every dataset is allocated
at creation (contiguous, early allocation): afterwards the shots write only raw
data, never HDF5 metadata, so a killed writer cannot corrupt the file's
structure; ``done`` is set after the traces of a chunk and then the file is
flushed, so a shot marked done always has its trace. The reverse does not hold:
a writer killed between the two may leave a chunk's traces on disk with ``done``
still false; `--resume` measures those shots again and overwrites them. The
settings snapshots and ``end_time`` go into fixed-size datasets allocated at creation
too; only the JSON attributes of a resume (and of a failed shutdown) change the
structure after creation, so the root carries few attributes to leave room for them.

Readers open the file read-only without HDF5's file lock (`RunFile.open`), so a run can
be read while acquire writes it; docs/data-format.md describes the file for readers
without labpgt.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from labpgt.errors import UserError
from labpgt.records import ACQUIRE_FORMAT, RunMetadata, SettingsSnapshot, to_json
from labpgt.setting_bounds import SETTING_NAMES, SETTING_UNITS

FORMAT = ACQUIRE_FORMAT
"""The format string of every acquisition file. The NeXus part (/entry) is an addition: every
path of the first layout is kept, so the string is unchanged and older files stay readable."""

FORMAT_REVISION = 2
"""Root attribute ``format_revision``: 2 = with the NeXus part and metadata (absent: 1)."""

_ROW_UNITS = ", ".join(SETTING_UNITS[name] for name in SETTING_NAMES)  # "Hz, dBm, A"
UNITS = {
    "frequency_hz": "Hz",
    "inputs": _ROW_UNITS,
    "traces_dbm": "dBm",
    "settings": _ROW_UNITS,
    "input_index": "1",
    "repeat_index": "1",
    "shot_index": "1",
    "done": "1",
    "timestamp_s": "s",
    "instrument_time_s": "s",
    **SETTING_UNITS,
}
"""The ``units`` attribute of each dataset, by name. A table of settings (columns drive_hz,
drive_dbm, bias_a) carries "Hz, dBm, A" and a ``column_units`` attribute with one unit each."""

SNAPSHOT_REASONS = ("start", "change", "end")

RESUMES_BYTES = 8192
"""Room for the resume records (about 20) in the fixed-length ``resumes`` attribute."""

SNAPSHOT_SLOTS = 16
"""Settings snapshots a run file holds: the start, up to 14 changes, the end. They are
allocated when the file is created, so storing one during a run writes raw data only."""

SNAPSHOT_MIN_BYTES = 4096
"""Each snapshot slot holds at least this many bytes of JSON (twice the start snapshot's)."""


_META_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
_META_KEY_RULE = (
    "must start with a letter or _ and hold only letters, digits, _ . - (at most 64 characters)"
)
_NAMED_METADATA = ("sample", "operator", "notes")
"""The metadata fields with flags of their own (--sample, --operator, --notes)."""


def parse_metadata(
    sample: str | None, operator: str | None, notes: str | None, pairs: list[str]
) -> RunMetadata:
    """The metadata options of a command (--sample, --operator, --notes, --meta key=value)."""
    extra: dict[str, str] = {}
    for text in pairs:
        key, sep, value = text.partition("=")
        key = key.strip()
        if not sep:
            raise UserError(f"--meta {text!r}: expected key=value, e.g. --meta cryostat=K2")
        if not _META_KEY.match(key):
            raise UserError(f"--meta {text!r}: the key {_META_KEY_RULE}")
        if key in extra:
            raise UserError(f"--meta: key {key!r} is given twice")
        if key in _NAMED_METADATA:
            raise UserError(f"--meta {key}=...: use --{key} for that")
        extra[key] = value.strip()
    for name, value in (("--sample", sample), ("--operator", operator), ("--notes", notes)):
        if value is not None and "\0" in value:
            raise UserError(f"{name}: holds a NUL character")
    return RunMetadata(sample=sample, operator=operator, notes=notes, extra=extra)


def with_bench_metadata(metadata: RunMetadata, bench: dict[str, Any]) -> RunMetadata:
    """`metadata` (from the command line) completed by a bench file's ``[metadata]`` table:
    its sample/operator/notes fill those left unset, its other keys join the free pairs
    unless the command line gave the same key."""
    fields = {name: getattr(metadata, name) for name in _NAMED_METADATA}
    extra = dict(metadata.extra)
    for key, value in bench.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        if key in fields:
            fields[key] = fields[key] if fields[key] is not None else text
        elif not _META_KEY.match(key):
            raise UserError(f"bench file [metadata] key {key!r}: it {_META_KEY_RULE}")
        else:
            extra.setdefault(key, text)
    return RunMetadata(**fields, extra=extra)


def text_dataset(group: h5py.Group, name: str, value: str) -> h5py.Dataset:
    return group.create_dataset(name, data=value, dtype=h5py.string_dtype())


def nx_group(parent: h5py.Group, name: str, nx_class: str) -> h5py.Group:
    group = parent.create_group(name)
    group.attrs["NX_class"] = nx_class
    return group


def nx_data(
    entry: h5py.Group,
    name: str,
    signal: h5py.Dataset,
    axes: list[str],
    indexed: dict[str, tuple[int, h5py.Dataset]],
) -> h5py.Group:
    """An NXdata group plotting ``signal`` (linked as 'traces_dbm') against its axes.

    ``axes`` is the @axes attribute ('.' for a dimension without an axis); ``indexed``
    names each axis dataset (an existing dataset, linked) with the dimension it labels.
    """
    data = nx_group(entry, name, "NXdata")
    data.attrs["signal"] = "traces_dbm"
    data.attrs["axes"] = axes
    for axis, (dim, _) in indexed.items():
        data.attrs[f"{axis}_indices"] = dim
    data["traces_dbm"] = signal
    for axis, (_, source) in indexed.items():
        data[axis] = source
    return data


def _set_units(dataset: h5py.Dataset, name: str) -> None:
    dataset.attrs["units"] = UNITS[name]
    if dataset.ndim == 2 and name in ("inputs", "settings"):
        dataset.attrs["column_names"] = list(SETTING_NAMES)
        dataset.attrs["column_units"] = [SETTING_UNITS[name] for name in SETTING_NAMES]


def write_metadata(entry: h5py.Group, metadata: RunMetadata) -> None:
    """Sample (NXsample), operator (NXuser), notes (NXnote), key=values (NXcollection)."""
    if metadata.sample is not None:
        text_dataset(nx_group(entry, "sample", "NXsample"), "name", metadata.sample)
    if metadata.operator is not None:
        text_dataset(nx_group(entry, "user", "NXuser"), "name", metadata.operator)
    if metadata.notes is not None:
        note = nx_group(entry, "notes", "NXnote")
        text_dataset(note, "type", "text/plain")
        text_dataset(note, "data", metadata.notes)
    collection = nx_group(entry, "metadata", "NXcollection")
    for key, value in metadata.extra.items():
        text_dataset(collection, key, value)


def _write_nexus(
    h5: h5py.File, plan: ShotPlan, metadata: RunMetadata, snapshot: dict[str, Any]
) -> None:
    """The NeXus part of a new run file (see the module docstring); all at creation."""
    m = plan.settings.shape[0]
    # Few and short attributes on the root: its header must keep room for the resume
    # records written later (an attribute that outgrows its header on a full disk
    # cannot be written back safely).
    h5.attrs["NX_class"] = "NXroot"
    h5.attrs["default"] = "entry"
    shots = h5["shots"]
    _dataset(shots, "shot_index", np.arange(m, dtype=np.int64))
    for name in ("frequency_hz", "inputs", "traces_dbm"):
        _set_units(h5[name], name)
    for name in shots:
        _set_units(shots[name], name)
    entry = nx_group(h5, "entry", "NXentry")
    entry.attrs["default"] = "data"
    entry.attrs["format_revision"] = FORMAT_REVISION
    entry.attrs["metadata"] = metadata.to_json()
    program = text_dataset(entry, "program_name", "labpgt")
    program.attrs["version"] = str(snapshot.get("labpgt_version"))
    text_dataset(entry, "start_time", str(h5.attrs["created_utc"]))
    # filled in when the run ends; allocated now (fixed length, like every later write)
    _blank_text(entry, "end_time", (), _TIME_DTYPE)
    text_dataset(entry, "title", f"labpgt acquire: {m} shots")
    write_metadata(entry, metadata)
    _allocate_snapshots(entry, len(to_json(snapshot).encode("utf-8")))
    _nx_shot_data(h5, entry, plan)
    _write_snapshot(h5, "start", snapshot, shots_done=0)


def _allocate_snapshots(entry: h5py.Group, start_bytes: int) -> None:
    """The fixed-size snapshot slots (/entry/snapshots), each twice the start snapshot."""
    slots = nx_group(entry, "snapshots", "NXcollection")
    slot_bytes = max(SNAPSHOT_MIN_BYTES, 2 * start_bytes)
    _blank_text(slots, "json", (SNAPSHOT_SLOTS,), np.dtype(f"S{slot_bytes}"))
    _blank_text(slots, "reason", (SNAPSHOT_SLOTS,), np.dtype("S8"))
    _blank_text(slots, "time_utc", (SNAPSHOT_SLOTS,), _TIME_DTYPE)
    empty_dataset(slots, "shots_done", (SNAPSHOT_SLOTS,), np.int64, -1)
    slots["shots_done"].attrs["units"] = "1"


def _nx_shot_data(h5: h5py.File, entry: h5py.Group, plan: ShotPlan) -> None:
    """/entry/data: the traces against shot and frequency, each shot's settings beside them;
    the dimension scales of every per-shot dataset."""
    shots = h5["shots"]
    data = nx_data(
        entry,
        "data",
        h5["traces_dbm"],
        ["shot_index", "frequency_hz"],
        {"shot_index": (0, shots["shot_index"]), "frequency_hz": (1, h5["frequency_hz"])},
    )
    data["done"] = shots["done"]
    settings = plan.settings.to(torch.float64).numpy()
    for col, name in enumerate(SETTING_NAMES):
        _dataset(data, name, np.ascontiguousarray(settings[:, col]))
        _set_units(data[name], name)
        data.attrs[f"{name}_indices"] = 0
    traces = h5["traces_dbm"]
    traces.attrs["long_name"] = "analyzer power (dBm)"
    traces.attrs["interpretation"] = "spectrum"  # each row is one spectrum (NeXus, silx)
    shots["shot_index"].attrs["long_name"] = "shot (row of traces_dbm)"
    h5["frequency_hz"].attrs["long_name"] = "analyzer frequency (Hz)"
    h5["frequency_hz"].make_scale("frequency_hz")
    shots["shot_index"].make_scale("shot_index")
    traces.dims[0].attach_scale(shots["shot_index"])
    traces.dims[1].attach_scale(h5["frequency_hz"])
    per_shot = [shots[n] for n in shots if n != "shot_index"] + [data[n] for n in SETTING_NAMES]
    for dataset in per_shot:
        dataset.dims[0].attach_scale(shots["shot_index"])


_TIME_DTYPE = np.dtype("S32")


def _blank_text(group: h5py.Group, name: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
    """A fixed-length byte-string dataset, allocated now and written empty (HDF5's fill
    value is not reliable for these through h5py)."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dataset = group.create_dataset(name, shape=shape, dtype=dtype, dcpl=dcpl)
    dataset[...] = np.full(shape, b"", dtype=dtype)


def _write_snapshot(
    h5: h5py.File, reason: str, snapshot: dict[str, Any], shots_done: int
) -> int | None:
    """Store a snapshot in the next free slot (raw data only); its slot, or None when full.

    The last slot is kept for the end: changes beyond the others are not stored.
    """
    group = h5["entry/snapshots"]
    reasons = group["reason"][...]
    free = np.flatnonzero(reasons == b"")
    if free.size == 0 or (reason != "end" and free.size == 1):
        return None
    slot = int(free[0])
    text = to_json(snapshot).encode("utf-8")
    limit = group["json"].dtype.itemsize
    if len(text) > limit:  # not expected (twice the start's size); say so, never cut JSON
        text = json.dumps({"error": f"snapshot of {len(text)} bytes exceeds the slot"}).encode()
    group["json"][slot] = text
    group["time_utc"][slot] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds").encode()
    group["shots_done"][slot] = shots_done
    group["reason"][slot] = reason.encode()  # last: a slot with a reason is complete
    return slot


VARYING_SETTINGS = frozenset(
    {
        "frequency_hz",
        "power_dbm",
        "current_a",
        "measured_current_a",
        "measured_voltage_v",
        "rf_on",
        "output_on",
    }
)
"""Instrument controls a run moves itself, not fixed settings: drive and bias shot by shot,
their read-backs, and the outputs (switched on at the first shot, off at the end)."""


def fixed_settings(snapshot: dict[str, Any]) -> dict[str, Any]:
    """``snapshot`` without the controls every shot changes (`VARYING_SETTINGS`).

    Two snapshots whose fixed settings differ mean that something was changed by hand
    (or by a reconnect) during the run: RBW, span, output state, compliance, ...
    """
    out = json.loads(to_json(snapshot))
    bench = out.get("bench") if isinstance(out.get("bench"), dict) else {}
    for role in bench.values():
        if isinstance(role, dict) and isinstance(role.get("settings"), dict):
            for key in VARYING_SETTINGS:
                role["settings"].pop(key, None)
    return out


@dataclass
class ShotPlan:
    """The full, ordered shot list of a run."""

    inputs: torch.Tensor
    """(N, 3) requested settings in the caller's order."""
    settings: torch.Tensor
    """(M, 3) shot settings in measurement order."""
    input_index: torch.Tensor
    """(M,) int64 row of ``inputs`` per shot."""
    repeat_index: torch.Tensor
    """(M,) int64 repeat number per shot."""


def file_access(*, locking: bool = True) -> h5py.h5p.PropFAID:
    """File access: no sieve buffer, so a failed write of traces fails the write call.

    ``locking=False`` (read-only opens) skips HDF5's file lock, so `labpgt show`, `labpgt runs`
    and viewers can read a run while acquire writes it: the writer changes only raw data
    between flushes, so every flushed shot is consistent.

    With HDF5's default 64 kB sieve buffer a chunk's traces may wait in memory until
    the dataset is closed; a write failing then (disk full) is only reported to
    h5py's ``__dealloc__``, which ignores it, and the shots would be marked done
    without their traces on disk.
    """
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_EARLIEST, h5py.h5f.LIBVER_LATEST)
    fapl.set_fclose_degree(h5py.h5f.CLOSE_STRONG)
    fapl.set_sieve_buf_size(0)
    if not locking:
        fapl.set_file_locking(False, True)
    return fapl


def _dcpl(fill: Any) -> h5py.h5p.PropDCID:
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_value(np.asarray(fill))
    return dcpl


def _dataset(group: h5py.Group, name: str, data: np.ndarray) -> None:
    dcpl = _dcpl(np.zeros((), dtype=data.dtype))
    group.create_dataset(name, shape=data.shape, dtype=data.dtype, dcpl=dcpl)[...] = data


def empty_dataset(
    group: h5py.Group, name: str, shape: tuple[int, ...], dtype: Any, fill: Any
) -> None:
    group.create_dataset(name, shape=shape, dtype=dtype, dcpl=_dcpl(np.asarray(fill, dtype)))


class RunFile:
    """One open acquisition file (see the module docstring for the layout)."""

    def __init__(self, path: Path, handle: h5py.File) -> None:
        self.path = path
        self.h5 = handle
        try:
            self.settings = torch.from_numpy(_read(handle, "shots/settings", np.float64, 2))
            self.input_index = torch.from_numpy(_read(handle, "shots/input_index", np.int64, 1))
            self.repeat_index = torch.from_numpy(_read(handle, "shots/repeat_index", np.int64, 1))
            self.inputs = torch.from_numpy(_read(handle, "inputs", np.float64, 2))
            self.frequency_hz = torch.from_numpy(_read(handle, "frequency_hz", np.float64, 1))
            self.done = np.asarray(_read(handle, "shots/done", np.bool_, 1), dtype=bool)
            m, p = self.done.size, self.frequency_hz.numel()
            shapes = {
                "shots/settings": (m, len(SETTING_NAMES)),
                "shots/input_index": (m,),
                "shots/repeat_index": (m,),
                "shots/timestamp_s": (m,),
                "shots/instrument_time_s": (m,),
                "traces_dbm": (m, p),
            }
            for name, shape in shapes.items():
                if name not in handle or not isinstance(handle[name], h5py.Dataset):
                    raise _Damaged(f"dataset /{name} is missing")
                if handle[name].shape != shape:
                    raise _Damaged(f"/{name} has shape {handle[name].shape}, expected {shape}")
            if self.inputs.shape[1:] != (len(SETTING_NAMES),):
                raise _Damaged(f"/inputs has shape {tuple(self.inputs.shape)}")
            if m and (
                int(self.input_index.min()) < 0 or int(self.input_index.max()) >= len(self.inputs)
            ):
                raise _Damaged("/shots/input_index points outside /inputs")
            for name in ("snapshot", "sweeps", "resumes"):
                self._json_attr(name, "{}" if name == "snapshot" else "[]")
        except _Damaged as exc:
            handle.close()
            raise UserError(f"{path} is a damaged run file: {exc}") from None
        except (OSError, KeyError, TypeError, ValueError, RuntimeError) as exc:
            handle.close()
            raise UserError(f"{path} is a damaged run file: {_one_line(exc)}") from None

    @classmethod
    def create(
        cls,
        path: str | Path,
        plan: ShotPlan,
        frequency_hz: torch.Tensor,
        snapshot: dict[str, Any],
        sweeps: list[dict[str, Any]] | None = None,
        metadata: RunMetadata | None = None,
    ) -> RunFile:
        """Create a new run file; refuses to overwrite an existing one.

        ``snapshot`` is stored as the root attribute and as the "start" settings snapshot;
        ``metadata`` (sample, operator, notes, key=values) goes to /entry.
        """
        path = Path(path)
        if path.exists():
            raise UserError(
                f"{path} already exists: pass --resume to finish that run, or choose another --out"
            )
        m, p = plan.settings.shape[0], frequency_hz.numel()
        if not path.parent.is_dir():
            raise UserError(f"cannot create {path}: folder {path.parent} does not exist")
        try:
            h5 = h5py.File(
                h5py.h5f.create(os.fsencode(path), h5py.h5f.ACC_EXCL, fapl=file_access())
            )
        except (OSError, FileExistsError) as exc:
            raise UserError(f"cannot create {path}: {write_failure(exc)}") from None
        try:
            h5.attrs["format"] = FORMAT
            h5.attrs["created_utc"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
            h5.attrs["snapshot"] = to_json(snapshot)
            h5.attrs["sweeps"] = json.dumps(sweeps or [])
            # Fixed length, padded with blanks (still valid JSON): a resume rewrites it in
            # place, so recording one on a full disk never has to grow the root's header.
            h5.attrs.create("resumes", np.bytes_("[]".ljust(RESUMES_BYTES)))
            h5.attrs["setting_names"] = json.dumps(list(SETTING_NAMES))
            _dataset(h5, "frequency_hz", frequency_hz.to(torch.float64).numpy())
            _dataset(h5, "inputs", plan.inputs.to(torch.float64).numpy())
            shots = h5.create_group("shots")
            _dataset(shots, "settings", plan.settings.to(torch.float64).numpy())
            _dataset(shots, "input_index", plan.input_index.to(torch.int64).numpy())
            _dataset(shots, "repeat_index", plan.repeat_index.to(torch.int64).numpy())
            empty_dataset(shots, "done", (m,), np.bool_, False)
            empty_dataset(shots, "timestamp_s", (m,), np.float64, np.nan)
            empty_dataset(shots, "instrument_time_s", (m,), np.float64, np.nan)
            empty_dataset(h5, "traces_dbm", (m, p), np.float32, np.nan)
            _write_nexus(h5, plan, metadata or RunMetadata(), snapshot)
            h5.flush()
        except BaseException as exc:
            with contextlib.suppress(Exception):
                h5.close()
            path.unlink(missing_ok=True)
            if _is_write_failure(exc):
                raise RunFileWriteError(
                    f"cannot create {path}: {write_failure(exc)}; nothing was measured and "
                    "the partial file was removed"
                ) from None
            raise
        return cls(path, h5)

    @classmethod
    def open(cls, path: str | Path, *, writable: bool = False) -> RunFile:
        """Open an existing run file (read-only unless ``writable``)."""
        path = Path(path)
        if not path.is_file():
            raise UserError(
                f"{path} does not exist" + (" or is not a file" if path.exists() else "")
            )
        size = path.stat().st_size
        if size == 0:
            raise UserError(
                f"{path} is empty (0 bytes), not a run file; it is left as it is: remove it "
                "or choose another --out"
            )
        if not h5py.is_hdf5(path):
            raise UserError(f"{path} is not an HDF5 file ({size} bytes); not a labpgt run file")
        try:
            flags = h5py.h5f.ACC_RDWR if writable else h5py.h5f.ACC_RDONLY
            fapl = file_access(locking=writable)
            h5 = h5py.File(h5py.h5f.open(os.fsencode(path), flags, fapl=fapl))
        except OSError as exc:
            if "truncated file" in str(exc):
                raise UserError(
                    f"{path} is a half-written or truncated HDF5 file ({size} bytes on disk, "
                    "less than its header says); it cannot be read"
                ) from None
            raise UserError(f"cannot open {path} as HDF5: {write_failure(exc)}") from None
        try:
            fmt = h5.attrs.get("format")
        except (OSError, KeyError, TypeError) as exc:
            h5.close()
            raise UserError(f"{path} is a damaged run file: {_one_line(exc)}") from None
        if isinstance(fmt, bytes):
            fmt = fmt.decode("utf-8", "replace")
        if fmt != FORMAT:
            h5.close()
            if isinstance(fmt, str) and fmt.startswith("labpgt-acquire/"):
                raise UserError(
                    f"{path} was written by another labpgt version (format {fmt!r}); this "
                    f"version reads {FORMAT!r}"
                )
            if isinstance(fmt, str) and fmt.startswith("labpgt-calibration/"):
                raise UserError(
                    f"{path} is a calibration file, not a labpgt acquisition file: "
                    "`labpgt runs` lists it, `labpgt train --calibration` uses it"
                )
            raise UserError(f"{path} is not a labpgt acquisition file (format {FORMAT!r})")
        return cls(path, h5)

    def _json_attr(self, name: str, default: str) -> Any:
        try:
            raw = self.h5.attrs.get(name, default)
            if isinstance(raw, bytes):
                raw = raw.decode("utf-8")
            value = json.loads(raw)
        except (OSError, KeyError, TypeError, ValueError) as exc:
            raise _Damaged(f"attribute {name!r} is not valid JSON ({_one_line(exc)})") from None
        expected = dict if name == "snapshot" else list
        if not isinstance(value, expected):
            raise _Damaged(f"attribute {name!r} is not a JSON {expected.__name__}")
        return value

    def check_done_shots(self) -> int:
        """Unmark shots whose stored trace is not finite (a write cut short); returns how many.

        A shot is marked done only after its trace was flushed, so this finds only
        damage from outside (a disk that lost a write); those shots are measured again.
        """
        done = np.flatnonzero(self.done)
        bad: list[int] = []
        for start in range(0, done.size, 4096):
            index = done[start : start + 4096]
            block = self.h5["traces_dbm"][int(index[0]) : int(index[-1]) + 1]
            rows = block[index - index[0]]
            bad.extend(index[~np.isfinite(rows).all(axis=1)].tolist())
        if bad and self.h5.mode == "r+":
            where = np.asarray(bad, dtype=np.int64)
            self._guarded(lambda: self.h5["shots/done"].__setitem__(where, False))
            self._guarded(self.h5.flush)
            self.done[where] = False
        return len(bad)

    def _guarded(self, fn: Any) -> Any:
        try:
            return fn()
        except (OSError, ValueError, RuntimeError) as exc:
            if not _is_write_failure(exc):
                raise
            raise RunFileWriteError(
                f"writing {self.path} failed: {write_failure(exc)}; every shot stored so far "
                "is kept, finish the run with --resume"
            ) from None

    @property
    def snapshot(self) -> dict[str, Any]:
        return self._stored_json("snapshot", "{}")

    @property
    def sweeps(self) -> list[dict[str, Any]]:
        return self._stored_json("sweeps", "[]")

    @property
    def resumes(self) -> list[dict[str, Any]]:
        return self._stored_json("resumes", "[]")

    def _stored_json(self, name: str, empty: str) -> Any:
        """A JSON root attribute; a damaged one is a one-line `UserError`."""
        try:
            return self._json_attr(name, empty)
        except _Damaged as exc:
            raise UserError(f"{self.path} is a damaged run file: {exc}") from None

    @property
    def shots_total(self) -> int:
        return int(self.done.size)

    @property
    def shots_done(self) -> int:
        return int(self.done.sum())

    def todo(self) -> np.ndarray:
        """Indices of the shots still to measure, in measurement order."""
        return np.flatnonzero(~self.done)

    def write(
        self,
        index: np.ndarray,
        traces_dbm: torch.Tensor,
        timestamps_s: torch.Tensor,
        instrument_time_s: torch.Tensor,
    ) -> None:
        """Store measured shots (``index`` ascending), mark them done, flush to disk."""
        index = np.asarray(index, dtype=np.int64)
        if index.size == 0:
            return
        if np.any(np.diff(index) <= 0):
            raise ValueError("shot indices must be strictly increasing")
        lo, hi = int(index[0]), int(index[-1]) + 1
        contiguous = hi - lo == index.size
        where = slice(lo, hi) if contiguous else index

        def data() -> None:
            self.h5["traces_dbm"][where] = traces_dbm.to(torch.float32).numpy()
            self.h5["shots/timestamp_s"][where] = timestamps_s.to(torch.float64).numpy()
            self.h5["shots/instrument_time_s"][where] = instrument_time_s.to(torch.float64).numpy()
            self.h5.flush()

        def mark() -> None:
            self.h5["shots/done"][where] = True
            self.h5.flush()

        # done last, then flush: a shot marked done always has its trace on disk. A
        # failed write leaves done false for the chunk, so a resume measures it again.
        self._guarded(data)
        self._guarded(mark)
        self.done[index] = True

    def add_resume(self, entry: dict[str, Any]) -> None:
        """Record one resume (time, command line) in the ``resumes`` attribute."""
        resumes = self.resumes
        resumes.append(entry)
        text = to_json(resumes)

        def store() -> None:
            stored = self.h5.attrs.get("resumes")
            size = stored.dtype.itemsize if isinstance(stored, np.bytes_) else 0
            if len(text.encode("utf-8")) <= size:  # in place, no new file structure
                self.h5.attrs.modify("resumes", np.bytes_(text.encode("utf-8").ljust(size)))
            else:
                self.h5.attrs["resumes"] = text
            self.h5.flush()

        self._guarded(store)

    def add_record(self, name: str, entry: dict[str, Any]) -> None:
        """Append ``entry`` to the JSON list in attribute ``name`` (e.g. shutdown failures)."""
        try:
            records = self._json_attr(name, "[]")
        except _Damaged:
            records = []
        records.append(entry)
        text = to_json(records)

        def store() -> None:
            self.h5.attrs[name] = text
            self.h5.flush()

        self._guarded(store)

    @property
    def has_nexus(self) -> bool:
        """True for a file with the NeXus part (format revision 2 and later)."""
        return isinstance(self.h5.get("entry/snapshots/reason"), h5py.Dataset)

    @property
    def metadata(self) -> dict[str, Any]:
        """Sample, operator, notes and the free key=values ({} for a file without them)."""
        try:
            raw = self.h5["entry"].attrs.get("metadata", "{}") if "entry" in self.h5 else "{}"
            value = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
        except (OSError, TypeError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}

    def snapshots(self) -> list[dict[str, Any]]:
        """The settings snapshots in order: {slot, reason, time_utc, shots_done, snapshot}."""
        if not self.has_nexus:
            return [{"slot": 0, "reason": "start", "shots_done": 0, "snapshot": self.snapshot}]
        group = self.h5["entry/snapshots"]
        reasons = group["reason"][...]
        out = []
        for slot in np.flatnonzero(reasons != b""):
            out.append(
                {
                    "slot": int(slot),
                    "reason": reasons[slot].decode(),
                    "time_utc": group["time_utc"][slot].decode(),
                    "shots_done": int(group["shots_done"][slot]),
                    "snapshot": json.loads(group["json"][slot].decode("utf-8")),
                }
            )
        return out

    def add_snapshot(self, reason: str, snapshot: SettingsSnapshot) -> bool:
        """Store a settings snapshot ("change" of a fixed setting, or "end") and flush.

        Raw data only, into slots allocated at creation (a full disk cannot damage the
        file's structure); False when no slot is left (changes past the 14th). A file
        without the NeXus part (an older labpgt's) gets none: its layout is left as it was.
        """
        if reason not in SNAPSHOT_REASONS:
            raise ValueError(f"snapshot reason {reason!r} not in {SNAPSHOT_REASONS}")
        if not self.has_nexus:
            return False

        def store() -> bool:
            record = snapshot.as_dict()
            stored = _write_snapshot(self.h5, reason, record, self.shots_done) is not None
            if reason == "end":
                stamp = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
                self.h5["entry/end_time"][()] = stamp.encode()
            self.h5.flush()
            return stored

        return bool(self._guarded(store))

    def traces(self) -> torch.Tensor:
        return torch.from_numpy(self.h5["traces_dbm"][...])

    def close(self) -> None:
        if self.h5.id.valid:
            try:
                self.h5.close()
            except (OSError, ValueError) as exc:
                if not _is_write_failure(exc):
                    raise
                raise RunFileWriteError(
                    f"closing {self.path} failed: {write_failure(exc)}"
                ) from None

    def __enter__(self) -> RunFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RunFileWriteError(UserError):
    """Writing the run file failed (disk full, permission denied, ...); one line says why."""


class _Damaged(Exception):
    """A run file whose structure is not what this version writes."""


def _read(handle: h5py.File, name: str, dtype: Any, ndim: int) -> np.ndarray:
    if name not in handle or not isinstance(handle[name], h5py.Dataset):
        raise _Damaged(f"dataset /{name} is missing")
    data = np.asarray(handle[name][...])
    if data.ndim != ndim or not np.can_cast(data.dtype, dtype, casting="same_kind"):
        raise _Damaged(f"/{name} holds {data.dtype} of {data.ndim} dimension(s)")
    return np.ascontiguousarray(data, dtype=dtype)


_ERRNO = re.compile(r"errno\s*=\s*(\d+)")
_CAUSES = {
    errno.ENOSPC: "disk full (no space left on device)",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "read-only file system",
    errno.EFBIG: "file too large (file size limit reached)",
    errno.EIO: "input/output error (disk or network file system failing)",
}


def _is_write_failure(exc: BaseException) -> bool:
    """An OSError, or the ValueError (RuntimeError from a flush of metadata) that h5py raises
    when HDF5's own file write failed."""
    if isinstance(exc, OSError):
        return True
    return isinstance(exc, ValueError | RuntimeError) and bool(
        _ERRNO.search(str(exc)) or "write failed" in str(exc)
    )


def write_failure(exc: BaseException) -> str:
    """The cause of a failed file operation in a few words (disk full, permission denied)."""
    code = getattr(exc, "errno", None)
    if code is None:
        match = _ERRNO.search(str(exc))
        code = int(match.group(1)) if match else None
    if code in _CAUSES:
        return _CAUSES[code]
    if code is not None:
        return os.strerror(code)
    return _one_line(exc)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] or type(exc).__name__
