"""`labpgt sim spectrum`: table of the strongest lines, labelled plot, one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from labpgt.cli.app import app


def test_spectrum_prints_lines_and_writes_a_plot(tmp_path: Path) -> None:
    png = tmp_path / "ring.png"
    result = CliRunner().invoke(
        app,
        ["sim", "spectrum", "--bias-a", "1.8", "--drive-hz", "2.07e9", "--drive-dbm", "-10"]
        + ["--plot", str(png), "--no-noise"],
        terminal_width=160,
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Strongest lines" in out and "frequency (GHz)" in out and "power (dBm)" in out
    assert "f_FMR 2.0" in out and "sweep" in out and "ms" in out
    rows = [
        [cell.strip() for cell in line.split("│")[1:-1]]
        for line in out.splitlines()
        if line.startswith("│")
    ]
    assert len(rows) >= 3
    kinds = [row[1] for row in rows]
    powers = [float(row[4]) for row in rows]
    assert powers == sorted(powers, reverse=True)
    assert kinds[0] == "mode" and -30.0 <= powers[0] <= 0.0  # an auto-oscillation line
    assert "drive" in kinds  # the drive tone, 2.070000 GHz, +0.000 MHz from itself
    drive = rows[kinds.index("drive")]
    assert drive[2] == "2.070000" and float(drive[3]) == 0.0
    assert png.stat().st_size > 10_000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_spectrum_bad_bias_is_one_line_exit_2() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "labpgt", "sim", "spectrum", "--bias-a", "9"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    text = (proc.stdout + proc.stderr).strip()
    assert "Traceback" not in text
    assert len(text.splitlines()) == 1
    assert "--bias-a" in text and "[0, 2.5] A" in text


def test_spectrum_bad_analyzer_and_drive_values_name_the_flag() -> None:
    runner = CliRunner()
    for args, needle in (
        (["--drive-dbm", "40"], "--drive-dbm"),
        (["--rbw-hz", "0.1"], "rbw_hz"),
    ):
        result = runner.invoke(app, ["sim", "spectrum", *args])
        assert result.exit_code != 0
        assert needle in str(result.exception)
