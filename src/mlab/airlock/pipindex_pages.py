"""The pip index's pages, pure: a wheel's record and the PEP 503 texts made from it and read back.

:mod:`mlab.airlock.pipindex` places these pages in the share and reads a project's page
back (:func:`parse_project_html`) as the state of incremental publishing and the cache of
a rebuild; the portal lists the projects from them (:mod:`mlab.portal.staged`). There is
no second (PEP 691 JSON) page per project: pip reads only ``index.html`` through
``file://`` (a directory URL gets ``index.html`` appended) and from a static HTTP server,
and one file fewer per project is a third fewer entries to create in a rebuild from
nothing (issue 18). Rules: PEP 503 (simple repository API, HTML), PEP 427 (wheel file
names).
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote

from packaging.utils import InvalidWheelFilename, parse_wheel_filename


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


_LINK = re.compile(r'<a href="\.\./\.\./files/([^"#]+)#sha256=([0-9a-f]{64})"'
                   r'(?: data-requires-python="([^"]*)")?>')


def parse_project_html(project: str, text: str) -> list[WheelFile]:
    """The files a project page made by :func:`render_project_html` lists (pure).

    The version is the file name's (PEP 427, normalized as :mod:`packaging` prints it);
    ``size`` is 0 (the page does not hold it). Links in another form, and names that are
    not wheel names, are skipped (a damaged page then lists fewer files; a rebuild
    rewrites it).

    Args:
        project: the PEP 503 normalized name the page is for.
        text: the page.
    """
    out = []
    for href, sha256, requires_python in _LINK.findall(text):
        filename = unquote(href)
        try:
            version = str(parse_wheel_filename(filename)[1])
        except InvalidWheelFilename:
            continue
        out.append(WheelFile(filename, project, version, sha256, 0,
                             html.unescape(requires_python) if requires_python else None))
    return out


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
