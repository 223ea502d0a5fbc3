"""Every script in examples/ runs (in its short mode) and does what it says."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from labpgt.cli.app import main
from labpgt.storage import RunFile

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _run(*args: str, cwd: Path) -> str:
    # TMPDIR: the run directories the scripts create by default land in the test's folder.
    env = {**os.environ, "COLUMNS": "200", "TMPDIR": str(cwd)}
    run = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout


def test_minimal_script_is_short_and_matches_the_cli(tmp_path: Path) -> None:
    text = (EXAMPLES / "minimal.py").read_text()
    code = [
        line
        for line in text.split('"""', 2)[2].splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    assert len(code) <= 10, code
    imports = [line for line in code if re.match(r"\s*(import|from)\s+labpgt", line)]
    assert len(imports) <= 3, imports
    out = _run(str(EXAMPLES / "minimal.py"), cwd=tmp_path)
    acc = float(re.search(r"test accuracy ([0-9.]+)", out).group(1))
    assert "['setosa', 'virginica']" in out
    main(
        ["train", "--task", "iris", "--fast-sim", "--epochs", "1", "--seed", "0"]
        + ["--out", str(tmp_path / "cli")]
    )
    cli = json.loads((tmp_path / "cli" / "summary.json").read_text())
    assert acc == round(cli["selected"]["test_acc"], 4)


def test_custom_model_example_trains_with_torch_optim(tmp_path: Path) -> None:
    out = _run(str(EXAMPLES / "custom_model.py"), "--short", cwd=tmp_path)
    losses = [float(v) for v in re.findall(r"loss ([0-9.]+)", out)]
    assert len(losses) == 4 and losses[-1] < losses[0], out
    queries = [int(v) for v in re.findall(r"([0-9]+) queries", out)]
    assert queries == sorted(queries) and queries[0] > 0
    assert float(re.search(r"samples: ([0-9.]+)", out).group(1)) > 1 / 3  # above chance


def test_own_dataset_example_trains_and_classifies_in_its_units(tmp_path: Path) -> None:
    out = _run(
        str(EXAMPLES / "own_dataset.py"), "--short", "--out", str(tmp_path / "run"), cwd=tmp_path
    )
    assert "classes: ['blob', 'lower', 'upper']" in out
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert f"test accuracy {summary['selected']['test_acc']:.3f}" in out
    assert summary["final"]["queries"] <= 1500


def test_read_acquire_example_reads_what_the_acquire_command_wrote(tmp_path: Path) -> None:
    run_h5 = tmp_path / "run.h5"
    main(["acquire", "--out", str(run_h5), "--sweep", "drive_hz=2.0e9:2.3e9:3", "--repeats", "2"])
    out = _run(str(EXAMPLES / "read_acquire.py"), str(run_h5), cwd=tmp_path)
    assert out.startswith("6 shots × 1001 points")
    assert "generator: Keysight Technologies N5183B" in out
    with RunFile.open(run_h5) as run:
        traces = run.traces().numpy()
        index = run.input_index.numpy()
        f_hz = run.frequency_hz.numpy()
    for i in range(3):
        mean = traces[index == i].mean(axis=0)
        peak = int(np.argmax(mean))
        assert f"input {i}: " in out
        assert f"peak {mean[peak]:.2f} dBm at {f_hz[peak]:.6g} Hz" in out
