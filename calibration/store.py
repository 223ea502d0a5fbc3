"""Calibration files: write a `CalibrationResult`, load it back as a `Calibration` for training.

Layout (h5py; snapshot conventions of `labpgt acquire`: a JSON ``snapshot`` attribute with
the reservoir's full snapshot, instrument identities included, plus provenance):

```
/                       attrs: format "labpgt-calibration/1", created_utc, labpgt_version,
                               snapshot (JSON), plan (JSON), feature_spec (JSON),
                               feature_names (JSON), summary (JSON: every scalar result),
                               operating (JSON), encoding_ranges (JSON), surrogate_architecture
/frequency_hz           (P,)        analyzer axis, Hz
/bias_sweep/settings    (2Nb, 3)    up then down, measuring order; /traces_dbm (2Nb, P);
           /leg (0 up, 1 down); /comb_hz (NaN: comb outside the span); /spacing_hz
/response/settings      (B·P·Fq, 3); /features (B, P, Fq, F); /drive_hz; /drive_dbm; /bias_a;
         /sensitivity   (B, P, Fq)   sensitivity / noise
         /interaction   (B, P, Fq)   drive's effect away from its own tone, noise units (bins)
/reference/settings     (S, 3); /comb (S,) bool; /features (R, S, F); /traces_dbm (R, S, P)
/noise/feature_std      (F,)
/normalisation/mean, /std   (F,)
/surrogate/<name>       state_dict tensors of `RingSurrogate` (or `TwinSurrogate`: kind twin);
                        /surrogate_data/settings, features
                        (the random shots in the operating window), /validation_index
/entry                  NeXus NXentry (@default "bias_sweep"): program_name, start_time,
                        sample/user/notes/metadata as in acquisition files
/entry/bias_sweep       NXdata: @signal traces_dbm against frequency_hz (hard links to
                        /bias_sweep/traces_dbm and /frequency_hz), bias_a per row
```

Every numeric dataset has a ``units`` attribute (settings tables: "Hz, dBm, A" and
``column_units``; feature tables: the unit of their columns, ``column_units`` when mixed;
surrogate parameters "1"). /frequency_hz is a dimension scale of the traces' last axis.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np
import torch
from labpgt.calibration.surrogate import RingSurrogate, build_surrogate, surrogate_state

from labpgt.catalog import (
    STATUS_ATTR,
    STATUS_BYTES,
    STATUS_COMPLETE,
    STATUS_MEASURING,
    STATUS_STOPPED,
    calibration_status,
    measured_shots,
)
from labpgt.errors import UserError
from labpgt.features import FeatureSpec
from labpgt.records import (
    CALIBRATION_FORMAT,
    LABPGT_VERSION,
    CalibrationSummary,
    OperatingRecord,
    RunMetadata,
    instrument_identities,
    to_json,
)
from labpgt.setting_bounds import SETTING_NAMES
from labpgt.storage import nx_data, nx_group, text_dataset, write_metadata

if TYPE_CHECKING:
    from labpgt.calibration.drift import DriftReport
    from labpgt.calibration.plan import CalibrationPlan
    from labpgt.calibration.run import CalibrationResult

    from labpgt.reservoir import PhysicalReservoir

FORMAT = CALIBRATION_FORMAT


def summary_of(result: CalibrationResult) -> dict[str, Any]:
    """Every scalar figure of a calibration, units in the keys (`CalibrationSummary`)."""
    ff, hy, op, sf = (
        result.bias_sweep.field_fit,
        result.bias_sweep.hysteresis,
        result.operating,
        result.surrogate,
    )
    noise_db = result.references.noise.rms_std
    return CalibrationSummary(
        field_per_ampere_oe_per_a=ff.field_per_ampere_oe_per_a,
        field_per_ampere_std_oe_per_a=ff.field_per_ampere_std_oe_per_a,
        field_fit_rms_residual_hz=ff.rms_residual_hz,
        hysteresis_offset_oe=hy.offset_oe,
        hysteresis_offset_std_oe=hy.offset_std_oe,
        hysteresis_detected=hy.detected,
        hysteresis_threshold_oe=hy.threshold_oe,
        mode_spacing_hz=result.mode_spacing_hz,
        noise_floor_dbm=result.bias_sweep.floor_dbm,
        noise_rms_db=noise_db,
        noise_repeats=result.references.noise.repeats,
        operating_bias_a=op.bias_a,
        sensitivity_to_noise=op.sensitivity_to_noise,
        sensitivity_by_bias=list(op.sensitivity_by_bias),
        surrogate_validation_db=sf.validation_rmse,
        surrogate_train_db=sf.train_rmse,
        surrogate_validation_over_noise=sf.validation_rmse / max(noise_db, 1e-12),
        surrogate_rows_train=sf.n_train,
        surrogate_rows_validation=sf.n_validation,
        surrogate_grid_validation_db=sf.context_validation_rmse,
        surrogate_grid_validation_over_noise=sf.context_validation_rmse / max(noise_db, 1e-12),
        surrogate_grey_box=sf.model.grey_box,
        surrogate_kind=getattr(sf.model, "kind", "grey-box" if sf.model.grey_box else "mlp"),
        surrogate_line_sigma_hz=sf.model.line_sigma_hz(),
        line_sigma_hz=result.line_sigma_hz,
        shots=result.shots,
        instrument_time_s=result.instrument_time_s,
        wall_s=result.wall_s,
        stage_instrument_s=result.stage_instrument_s,
    ).as_dict()


_UNITS = {
    "frequency_hz": "Hz",
    "traces_dbm": "dBm",
    "leg": "1",
    "comb_hz": "Hz",
    "spacing_hz": "Hz",
    "drive_hz": "Hz",
    "drive_dbm": "dBm",
    "bias_a": "A",
    "sensitivity": "1",
    "interaction": "1",
    "comb": "1",
    "validation_index": "1",
}
"""Units by dataset name; settings and feature tables are handled in `_annotate`."""


def _feature_units(names: list[str]) -> list[str]:
    """'kernel3_2.1000GHz_dBm' -> 'dBm', 'peak0_frequency_GHz' -> 'GHz'."""
    return [n.rsplit("_", 1)[-1] if "_" in n else "1" for n in names]


def _annotate(h5: h5py.File, feature_names: list[str], metadata: RunMetadata) -> None:
    """Units on every numeric dataset of the analysis and the NeXus entry (see the module
    docstring); /measured has its units from its creation (`calibration.measured`)."""
    column_units = _feature_units(feature_names)
    single = column_units[0] if len(set(column_units)) == 1 else "mixed"
    # the shot-to-shot spread and the std of a dBm feature are in dB
    spread = "dB" if single == "dBm" else single

    def visit(name: str, obj: object) -> None:
        if not isinstance(obj, h5py.Dataset) or obj.dtype.kind not in "biuf":
            return
        leaf = name.rsplit("/", 1)[-1]
        if name.startswith("measured/"):
            return
        if name.startswith("surrogate/"):
            obj.attrs["units"] = "1"
            obj.attrs["long_name"] = "surrogate network parameter (state_dict tensor)"
        elif leaf == "settings":
            set_settings_units(obj)
        elif leaf in ("features", "mean"):
            obj.attrs["units"] = single
            obj.attrs["column_units"] = column_units
        elif leaf in ("feature_std", "std"):
            obj.attrs["units"] = spread
        else:
            obj.attrs["units"] = _UNITS.get(leaf, "1")

    h5.visititems(visit)
    if not h5["frequency_hz"].is_scale:
        h5["frequency_hz"].make_scale("frequency_hz")
    for name in ("bias_sweep/traces_dbm", "reference/traces_dbm"):
        traces = h5[name]
        traces.dims[traces.ndim - 1].attach_scale(h5["frequency_hz"])
    entry = h5["entry"] if "entry" in h5 else nx_entry(h5, metadata)
    entry.attrs["default"] = "bias_sweep"
    data = nx_data(
        entry,
        "bias_sweep",
        h5["bias_sweep/traces_dbm"],
        [".", "frequency_hz"],
        {"frequency_hz": (1, h5["frequency_hz"])},
    )
    data.attrs["bias_a_indices"] = 0  # an auxiliary axis: each trace's bias current
    data["bias_a"] = h5["bias_sweep/settings"][:, SETTING_NAMES.index("bias_a")]
    data["bias_a"].attrs["units"] = "A"
    h5["bias_sweep/traces_dbm"].attrs["interpretation"] = "spectrum"


def set_settings_units(dataset: h5py.Dataset) -> None:
    """The units of a table of settings (columns drive_hz, drive_dbm, bias_a)."""
    dataset.attrs["units"] = "Hz, dBm, A"
    dataset.attrs["column_names"] = list(SETTING_NAMES)
    dataset.attrs["column_units"] = ["Hz", "dBm", "A"]


def nx_entry(h5: h5py.File, metadata: RunMetadata) -> h5py.Group:
    """The NeXus root and /entry with the run metadata (its plot is added by `_annotate`)."""
    h5.attrs["NX_class"] = "NXroot"
    h5.attrs["default"] = "entry"
    entry = nx_group(h5, "entry", "NXentry")
    entry.attrs["metadata"] = metadata.to_json()
    text_dataset(entry, "program_name", "labpgt").attrs["version"] = str(h5.attrs["labpgt_version"])
    text_dataset(entry, "start_time", str(h5.attrs["created_utc"]))
    text_dataset(entry, "title", "labpgt calibrate: bias sweep, up then down")
    write_metadata(entry, metadata)
    return entry


def save_calibration(
    result: CalibrationResult,
    path: str | Path,
    *,
    provenance: dict[str, Any] | None = None,
    metadata: RunMetadata | None = None,
) -> Path:
    """Write ``result`` to a new HDF5 file (refuses to overwrite), all at once.

    `labpgt calibrate` writes its file progressively instead (`calibration.measured`), the
    analysis last, through the same `write_result`.
    """
    path = Path(path)
    if path.exists():
        raise UserError(f"--out {path} already exists: choose another file or delete it")
    try:
        h5 = h5py.File(path, "w-")
    except OSError as exc:
        raise UserError(f"--out: cannot create {path}: {exc}") from None
    try:
        with h5:
            write_result(h5, result, provenance or {}, metadata or RunMetadata())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def write_result(
    h5: h5py.File, result: CalibrationResult, provenance: dict[str, Any], metadata: RunMetadata
) -> None:
    """The analysis of a calibration into an open file (the attributes and groups of the
    module docstring), which is then marked complete."""
    _write_attributes(h5, result, provenance)
    if "frequency_hz" not in h5:
        h5["frequency_hz"] = result.frequency_hz
    for group, datasets in _groups(result).items():
        g = h5.create_group(group)
        for name, value in datasets.items():
            if value is not None:
                g[name] = value
    _annotate(h5, list(result.feature_names), metadata)
    h5.attrs.modify(STATUS_ATTR, np.bytes_(STATUS_COMPLETE.ljust(STATUS_BYTES)))
    h5.flush()


def _write_attributes(h5: h5py.File, result: CalibrationResult, provenance: dict) -> None:
    """The root attributes: format, provenance, plan, features, figures (JSON)."""
    a = h5.attrs
    if "format" not in a:  # a file written progressively has these from its creation
        write_header(h5, result.snapshot, provenance, result.plan, result.feature_names)
    a["snapshot"] = to_json({**result.snapshot, "provenance": provenance})
    a["summary"] = to_json(summary_of(result))
    op = result.operating
    a["operating"] = OperatingRecord(
        bias_a=op.bias_a,
        drive_hz=list(op.drive_hz),
        drive_dbm=list(op.drive_dbm),
        sensitivity_to_noise=op.sensitivity_to_noise,
        window=op.window,
    ).to_json()
    a["encoding_ranges"] = to_json({k: list(v) for k, v in result.encoding_ranges.items()})
    a["surrogate_architecture"] = to_json(surrogate_state(result.surrogate.model)[0])


def write_header(
    h5: h5py.File,
    snapshot: dict[str, Any],
    provenance: dict[str, Any],
    plan: CalibrationPlan,
    feature_names: list[str],
) -> None:
    """The root attributes a calibration file has from its creation, marked "measuring"."""
    a = h5.attrs
    a["format"] = FORMAT
    a.create(STATUS_ATTR, np.bytes_(STATUS_MEASURING.ljust(STATUS_BYTES)))
    a["created_utc"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    a["labpgt_version"] = LABPGT_VERSION
    a["snapshot"] = to_json({**snapshot, "provenance": provenance})
    a["plan"] = plan.model_dump_json()
    a["feature_spec"] = to_json(snapshot.get("features", {}))
    a["feature_names"] = to_json(feature_names)
    a["setting_names"] = to_json(list(SETTING_NAMES))


def _groups(result: CalibrationResult) -> dict[str, dict[str, Any]]:
    """Group -> dataset -> array of a calibration file (None: not stored)."""
    _, state = surrogate_state(result.surrogate.model)
    sweep, refs = result.bias_sweep, result.references
    return {
        "bias_sweep": {
            "settings": sweep.settings,
            "traces_dbm": sweep.traces_dbm.astype(np.float32),
            "leg": sweep.leg,
            "comb_hz": sweep.comb_hz,
            "spacing_hz": sweep.spacing_hz,
        },
        "response": {
            "settings": result.response_settings,
            "features": result.response_features,
            "drive_hz": result.drive_hz,
            "drive_dbm": result.drive_dbm,
            "bias_a": result.response_bias_a,
            "sensitivity": refs.sensitivity,
            "interaction": refs.interaction,
        },
        "reference": {
            "settings": refs.settings,
            "comb": refs.comb,
            "features": refs.features,
            "traces_dbm": refs.traces_dbm.astype(np.float32),
        },
        "noise": {"feature_std": refs.noise.feature_std},
        "normalisation": {"mean": refs.feature_mean, "std": refs.feature_std},
        "surrogate": {k: v.numpy() for k, v in state.items()},
        "surrogate_data": {
            "settings": result.surrogate_settings,
            "features": result.surrogate_features,
            "validation_index": result.surrogate.validation_index.numpy(),
        },
    }


@dataclass
class Calibration:
    """A loaded calibration: what training needs (see docs/calibration.md).

    Settings are rows ``[drive_hz, drive_dbm, bias_a]`` in Hz, dBm, A (float64).
    """

    path: Path
    version: str
    """labpgt version that wrote the file."""
    feature_spec: FeatureSpec
    feature_names: list[str]
    frequency_hz: torch.Tensor
    feature_mean: torch.Tensor
    """(F,) float64 per-feature mean over the operating window (normalisation)."""
    feature_std: torch.Tensor
    """(F,) float64 per-feature std over the operating window (normalisation)."""
    noise_std: torch.Tensor
    """(F,) float64 shot-to-shot std of each feature (feature units, dB for bins)."""
    noise_db: float
    """RMS over features of ``noise_std``: the measured noise, dB."""
    operating_bias_a: float
    encoding_ranges: dict[str, tuple[float, float]]
    """Recommended range per setting name (drive_hz Hz, drive_dbm dBm, bias_a A)."""
    sensitivity_to_noise: float
    surrogate: RingSurrogate
    """(N, 3) settings -> (N, F) features; differentiable, eval mode, float64."""
    surrogate_validation_db: float
    surrogate_validation_over_noise: float
    reference_settings: torch.Tensor
    """(S, 3) settings re-measured by drift checks."""
    baseline_features: torch.Tensor
    """(S, F) mean features of the reference settings at calibration time."""
    field_per_ampere_oe_per_a: float
    hysteresis_offset_oe: float
    hysteresis_detected: bool
    mode_spacing_hz: float
    snapshot: dict[str, Any]
    summary: dict[str, Any]
    plan: dict[str, Any] = field(default_factory=dict)

    # ---- helpers for training ---------------------------------------------------------------
    def normalise(self, features: torch.Tensor) -> torch.Tensor:
        """(…, F) features -> (features - mean) / std (differentiable)."""
        mean = self.feature_mean.to(features.dtype)
        return (features - mean) / self.feature_std.to(features.dtype)

    def setting_lower(self) -> torch.Tensor:
        """(3,) low ends of ``encoding_ranges`` in SETTING_NAMES order."""
        return torch.tensor(
            [self.encoding_ranges[n][0] for n in SETTING_NAMES], dtype=torch.float64
        )

    def setting_upper(self) -> torch.Tensor:
        """(3,) high ends of ``encoding_ranges`` in SETTING_NAMES order."""
        return torch.tensor(
            [self.encoding_ranges[n][1] for n in SETTING_NAMES], dtype=torch.float64
        )

    def check_compatible(self, reservoir: PhysicalReservoir) -> None:
        """Raise `UserError` if ``reservoir`` is not the bench/feature set this file calibrated."""
        check_same_bench(self.snapshot, reservoir.snapshot(), self.path)
        axis = reservoir.frequency_hz.to(torch.float64)
        if axis.shape != self.frequency_hz.shape or not torch.allclose(
            axis, self.frequency_hz, rtol=0, atol=1.0
        ):
            raise UserError(
                f"{self.path}: the analyzer frequency axis differs from the calibration's "
                f"({self.frequency_hz.numel()} points {self.frequency_hz[0].item() / 1e9:.6f}-"
                f"{self.frequency_hz[-1].item() / 1e9:.6f} GHz): recalibrate"
            )
        if list(reservoir.feature_names) != self.feature_names:
            raise UserError(
                f"{self.path}: the reservoir's features ({reservoir.feature_dim}) differ from "
                f"the calibration's ({len(self.feature_names)}): use the same feature spec"
            )

    def check_drift(
        self,
        reservoir: PhysicalReservoir,
        *,
        tolerance_mhz: float = 1.0,
        tolerance_db: float = 1.0,
        repeats: int | None = None,
    ) -> DriftReport:
        """Re-measure the reference settings on ``reservoir`` and compare (see `check_drift`)."""
        from labpgt.calibration.drift import check_drift

        return check_drift(
            reservoir, self, tolerance_mhz=tolerance_mhz, tolerance_db=tolerance_db, repeats=repeats
        )

    def read_reference(self) -> dict[str, np.ndarray]:
        """The stored reference shots (see `read_reference`): a drift check's baseline."""
        return read_reference(self.path)


def check_same_bench(stored: dict[str, Any], current: dict[str, Any], path: Path | str) -> None:
    """Refuse a calibration from another bench: instrument identities (or simulated ring) differ."""
    if stored.get("reservoir") != current.get("reservoir"):
        raise UserError(
            f"{path} calibrated a {stored.get('reservoir')!r} reservoir, this is a "
            f"{current.get('reservoir')!r} one: recalibrate on this bench"
        )
    a, b = instrument_identities(stored), instrument_identities(current)
    if a != b:
        diff = [
            f"{role}: file {(a or {}).get(role)} vs bench {(b or {}).get(role)}"
            for role in sorted(set(a or {}) | set(b or {}))
            if (a or {}).get(role) != (b or {}).get(role)
        ]
        raise UserError(
            f"{path} comes from another bench (instrument identities differ: "
            f"{'; '.join(diff)}): recalibrate on this bench"
        )
    if stored.get("reservoir") == "simulated" and stored.get("ring_params") != current.get(
        "ring_params"
    ):
        raise UserError(f"{path} calibrated a simulated ring with other parameters: recalibrate")


def load_calibration(path: str | Path) -> Calibration:
    """Load a calibration file written by `labpgt calibrate` (refuses other formats)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"calibration file {path} does not exist")
    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        raise UserError(f"cannot open {path} as HDF5: {exc}") from None
    with h5:
        fmt = h5.attrs.get("format")
        if fmt != FORMAT:
            raise UserError(
                f"{path} is not a calibration this labpgt can read (format {fmt!r}, "
                f"expected {FORMAT!r}): recalibrate with `labpgt calibrate`"
            )
        status, why = calibration_status(h5)
        if status != STATUS_COMPLETE:
            raise UserError(incomplete_message(path, h5, status, why))
        a = h5.attrs
        summary = json.loads(a["summary"])
        op = json.loads(a["operating"])
        ranges = {
            k: (float(v[0]), float(v[1])) for k, v in json.loads(a["encoding_ranges"]).items()
        }
        state = {k: torch.from_numpy(np.asarray(v[...])) for k, v in h5["surrogate"].items()}
        model = _rebuild_surrogate(json.loads(a["surrogate_architecture"]), state)
        ref_feats = torch.from_numpy(h5["reference/features"][...]).to(torch.float64)
        noise_std = torch.from_numpy(h5["noise/feature_std"][...]).to(torch.float64)
        return Calibration(
            path=path,
            version=str(a["labpgt_version"]),
            feature_spec=FeatureSpec(**json.loads(a["feature_spec"])),
            feature_names=list(json.loads(a["feature_names"])),
            frequency_hz=torch.from_numpy(h5["frequency_hz"][...]).to(torch.float64),
            feature_mean=torch.from_numpy(h5["normalisation/mean"][...]).to(torch.float64),
            feature_std=torch.from_numpy(h5["normalisation/std"][...]).to(torch.float64),
            noise_std=noise_std,
            noise_db=float(summary["noise_rms_db"]),
            operating_bias_a=float(op["bias_a"]),
            encoding_ranges=ranges,
            sensitivity_to_noise=float(op["sensitivity_to_noise"]),
            surrogate=model,
            surrogate_validation_db=float(summary["surrogate_validation_db"]),
            surrogate_validation_over_noise=float(summary["surrogate_validation_over_noise"]),
            reference_settings=torch.from_numpy(h5["reference/settings"][...]).to(torch.float64),
            baseline_features=ref_feats.mean(dim=0),
            field_per_ampere_oe_per_a=float(summary["field_per_ampere_oe_per_a"]),
            hysteresis_offset_oe=float(summary["hysteresis_offset_oe"]),
            hysteresis_detected=bool(summary["hysteresis_detected"]),
            mode_spacing_hz=float(summary["mode_spacing_hz"]),
            snapshot=json.loads(a["snapshot"]),
            summary=summary,
            plan=json.loads(a["plan"]),
        )


def incomplete_message(path: Path | str, h5: h5py.File, status: str, why: str) -> str:
    """One line: this calibration file is not complete, how far it got, what to do."""
    done, total = measured_shots(h5)
    how = f"stopped ({why})" if status == STATUS_STOPPED and why else "did not finish"
    if status == STATUS_MEASURING:
        how = "is still being written (or calibrate was killed)"
    return (
        f"{path} is an incomplete calibration: calibrate {how} after {done} of {total} shots, "
        "before the analysis; run labpgt calibrate again"
    )


def _rebuild_surrogate(architecture: dict[str, Any], state: dict[str, torch.Tensor]) -> Any:
    """The stored surrogate: a twin (`calibration.twin`, loaded only for one) or the
    grey-box/MLP (`calibration.surrogate`)."""
    if architecture.get("kind") == "twin":
        from labpgt.calibration.twin import build_twin

        return build_twin(architecture, state)
    return build_surrogate(architecture, state)


def read_reference(path: str | Path) -> dict[str, np.ndarray]:
    """The stored reference shots (settings, comb mask, features, traces) and the floor, dBm."""
    with h5py.File(path, "r") as h5:
        return {
            "settings": h5["reference/settings"][...],
            "comb": h5["reference/comb"][...].astype(bool),
            "features": h5["reference/features"][...],
            "traces_dbm": h5["reference/traces_dbm"][...].astype(np.float64),
            "frequency_hz": h5["frequency_hz"][...],
            "floor_dbm": np.float64(json.loads(h5.attrs["summary"])["noise_floor_dbm"]),
        }
