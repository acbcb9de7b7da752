"""What is staged on the Airlock's share, for the user's page (docs/airlock.md).

The portal mounts the share read-only (like every HomePod) and reads what the Airlock
published: pip projects from the PEP 503 project pages (:func:`mlab.airlock.pipindex.published`),
apt packages from the flat repository's ``Packages`` index, files under ``downloads/`` and
git bundles under ``git/``; and, from the share's audit log, what this user staged. Everything
staged is installable in every HomePod of the site; "staged by you" is the part the user
asked for (``user`` in the Airlock's audit log). Nothing here writes to the share.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

from mlab.airlock import audit as airlock_audit
from mlab.airlock.pipindex import published
from mlab.topology import SHARE_PATH

MINE_MAX = 20
"""How many of the user's own stagings (newest first) the page lists."""


@dataclass(frozen=True)
class Staged:
    """The share's content.

    Attributes:
        pip: ``(project, [versions])`` sorted by project.
        apt: ``(package, version)`` sorted by package.
        files: ``(path relative to the share, bytes)`` of ``downloads/`` and ``git/``.
        mine: the user's own audit records (``time``, ``action``, ``item``), newest first.
    """

    pip: list[tuple[str, list[str]]] = field(default_factory=list)
    apt: list[tuple[str, str]] = field(default_factory=list)
    files: list[tuple[str, int]] = field(default_factory=list)
    mine: list[dict[str, str]] = field(default_factory=list)


def _apt(share: Path) -> list[tuple[str, str]]:
    """``Package``/``Version`` pairs of ``<share>/apt/Packages`` (deb822 paragraphs)."""
    try:
        text = (share / "apt" / "Packages").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    out = []
    for para in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in para.splitlines()
                      if ": " in line and not line.startswith(" "))
        if "Package" in fields:
            out.append((fields["Package"], fields.get("Version", "")))
    return sorted(set(out))


def _files(share: Path) -> list[tuple[str, int]]:
    out = []
    for top in ("downloads", "git"):
        base = share / top
        if not base.is_dir():
            continue
        for root, dirs, names in os.walk(base):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(names):
                if name.startswith("."):
                    continue
                path = Path(root) / name
                try:
                    out.append((str(path.relative_to(share)), path.stat().st_size))
                except OSError:
                    continue
    return out


def read(share: Path, user: str) -> Staged:
    """What ``share`` holds, and what ``user`` staged there.

    Raises:
        OSError: the share cannot be read.
    """
    pip = sorted((project, sorted({w.version for w in wheels}))
                 for project, wheels in published(share).items())
    mine = [{"time": r["time"], "action": r["action"], "item": r["item"]}
            for r in airlock_audit.read(share) if r.get("user") == user]
    return Staged(pip=pip, apt=_apt(share), files=_files(share), mine=mine[::-1][:MINE_MAX])


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return f"{n} B"


def section(staged: Staged | None, error: str | None = None) -> str:
    """The "Staged on the Airlock" part of the user's page (HTML, every value escaped)."""
    parts = ["<h2>Staged on the Airlock</h2>"]
    if staged is None:
        parts.append(f"<p class=muted>Not available: {escape(error or 'no share')}</p>")
        return "".join(parts)
    if not (staged.pip or staged.apt or staged.files):
        parts.append("<p class=muted id=staged-empty>Nothing is staged yet.</p>")
    if staged.pip:
        items = "".join(f"<li><code>{escape(p)}</code> {escape(', '.join(v))}</li>"
                        for p, v in staged.pip)
        parts.append(f"<h3>pip</h3><p class=muted>In your desktop: <code>pip install "
                     f"NAME</code></p><ul id=staged-pip>{items}</ul>")
    if staged.apt:
        items = "".join(f"<li><code>{escape(p)}</code> {escape(v)}</li>" for p, v in staged.apt)
        parts.append("<h3>apt</h3><p class=muted>In your desktop: <code>sudo apt-get update "
                     f"&amp;&amp; sudo apt-get install NAME</code></p><ul id=staged-apt>{items}</ul>")
    if staged.files:
        items = "".join(f"<li><code>{SHARE_PATH}/{escape(p)}</code> {_size(n)}</li>"
                        for p, n in staged.files)
        parts.append(f"<h3>Files</h3><ul id=staged-files>{items}</ul>")
    if staged.mine:
        rows = "".join(f"<tr><td>{escape(r['time'])}</td><td>{escape(r['action'])}</td>"
                       f"<td><code>{escape(r['item'])}</code></td></tr>" for r in staged.mine)
        parts.append("<h3>Staged by you</h3><table id=staged-mine><tr><th>when</th>"
                     f"<th>what</th><th>item</th></tr>{rows}</table>")
    return "".join(parts)
