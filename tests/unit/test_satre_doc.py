"""docs/satre.md stays honest: every test it cites exists, and every row cites one."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "satre.md"
CITATION = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {n.name for n in ast.walk(tree)
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name.startswith("test_")}


def test_every_cited_test_exists() -> None:
    cited = CITATION.findall(DOC.read_text(encoding="utf-8"))
    assert cited, "docs/satre.md cites no test"
    missing = [f"{f}::{t}" for f, t in cited
               if not (ROOT / f).is_file() or t not in _tests_in(ROOT / f)]
    assert not missing, f"docs/satre.md cites tests that do not exist: {missing}"


def test_every_scored_row_cites_a_test() -> None:
    rows = [line for line in DOC.read_text(encoding="utf-8").splitlines()
            if re.match(r"^\| \d+\.\d+\.\d+", line)]
    assert rows
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[3] in ("0", "1", "2"), row
        if cells[3] != "0":
            assert CITATION.search(cells[4]), f"a scored row cites no test: {row[:80]}"
