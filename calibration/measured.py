"""A calibration file written while calibrate measures: every chunk of shots lands in the
/measured part (and is flushed) as soon as it is measured; the analysis is added at the end.

```
/                          attrs as in `calibration.store`, from the creation: format, status
                           ("measuring", then "complete"; "stopped" with stopped_because),
                           created_utc, labpgt_version, snapshot, plan, feature_spec, ...
/frequency_hz              (P,) analyzer axis, Hz (a dimension scale)
/entry                     NXentry with the run metadata (sample, user, notes, metadata)
/measured                  attr stages: JSON list of the stage names in measuring order
/measured/<stage>          one group per stage (bias_sweep, response_grid, noise_pilot,
                           reference_repeats, surrogate_sampling), attrs stage (its name), shots
          /settings        (N, 3) Hz, dBm, A; each shot in measuring order (NaN until measured)
          /features        (N, F) feature units (NaN until measured)
          /done            (N,) bool: the shot's row is stored
          /timestamp_s     (N,) Unix time the shot was read, s
          /instrument_time_s (N,) settle + sweep time, s
          /traces_dbm      (N, P) float32, dBm: stages that keep traces only
/measured/response_grid/drive_hz (Fq,), drive_dbm (P,), bias_a (B,): the grid's axes
```

Every dataset is allocated when the file is created, so measuring writes raw data only; a
chunk's rows are flushed before their ``done`` flags are set and flushed, so a reader (which
opens the file read-only without HDF5's file lock, like an acquisition file) that sees a
shot done sees its data. A calibration stopped before the end (Ctrl-C, an instrument fault)
leaves the file with what was measured and status "stopped"; one killed outright leaves it
"measuring". Neither is a calibration `load_calibration` accepts (one line says so).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from labpgt.calibration.plan import CalibrationPlan
from labpgt.calibration.run import CalibrationResult, calibration_stages
from labpgt.calibration.store import nx_entry, set_settings_units, write_header, write_result

from labpgt.catalog import STATUS_ATTR, STATUS_BYTES, STATUS_STOPPED, STOPPED_ATTR, measured_shots
from labpgt.errors import UserError
from labpgt.records import RunMetadata
from labpgt.reservoir import ReservoirOutput
from labpgt.storage import empty_dataset, file_access

_UNITS = {"done": "1", "timestamp_s": "s", "instrument_time_s": "s", "traces_dbm": "dBm"}


def stage_key(stage: str) -> str:
    """'response grid' -> 'response_grid' (the group of a stage under /measured)."""
    return stage.replace(" ", "_")


class CalibrationWriter:
    """The calibration file of one `labpgt calibrate`, open for writing until it ends."""

    def __init__(self, path: Path, h5: h5py.File) -> None:
        self.path, self.h5 = path, h5

    @classmethod
    def create(
        cls,
        path: str | Path,
        plan: CalibrationPlan,
        *,
        frequency_hz: torch.Tensor,
        feature_names: list[str],
        snapshot: dict[str, Any],
        provenance: dict[str, Any],
        metadata: RunMetadata,
    ) -> CalibrationWriter:
        """A new file with every stage of ``plan`` allocated, nothing measured (refuses to
        overwrite)."""
        path = Path(path)
        if path.exists():
            raise UserError(f"--out {path} already exists: choose another file or delete it")
        try:
            fid = h5py.h5f.create(os.fsencode(path), h5py.h5f.ACC_EXCL, fapl=file_access())
        except OSError as exc:
            raise UserError(f"--out: cannot create {path}: {exc}") from None
        h5 = h5py.File(fid)
        try:
            write_header(h5, snapshot, provenance, plan, feature_names)
            h5["frequency_hz"] = frequency_hz.to(torch.float64).numpy()
            h5["frequency_hz"].attrs["units"] = "Hz"
            h5["frequency_hz"].make_scale("frequency_hz")
            nx_entry(h5, metadata)
            _allocate(h5, plan, len(feature_names))
            h5.flush()
        except BaseException:
            with contextlib.suppress(Exception):
                h5.close()
            path.unlink(missing_ok=True)
            raise
        return cls(path, h5)

    def write(
        self, stage: str, rows: np.ndarray, settings: torch.Tensor, out: ReservoirOutput
    ) -> None:
        """Store the shots ``rows`` (ascending, contiguous) of ``stage``, then mark them done."""
        group = self.h5["measured"][stage_key(stage)]
        where = slice(int(rows[0]), int(rows[-1]) + 1)
        group["settings"][where] = settings.to(torch.float64).numpy()
        group["features"][where] = out.features.to(torch.float64).numpy()
        group["timestamp_s"][where] = out.timestamps_s.to(torch.float64).numpy()
        group["instrument_time_s"][where] = out.instrument_time_s.to(torch.float64).numpy()
        if "traces_dbm" in group and out.traces_dbm is not None:
            group["traces_dbm"][where] = out.traces_dbm.to(torch.float32).numpy()
        self.h5.flush()
        group["done"][where] = True  # last: a shot marked done has its data on disk
        self.h5.flush()

    def finish(
        self, result: CalibrationResult, provenance: dict[str, Any], metadata: RunMetadata
    ) -> None:
        """Add the analysis (`calibration.store.write_result`), mark the file complete, close."""
        write_result(self.h5, result, provenance, metadata)
        self.h5.close()

    def stop(self, reason: str) -> None:
        """Mark the file stopped (``reason`` in a few words) and close it; best effort."""
        with contextlib.suppress(Exception):
            self.h5.attrs[STOPPED_ATTR] = reason
            self.h5.attrs.modify(STATUS_ATTR, np.bytes_(STATUS_STOPPED.ljust(STATUS_BYTES)))
            self.h5.flush()
        with contextlib.suppress(Exception):
            self.h5.close()

    @property
    def shots_done(self) -> int:
        return measured_shots(self.h5)[0]


def _allocate(h5: h5py.File, plan: CalibrationPlan, features: int) -> None:
    """/measured: one group per stage, every dataset allocated now (see the module docstring)."""
    measured = h5.create_group("measured")
    stages = calibration_stages(plan)
    measured.attrs["stages"] = json.dumps(list(stages))
    points = h5["frequency_hz"].shape[0]
    for stage, (shots, traces) in stages.items():
        group = measured.create_group(stage_key(stage))
        group.attrs["stage"] = stage
        group.attrs["shots"] = shots
        empty_dataset(group, "settings", (shots, 3), np.float64, np.nan)
        set_settings_units(group["settings"])
        empty_dataset(group, "features", (shots, features), np.float64, np.nan)
        group["features"].attrs["units"] = "feature units (see the root's feature_names)"
        empty_dataset(group, "done", (shots,), np.bool_, False)
        empty_dataset(group, "timestamp_s", (shots,), np.float64, np.nan)
        empty_dataset(group, "instrument_time_s", (shots,), np.float64, np.nan)
        if traces:
            empty_dataset(group, "traces_dbm", (shots, points), np.float32, np.nan)
            group["traces_dbm"].dims[1].attach_scale(h5["frequency_hz"])
        for name, units in _UNITS.items():
            if name in group:
                group[name].attrs["units"] = units
    grid = measured["response_grid"]
    drive_hz, drive_dbm = plan.drive_axes()
    for name, values, units in (
        ("drive_hz", drive_hz.numpy(), "Hz"),
        ("drive_dbm", drive_dbm.numpy(), "dBm"),
        ("bias_a", np.asarray(plan.response_bias_a, dtype=np.float64), "A"),
    ):
        grid[name] = values
        grid[name].attrs["units"] = units
