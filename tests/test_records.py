"""The record schema (labpgt/records.py): one serialisation, records with known fields only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from labpgt.errors import UserError
from labpgt.records import (
    BenchIdentity,
    CalibrationSummary,
    OperatingRecord,
    Provenance,
    RunMetadata,
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
        bench=BenchIdentity.of_snapshot(snapshot),
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
        role = {"family": "keysight_mxg", "identity": "Keysight,N5183B,MY1,1.0", "resource": port}
        return {"reservoir": "instrument", "bench": {"generator": role}, "features": {"bins": 16}}

    a, b = BenchIdentity.of_snapshot(snap(5025)), BenchIdentity.of_snapshot(snap(6000))
    assert a.checkpoint_view() == b.checkpoint_view()  # a training resumes on new ports
    assert a.resume_differences(b) == ["resources"]  # an acquisition does not
    assert a.idn == {"generator": "Keysight,N5183B,MY1,1.0"}
    assert a.families == {"generator": "keysight_mxg"}
    assert instrument_identities(snap(5025)) == {"generator": "Keysight,N5183B,MY1,1.0"}
    assert instrument_identities({"reservoir": "simulated"}) is None
    assert BenchIdentity.read(None) is None


# The embedded bench (seed 3, no noise) as labpgt 2aac66a stored it, written out literally:
# a checkpoint's ``provenance.bench`` (records.bench_identity: one "<family> <*IDN? dict>"
# per role) and a run file's ``identity`` (acquisition.resume_identity).
FEATURES = {"kind": "kernel", "bins": 1, "kernel_width": 0.5, "start_hz": None, "stop_hz": None}
OLD_CHECKPOINT_BENCH = {
    "reservoir": "instrument",
    "generator": "keysight_mxg {'vendor': 'Keysight Technologies', 'model': 'N5183B', "
    "'serial': 'MY00000001', 'firmware': 'B.01.80'}",
    "analyzer": "keysight_x {'vendor': 'Keysight Technologies', 'model': 'N9020A', "
    "'serial': 'MY00000002', 'firmware': 'A.26.09'}",
    "supply": "kepco_bop {'vendor': 'KEPCO', 'model': 'BOP 20-10M 08-11-2020', "
    "'serial': 'E0000001', 'firmware': '1.61'}",
    "features": {**FEATURES, "peaks": 4},
}
OLD_RUN_IDENTITY = {
    "bench": "embedded virtual bench",
    "sim": {"seed": 3, "noise": False},
    "calibration_sha256": None,
    "idn": {
        "generator": "Keysight Technologies,N5183B,MY00000001,B.01.80",
        "analyzer": "Keysight Technologies,N9020A,MY00000002,A.26.09",
        "supply": "KEPCO,BOP 20-10M 08-11-2020,E0000001,1.61",
    },
    "resources": {"generator": "embedded", "analyzer": "embedded", "supply": "embedded"},
    "families": {"generator": "keysight_mxg", "analyzer": "keysight_x", "supply": "kepco_bop"},
}


def embedded_snapshot(serial: str = "MY00000001") -> dict:
    """An embedded bench's reservoir snapshot (the parts an identity reads)."""

    def role(family: str, vendor: str, model: str, serial: str, firmware: str, port: int) -> dict:
        identity = {"vendor": vendor, "model": model, "serial": serial, "firmware": firmware}
        return {"family": family, "identity": identity, "resource": f"TCPIP::127.0.0.1::{port}"}

    bench = {
        "generator": role("keysight_mxg", "Keysight Technologies", "N5183B", serial, "B.01.80", 1),
        "analyzer": role(
            "keysight_x", "Keysight Technologies", "N9020A", "MY00000002", "A.26.09", 2
        ),
        "supply": role("kepco_bop", "KEPCO", "BOP 20-10M 08-11-2020", "E0000001", "1.61", 3),
    }
    return {"reservoir": "instrument", "bench": bench, "features": {**FEATURES, "peaks": 4}}


def test_a_checkpoint_bench_stored_before_the_record_is_the_same_bench() -> None:
    from labpgt.training.checkpoint import check_same_run

    def saved(bench: dict) -> dict:
        return {"provenance": {"labpgt_version": "1", "bench": bench, "calibration_sha256": None}}

    now = BenchIdentity.of_snapshot(embedded_snapshot()).as_dict()
    old = BenchIdentity.read(OLD_CHECKPOINT_BENCH)
    assert old is not None and old.checkpoint_view() == BenchIdentity.read(now).checkpoint_view()
    check_same_run(Path("c.pt"), saved(OLD_CHECKPOINT_BENCH), saved(now), action="--resume")
    other = BenchIdentity.of_snapshot(embedded_snapshot(serial="MY99")).as_dict()
    with pytest.raises(UserError, match=r"another bench \(idn.generator: .*MY00000001.*MY99"):
        check_same_run(Path("c.pt"), saved(OLD_CHECKPOINT_BENCH), saved(other), action="--resume")


def test_a_run_identity_stored_before_the_record_is_compared_as_it_was() -> None:
    def now(seed: int) -> BenchIdentity:
        return BenchIdentity.of_snapshot(
            embedded_snapshot(),
            bench="embedded virtual bench",
            embedded={"seed": seed, "noise": False},
        )

    old = BenchIdentity.read(OLD_RUN_IDENTITY)
    assert old is not None
    assert old.resume_differences(now(3)) == []
    assert old.resume_differences(now(4)) == ["sim"]
    assert old.describe().startswith("embedded virtual bench; seed 3, noise False; generator")
    # before the bench opens, what it does not know yet is not compared
    assert old.resume_differences(BenchIdentity(sim={"seed": 3, "noise": False})) == []


def test_calibration_records_write_their_fields_in_order_and_as_numbers() -> None:
    op = OperatingRecord(
        bias_a=np.float64(1.8),
        drive_hz=[np.float64(2.0e9), 2.05e9],
        drive_dbm=[-30.0, 0.0],
        sensitivity_to_noise=3.8,
        window="calm",
    )
    assert op.to_json() == (
        '{"bias_a": 1.8, "drive_hz": [2000000000.0, 2050000000.0], "drive_dbm": [-30.0, 0.0], '
        '"sensitivity_to_noise": 3.8, "window": "calm"}'
    )
    # a file written before the window was recorded still reads
    assert (
        OperatingRecord.model_validate_json(
            '{"bias_a": 1.8, "drive_hz": [2.0e9, 2.05e9], "drive_dbm": [-30.0, 0.0], '
            '"sensitivity_to_noise": 3.8}'
        ).window
        is None
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
