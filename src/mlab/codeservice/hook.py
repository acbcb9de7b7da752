"""git hooks of the mirrors: the push policy, run by ``git receive-pack``.

pre-receive is a Python script that :func:`install_hooks` writes into the data directory
(every mirror's ``core.hooksPath``) and that runs this module's :func:`main`; post-receive is
a two-line sh script (:data:`POST_RECEIVE`), so a push starts Python once. git gives one
``<old> <new> <ref>`` line per update on stdin (githooks(5)); the new objects sit in the quarantine directory, reachable from ``<new>``
but not from any existing ref, so ``rev-list <new> --not --all`` lists exactly what the
push adds.

Policy (pre-receive), first failure refuses the whole push:
- only ``refs/heads/*`` and ``refs/tags/*`` may be pushed (``refs/mlab/*`` is the service's);
- upstream branches and tags (those with a marker under ``refs/mlab/upstream/``) may not be
  created, updated or deleted by users;
- user refs have owners (:mod:`mlab.codeservice.owners`, site ``codeService.refPolicy``):
  a user changes or deletes only refs they own, creates only names nobody holds outside
  other accounts' namespaces, and no ambiguous names (``refs/heads/HEAD``);
- at most ``MLAB_MAX_REFS_PER_DAY`` ref updates per user and UTC day (:mod:`quota`);
- no blob larger than ``MLAB_MAX_BLOB`` bytes (site ``codeService.maxBlobSize``).

pre-receive also prints the pusher's pending notices (a user ref a sync moved aside) as
``remote:`` lines. Without ``MLAB_DB`` (a hook run outside the service) the owner and quota
rules are off.

The hooks report to the service through the file named by ``MLAB_PUSH_REPORT``: a JSON line
from pre-receive when it refuses, then post-receive's marker and git's update lines
(:func:`read_report`). From them the service writes the push's audit record, records the
owners of created refs and counts the user's ref updates and bytes.

This module imports nothing heavy: it runs once per push.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # not `from typing import`: typing (with re) costs the hook ~8 ms a push

if TYPE_CHECKING:  # the hook starts on every push: import only what it runs
    from pathlib import Path

ZERO = "0" * 40
UPSTREAM_MARK = "refs/mlab/upstream/"


class GitError(Exception):
    """A git command of the hook failed (the push is then refused)."""


def _git(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> str:
    """git's standard output as text; stderr discarded; :class:`GitError` on failure.

    Started with ``os.posix_spawnp`` rather than ``subprocess``: the hook runs on every push
    and importing ``subprocess`` (with ``re``, ``locale``, ``selectors``) cost it about
    13 ms, a quarter of its start-up (issue 18). ``input`` (rare: only when a push has a
    too-large blob) goes through ``subprocess``.
    """
    if input is not None:
        import subprocess

        proc = subprocess.run(["git", *args], input=input, capture_output=True, text=True)
        if proc.returncode != 0:
            raise GitError(f"git {args[0]} exited {proc.returncode}")
        return proc.stdout
    read_fd, write_fd = os.pipe()
    try:
        pid = os.posix_spawnp("git", ["git", *args], env or os.environ, file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, write_fd, 1),
            (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
        ])
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    chunks = []
    with os.fdopen(read_fd, "rb") as out:
        while chunk := out.read(1 << 16):
            chunks.append(chunk)
    _pid, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise GitError(f"git {args[0]} exited {code}")
    return b"".join(chunks).decode()


def _report(data: dict[str, object]) -> None:
    import json

    path = os.environ.get("MLAB_PUSH_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(data) + "\n")


def read_updates(text: str) -> list[tuple[str, str, str]]:
    """Parse hook stdin: lines ``<old-sha> <new-sha> <refname>`` into tuples."""
    updates = []
    for line in text.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3:
            updates.append((parts[0], parts[1], parts[2]))
    return updates


def check_refs(updates: list[tuple[str, str, str]], upstream_refs: set[str]) -> str | None:
    """The ref part of the policy (pure). Returns the refusal message, or None to accept.

    Args:
        updates: ``(old, new, ref)`` tuples.
        upstream_refs: ref names (``refs/heads/main``) that mirror upstream.
    """
    for _old, _new, ref in updates:
        if not (ref.startswith("refs/heads/") or ref.startswith("refs/tags/")):
            return f"refusing {ref}: only branches (refs/heads/*) and tags may be pushed"
        if ref in upstream_refs:
            short = ref.removeprefix("refs/heads/").removeprefix("refs/tags/")
            return (
                f"refusing to update {ref}: it mirrors the upstream repository and only "
                f"follows upstream. Push a branch of your own instead, e.g. "
                f"git push origin HEAD:refs/heads/<you>/{short}"
            )
    return None


def find_large_blobs(updates: list[tuple[str, str, str]], limit: int) -> list[tuple[str, int]]:
    """Blobs larger than ``limit`` bytes that the push adds: ``[(path, size)]``.

    The common case (nothing too large) is answered from the push's quarantine directory
    (``GIT_QUARANTINE_PATH``, githooks(5)): it holds exactly the objects the client sent,
    so one ``cat-file --batch-all-objects`` over it alone lists every new object's size
    without walking the history (a ``rev-list ... --not --all`` took 30 ms on a
    3,000-commit mirror; issue 18). Only when a blob there is too large, or without a
    quarantine, is the history walked for names and sizes. One difference from the walk: a
    blob already stored in the repository but reachable from no ref (a branch deleted since)
    is not counted; the push adds no bytes for it.
    """
    news = [new for _old, new, _ref in updates if new != ZERO]
    if not news:
        return []
    if not _quarantine_has_blob_over(limit):
        return []
    objects = _git("rev-list", "--objects", *news, "--not", "--all")
    checked = _git(
        "cat-file", "--batch-check=%(objecttype) %(objectsize) %(rest)", input=objects
    )
    large = []
    for line in checked.splitlines():
        kind, size, *rest = line.split(" ", 2)
        if kind == "blob" and int(size) > limit:
            large.append((rest[0] if rest else "?", int(size)))
    return large


def _quarantine_has_blob_over(limit: int) -> bool:
    """Whether the push's quarantine holds a blob larger than ``limit`` bytes.

    True (look closer) when there is no quarantine to read: a hook run outside
    ``receive-pack``.
    """
    quarantine = os.environ.get("GIT_QUARANTINE_PATH")
    if not quarantine or not os.path.isdir(quarantine):
        return True
    env = dict(os.environ)
    env["GIT_OBJECT_DIRECTORY"] = quarantine
    env.pop("GIT_ALTERNATE_OBJECT_DIRECTORIES", None)  # the repository's own objects
    sizes = _git("cat-file", "--batch-all-objects", "--unordered",
                 "--batch-check=%(objecttype) %(objectsize)", env=env)
    for line in sizes.splitlines():
        kind, _sep, size = line.partition(" ")
        if kind == "blob" and int(size) > limit:
            return True
    return False


def check_owners(updates: list[tuple[str, str, str]], existing: set[str], db: str,
                 user: str, repo: str) -> str | None:
    """Ownership, ambiguous names and the daily ref quota; the refusal or None.

    Also prints the pusher's pending notices (user refs a sync moved aside): git shows them
    as ``remote: mlab: notice: ...``. One database connection for all of it.
    """
    from mlab.codeservice import owners, quota

    policy = os.environ.get("MLAB_REF_POLICY", "creator")
    limit = int(os.environ.get("MLAB_MAX_REFS_PER_DAY", "1000"))
    db_conn = owners.connect(db)
    try:
        for line in owners.take_notices(db_conn, user):
            print(f"mlab: notice: {line}", file=sys.stderr)
        left = limit - quota.usage(db_conn, user)[0]
        if len(updates) > left:
            return (f"refusing push: it updates {len(updates)} refs and {user} may push "
                    f"{max(left, 0)} more ref updates today (limit {limit} a day, site "
                    "codeService.limits.maxRefsPerDay)")
        names = owners.accounts(db_conn)
        held = owners.owners(db_conn, repo, [ref for _o, _n, ref in updates])
    finally:
        db_conn.close()
    for old, new, ref in updates:
        if old == ZERO and new != ZERO:
            why = owners.ambiguous(ref, existing)
            if why:
                return f"refusing {why}; choose another name"
        message = owners.check_update(user, ref, old, new, policy=policy,
                                      owner=held.get(ref), accounts=names)
        if message:
            return message
    return None


def pre_receive(stdin: str) -> int:
    """Apply the push policy; print the refusal (git shows it as ``remote: ...``)."""
    updates = read_updates(stdin)
    refs = _git("for-each-ref", "--format=%(refname)", UPSTREAM_MARK, "refs/heads/",
                "refs/tags/").split()
    upstream_refs = {"refs/" + m.removeprefix(UPSTREAM_MARK) for m in refs
                     if m.startswith(UPSTREAM_MARK)}
    existing = {r for r in refs if not r.startswith(UPSTREAM_MARK)}
    message = check_refs(updates, upstream_refs)
    db = os.environ.get("MLAB_DB")
    if message is None and db:
        message = check_owners(updates, existing, db, os.environ.get("MLAB_USER", ""),
                               os.environ.get("MLAB_REPO", ""))
    if message is None:
        limit = int(os.environ.get("MLAB_MAX_BLOB", str(100 * 1024 * 1024)))
        large = find_large_blobs(updates, limit)
        if large:
            path, size = large[0]
            message = (
                f"refusing push: {path} is {size} bytes ({size / 2**20:.1f} MiB), larger "
                f"than the limit of {limit} bytes ({limit / 2**20:.1f} MiB); remove it from "
                "the history (git rm --cached, git commit --amend or git rebase -i)"
            )
    if message:
        print(f"mlab: {message}", file=sys.stderr)
        _report({"hook": "pre-receive", "refused": message,
                 "refs": [{"ref": r, "old": o, "new": n} for o, n, r in updates]})
        return 1
    return 0


POST_RECEIVE = """#!/bin/sh
# Written by the MLab code service at start; do not edit.
# Appends git's '<old> <new> <ref>' lines to the push report after a marker line; the
# service records owners, quotas and the audit entry from it (no Python start here).
[ -n "$MLAB_PUSH_REPORT" ] || { cat >/dev/null; exit 0; }
{ echo '#post-receive'; cat; } >> "$MLAB_PUSH_REPORT"
"""
"""The post-receive hook: plain sh, so a push starts Python once (pre-receive), not twice."""


def read_report(text: str) -> tuple[list[dict[str, str]], str | None, list[dict[str, str]]]:
    """Parse a push report: ``(refused refs, refusal message, updated refs)`` (pure).

    Args:
        text: the report file: JSON lines from pre-receive, then after a ``#post-receive``
            line git's ``<old> <new> <ref>`` lines of the applied updates.
    """
    import json

    refused_refs: list[dict[str, str]] = []
    refused = None
    updated: list[dict[str, str]] = []
    after = False
    for line in text.splitlines():
        if line == "#post-receive":
            after = True
        elif after:
            updated += [{"ref": r, "old": o, "new": n} for o, n, r in read_updates(line)]
        elif line.startswith("{"):
            data = json.loads(line)
            if data.get("refused"):
                refused, refused_refs = data["refused"], data["refs"]
    return refused_refs, refused, updated


def install_hooks(hooks_dir: Path) -> None:
    """Write the hook scripts (idempotent; temp file + rename).

    pre-receive runs this interpreter isolated (``-I -S``: no site import, no user
    environment) with only this package's directory on ``sys.path``; post-receive is sh.
    """
    hooks_dir.mkdir(parents=True, exist_ok=True)
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    scripts = {
        "pre-receive": (
            f"#!{sys.executable} -IS\n"
            "# Written by the MLab code service at start; do not edit.\n"
            f"import sys\nsys.path.insert(0, {str(root)!r})\n"
            "from mlab.codeservice.hook import main\n"
            "code = main(['pre-receive'])\n"
            "sys.stdout.flush()\n"
            "sys.stderr.flush()\n"
            "import os\n"
            "os._exit(code)  # no interpreter teardown: it cost the push ~10 ms\n"
        ),
        "post-receive": POST_RECEIVE,
    }
    for name, script in scripts.items():
        tmp = hooks_dir / f".{name}.tmp"
        tmp.write_text(script, encoding="utf-8")
        tmp.chmod(0o755)
        tmp.replace(hooks_dir / name)


def main(argv: list[str]) -> int:
    """Entry point of the hook scripts."""
    stdin = sys.stdin.read()
    if argv[:1] == ["pre-receive"]:
        return pre_receive(stdin)
    print(f"mlab hook: unknown hook {argv!r}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
