"""docs/reliability.md names a test for every case: each of those tests must exist (the table cannot rot)."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reliability.md"


def cited() -> list[tuple[str, str]]:
    """(test file, test name) for every `file.py::name` in the doc; `...::name` means the row's last file."""
    out, last = [], None
    for line in DOC.read_text(encoding="utf-8").splitlines():
        for file, name in re.findall(r"`((?:[\w/]+\.py)|\.\.\.)?::(\w+)", line):
            file = last if file in ("", "...") else file
            last = file
            out.append((file, name))
    return out


def test_every_test_the_reliability_table_names_exists():
    refs = cited()
    assert len(refs) >= 60
    missing = []
    for file, name in refs:
        path = ROOT / "tests" / file if not file.startswith("yoco_cli/") else ROOT / file
        text = path.read_text(encoding="utf-8") if path.is_file() else ""
        if not re.search(rf"^\s*(def|class) {name}\b", text, re.MULTILINE):
            missing.append(f"{file}::{name}")
    assert not missing, missing


def test_every_reliability_test_is_in_the_table():
    named = {name for _, name in cited()}
    tests = {m for f in (ROOT / "tests").glob("test_reliability_*.py") if f.name != Path(__file__).name
             for m in re.findall(r"^def (test_\w+)", f.read_text(encoding="utf-8"), re.MULTILINE)}
    assert tests - named == set(), sorted(tests - named)
