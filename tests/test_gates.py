"""Code gates run by pytest, so CI runs them: ruff and mypy on src/, and the import contracts.

The rule sets live in pyproject.toml (``[tool.ruff]``, ``[tool.mypy]``, ``[tool.importlinter]``): ruff's
default rules plus import sorting; pure layers (site model, topology, rendering) import no
side-effect code; no import cycle between MLab's top-level packages. The tools come with
the ``test`` extra (scripts/setup.sh installs it).
"""

from __future__ import annotations

import shutil
import subprocess
import tomllib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = BIN / name
    found = str(path) if path.exists() else shutil.which(name)
    assert found, f"{name} is missing: install the test extra (pip install -e '.[test]')"
    return found


def test_ruff_clean_on_src() -> None:
    proc = subprocess.run([_tool("ruff"), "check", "--no-cache", "src/"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_import_contracts_kept() -> None:
    proc = subprocess.run([_tool("lint-imports"), "--no-cache"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    # Every contract of pyproject.toml ran and was kept (none silently dropped).
    with open(ROOT / "pyproject.toml", "rb") as fh:
        count = len(tomllib.load(fh)["tool"]["importlinter"]["contracts"])
    assert count == 5 and f"Contracts: {count} kept, 0 broken." in out, out


def test_mypy_clean_on_src() -> None:
    # [tool.mypy] in pyproject.toml (pydantic plugin); the cache goes to a temporary place so
    # a clean clone and a developer's checkout give the same answer.
    import tempfile

    with tempfile.TemporaryDirectory() as cache:
        proc = subprocess.run([_tool("mypy"), "--cache-dir", cache, "src/"], cwd=ROOT,
                              capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
