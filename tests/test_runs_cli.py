"""`labpgt runs DIR`: the catalogue of run files, its JSON, and a status (not a traceback) for
every file it cannot read; `labpgt show` says the same in one line."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest
from cli_runner import run_cli
from rich.console import Console

from labpgt.catalog import inspect_run
from labpgt.cli.app import main
from labpgt.cli.commands import runs as runs_command

SWEEPS = ["--sweep", "drive_hz=2.05e9:2.25e9:10", "--sweep", "bias_a=1.7,1.9"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder as a lab fills it: runs done and stopped, a calibration, and debris."""
    where = tmp_path_factory.mktemp("runs")
    for args in (
        ["acquire", *SWEEPS, "--out", str(where / "done.h5"), "--sample", "ring A"],
        ["calibrate", "--out", str(where / "calib.h5"), "--grid", "small"]
        + ["--surrogate-steps", "10", "--no-plots", "--no-noise"],
    ):
        try:
            main(args)
        except SystemExit as exc:
            assert not exc.code, args
    # a run stopped half way: the real acquire, with its shot list cut by Ctrl-C
    from labpgt.acquisition import acquire, grid_inputs, parse_sweep
    from labpgt.embedded import embedded_bench
    from labpgt.features import FeatureSpec

    def stop(done: int, total: int, instrument_s: float) -> None:
        if done >= 8:
            raise KeyboardInterrupt

    inputs = grid_inputs([parse_sweep("drive_hz=2.05e9:2.25e9:20")])
    with (
        embedded_bench(seed=2, features=FeatureSpec(bins=1)) as reservoir,
        pytest.raises(KeyboardInterrupt),
    ):
        acquire(reservoir, where / "stopped.h5", inputs, chunk_shots=4, progress=stop)
    raw = (where / "done.h5").read_bytes()
    (where / "half.h5").write_bytes(raw[: len(raw) // 3])
    (where / "notes.h5").write_text("not an HDF5 file\n")
    (where / "empty.h5").write_bytes(b"")
    with h5py.File(where / "foreign.h5", "w") as f:
        f["x"] = [1.0, 2.0]
    with h5py.File(where / "future.h5", "w") as f:
        f.attrs["format"] = "labpgt-acquire/7"
    (where / "readme.txt").write_text("not listed: not an HDF5 name")
    return where


EXPECTED = {
    "done.h5": ("complete", "acquire", True),
    "calib.h5": ("complete", "calibrate", True),
    "stopped.h5": ("incomplete", "acquire", True),
    "half.h5": ("half-written", None, False),
    "notes.h5": ("not HDF5", None, False),
    "empty.h5": ("empty", None, False),
    "foreign.h5": ("not labpgt", None, False),
    "future.h5": ("other version", "acquire", False),
}


def test_json_lists_every_file_with_its_status(folder: Path, capsys: pytest.CaptureFixture):
    code, out, err = run_cli(capsys, "runs", str(folder), "--json")
    assert code == 0, err
    rows = {Path(r["path"]).name: r for r in json.loads(out)}
    assert set(rows) == set(EXPECTED)
    for name, (status, command, ok) in EXPECTED.items():
        row = rows[name]
        assert (row["status"], row["command"], row["ok"]) == (status, command, ok), row
    assert rows["done.h5"]["shots_done"] == rows["done.h5"]["shots_planned"] == 20
    assert rows["done.h5"]["sample"] == "ring A"
    assert rows["done.h5"]["bench"] == "embedded (seed 0)"
    assert rows["stopped.h5"]["shots_done"] == 8 and rows["stopped.h5"]["shots_planned"] == 20
    assert rows["calib.h5"]["shots_done"] > 0
    assert "truncated" in rows["half.h5"]["detail"]
    assert "labpgt-acquire/7" in rows["future.h5"]["detail"]
    assert all(r["date_utc"] for r in rows.values() if r["ok"])


def test_table_fits_80_columns_without_cutting_a_word(
    folder: Path, monkeypatch: pytest.MonkeyPatch
):
    screen = io.StringIO()
    monkeypatch.setattr(runs_command, "console", Console(file=screen, width=80))
    runs_command.runs_command(folder, False, False)
    text = screen.getvalue()
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "date (UTC)" in text and "status" in text  # a table, not the vertical fallback
    words = " ".join(text.split())
    for name, (status, _, _) in EXPECTED.items():
        assert name in words and status in words, name


def test_narrow_terminal_gets_one_record_per_block(folder: Path, monkeypatch: pytest.MonkeyPatch):
    screen = io.StringIO()
    monkeypatch.setattr(runs_command, "console", Console(file=screen, width=40))
    runs_command.runs_command(folder, False, False)
    text = screen.getvalue()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 40
    assert "status      half-written" in text


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("half.h5", "half-written or truncated"),
        ("notes.h5", "is not an HDF5 file"),
        ("empty.h5", "is empty (0 bytes)"),
        ("foreign.h5", "is not a labpgt acquisition file"),
        ("future.h5", "written by another labpgt version"),
        ("calib.h5", "is a calibration file, not a labpgt acquisition file"),
    ],
)
def test_show_says_what_is_wrong_in_one_line(
    folder: Path, name: str, words: str, capsys: pytest.CaptureFixture
):
    code, _, err = run_cli(capsys, "show", str(folder / name), "--no-plot")
    assert code == 2 and words in err and "Traceback" not in err
    assert err.startswith("error:") and err.count("error:") == 1


def test_bad_folder_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture):
    code, _, err = run_cli(capsys, "runs", str(tmp_path / "nowhere"))
    assert code == 2 and "does not exist" in err
    (tmp_path / "f.h5").write_bytes(b"x")
    code, _, err = run_cli(capsys, "runs", str(tmp_path / "f.h5"))
    assert code == 2 and "is not a folder" in err
    code, out, _ = run_cli(capsys, "runs", str(tmp_path))
    assert code == 0 and "not HDF5" in out


def test_a_run_being_written_is_listed_as_such(tmp_path: Path):
    out = tmp_path / "live.h5"
    cmd = [sys.executable, "-m", "labpgt", "acquire", "--sweep", "drive_hz=2.0e9:2.3e9:400"]
    cmd += ["--sweep", "bias_a=1.7,1.9", "--no-noise", "--chunk", "4", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        statuses: set[str] = set()
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if out.exists():
                entry = inspect_run(out)
                statuses.add(entry.status)
                assert entry.status in ("being written", "complete"), entry  # never damaged
                if entry.status == "being written" and entry.shots_done:
                    assert entry.shots_done < entry.shots_planned and entry.ok
                    break
            time.sleep(0.02)
        assert "being written" in statuses, statuses
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=60)
