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


def _fapl() -> h5py.h5p.PropFAID:
    """File access: no sieve buffer, so a failed write of traces fails the write call.

    With HDF5's default 64 kB sieve buffer a chunk's traces may wait in memory until
    the dataset is closed; a write failing then (disk full) is only reported to
    h5py's ``__dealloc__``, which ignores it, and the shots would be marked done
    without their traces on disk.
    """
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_EARLIEST, h5py.h5f.LIBVER_LATEST)
    fapl.set_fclose_degree(h5py.h5f.CLOSE_STRONG)
    fapl.set_sieve_buf_size(0)
    return fapl


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
    ) -> RunFile:
        """Create a new run file; refuses to overwrite an existing one."""
        path = Path(path)
        if path.exists():
            raise UserError(
                f"{path} already exists: pass --resume to finish that run, or choose another --out"
            )
        m, p = plan.settings.shape[0], frequency_hz.numel()
        if not path.parent.is_dir():
            raise UserError(f"cannot create {path}: folder {path.parent} does not exist")
        try:
            h5 = h5py.File(h5py.h5f.create(os.fsencode(path), h5py.h5f.ACC_EXCL, fapl=_fapl()))
        except (OSError, FileExistsError) as exc:
            raise UserError(f"cannot create {path}: {write_failure(exc)}") from None
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
            h5 = h5py.File(h5py.h5f.open(os.fsencode(path), flags, fapl=_fapl()))
        except OSError as exc:
            raise UserError(f"cannot open {path} as HDF5: {write_failure(exc)}") from None
        try:
            fmt = h5.attrs.get("format")
        except (OSError, KeyError, TypeError) as exc:
            h5.close()
            raise UserError(f"{path} is a damaged run file: {_one_line(exc)}") from None
        if fmt != FORMAT:
            h5.close()
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
        except (OSError, ValueError) as exc:
            if not _is_write_failure(exc):
                raise
            raise RunFileWriteError(
                f"writing {self.path} failed: {write_failure(exc)}; every shot stored so far "
                "is kept, finish the run with --resume"
            ) from None

    @property
    def snapshot(self) -> dict[str, Any]:
        try:
            return self._json_attr("snapshot", "{}")
        except _Damaged as exc:
            raise UserError(f"{self.path} is a damaged run file: {exc}") from None

    @property
    def sweeps(self) -> list[dict[str, Any]]:
        try:
            return self._json_attr("sweeps", "[]")
        except _Damaged as exc:
            raise UserError(f"{self.path} is a damaged run file: {exc}") from None

    @property
    def resumes(self) -> list[dict[str, Any]]:
        try:
            return self._json_attr("resumes", "[]")
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
        text = json.dumps(resumes, default=_json_default)

        def store() -> None:
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
        text = json.dumps(records, default=_json_default)

        def store() -> None:
            self.h5.attrs[name] = text
            self.h5.flush()

        self._guarded(store)

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
    """An OSError, or the ValueError h5py raises when HDF5's own file write failed."""
    if isinstance(exc, OSError):
        return True
    return isinstance(exc, ValueError) and bool(
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


def _json_default(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return repr(value)
