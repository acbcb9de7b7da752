"""HTML pages: the repository list at ``/`` and one page per repository.

Plain server-rendered HTML with inline CSS; no JavaScript. Every value placed in a page
goes through :func:`html.escape` (branch names and commit subjects come from users).
"""

from __future__ import annotations

import datetime as dt
import subprocess
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

from mlab.codeservice.mirror import UPSTREAM
from mlab.codeservice.store import RepoRecord

if TYPE_CHECKING:
    from mlab.codeservice.app import ServiceConfig

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse}td,th{padding:.3em .8em;border-bottom:1px solid #ddd;
text-align:left;vertical-align:top}code{background:#f4f4f4;padding:0 .3em}
.err{color:#b00}.ok{color:#070}.muted{color:#777}
"""


def _when(ts: float | None) -> str:
    if not ts:
        return "never"
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}"
            f"</title><style>{STYLE}</style></head><body>{body}</body></html>")


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", f"--git-dir={repo}", *args], capture_output=True,
                          text=True, timeout=30)
    return done.stdout if done.returncode == 0 else ""


def branches(repo: Path) -> list[tuple[str, bool, str, str]]:
    """Branches of a mirror: ``(name, is_upstream, sha, committer date)``, newest first."""
    upstream = set(_git(repo, "for-each-ref", "--format=%(refname)", UPSTREAM + "heads/")
                   .split())
    out = _git(repo, "for-each-ref", "--sort=-committerdate",
               "--format=%(refname)%09%(objectname:short)%09%(committerdate:short)",
               "refs/heads/")
    result = []
    for line in out.splitlines():
        ref, sha, date = line.split("\t")
        name = ref.removeprefix("refs/heads/")
        result.append((name, f"{UPSTREAM}heads/{name}" in upstream, sha, date))
    return result


def clone_url(config: ServiceConfig, name: str) -> str:
    """The URL users clone from in a HomePod: ``http://<codeService.host>/<org>/<repo>``
    (``https://`` when the site's ``tls.mode`` is not off: their only way in then)."""
    scheme = "https" if config.site.tls.enabled else "http"
    return f"{scheme}://{config.site.code_service.host}/{name}"


def _sync_cell(record: RepoRecord) -> str:
    if record.last_result is None:
        return "<span class='muted'>never</span>"
    if record.last_result == "ok":
        return f"<span class='ok'>ok</span> {escape(_when(record.last_ok))}"
    return (f"<span class='err'>failed {escape(_when(record.last_sync))}: "
            f"{escape(record.last_result)}</span><br>last good: {escape(_when(record.last_ok))}")


def index_page(records: list[RepoRecord], config: ServiceConfig, outside: bool = False) -> str:
    """The list of approved mirrors with clone URLs, branches and last sync.

    ``outside``: the viewer is not on a HomePod and user branches are reviewed
    (:mod:`mlab.codeservice.reviewed`): only upstream branches are listed (a branch name is
    data too)."""
    rows = []
    for r in records:
        names = [b[0] for b in branches(config.repo_path(r.name)) if b[1] or not outside]
        shown = ", ".join(escape(n) for n in names[:8]) + (" ..." if len(names) > 8 else "")
        rows.append(
            f"<tr><td><a href='/{escape(r.name)}'>{escape(r.name)}</a></td>"
            f"<td><code>git clone {escape(clone_url(config, r.name))}</code></td>"
            f"<td>{len(names)}: {shown}</td><td>{_sync_cell(r)}</td></tr>"
        )
    table = ("<table><tr><th>repository</th><th>clone</th><th>branches</th>"
             "<th>last sync</th></tr>" + "".join(rows) + "</table>") if rows else \
        "<p class='muted'>No repositories approved yet (<code>mlab repo approve URL</code>).</p>"
    return _page("MLab code service", f"<h1>MLab code service</h1>{table}")


def repo_page(record: RepoRecord, config: ServiceConfig, outside: bool = False) -> str:
    """One mirror: upstream, clone URL, branches (upstream or user) and recent commits;
    ``outside`` as in :func:`index_page`."""
    repo = config.repo_path(record.name)
    rows = "".join(
        f"<tr><td>{escape(n)}</td><td>{'upstream' if up else 'user'}</td>"
        f"<td><code>{escape(sha)}</code></td><td>{escape(date)}</td></tr>"
        for n, up, sha, date in branches(repo) if up or not outside
    )
    log = _git(repo, "log", "-n", "20", "--format=%h%x09%ad%x09%an%x09%s", "--date=short",
               "HEAD")
    commits = "".join(
        "<tr>" + "".join(f"<td>{escape(part)}</td>" for part in line.split("\t", 3)) + "</tr>"
        for line in log.splitlines()
    )
    body = (
        f"<p><a href='/'>all repositories</a></p><h1>{escape(record.name)}</h1>"
        f"<p>upstream <code>{escape(record.upstream)}</code>; approved by "
        f"{escape(record.approved_by)} on {escape(_when(record.approved_at))}; last sync: "
        f"{_sync_cell(record)}</p>"
        f"<p><code>git clone {escape(clone_url(config, record.name))}</code></p>"
        "<h2>Branches</h2><p class='muted'>upstream branches follow upstream and are "
        "read-only; push your work to a branch of your own.</p>"
        + ("<p class='muted'>Seen from outside the HomePods: user branches are listed and "
           "fetchable only once reviewed (<code>mlab request branch</code>).</p>"
           if outside else "") +
        f"<table><tr><th>branch</th><th>kind</th><th>tip</th><th>date</th></tr>{rows}</table>"
        f"<h2>Recent commits (default branch)</h2><table>{commits}</table>"
    )
    return _page(record.name, body)
