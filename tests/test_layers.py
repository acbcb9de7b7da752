"""Layer contract: rendering is pure.

`mlab.render` turns a site into plain dicts, `mlab.site_docs` the site model into its
reference and `mlab.podman.translate` rendered objects into podman's plan; none may import
code with side effects (subprocess, sockets, HTTP clients, podman or kubectl wrappers). Checked on the source's
import statements, so a violation fails here before it reaches a reviewer.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "mlab"
FORBIDDEN = ("subprocess", "socket", "httpx", "requests", "mlab.deploy", "mlab.podman", "mlab.secrets")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _pure_files() -> list[Path]:
    return sorted((SRC / "render").glob("**/*.py")) + [
        *sorted((SRC / "site").glob("*.py")), SRC / "site_docs.py",
        SRC / "podman" / "translate.py"]


@pytest.mark.parametrize("path", _pure_files(), ids=lambda p: str(p.relative_to(SRC)))
def test_render_is_pure(path: Path) -> None:
    bad = {
        name
        for name in _imports(path)
        for forbidden in FORBIDDEN
        if name == forbidden or name.startswith(forbidden + ".")
    }
    assert not bad, f"{path.name} imports {sorted(bad)}: rendering must stay free of side effects"


def test_the_pure_translation_loads_no_podman_runner() -> None:
    """The package face imports nothing: importing mlab.podman.translate runs no podman code,
    while the old spelling ``from mlab.podman import podman`` still reaches the runner."""
    code = ("import sys\nimport mlab.podman.translate\n"
            "print('mlab.podman.runner' in sys.modules)\n"
            "from mlab.podman import podman\nimport mlab.podman.runner as r\n"
            "print(podman is r.podman)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "True"]
