"""A run file written before `records.BenchIdentity` resumes: its stored bench identity (the
form labpgt 2aac66a wrote, `tests/test_records.py::OLD_RUN_IDENTITY`) is read and compared as
it was, on the embedded virtual bench over loopback."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import pytest
from cli_runner import cli_error
from test_records import OLD_RUN_IDENTITY

SMALL = ["--sweep", "drive_hz=2.0e9:2.3e9:4", "--no-noise", "--chunk", "2"]


def test_a_run_file_with_the_identity_stored_before_the_record_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run.h5"
    code, err = cli_error(capsys, "acquire", *SMALL, "--seed", "3", "--out", str(out))
    assert code == 0, err
    with h5py.File(out, "r+") as f:  # the file as the code at 2aac66a left it
        snapshot = json.loads(f.attrs["snapshot"])
        assert snapshot["identity"]["idn"] == OLD_RUN_IDENTITY["idn"]  # the same bench
        snapshot["identity"] = OLD_RUN_IDENTITY
        f.attrs["snapshot"] = json.dumps(snapshot)
    before = out.read_bytes()
    code, err = cli_error(
        capsys, "acquire", "--resume", "--no-noise", "--seed", "4", "--out", str(out)
    )
    assert code == 2 and "recorded on another bench (sim differ)" in err, err
    assert "recorded: embedded virtual bench; seed 3" in err
    assert out.read_bytes() == before
    code, err = cli_error(
        capsys, "acquire", "--resume", "--no-noise", "--seed", "3", "--out", str(out)
    )
    assert code == 0, err
    with h5py.File(out, "r") as f:
        resumes = json.loads(f.attrs["resumes"])
    assert len(resumes) == 1 and "bench_change" not in resumes[0]
    assert resumes[0]["bench_identity"]["sim"] == {"seed": 3, "noise": False}
