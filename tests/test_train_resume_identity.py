"""A checkpoint written before `records.BenchIdentity` resumes: its ``provenance.bench`` in
the form labpgt 2aac66a stored (`records.bench_identity` of the simulated ring: reservoir,
ring_params, grid, features) is read and compared as it was."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import torch
from cli_runner import cli_error, tiny_csv

ARGS = shlex.split(
    "--channels 1 --bins 8 --hidden 4 --batch-size 12 --warmup-samples 16 --fast-sim "
    "--method boundary --directions rademacher --probes 1 --seed 5"
)


def old_bench_identity(snapshot: dict) -> dict:
    """The simulated ring's bench identity as labpgt 2aac66a wrote it, written out here."""
    return {k: snapshot.get(k) for k in ("reservoir", "ring_params", "grid", "features")}


def _rewrite_bench(path: Path, bench: dict) -> None:
    state = torch.load(path, weights_only=True)
    state["provenance"]["bench"] = bench
    torch.save(state, path)


def test_a_checkpoint_with_the_bench_stored_before_the_record_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, out = tiny_csv(tmp_path / "tiny.csv"), tmp_path / "run"
    train = ["train", "--data", str(data), "--target", "label", *ARGS, "--out", str(out)]
    code, err = cli_error(capsys, *train, "--epochs", "1")
    assert code == 0, err
    checkpoint = out / "checkpoint.pt"
    provenance = torch.load(checkpoint, weights_only=True)["provenance"]
    old = old_bench_identity(provenance["bench_snapshot"])
    assert old["ring_params"] and old != provenance["bench"]  # another stored form
    other = {**old, "ring_params": {**old["ring_params"], "gyro_hz_per_oe": 1.0}}
    _rewrite_bench(checkpoint, other)
    code, err = cli_error(capsys, *train, "--epochs", "2", "--resume")
    assert code == 2 and "measured on another bench (ring_params.gyro_hz_per_oe" in err, err
    _rewrite_bench(checkpoint, old)
    code, err = cli_error(capsys, *train, "--epochs", "2", "--resume")
    assert code == 0, err
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 2
