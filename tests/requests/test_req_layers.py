"""Layer contract: the request rules and formatting are pure.

``mlab.requests.model`` (state machine, permissions, input checks) and
``mlab.requests.formats`` (CLI output) decide and format only; storage, HTTP, processes and
files live in the other modules. Checked on the import statements.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "src" / "mlab" / "requests"
FORBIDDEN = ("subprocess", "socket", "sqlite3", "httpx", "os", "shutil", "starlette",
             "mlab.podman", "mlab.requests.store", "mlab.requests.client")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("name", ["model.py", "formats.py"])
def test_pure_modules(name: str) -> None:
    bad = {i for i in _imports(PKG / name) for f in FORBIDDEN if i == f or i.startswith(f + ".")}
    assert not bad, f"mlab/requests/{name} must stay pure; it imports {sorted(bad)}"
