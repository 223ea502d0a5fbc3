"""Driver plugins: the example package installs, registers 'acme_sg' through the
'labpgt.drivers' entry point group, and drives a virtual instrument; a plugin that
fails to import is named and leaves the other drivers working."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "driver_plugin"

SCRIPT = r"""
import json, sys
from labpgt.instruments.bench import Bench, bench_config_from_resources
from labpgt.instruments.instrument_errors import BenchConfigError
from labpgt.instruments import plugins
from labpgt.sim.virtual import VirtualBench

out = {}
with VirtualBench(generator_family="rs_sgs") as vb:
    cfg = bench_config_from_resources(vb.resources, families={"generator": "acme_sg"})
    with Bench.open(cfg, handle_signals=False) as bench:
        bench.generator.frequency_hz = 2.2e9
        out["class"] = type(bench.generator).__name__
        out["frequency_hz"] = bench.generator.frequency_hz
        out["family"] = bench.snapshot()["generator"]["family"]
        out["identity"] = bench.generator.identify()
    try:
        bench_config_from_resources(vb.resources, families={"generator": "broken_sg"})
    except BenchConfigError as exc:
        out["broken"] = str(exc)
    try:
        bench_config_from_resources(vb.resources, families={"supply": "nosuch"})
    except BenchConfigError as exc:
        out["unknown"] = str(exc)
out["plugins"] = plugins.PLUGIN_FAMILIES
print(json.dumps(out))
"""


def _broken_plugin(where: Path) -> Path:
    """A distribution whose 'labpgt.drivers' entry point names a module that is not there."""
    info = where / "labpgt_broken_driver-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: labpgt-broken-driver\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text(
        "[labpgt.drivers]\nbroken_sg = labpgt_broken_missing.driver:Nothing\n"
    )
    return where


@pytest.fixture
def installed_example(tmp_path: Path):
    src = tmp_path / "driver_plugin"
    shutil.copytree(EXAMPLE, src)  # build in a copy: no build/ or egg-info in the repository
    pip = [sys.executable, "-m", "pip"]
    subprocess.run(
        [*pip, "install", "--quiet", "--no-deps", "--no-build-isolation", str(src)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    try:
        yield
    finally:
        subprocess.run(
            [*pip, "uninstall", "--yes", "--quiet", "labpgt-acme-driver"],
            check=True,
            capture_output=True,
            timeout=120,
        )


def test_example_plugin_drives_a_virtual_generator(installed_example, tmp_path: Path) -> None:
    extra = _broken_plugin(tmp_path / "broken")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(extra), os.environ.get("PYTHONPATH", "")]),
    }
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=120
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["class"] == "AcmeSG6" and out["family"] == "acme_sg"
    assert out["frequency_hz"] == pytest.approx(2.2e9)
    assert out["identity"]["vendor"] and "/" not in out["identity"]["serial"]
    assert out["plugins"]["acme_sg"].startswith("labpgt-acme-driver")
    assert "generator.family: driver plugin 'broken_sg'" in out["broken"]
    assert "failed to import: ModuleNotFoundError" in out["broken"]
    assert "unknown supply family 'nosuch'; known: kepco_bop, keysight_e36xx" in out["unknown"]


def test_without_the_plugin_the_family_is_unknown() -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            "from labpgt.instruments.plugins import families; print(sorted(families('generator')))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert "acme_sg" not in run.stdout and "keysight_mxg" in run.stdout
