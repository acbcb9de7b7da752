"""The pip index's pages, pure: a wheel's record and the PEP 503 / PEP 691 texts made from it.

:mod:`mlab.airlock.pipindex` places these pages in the share; the portal reads the JSON
pages back (:mod:`mlab.portal.staged`). Rules: PEP 503 (simple repository API, HTML),
PEP 691 (its JSON form), PEP 427 (wheel file names).
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import quote


@dataclass(frozen=True)
class WheelFile:
    """One published (or to-be-published) wheel.

    Attributes:
        filename: the wheel file name (PEP 427), e.g. ``six-1.16.0-py2.py3-none-any.whl``.
        project: PEP 503 normalized project name, e.g. ``six``.
        version: the version string from the file name.
        sha256: hex digest of the file.
        size: bytes.
        requires_python: the ``Requires-Python`` metadata value, or None.
    """

    filename: str
    project: str
    version: str
    sha256: str
    size: int
    requires_python: str | None = None



def render_project_html(project: str, files: Sequence[WheelFile]) -> str:
    """The PEP 503 project page for ``project`` (pure).

    Links are relative (``../../files/<name>``) so the share works at any mount point;
    file names are percent-encoded (a local version's ``+``), ``Requires-Python`` is
    HTML-escaped into ``data-requires-python`` (PEP 503).
    """
    lines = [
        "<!DOCTYPE html>",
        "<html>",
        "<head>",
        '<meta name="pypi:repository-version" content="1.0">',
        f"<title>Links for {html.escape(project)}</title>",
        "</head>",
        "<body>",
        f"<h1>Links for {html.escape(project)}</h1>",
    ]
    for f in sorted(files, key=lambda w: w.filename):
        attrs = f'href="../../files/{quote(f.filename)}#sha256={f.sha256}"'
        if f.requires_python:
            attrs += f' data-requires-python="{html.escape(f.requires_python, quote=True)}"'
        lines.append(f"<a {attrs}>{html.escape(f.filename)}</a><br>")
    lines += ["</body>", "</html>", ""]
    return "\n".join(lines)


def render_project_json(project: str, files: Sequence[WheelFile]) -> str:
    """The PEP 691 JSON page for ``project`` (pure); also our incremental state."""
    doc = {
        "meta": {"api-version": "1.0"},
        "name": project,
        "files": [
            {
                "filename": f.filename,
                "url": f"../../files/{quote(f.filename)}",
                "hashes": {"sha256": f.sha256},
                "requires-python": f.requires_python,
                "size": f.size,
                "version": f.version,
            }
            for f in sorted(files, key=lambda w: w.filename)
        ],
    }
    # No indent: json's C encoder (the indented one is pure Python and was a quarter of a
    # full rebuild's CPU time).
    return json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n"


def render_root_html(projects: Iterable[str]) -> str:
    """The PEP 503 root page listing ``projects`` (normalized names) (pure)."""
    lines = [
        "<!DOCTYPE html>",
        "<html>",
        "<head>",
        '<meta name="pypi:repository-version" content="1.0">',
        "<title>Simple index</title>",
        "</head>",
        "<body>",
    ]
    for p in sorted(set(projects)):
        lines.append(f'<a href="{quote(p)}/">{html.escape(p)}</a><br>')
    lines += ["</body>", "</html>", ""]
    return "\n".join(lines)
