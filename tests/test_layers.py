"""The layers point one way: the import-linter contracts of pyproject.toml hold, and no
module or package imports its way back into itself.

labpgt installs instruments/, sim/ and calibration/ as subpackages (package-dir in
pyproject.toml), which import-linter cannot see in the source tree: the test lays out the
installed package as symlinks in a temporary folder and runs ``lint-imports`` there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = {"instruments": "instruments", "sim": "sim", "calibration": "calibration"}


def _installed_view(tmp_path: Path, extra: dict[str, str] | None = None) -> Path:
    """tmp_path/labpgt: the package as installed (labpgt/ plus the mapped folders)."""
    view = tmp_path / "labpgt"
    view.mkdir()
    for entry in (ROOT / "labpgt").iterdir():
        if entry.name != "__pycache__" and entry.name not in (extra or {}):
            (view / entry.name).symlink_to(entry)
    for name, folder in SUBPACKAGES.items():
        (view / name).symlink_to(ROOT / folder)
    for name, text in (extra or {}).items():
        (view / name).write_text(text)
    return tmp_path


def _lint(tmp_path: Path, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    view = _installed_view(tmp_path, extra)
    lint = Path(sys.executable).with_name("lint-imports")
    return subprocess.run(
        [str(lint), str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=view,
        env={**os.environ, "PYTHONPATH": str(view)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_import_contracts_hold(tmp_path: Path) -> None:
    result = _lint(tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_contracts_catch_an_upward_import(tmp_path: Path) -> None:
    """The check can fail: core reaching up into the CLI breaks the layers contract."""
    storage = (ROOT / "labpgt" / "storage.py").read_text()
    upward = storage + "\n\ndef _upward():\n    from labpgt.cli import app  # noqa\n"
    result = _lint(tmp_path, {"storage.py": upward})
    assert result.returncode != 0
    assert "labpgt.storage -> labpgt.cli" in result.stdout


GRAPH = """
import json, sys, grimp
graph = grimp.build_graph("labpgt", include_external_packages=False)
print(json.dumps({m: sorted(graph.find_modules_directly_imported_by(m)) for m in graph.modules}))
"""


def _packages() -> dict[str, str]:
    """Module tail -> package: a subpackage is one package; the top-level modules of one
    layer of the contract form one package (the layer's first name)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    layers = config["tool"]["importlinter"]["contracts"][0]["layers"]
    out = {}
    for layer in layers:
        names = [n.strip() for n in layer.replace("|", ":").split(":")]
        for name in names:
            out[name] = (
                name if (ROOT / "labpgt" / name).is_dir() or name in SUBPACKAGES else names[0]
            )
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in list(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles_between_modules_or_packages(tmp_path: Path) -> None:
    view = _installed_view(tmp_path)
    out = subprocess.run(
        [sys.executable, "-c", GRAPH],
        cwd=view,
        env={**os.environ, "PYTHONPATH": str(view)},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    modules = {k: set(v) for k, v in json.loads(out.stdout).items()}
    # the package's own __init__ re-exports the API lazily; it belongs to no layer
    modules = {k: v - {"labpgt"} for k, v in modules.items() if k != "labpgt"}
    assert _cycles(modules) == []
    packages = _packages()

    def package(module: str) -> str:
        return packages[module.split(".")[1]]

    between: dict[str, set[str]] = {}
    for module, targets in modules.items():
        for target in targets:
            if package(module) != package(target):
                between.setdefault(package(module), set()).add(package(target))
    assert _cycles(between) == []
    assert between["training"] >= {"calibration"}  # the graph is the real one, not empty


# -- rooms named by their job ---------------------------------------------------------------

SOURCE_FOLDERS = ("labpgt", *SUBPACKAGES.values())
MAX_FUNCTION_LINES = 60
"""A longer function needs its reason in a comment on the line above its ``def``,
starting ``# long:``."""


def _sources() -> list[Path]:
    return sorted(p for folder in SOURCE_FOLDERS for p in (ROOT / folder).rglob("*.py"))


def test_no_two_modules_or_classes_share_a_name() -> None:
    import ast
    from collections import defaultdict

    modules: dict[str, list[str]] = defaultdict(list)
    classes: dict[str, list[str]] = defaultdict(list)
    for path in _sources():
        where = str(path.relative_to(ROOT))
        if path.name not in ("__init__.py", "__main__.py"):
            modules[path.name].append(where)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                classes[node.name].append(f"{where}:{node.lineno}")
    assert {n: w for n, w in modules.items() if len(w) > 1} == {}
    assert {n: w for n, w in classes.items() if len(w) > 1} == {}


def test_long_functions_say_why() -> None:
    import ast

    unexplained = []
    for path in _sources():
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            length = node.end_lineno - node.lineno + 1
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            reason = lines[first - 2].strip() if first >= 2 else ""
            if length > MAX_FUNCTION_LINES and not reason.startswith("# long:"):
                unexplained.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} {length}")
    assert unexplained == []
