"""One top-level name: instruments/, sim/ and calibration/ install as labpgt.* subpackages."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"labpgt": "labpgt", "instruments": "labpgt.instruments", "sim": "labpgt.sim"}
FOLDERS["calibration"] = "labpgt.calibration"


def _declared() -> tuple[dict[str, str], list[str]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return config["package-dir"], config["packages"]


def test_every_package_folder_is_declared_under_labpgt() -> None:
    package_dir, packages = _declared()
    assert package_dir == {name: folder for folder, name in FOLDERS.items()}
    found = []
    for folder, name in FOLDERS.items():
        for init in sorted((ROOT / folder).rglob("__init__.py")):
            rel = init.parent.relative_to(ROOT / folder).parts
            found.append(".".join((name, *rel)))
    assert sorted(found) == sorted(packages)


def test_a_users_own_modules_do_not_shadow_ours(tmp_path: Path) -> None:
    # A user's project with its own instruments.py, sim.py and calibration.py.
    for name in ("instruments", "sim", "calibration"):
        (tmp_path / f"{name}.py").write_text(f"MINE = {name!r}\n")
    script = (
        "import instruments, sim, calibration\n"
        "assert (instruments.MINE, sim.MINE, calibration.MINE) == "
        "('instruments', 'sim', 'calibration')\n"
        "import labpgt.instruments.bench, labpgt.sim.ring, labpgt.calibration\n"
        "from labpgt.sim.virtual import VirtualBench\n"
        "print(labpgt.sim.ring.__name__, labpgt.instruments.bench.__name__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["labpgt.sim.ring", "labpgt.instruments.bench"]


def test_the_wheel_holds_exactly_one_top_level_package(tmp_path: Path) -> None:
    # What `pip install .` copies into site-packages is the wheel's content. Built from a
    # copy, so the build folder setuptools leaves behind is not in the repository.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", *FOLDERS):
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        ignore = {"ignore": shutil.ignore_patterns("__pycache__")} if (ROOT / name).is_dir() else {}
        copy(ROOT / name, source / name, **ignore)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
        + ["--wheel-dir", str(tmp_path), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
        cwd=tmp_path,
    )
    (wheel,) = tmp_path.glob("labpgt-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"labpgt"}
    for module in ("instruments/bench.py", "sim/ring.py", "sim/virtual/virtual_bench.py"):
        assert f"labpgt/{module}" in names
    assert "labpgt/calibration/store.py" in names
