"""Read a run for the live view: an acquisition file, a calibration file, a train directory.

Every reader is cheap to call often: `RunSource.poll` first compares the file's size and
modification time with the last call and returns ``None`` when nothing changed. When
something did, it opens the file again (read-only, without HDF5's file lock, SWMR read
where the writer allows it), reads what the page shows, and closes it at once; the
writer is never waited for and never waits. This module needs h5py and numpy only (no
Bokeh), so `labpgt view` checks its argument before the web server is even imported.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from labpgt.catalog import STATUS_COMPLETE, STATUS_MEASURING, calibration_status, is_locked
from labpgt.errors import UserError

ACQUIRE_PREFIX = "labpgt-acquire/"
CALIBRATION_PREFIX = "labpgt-calibration/"
ACQUIRE_FORMATS = ("labpgt-acquire/1",)
"""Acquisition formats this view reads (a newer one with the same datasets is read too)."""

ACQUIRE_DATASETS = (
    "frequency_hz",
    "traces_dbm",
    "shots/settings",
    "shots/done",
    "shots/timestamp_s",
)
CALIBRATION_DATASETS = (
    "frequency_hz",
    "bias_sweep/settings",
    "bias_sweep/traces_dbm",
    "response/sensitivity",
    "response/drive_hz",
    "response/drive_dbm",
    "response/bias_a",
    "reference/settings",
    "reference/traces_dbm",
)
MEASURED_DATASETS = ("frequency_hz", "measured/bias_sweep/done", "measured/response_grid/done")
"""What a calibration file holds while calibrate measures (`calibration.measured`)."""
TRAIN_FILES = ("config.json", "metrics.csv", "batches.csv", "checkpoint.pt")
KINDS = ("acquire", "calibration", "train")
MIN_READ_S = 0.5
"""A changing run is read at most this often (a CPU-bound acquisition flushes every few ms):
twice a second keeps a new shot on the page within 1 s, and each read costs the page a
redraw (benchmarks/live_view.py)."""
SETTINGS_POINTS = 4000
"""At most this many shots in the settings-over-time plot (evenly thinned beyond)."""


class NotReady(Exception):
    """The run is not (yet) readable; the page says why and tries again."""


@dataclass
class Snapshot:
    """What the page shows, as plain arrays (units in the names)."""

    kind: str
    status: str
    frequency_hz: np.ndarray = field(default_factory=lambda: np.zeros(0))
    spectrum_dbm: np.ndarray = field(default_factory=lambda: np.zeros(0))
    shot: int = -1
    """Index of the shot the spectrum shows (-1: none yet)."""
    shot_timestamp_s: float = math.nan
    """Unix time that shot's trace was read (NaN where the file keeps none)."""
    drive_hz: float = math.nan
    drive_dbm: float = math.nan
    bias_a: float = math.nan
    shots_done: int = 0
    shots_total: int = 0
    settings_x: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """x of the settings plots: seconds since the first shot, or the shot number."""
    settings_x_label: str = "time since the first shot (s)"
    settings_thinned: bool = False
    """True when ``settings`` is an even thinning of the shots (more than SETTINGS_POINTS)."""
    settings: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    """(n, 3) drive_hz, drive_dbm, bias_a of the shots shown."""
    settings_span: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    """(2, 3) least and greatest drive_hz, drive_dbm, bias_a of all the shots planned, where
    the file says (an acquisition); else empty."""
    response: dict[str, Any] = field(default_factory=dict)
    """Calibration: drive_hz (Fq,), bias_a (B,), sensitivity (B, Fq) at the operating power."""
    curves: dict[str, np.ndarray] = field(default_factory=dict)
    """Train: the metrics.csv columns (epoch, train_loss, ...) and batches.csv ones, the
    latter as ``batches.<column>`` (batches.step, batches.batch_loss, ...)."""


def classify(path: Path) -> str:
    """The kind of run at ``path`` ("acquire", "calibration", "train"), or a one-line error."""
    if not path.exists():
        raise UserError(f"{path} does not exist: give a run file (.h5) or a train run directory")
    if path.is_dir():
        if any((path / name).is_file() for name in TRAIN_FILES):
            return "train"
        raise UserError(
            f"{path} is a folder but not a labpgt train run directory "
            "(no metrics.csv, config.json or checkpoint.pt in it)"
        )
    fmt = _format_of(path)
    if fmt.startswith(ACQUIRE_PREFIX):
        return "acquire"
    if fmt.startswith(CALIBRATION_PREFIX):
        return "calibration"
    raise UserError(f"{path} is not a labpgt run file (format {fmt!r})")


def _format_of(path: Path) -> str:
    size = path.stat().st_size
    if size == 0:
        raise UserError(f"{path} is empty (0 bytes): not a labpgt run file")
    if not h5py.is_hdf5(path):
        raise UserError(f"{path} is not an HDF5 file ({size} bytes): not a labpgt run file")
    try:
        with _open(path) as h5:
            fmt = h5.attrs.get("format")
    except (OSError, KeyError, RuntimeError, ValueError) as exc:
        raise UserError(
            f"{path} cannot be read (half-written or damaged HDF5: {_one_line(exc)})"
        ) from None
    if isinstance(fmt, bytes):
        fmt = fmt.decode("utf-8", "replace")
    if fmt is None:
        raise UserError(f"{path} is an HDF5 file without a labpgt 'format' attribute: not a run")
    return str(fmt)


@contextlib.contextmanager
def _open(path: Path) -> Iterator[h5py.File]:
    """Read-only, no file lock (the writer holds one); SWMR read when the file allows it."""
    try:
        h5 = h5py.File(path, "r", locking=False, swmr=True)
    except OSError:
        h5 = h5py.File(path, "r", locking=False)
    try:
        yield h5
    finally:
        h5.close()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] or type(exc).__name__


class RunSource:
    """One run the view polls. ``poll()`` returns a new `Snapshot`, or None if unchanged."""

    def __init__(self, path: Path, kind: str, *, min_read_s: float = MIN_READ_S) -> None:
        if kind not in KINDS:
            raise UserError(f"unknown run kind {kind!r}; valid: {', '.join(KINDS)}")
        self.path = Path(path)
        self.kind = kind
        self._stamp: tuple[Any, ...] | None = None
        self._static: dict[str, Any] = {}
        self._read_at = -math.inf
        self._writer_alive = False
        self.min_read_s = min_read_s
        self.version = 0
        """Counts the snapshots that differed from the one before (pages compare it)."""
        self.snapshot = Snapshot(kind=kind, status=f"waiting for {self.path}")

    @classmethod
    def open(cls, path: Path) -> RunSource:
        """A source for an existing run, checked once now (one-line error if unusable)."""
        kind = classify(path)
        source = cls(path, kind)
        try:
            source._read()
        except NotReady as exc:
            raise UserError(f"{path}: {exc}") from None
        return source

    def poll(self) -> Snapshot | None:
        """Read the run again if it changed since the last read; None when it did not.

        The run is read at most once per ``min_read_s``, however often this is called.
        """
        now = time.monotonic()
        if now - self._read_at < self.min_read_s:
            return None
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return None
        self._read_at = now
        try:
            snap = self._read()
        except NotReady as exc:
            # keep what was shown, only the status changes (and try again next time); the
            # same reason again (a file still missing) is no change for the page
            self._stamp = None
            if self.snapshot.status == str(exc):
                return None
            self.snapshot.status = str(exc)
            self.version += 1
            return self.snapshot
        self._stamp = stamp
        self.snapshot = snap
        self.version += 1
        return snap

    def _file_stamp(self) -> tuple[Any, ...]:
        paths = (
            [self.path / "metrics.csv", self.path / "batches.csv"]
            if self.kind == "train"
            else [self.path]
        )
        stamp: list[Any] = []
        for p in paths:
            try:
                st = p.stat()
                stamp.append((st.st_ino, st.st_size, st.st_mtime_ns))
            except OSError:
                stamp.append(None)
        return tuple(stamp)

    def _read(self) -> Snapshot:
        if self.kind == "train":
            return self._read_train()
        if not self.path.is_file():
            raise NotReady(f"waiting for {self.path} (not written yet)")
        # a calibration still "measuring" whose writer holds no lock was killed
        self._writer_alive = self.kind == "calibration" and is_locked(self.path)
        try:
            with _open(self.path) as h5:
                # the structure is checked once per file (its layout never changes after
                # creation), not at every read
                ident = (
                    os.stat(self.path).st_ino,
                    str(h5.attrs.get("created_utc", "")),
                    calibration_status(h5)[0],  # a calibration's analysis is added at its end
                )
                if self._static.get("ident") != ident:
                    self._static = {}
                    self._check_structure(h5)
                if self.kind == "acquire":
                    return self._read_acquire(h5, ident)
                return self._read_calibration(h5)
        except NotReady:
            raise
        except (OSError, KeyError, RuntimeError, ValueError, TypeError, IndexError) as exc:
            raise NotReady(
                f"{self.path} cannot be read (half-written or damaged: {_one_line(exc)})"
            ) from None

    def _check_structure(self, h5: h5py.File) -> None:
        fmt = h5.attrs.get("format")
        if isinstance(fmt, bytes):
            fmt = fmt.decode("utf-8", "replace")
        prefix = ACQUIRE_PREFIX if self.kind == "acquire" else CALIBRATION_PREFIX
        if fmt is None:
            raise NotReady(f"{self.path} has no format attribute yet (being created?)")
        if not str(fmt).startswith(prefix):
            raise NotReady(f"{self.path} is not a labpgt {self.kind} file (format {fmt!r})")
        names = ACQUIRE_DATASETS if self.kind == "acquire" else CALIBRATION_DATASETS
        if self.kind == "calibration" and calibration_status(h5)[0] != STATUS_COMPLETE:
            names = MEASURED_DATASETS
        missing = [n for n in names if n not in h5 or not isinstance(h5[n], h5py.Dataset)]
        if missing:
            raise NotReady(
                f"{self.path} (format {fmt!r}) lacks /{missing[0]}: written by another "
                "labpgt version, or still being created"
            )

    # ---- acquisition file -------------------------------------------------------------------
    def _read_acquire(self, h5: h5py.File, ident: tuple[Any, ...]) -> Snapshot:
        if "settings" not in self._static:
            frequency_hz = np.asarray(h5["frequency_hz"][...], dtype=np.float64)
            settings = np.asarray(h5["shots/settings"][...], dtype=np.float64)
            if settings.ndim != 2 or settings.shape[1] != 3:
                raise NotReady(f"/shots/settings has shape {settings.shape}, expected (M, 3)")
            if h5["traces_dbm"].shape != (settings.shape[0], frequency_hz.size):
                raise NotReady(f"/traces_dbm has shape {h5['traces_dbm'].shape}")
            m = settings.shape[0]
            self._static = {
                "ident": ident,
                "frequency_hz": frequency_hz,
                "settings": settings,
                "done": np.zeros(m, dtype=bool),
                "stamps": np.full(m, np.nan),
                "first_todo": 0,
                "span": _span(settings),
            }
        frequency_hz = self._static["frequency_hz"]
        settings = self._static["settings"]
        done, stamps = self._new_shots(h5)
        index = np.flatnonzero(done)
        total = int(done.size)
        snap = Snapshot(kind="acquire", status="", frequency_hz=frequency_hz)
        snap.settings_span = self._static["span"]
        snap.shots_total, snap.shots_done = total, int(index.size)
        if index.size == 0:
            snap.status = f"{self.path.name}: 0/{total} shots done, waiting for the first"
            return snap
        stamps = stamps[index]
        # the latest shot is the last one read, not the highest index (a resume fills gaps)
        at = int(np.nanargmax(stamps)) if np.isfinite(stamps).any() else index.size - 1
        last = int(index[at])
        snap.shot = last
        snap.spectrum_dbm = np.asarray(h5["traces_dbm"][last], dtype=np.float64)
        snap.shot_timestamp_s = float(stamps[at])
        snap.drive_hz, snap.drive_dbm, snap.bias_a = (float(v) for v in settings[last])
        order = np.argsort(stamps, kind="stable")
        shown = index[order]
        t = stamps[order]
        if shown.size > SETTINGS_POINTS:
            pick = np.linspace(0, shown.size - 1, SETTINGS_POINTS).round().astype(int)
            shown, t = shown[pick], t[pick]
            snap.settings_thinned = True
        snap.settings = settings[shown]
        if np.isfinite(t).all():
            snap.settings_x = t - t[0]
        else:
            snap.settings_x = shown.astype(np.float64)
            snap.settings_x_label = "shot number"
        snap.status = f"{self.path.name}: {snap.shots_done}/{total} shots done; showing shot {last}"
        return snap

    def _new_shots(self, h5: h5py.File) -> tuple[np.ndarray, np.ndarray]:
        """(done (M,), time stamps (M,)) of the run, read from the first shot that was not
        done at the last read on: a run in progress costs the shots it added, not its size.

        ``done`` is set after the traces are flushed: a shot marked done has its trace on
        disk. A shot once done stays done (a resume only marks again shots whose trace is
        not finite, which a view showed as NaN before)."""
        cached, stamps = self._static["done"], self._static["stamps"]
        lo = self._static["first_todo"]
        fresh = np.asarray(h5["shots/done"][lo:], dtype=bool)
        new = np.flatnonzero(fresh & ~cached[lo:])
        if new.size:
            hi = lo + int(new[-1]) + 1  # the time stamps of the newly done shots, one read
            stamps[lo:hi] = np.asarray(h5["shots/timestamp_s"][lo:hi], dtype=np.float64)
            cached[lo:] = fresh
        todo = np.flatnonzero(~fresh)
        self._static["first_todo"] = lo + (int(todo[0]) if todo.size else fresh.size)
        return cached, stamps

    # ---- calibration file -------------------------------------------------------------------
    def _read_calibration(self, h5: h5py.File) -> Snapshot:
        status, why = calibration_status(h5)
        if status != STATUS_COMPLETE:
            return self._read_measured(h5, status, why)
        frequency_hz = np.asarray(h5["frequency_hz"][...], dtype=np.float64)
        snap = Snapshot(kind="calibration", status="", frequency_hz=frequency_hz)
        ref_set = np.asarray(h5["reference/settings"][...], dtype=np.float64)
        ref_traces = np.asarray(h5["reference/traces_dbm"][...], dtype=np.float64)
        bias_set = np.asarray(h5["bias_sweep/settings"][...], dtype=np.float64)
        bias_traces = np.asarray(h5["bias_sweep/traces_dbm"][...], dtype=np.float64)
        # the last measured reference pass is the calibration's latest spectrum
        if ref_traces.ndim == 3 and ref_traces.size:
            snap.spectrum_dbm = ref_traces[-1, -1]
            last_setting = ref_set[-1]
        elif bias_traces.size:
            snap.spectrum_dbm = bias_traces[-1]
            last_setting = bias_set[-1]
        else:
            last_setting = np.full(3, np.nan)
        snap.drive_hz, snap.drive_dbm, snap.bias_a = (float(v) for v in last_setting)
        shots = np.concatenate([bias_set, ref_set]) if ref_set.size else bias_set
        snap.settings = shots
        snap.settings_x = np.arange(shots.shape[0], dtype=np.float64)
        snap.settings_x_label = "shot number (bias sweep, then reference passes)"
        snap.shots_done = snap.shots_total = int(shots.shape[0])
        sens = np.asarray(h5["response/sensitivity"][...], dtype=np.float64)  # (B, P, Fq)
        drive_dbm = np.asarray(h5["response/drive_dbm"][...], dtype=np.float64)
        try:
            op = json.loads(h5.attrs.get("operating", "{}"))
            power = float(np.mean(op.get("drive_dbm", [drive_dbm.mean()])))
        except (TypeError, ValueError):
            power = float(drive_dbm.mean())
        p_index = int(np.abs(drive_dbm - power).argmin()) if drive_dbm.size else 0
        if sens.ndim == 3 and sens.shape[1] > p_index:
            snap.response = {
                "drive_hz": np.asarray(h5["response/drive_hz"][...], dtype=np.float64),
                "bias_a": np.asarray(h5["response/bias_a"][...], dtype=np.float64),
                "sensitivity": sens[:, p_index, :],
                "drive_dbm": float(drive_dbm[p_index]),
            }
        snap.status = f"{self.path.name}: calibration, {snap.shots_total} stored shots shown"
        return snap

    def _read_measured(self, h5: h5py.File, status: str, why: str) -> Snapshot:
        """A calibration being measured (or stopped): the shots stored so far, stage by
        stage, and the response grid's curves as far as it is measured."""
        frequency_hz = np.asarray(h5["frequency_hz"][...], dtype=np.float64)
        snap = Snapshot(kind="calibration", status="", frequency_hz=frequency_hz)
        measured = h5["measured"]
        shown: list[np.ndarray] = []
        stage_now = ""
        for name in json.loads(measured.attrs["stages"]):
            group = measured[name.replace(" ", "_")]
            done = np.flatnonzero(np.asarray(group["done"][...], dtype=bool))
            snap.shots_total += int(group["done"].shape[0])
            if not done.size:
                continue
            stage_now = f"{name} ({done.size}/{group['done'].shape[0]})"
            snap.shots_done += int(done.size)
            settings = np.asarray(group["settings"][...], dtype=np.float64)[done]
            shown.append(settings)
            if "traces_dbm" in group:  # the latest spectrum: the last traced shot stored
                snap.spectrum_dbm = np.asarray(group["traces_dbm"][done[-1]], dtype=np.float64)
                snap.drive_hz, snap.drive_dbm, snap.bias_a = (float(v) for v in settings[-1])
        if shown:
            snap.settings = np.concatenate(shown)
            snap.settings_x = np.arange(snap.settings.shape[0], dtype=np.float64)
            snap.settings_x_label = "shot number (in measuring order)"
        snap.response = _grid_so_far(measured["response_grid"])
        state = f"measuring, {stage_now or 'no shot yet'}"
        if status != STATUS_MEASURING:
            state = f"INCOMPLETE: calibrate stopped ({why or status})"
        elif not self._writer_alive:
            state = "INCOMPLETE: calibrate did not finish (no process writes it)"
        snap.status = (
            f"{self.path.name}: calibration {state}; {snap.shots_done}/{snap.shots_total} shots"
        )
        return snap

    # ---- train run directory ----------------------------------------------------------------
    def _read_train(self) -> Snapshot:
        if not self.path.is_dir():
            raise NotReady(f"waiting for {self.path} (run directory not created yet)")
        metrics = _read_csv(self.path / "metrics.csv")
        batches = _read_csv(self.path / "batches.csv")
        if metrics is None and batches is None:
            raise NotReady(f"waiting for the first epoch's metrics.csv in {self.path}")
        snap = Snapshot(kind="train", status="")
        curves: dict[str, np.ndarray] = dict(metrics or {})
        curves.update({f"batches.{name}": values for name, values in (batches or {}).items()})
        if metrics is not None and "epoch" not in metrics:
            raise NotReady(f"{self.path / 'metrics.csv'} has no epoch column: not a labpgt run")
        snap.curves = curves
        epochs = curves.get("epoch", np.zeros(0))
        done = int(epochs.max()) if epochs.size else 0
        snap.status = f"{self.path.name}: epoch {done} done" + (
            f", {int(curves['queries'][-1])} queries" if "queries" in curves and epochs.size else ""
        )
        return snap


def _span(settings: np.ndarray) -> np.ndarray:
    """(2, 3): least and greatest of each column, NaN where a column holds no number."""
    if not settings.shape[0]:
        return np.zeros((0, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column: NaN, said so
        return np.stack([np.nanmin(settings, axis=0), np.nanmax(settings, axis=0)])


def _grid_so_far(grid: h5py.Group) -> dict[str, Any]:
    """The response grid's curves from the rows measured so far: the change of the features
    per grid step (RMS over features, `calibration.analysis.sensitivity_map` with unit noise,
    since the noise is measured later), at the middle drive power; NaN where not measured."""
    done = np.flatnonzero(np.asarray(grid["done"][...], dtype=bool))
    if not done.size:
        return {}
    from labpgt.calibration.analysis import sensitivity_map  # numpy; only for a calibration

    axes = [np.asarray(grid[n][...], dtype=np.float64) for n in ("drive_hz", "drive_dbm")]
    bias_a = np.asarray(grid["bias_a"][...], dtype=np.float64)
    settings = np.asarray(grid["settings"][...], dtype=np.float64)[done]
    features = np.asarray(grid["features"][...], dtype=np.float64)[done]
    at = [np.abs(settings[:, col, None] - axis[None, :]).argmin(axis=1)
          for col, axis in ((2, bias_a), (1, axes[1]), (0, axes[0]))]  # fmt: skip
    response = np.full((bias_a.size, axes[1].size, axes[0].size, features.shape[1]), np.nan)
    response[at[0], at[1], at[2]] = features
    p_index = axes[1].size // 2
    with np.errstate(invalid="ignore"):
        change = sensitivity_map(response, np.ones(features.shape[1]))
    return {
        "drive_hz": axes[0],
        "bias_a": bias_a,
        "sensitivity": change[:, p_index, :],
        "drive_dbm": float(axes[1][p_index]),
        "quantity": "feature change per grid step (dB; noise not measured yet)",
    }


def _read_csv(path: Path) -> dict[str, np.ndarray] | None:
    """Columns of a CSV of numbers (the trainer replaces it atomically), or None if absent."""
    try:
        with path.open(newline="") as fh:
            rows = list(csv.reader(fh))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise NotReady(f"cannot read {path}: {_one_line(exc)}") from None
    if not rows:
        return None
    header, body = rows[0], rows[1:]
    try:
        data = np.array([[float(v) for v in row] for row in body if row], dtype=np.float64)
    except ValueError:
        raise NotReady(f"{path} holds something other than numbers: not a labpgt run") from None
    data = data.reshape(-1, len(header))
    return {name: data[:, i] for i, name in enumerate(header)}


def wait_kind(path: Path, kind: str) -> str:
    """``kind`` if the run at ``path`` is of it or does not exist yet; else a one-line error."""
    if kind not in KINDS:
        raise UserError(f"--kind must be one of {', '.join(KINDS)}; got {kind!r}")
    if path.exists():
        found = classify(path)
        if found != kind:
            raise UserError(f"{path} is a {found} run, not a {kind} one")
    return kind
