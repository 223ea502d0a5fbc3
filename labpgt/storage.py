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
```

The shot list is written at creation and never changes, so `--resume` only
measures the shots whose ``done`` flag is false. Every dataset is allocated
at creation (contiguous, early allocation): afterwards only raw data is
written, never HDF5 metadata, so a killed writer cannot corrupt the file's
structure; ``done`` is set after the traces of a chunk and then the file is
flushed, so a shot marked done always has its trace. The reverse does not hold:
a writer killed between the two may leave a chunk's traces on disk with ``done``
still false; `--resume` measures those shots again and overwrites them.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from labpgt.errors import UserError
from labpgt.reservoir import SETTING_NAMES

FORMAT = "labpgt-acquire/1"


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


def _dcpl(fill: Any) -> h5py.h5p.PropDCID:
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_value(np.asarray(fill))
    return dcpl


def _dataset(group: h5py.Group, name: str, data: np.ndarray) -> None:
    dcpl = _dcpl(np.zeros((), dtype=data.dtype))
    group.create_dataset(name, shape=data.shape, dtype=data.dtype, dcpl=dcpl)[...] = data


def _empty(group: h5py.Group, name: str, shape: tuple[int, ...], dtype: Any, fill: Any) -> None:
    group.create_dataset(name, shape=shape, dtype=dtype, dcpl=_dcpl(np.asarray(fill, dtype)))


class RunFile:
    """One open acquisition file (see the module docstring for the layout)."""

    def __init__(self, path: Path, handle: h5py.File) -> None:
        self.path = path
        self.h5 = handle
        self.settings = torch.from_numpy(handle["shots/settings"][...])
        self.input_index = torch.from_numpy(handle["shots/input_index"][...])
        self.repeat_index = torch.from_numpy(handle["shots/repeat_index"][...])
        self.inputs = torch.from_numpy(handle["inputs"][...])
        self.frequency_hz = torch.from_numpy(handle["frequency_hz"][...])
        self.done = np.asarray(handle["shots/done"][...], dtype=bool)

    @classmethod
    def create(
        cls,
        path: str | Path,
        plan: ShotPlan,
        frequency_hz: torch.Tensor,
        snapshot: dict[str, Any],
        sweeps: list[dict[str, Any]] | None = None,
    ) -> RunFile:
        """Create a new run file; refuses to overwrite an existing one."""
        path = Path(path)
        if path.exists():
            raise UserError(
                f"{path} already exists: pass --resume to finish that run, or choose another --out"
            )
        m, p = plan.settings.shape[0], frequency_hz.numel()
        try:
            h5 = h5py.File(path, "w-")
        except (OSError, FileExistsError) as exc:
            raise UserError(f"cannot create {path}: {exc}") from None
        try:
            h5.attrs["format"] = FORMAT
            h5.attrs["created_utc"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
            h5.attrs["snapshot"] = json.dumps(snapshot, default=_json_default)
            h5.attrs["sweeps"] = json.dumps(sweeps or [])
            h5.attrs["resumes"] = json.dumps([])
            h5.attrs["setting_names"] = json.dumps(list(SETTING_NAMES))
            _dataset(h5, "frequency_hz", frequency_hz.to(torch.float64).numpy())
            _dataset(h5, "inputs", plan.inputs.to(torch.float64).numpy())
            shots = h5.create_group("shots")
            _dataset(shots, "settings", plan.settings.to(torch.float64).numpy())
            _dataset(shots, "input_index", plan.input_index.to(torch.int64).numpy())
            _dataset(shots, "repeat_index", plan.repeat_index.to(torch.int64).numpy())
            _empty(shots, "done", (m,), np.bool_, False)
            _empty(shots, "timestamp_s", (m,), np.float64, np.nan)
            _empty(shots, "instrument_time_s", (m,), np.float64, np.nan)
            _empty(h5, "traces_dbm", (m, p), np.float32, np.nan)
            h5.flush()
        except BaseException:
            h5.close()
            path.unlink(missing_ok=True)
            raise
        return cls(path, h5)

    @classmethod
    def open(cls, path: str | Path, *, writable: bool = False) -> RunFile:
        """Open an existing run file (read-only unless ``writable``)."""
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path} does not exist")
        try:
            h5 = h5py.File(path, "r+" if writable else "r")
        except OSError as exc:
            raise UserError(f"cannot open {path} as HDF5: {exc}") from None
        if h5.attrs.get("format") != FORMAT:
            h5.close()
            raise UserError(f"{path} is not a labpgt acquisition file (format {FORMAT!r})")
        return cls(path, h5)

    @property
    def snapshot(self) -> dict[str, Any]:
        return json.loads(self.h5.attrs["snapshot"])

    @property
    def sweeps(self) -> list[dict[str, Any]]:
        return json.loads(self.h5.attrs.get("sweeps", "[]"))

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
        self.h5["traces_dbm"][where] = traces_dbm.to(torch.float32).numpy()
        self.h5["shots/timestamp_s"][where] = timestamps_s.to(torch.float64).numpy()
        self.h5["shots/instrument_time_s"][where] = instrument_time_s.to(torch.float64).numpy()
        # done last, then flush: a shot marked done always has its trace on disk.
        self.h5.flush()
        self.h5["shots/done"][where] = True
        self.h5.flush()
        self.done[index] = True

    def add_resume(self, entry: dict[str, Any]) -> None:
        """Record one resume (time, command line) in the ``resumes`` attribute."""
        resumes = json.loads(self.h5.attrs.get("resumes", "[]"))
        resumes.append(entry)
        self.h5.attrs["resumes"] = json.dumps(resumes, default=_json_default)
        self.h5.flush()

    def traces(self) -> torch.Tensor:
        return torch.from_numpy(self.h5["traces_dbm"][...])

    def close(self) -> None:
        if self.h5.id.valid:
            self.h5.close()

    def __enter__(self) -> RunFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _json_default(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return repr(value)
