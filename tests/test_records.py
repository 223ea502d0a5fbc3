"""The record schema (labpgt/records.py): one serialisation, records with known fields only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from labpgt.records import (
    CalibrationSummary,
    OperatingRecord,
    Provenance,
    RunMetadata,
    bench_identity,
    instrument_identities,
    to_json,
)


def test_to_json_writes_arrays_tensors_scalars_paths_and_records() -> None:
    value = {
        "tensor": torch.tensor([1.5, 2.0], dtype=torch.float64),
        "array": np.array([[1, 2]], dtype=np.int64),
        "scalar": np.float32(0.5),
        "flag": np.bool_(True),
        "path": Path("/data/run.h5"),
        "meta": RunMetadata(sample="YIG-7"),
    }
    assert json.loads(to_json(value)) == {
        "tensor": [1.5, 2.0],
        "array": [[1, 2]],
        "scalar": 0.5,
        "flag": True,
        "path": "/data/run.h5",
        "meta": {"sample": "YIG-7", "operator": None, "notes": None, "extra": {}},
    }


def test_run_metadata_keeps_its_field_order_and_refuses_unknown_fields() -> None:
    meta = RunMetadata(operator="ana", extra={"cryostat": "K2"})
    # the order of the JSON attribute `metadata` in run and calibration files
    assert list(meta.as_dict()) == ["sample", "operator", "notes", "extra"]
    assert meta.to_json() == (
        '{"sample": null, "operator": "ana", "notes": null, "extra": {"cryostat": "K2"}}'
    )
    with pytest.raises(ValidationError):
        RunMetadata(samples="typo")  # type: ignore[call-arg]


def test_provenance_is_plain_data_a_checkpoint_loads_with_weights_only(tmp_path: Path) -> None:
    snapshot = {
        "reservoir": "simulated",
        "ring_params": {"noise": True},
        "grid": {},
        "features": {},
    }
    record = Provenance(
        git_commit="6283cd1",
        bench=bench_identity(snapshot),
        bench_snapshot=snapshot,
        calibration_sha256=None,
    ).as_dict()
    torch.save({"provenance": record}, tmp_path / "c.pt")
    loaded = torch.load(tmp_path / "c.pt", weights_only=True)["provenance"]
    assert loaded == record
    assert list(loaded) == [
        "labpgt_version",
        "git_commit",
        "bench",
        "bench_snapshot",
        "calibration_sha256",
    ]


def test_bench_identity_of_instruments_is_family_and_idn_not_the_address() -> None:
    def snap(port: int) -> dict:
        role = {"family": "keysight_mxg", "identity": "Keysight,N5183B,MY1,1.0", "port": port}
        return {"reservoir": "instrument", "bench": {"generator": role}, "features": {"bins": 16}}

    assert bench_identity(snap(5025)) == bench_identity(snap(6000))
    assert bench_identity(snap(5025))["generator"] == "keysight_mxg Keysight,N5183B,MY1,1.0"
    assert instrument_identities(snap(5025)) == {"generator": "Keysight,N5183B,MY1,1.0"}
    assert instrument_identities({"reservoir": "simulated"}) is None
    assert bench_identity(None) is None


def test_calibration_records_write_their_fields_in_order_and_as_numbers() -> None:
    op = OperatingRecord(
        bias_a=np.float64(1.8),
        drive_hz=[np.float64(2.0e9), 2.05e9],
        drive_dbm=[-30.0, 0.0],
        sensitivity_to_noise=3.8,
    )
    assert op.to_json() == (
        '{"bias_a": 1.8, "drive_hz": [2000000000.0, 2050000000.0], "drive_dbm": [-30.0, 0.0], '
        '"sensitivity_to_noise": 3.8}'
    )
    fields = list(CalibrationSummary.model_fields)
    assert fields[:3] == [
        "field_per_ampere_oe_per_a",
        "field_per_ampere_std_oe_per_a",
        "field_fit_rms_residual_hz",
    ]
    assert fields[-1] == "stage_instrument_s"
    with pytest.raises(ValidationError):
        CalibrationSummary(shots=1)  # type: ignore[call-arg]
