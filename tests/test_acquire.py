"""labpgt acquire / show: inputs, the HDF5 run file, kill + resume, Ctrl-C, bad input."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from cli_runner import cli_error
from labpgt.instruments.bench_file import bench_config_from_resources, dump_bench
from typer.testing import CliRunner

from labpgt.acquisition import acquire, grid_inputs, parse_sweep, plan_shots, read_inputs_csv
from labpgt.cli.app import app
from labpgt.embedded import embedded_bench
from labpgt.errors import UserError
from labpgt.features import FeatureSpec
from labpgt.setting_bounds import SettingBounds

LABPGT = [sys.executable, "-m", "labpgt"]
# 400 x 2 = 800 shots: the kill and Ctrl-C tests stop a run after 8-12 shots, and the
# rest must take long enough (~3 s at ~300 shots/s) that the run cannot finish first.
SWEEPS = ["--sweep", "drive_hz=2.0e9:2.3e9:400", "--sweep", "bias_a=1.7,1.9"]
SHOTS = 800


def test_sweeps_form_a_grid_with_defaults():
    inputs = grid_inputs([parse_sweep("bias_a=1.6:2.0:3"), parse_sweep("drive_hz=2.1e9,2.2e9")])
    assert inputs.shape == (6, 3)
    torch.testing.assert_close(inputs[:, 1], torch.full((6,), -10.0, dtype=torch.float64))
    torch.testing.assert_close(inputs[:2, 2], torch.tensor([1.6, 1.6], dtype=torch.float64))
    torch.testing.assert_close(inputs[:2, 0], torch.tensor([2.1e9, 2.2e9], dtype=torch.float64))
    only_freq = grid_inputs([parse_sweep("drive_hz=2.0e9:2.3e9:301")])
    assert only_freq.shape == (301, 3) and (only_freq[:, 2] == 1.8).all()
    with pytest.raises(UserError, match="unknown setting 'current'; valid settings: drive_hz"):
        parse_sweep("current=1:2:3")
    with pytest.raises(UserError, match="count must be a whole number"):
        parse_sweep("bias_a=1:2:2.5")
    with pytest.raises(UserError, match="swept twice"):
        grid_inputs([parse_sweep("bias_a=1,2"), parse_sweep("bias_a=1.5")])


def test_csv_errors_name_line_and_column(tmp_path: Path):
    good = tmp_path / "good.csv"
    good.write_text("drive_hz,bias_a\n2.1e9,1.8\n\n2.2e9,1.9\n")
    inputs = read_inputs_csv(good)
    torch.testing.assert_close(
        inputs, torch.tensor([[2.1e9, -10.0, 1.8], [2.2e9, -10.0, 1.9]], dtype=torch.float64)
    )
    cases = {
        "drive_hz,bias_a\n2.1e9,1.8\n2.2e9,abc\n": r"line 3, column bias_a: 'abc' is not a number",
        "drive_hz,bias_a\n2.1e9\n": r"line 2: 1 values, but the header has 2 columns",
        "drive_hz,gain\n2.1e9,1\n": r"line 1: unknown setting 'gain'; valid settings: drive_hz, "
        r"drive_dbm, bias_a",
        "drive_hz\n2.1e9\n3.1e9\n": r"line 3, column drive_hz: 3.1e\+09 Hz is outside the bench",
    }
    for i, (text, message) in enumerate(cases.items()):
        path = tmp_path / f"bad{i}.csv"
        path.write_text(text)
        with pytest.raises(UserError, match=message):
            read_inputs_csv(path, SettingBounds())


def test_shot_plan_is_bias_first_with_repeats_back_to_back():
    inputs = grid_inputs([parse_sweep("drive_hz=2.2e9,2.1e9"), parse_sweep("bias_a=1.9,1.7")])
    plan = plan_shots(inputs, 2, SettingBounds())
    assert plan.settings[:, 2].tolist() == [1.7] * 4 + [1.9] * 4
    assert plan.settings[:4, 0].tolist() == [2.1e9, 2.1e9, 2.2e9, 2.2e9]
    assert plan.repeat_index.tolist() == [0, 1] * 4
    torch.testing.assert_close(inputs[plan.input_index], plan.settings)
    assert sorted(plan.input_index.tolist()) == [0, 0, 1, 1, 2, 2, 3, 3]


def _reference(path: Path, seed: int) -> None:
    """The same run as the CLI's, uninterrupted, in process."""
    inputs = grid_inputs([parse_sweep(SWEEPS[1]), parse_sweep(SWEEPS[3])])
    with embedded_bench(
        seed=seed,
        noise=False,
        drift=False,
        hysteresis=False,
        keep_traces=True,
        features=FeatureSpec(bins=1),
        handle_signals=False,
    ) as res:
        acquire(res, path, inputs, chunk_shots=16)


def _done(path: Path) -> int:
    try:
        with h5py.File(path, "r", locking=False) as f:
            return int(np.asarray(f["shots/done"][...]).sum())
    except (OSError, KeyError):
        return 0  # not created yet (or still being created)


def _start(out: Path, *extra: str) -> subprocess.Popen:
    cmd = [*LABPGT, "acquire", *SWEEPS, "--seed", "3", "--no-noise", "--chunk", "4", "--out"]
    return subprocess.Popen(
        [*cmd, str(out), *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_for_chunks(proc: subprocess.Popen, out: Path, shots: int) -> None:
    deadline = time.monotonic() + 120
    while _done(out) < shots:
        assert proc.poll() is None, f"acquire ended early: {proc.communicate()}"
        assert time.monotonic() < deadline, "acquire made no progress"
        time.sleep(0.01)


def _datasets(path: Path) -> dict[str, np.ndarray]:
    names = ["inputs", "frequency_hz", "traces_dbm", "shots/settings", "shots/input_index"]
    names += ["shots/repeat_index", "shots/done"]
    with h5py.File(path, "r") as f:
        return {n: f[n][...] for n in names}


def test_killed_run_resumes_to_the_uninterrupted_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    out = tmp_path / "run.h5"
    proc = _start(out)
    _wait_for_chunks(proc, out, 12)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = _datasets(out)  # a killed file opens with plain h5py
    done = partial["shots/done"]
    assert 12 <= done.sum() < done.size
    assert np.isfinite(partial["traces_dbm"][done]).all()
    # Shots not marked done may hold traces written just before the kill (done is set
    # after them); resuming measures them again, which the comparison below checks.
    assert np.isnan(partial["traces_dbm"][~done][-1]).all()  # the last one never came
    # without --resume the existing file is refused, not overwritten
    code, err = cli_error(capsys, "acquire", *SWEEPS, "--out", str(out))
    assert code == 2 and "--resume" in err
    resumed = _start(out, "--resume")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    reference = tmp_path / "reference.h5"
    _reference(reference, seed=3)
    got, want = _datasets(out), _datasets(reference)
    assert got["shots/done"].all() and got["shots/done"].size == SHOTS
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    with h5py.File(out, "r") as f:
        snap = json.loads(f.attrs["snapshot"])
        assert len(json.loads(f.attrs["resumes"])) == 1
    bench = snap["reservoir"]["bench"]
    for role in ("generator", "analyzer", "supply"):
        assert bench[role]["identity"]["model"]
    assert snap["seed"] == 3 and "--no-noise" in snap["command_line"]
    assert snap["labpgt_version"] and bench["limits"]["bias_max_a"] == 2.5
    # labpgt show: summary and heat map
    png = tmp_path / "run.png"
    shown = CliRunner().invoke(app, ["show", str(out), "--plot", str(png)])
    assert shown.exit_code == 0, shown.output
    assert f"{SHOTS} / {SHOTS}" in shown.output
    assert "N5183B" in shown.output and "none" in shown.output
    assert png.stat().st_size > 10_000


def test_ctrl_c_leaves_a_valid_resumable_file(tmp_path: Path):
    out = tmp_path / "run.h5"
    proc = _start(out)
    _wait_for_chunks(proc, out, 8)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "--resume" in err
    with h5py.File(out, "r") as f:
        done = f["shots/done"][...]
        assert 8 <= done.sum() < done.size
        assert np.isfinite(f["traces_dbm"][...][done]).all()
    shown = CliRunner().invoke(app, ["show", str(out)])
    assert shown.exit_code == 0 and "missing shots" in shown.output


def test_out_of_limit_settings_are_refused_before_any_instrument_opens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    # A bench file whose three instruments are sockets we listen on: if acquire opened
    # (or even connected to) any of them before refusing, a connection would be pending.
    listeners = []
    for _ in range(3):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(4)
        sock.setblocking(False)
        listeners.append(sock)
    ports = [s.getsockname()[1] for s in listeners]
    cfg = bench_config_from_resources(
        {
            role: f"TCPIP::127.0.0.1::{port}::SOCKET"
            for role, port in zip(("generator", "analyzer", "supply"), ports, strict=True)
        },
        limits={"bias_max_a": 2.0, "power_max_dbm": -5.0},
    )
    bench = dump_bench(cfg, tmp_path / "bench.toml")
    out = tmp_path / "run.h5"
    csv = tmp_path / "in.csv"
    csv.write_text("drive_dbm\n-10\n-3\n")
    cases = {
        ("--inputs", str(csv)): "line 3, column drive_dbm: -3 dBm is outside the bench limits",
        ("--sweep", "bias_a=1.5:2.5:3"): "bias_a=2.5 A is outside the allowed range [0, 2] A",
        ("--sweep", "x=1"): "unknown setting 'x'; valid settings: drive_hz, drive_dbm, bias_a",
    }
    try:
        for args, message in cases.items():
            code, err = cli_error(
                capsys, "acquire", "--bench", str(bench), *args, "--out", str(out)
            )
            assert code == 2, err
            assert message in err
            assert not out.exists()
        for sock in listeners:
            with pytest.raises(BlockingIOError):
                sock.accept()  # nobody connected: no instrument was opened
    finally:
        for sock in listeners:
            sock.close()
    # the same refusal on the embedded bench (default limits: drive_dbm <= 0 dBm)
    csv.write_text("drive_dbm\n-10\n3\n")
    code, err = cli_error(capsys, "acquire", "--inputs", str(csv), "--out", str(out))
    assert code == 2 and "line 3, column drive_dbm" in err and not out.exists()
