"""docs/ holds every document the repository cites, and docs/ speaks of the project only."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]
SOURCES = ["README.md", "docs", "labpgt", "calibration", "sim", "instruments", "tests"]


def _texts() -> list[tuple[Path, str]]:
    out = []
    for name in SOURCES:
        base = ROOT / name
        files = [base] if base.is_file() else [*base.rglob("*.py"), *base.rglob("*.md")]
        out += [(f, f.read_text(encoding="utf-8")) for f in files]
    return out


def test_every_cited_document_is_in_docs():
    cited: dict[str, list[str]] = {}
    for path, text in _texts():
        for ref in re.findall(r"\b(?:docs/)?([A-Za-z0-9_-]+\.md)\b", text):
            cited.setdefault(ref, []).append(str(path.relative_to(ROOT)))
    missing = {
        ref: where
        for ref, where in cited.items()
        if not (ROOT / "docs" / ref).is_file() and not (ROOT / ref).is_file()
    }
    assert missing == {}


def test_performance_figures_are_dated_by_commit_not_by_who_measured():
    text = (ROOT / "docs" / "performance.md").read_text(encoding="utf-8")
    assert not re.search(r"\b(session|helper)s?\b", text, flags=re.I)
    assert re.search(r"\b[0-9a-f]{7}\b", text) and "2026-" in text
