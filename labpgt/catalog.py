"""A catalogue of the run files in a folder (`labpgt runs DIR`): one row per file, never a raise.

Every HDF5 file is looked at read-only and without HDF5's file lock, so a run that acquire is
still writing is listed too (its flushed shots are consistent; see `labpgt.storage`). A file
that is not a labpgt run, is damaged, half-written, or comes from another version gets a row
with a one-line status instead of a traceback.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from labpgt.records import ACQUIRE_FORMAT, CALIBRATION_FORMAT, CALIBRATION_PREFIX

SUFFIXES = (".h5", ".hdf5", ".hdf", ".nxs")


@dataclass
class RunEntry:
    """One row of the catalogue (see `inspect_run`)."""

    path: str
    size_bytes: int
    command: str | None = None
    """acquire or calibrate (None: not a labpgt run file)."""
    date_utc: str | None = None
    bench: str | None = None
    shots_done: int | None = None
    shots_planned: int | None = None
    status: str = "unknown"
    """A few words: complete, incomplete, being written, half-written, damaged, other version,
    not labpgt, not HDF5, empty, unreadable."""
    detail: str = ""
    """One line saying more (the error, the format found, what to do)."""
    sample: str | None = None
    operator: str | None = None
    ok: bool = False
    """True when the file can be read by this labpgt (show, train --calibration)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _json(attrs: h5py.AttributeManager, name: str, default: Any) -> Any:
    try:
        raw = attrs.get(name)
        return default if raw is None else json.loads(_text(raw))
    except (OSError, TypeError, ValueError):
        return default


STATUS_ATTR = "status"
"""Root attribute of a calibration file: "measuring" from its creation, "complete" once the
analysis is written, "stopped" when calibrate stopped before the end (``stopped_because``)."""
STOPPED_ATTR = "stopped_because"
STATUS_MEASURING, STATUS_COMPLETE, STATUS_STOPPED = "measuring", "complete", "stopped"
STATUS_BYTES = 16
"""The status is a fixed-length attribute, rewritten in place."""


def _attr_text(h5: h5py.File, name: str) -> str:
    raw = h5.attrs.get(name, "")
    return (raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)).strip()


def calibration_status(h5: h5py.File) -> tuple[str, str]:
    """(status, why it stopped) of an open calibration file: "complete", "measuring" (being
    written, or its writer was killed) or "stopped" (with the reason). A file written before
    calibrations were written progressively has no status and is complete."""
    if STATUS_ATTR not in h5.attrs:
        return STATUS_COMPLETE, ""
    return _attr_text(h5, STATUS_ATTR), _attr_text(h5, STOPPED_ATTR)


def measured_shots(h5: h5py.File) -> tuple[int, int]:
    """(shots stored, shots planned) in a calibration file's /measured part (0, 0 without)."""
    group = h5.get("measured")
    if not isinstance(group, h5py.Group):
        return 0, 0
    done = total = 0
    for stage in group.values():
        flags = np.asarray(stage["done"][...], dtype=bool)
        done, total = done + int(flags.sum()), total + flags.size
    return done, total


def bench_label(snapshot: dict[str, Any]) -> str:
    """Short bench identity: embedded seed, or the instrument models and serials."""
    ident = snapshot.get("identity") if isinstance(snapshot.get("identity"), dict) else None
    if ident and ident.get("sim"):
        sim = ident["sim"]
        return f"embedded (seed {sim.get('seed')})"
    embedded = (snapshot.get("provenance") or {}).get("embedded")
    if not ident and isinstance(embedded, dict):
        return f"embedded (seed {embedded.get('seed')})"
    reservoir = snapshot.get("reservoir")
    bench = reservoir.get("bench") if isinstance(reservoir, dict) else snapshot.get("bench")
    if isinstance(reservoir, dict) and reservoir.get("reservoir") == "simulated":
        return "simulated ring"
    if not isinstance(bench, dict):
        return "?"
    parts = []
    for role in ("generator", "analyzer", "supply"):
        identity = (bench.get(role) or {}).get("identity") or {}
        if identity:
            parts.append(f"{identity.get('model')} #{identity.get('serial')}")
    return ", ".join(parts) or "?"


def is_locked(path: Path) -> bool:
    """True when another process holds HDF5's write lock (acquire still running)."""
    try:
        with h5py.File(path, "r", locking=True):
            return False
    except OSError as exc:
        return "unable to lock file" in str(exc).lower()


def inspect_run(path: str | Path) -> RunEntry:
    """What ``path`` holds, for the catalogue; every problem becomes the status, never a raise."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        return RunEntry(str(path), 0, status="unreadable", detail=str(exc.strerror or exc))
    entry = RunEntry(str(path), size)
    if size == 0:
        entry.status, entry.detail = "empty", "0 bytes"
        return entry
    try:
        if not h5py.is_hdf5(path):
            entry.status, entry.detail = "not HDF5", "no HDF5 signature"
            return entry
    except OSError as exc:
        entry.status, entry.detail = "unreadable", str(exc.strerror or exc)
        return entry
    try:
        h5 = h5py.File(path, "r", locking=False)
    except OSError as exc:
        text = " ".join(str(exc).split())
        entry.status = "half-written" if "truncated" in text else "damaged"
        if is_locked(path):  # acquire is creating it right now
            entry.status, entry.detail = "being written", "being created by acquire"
            return entry
        sizes = re.search(r"eof = (\d+).*stored_eof = (\d+)", text)
        entry.detail = f"truncated: {sizes[1]} of {sizes[2]} bytes on disk" if sizes else text[:200]
        return entry
    try:
        with h5:
            _fill(entry, h5)
    except (OSError, KeyError, TypeError, ValueError, RuntimeError) as exc:
        entry.ok = False
        entry.status, entry.detail = "damaged", " ".join(str(exc).split())[:200]
    # Only once our own handle is closed: HDF5 refuses a second open of a file with other
    # locking flags in the same process, which would read as a lock held by a writer.
    if entry.status == "incomplete" and is_locked(path):
        entry.status, entry.detail = "being written", f"{entry.command} is writing it now"
    return entry


def _fill(entry: RunEntry, h5: h5py.File) -> None:
    fmt = h5.attrs.get("format")
    fmt = None if fmt is None else _text(fmt)
    if fmt is None or not fmt.startswith("labpgt-"):
        entry.status, entry.detail = "not labpgt", "no labpgt format attribute"
        return
    entry.date_utc = _text(h5.attrs.get("created_utc", "")) or None
    snapshot = _json(h5.attrs, "snapshot", {})
    snapshot = snapshot if isinstance(snapshot, dict) else {}
    entry.bench = bench_label(snapshot)
    entry_group = h5.get("entry")
    holder = entry_group if isinstance(entry_group, h5py.Group) else h5
    meta = _json(holder.attrs, "metadata", {})
    if isinstance(meta, dict):
        entry.sample, entry.operator = meta.get("sample"), meta.get("operator")
    if fmt.startswith("labpgt-acquire/"):
        entry.command = "acquire"
        if fmt != ACQUIRE_FORMAT:
            entry.status = "other version"
            entry.detail = f"format {fmt}; this labpgt reads {ACQUIRE_FORMAT}"
            return
        done = np.asarray(h5["shots/done"][...], dtype=bool)
        entry.shots_done, entry.shots_planned = int(done.sum()), int(done.size)
        entry.ok = True
        if entry.shots_done == entry.shots_planned:
            entry.status = "complete"
        else:
            entry.status = "incomplete"
            entry.detail = "finish it with labpgt acquire --resume"
        if "entry" not in h5:
            entry.detail = (entry.detail + "; " if entry.detail else "") + "no NeXus part (rev. 1)"
        return
    if fmt.startswith(CALIBRATION_PREFIX):
        entry.command = "calibrate"
        if fmt != CALIBRATION_FORMAT:
            entry.status = "other version"
            entry.detail = f"format {fmt}; this labpgt reads {CALIBRATION_FORMAT}"
            return
        status, why = calibration_status(h5)
        if status != STATUS_COMPLETE:
            entry.shots_done, entry.shots_planned = measured_shots(h5)
            entry.status = "incomplete"
            entry.detail = (
                f"calibrate stopped: {why}" if why else "calibrate did not finish"
            ) + "; no analysis, not usable: calibrate again"
            return
        summary = _json(h5.attrs, "summary", {})
        shots = summary.get("shots") if isinstance(summary, dict) else None
        if isinstance(shots, int):
            entry.shots_done = entry.shots_planned = shots
        missing = [g for g in ("surrogate", "reference", "response") if g not in h5]
        if missing:
            entry.status, entry.detail = "damaged", f"no /{', /'.join(missing)}"
            return
        entry.ok = True
        entry.status = "complete"
        return
    entry.status, entry.detail = "not labpgt", f"unknown format {fmt!r}"


def list_runs(folder: str | Path, *, recursive: bool = False) -> list[RunEntry]:
    """Every HDF5-looking file in ``folder`` (sorted by date, then name), inspected."""
    folder = Path(folder)
    pattern = "**/*" if recursive else "*"
    paths = sorted(p for p in folder.glob(pattern) if p.suffix.lower() in SUFFIXES and p.is_file())
    entries = [inspect_run(p) for p in paths]
    return sorted(entries, key=lambda e: (e.date_utc or "", e.path))


def human_size(n_bytes: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.3g} {unit}"
    return f"{n_bytes} B"


def short_date(date_utc: str | None) -> str:
    """'2026-12-07T05:35:59+00:00' -> '2026-12-07 05:35' (UTC)."""
    if not date_utc:
        return "-"
    try:
        return _dt.datetime.fromisoformat(date_utc).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return date_utc


def relative(path: str, folder: Path) -> str:
    try:
        return os.path.relpath(path, folder)
    except ValueError:
        return path
