"""git hooks of the mirrors: the push policy, run by ``git receive-pack``.

:func:`install_hooks` writes both hooks into the data directory (every mirror's
``core.hooksPath``). pre-receive (:data:`PRE_RECEIVE`, bash) hands its input to the running
service over a loopback connection (:mod:`mlab.codeservice.hookserver`, a per-push token),
which runs :func:`pre_receive` in a thread, and prints the answer; only a hook run outside
the service (no ``MLAB_HOOK_PORT``) starts Python on this module's :func:`main`. Starting
Python for every push cost it 27-38 ms (issue 18). post-receive is a two-line sh script
(:data:`POST_RECEIVE`). git gives one
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
    from collections.abc import Mapping
    from pathlib import Path
    from typing import TextIO

ZERO = "0" * 40
UPSTREAM_MARK = "refs/mlab/upstream/"


class GitError(Exception):
    """A git command of the hook failed (the push is then refused)."""


def _git(*args: str, input: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """git's standard output as text; stderr discarded; :class:`GitError` on failure.

    Started with ``os.posix_spawnp`` rather than ``subprocess``: the hook runs on every push
    and importing ``subprocess`` (with ``re``, ``locale``, ``selectors``) cost it about
    13 ms, a quarter of its start-up (issue 18). ``input`` (rare: only when a push has a
    too-large blob) goes through ``subprocess``.
    """
    if input is not None:
        import subprocess

        proc = subprocess.run(["git", *args], input=input, capture_output=True, text=True,
                              env=env)
        if proc.returncode != 0:
            raise GitError(f"git {args[0]} exited {proc.returncode}")
        return proc.stdout
    return _collect(_spawn(args, env), args[0])


class _Started:
    """A git process started by :func:`_spawn`; ``done`` once read and reaped."""

    def __init__(self, pid: int, fd: int) -> None:
        self.pid, self.fd, self.done = pid, fd, False


def _spawn(args: tuple[str, ...], env: Mapping[str, str] | None) -> _Started:
    """Start ``git *args`` with stdout on a pipe, for :func:`_collect`."""
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
    return _Started(pid, read_fd)


def _collect(started: _Started, name: str) -> str:
    """Read a :func:`_spawn`'ed git to the end and reap it; :class:`GitError` unless it
    exited 0."""
    pid, read_fd = started.pid, started.fd
    started.done = True
    chunks = []
    with os.fdopen(read_fd, "rb") as out:
        while chunk := out.read(1 << 16):
            chunks.append(chunk)
    _pid, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise GitError(f"git {name} exited {code}")
    return b"".join(chunks).decode()


def _report(data: dict[str, object], env: Mapping[str, str]) -> None:
    import json

    path = env.get("MLAB_PUSH_REPORT")
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


def find_large_blobs(updates: list[tuple[str, str, str]], limit: int,
                     env: Mapping[str, str] | None = None,
                     scan: _Started | None = None) -> list[tuple[str, int]]:
    """Blobs larger than ``limit`` bytes that the push adds: ``[(path, size)]``.

    The common case (nothing too large) is answered from the push's quarantine directory
    (``GIT_QUARANTINE_PATH``, githooks(5)): it holds exactly the objects the client sent,
    so one ``cat-file --batch-all-objects`` over it alone lists every new object's size
    without walking the history (a ``rev-list ... --not --all`` took 30 ms on a
    3,000-commit mirror; issue 18). Only when a blob there is too large, or without a
    quarantine, is the history walked for names and sizes. One difference from the walk: a
    blob already stored in the repository but reachable from no ref (a branch deleted since)
    is not counted; the push adds no bytes for it.

    Args:
        env: the environment git gave the hook (``GIT_DIR``, the quarantine variables);
            default ``os.environ``.
        scan: a :func:`_start_quarantine_scan` already running (it is read and reaped).
    """
    env = os.environ if env is None else env
    news = [new for _old, new, _ref in updates if new != ZERO]
    if not news:
        return []
    if not _quarantine_has_blob_over(limit, env, scan):
        return []
    objects = _git("rev-list", "--objects", *news, "--not", "--all", env=env)
    checked = _git(
        "cat-file", "--batch-check=%(objecttype) %(objectsize) %(rest)", input=objects,
        env=env)
    large = []
    for line in checked.splitlines():
        kind, size, *rest = line.split(" ", 2)
        if kind == "blob" and int(size) > limit:
            large.append((rest[0] if rest else "?", int(size)))
    return large


def _start_quarantine_scan(env: Mapping[str, str]) -> _Started | None:
    """Start listing the sizes of the push's quarantined objects (``GIT_QUARANTINE_PATH``,
    githooks(5)); None without a quarantine (a hook run outside ``receive-pack``).

    :func:`pre_receive` starts it before its other lookups, so the two git processes run
    at once (about 2 ms of a push; issue 18).
    """
    quarantine = env.get("GIT_QUARANTINE_PATH")
    if not quarantine or not os.path.isdir(quarantine):
        return None
    qenv = dict(env)
    qenv["GIT_OBJECT_DIRECTORY"] = quarantine
    qenv.pop("GIT_ALTERNATE_OBJECT_DIRECTORIES", None)  # the repository's own objects
    return _spawn(("cat-file", "--batch-all-objects", "--unordered",
                   "--batch-check=%(objecttype) %(objectsize)"), qenv)


def _quarantine_has_blob_over(limit: int, env: Mapping[str, str] | None = None,
                              scan: _Started | None = None) -> bool:
    """Whether the push's quarantine holds a blob larger than ``limit`` bytes.

    True (look closer) when there is no quarantine to read: a hook run outside
    ``receive-pack``.

    Args:
        scan: a :func:`_start_quarantine_scan` already running; default: start one now.
    """
    env = os.environ if env is None else env
    if scan is None:
        scan = _start_quarantine_scan(env)
        if scan is None:
            return True
    sizes = _collect(scan, "cat-file")
    for line in sizes.splitlines():
        kind, _sep, size = line.partition(" ")
        if kind == "blob" and int(size) > limit:
            return True
    return False


def check_owners(updates: list[tuple[str, str, str]], existing: set[str], db: str,
                 user: str, repo: str, env: Mapping[str, str], err: TextIO) -> str | None:
    """Ownership, ambiguous names and the daily ref quota; the refusal or None.

    Also writes the pusher's pending notices (user refs a sync moved aside) to ``err``: git
    shows them as ``remote: mlab: notice: ...``. One database connection for all of it.
    """
    from mlab.codeservice import owners, quota

    policy = env.get("MLAB_REF_POLICY", "creator")
    limit = int(env.get("MLAB_MAX_REFS_PER_DAY", "1000"))
    db_conn = owners.connect(db)
    try:
        for line in owners.take_notices(db_conn, user):
            print(f"mlab: notice: {line}", file=err)
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


def pre_receive(stdin: str, env: Mapping[str, str] | None = None,
                err: TextIO | None = None) -> int:
    """Apply the push policy; write the refusal to ``err`` (git shows it as ``remote: ...``).

    Args:
        stdin: git's ``<old> <new> <ref>`` lines.
        env: the hook's environment: git's (``GIT_DIR``, ``GIT_QUARANTINE_PATH``,
            ``GIT_OBJECT_DIRECTORY``, ``GIT_ALTERNATE_OBJECT_DIRECTORIES``) and the service's
            ``MLAB_*`` settings (:func:`mlab.codeservice.githttp._cgi_env`); default
            ``os.environ`` (the hook process). :mod:`hookserver` passes the push's own.
        err: where messages go; default ``sys.stderr``.

    Returns:
        0 to accept the push, 1 to refuse it.
    """
    env = os.environ if env is None else env
    err = sys.stderr if err is None else err
    updates = read_updates(stdin)
    scan = (_start_quarantine_scan(env)
            if any(new != ZERO for _old, new, _ref in updates) else None)
    try:
        return _decide(updates, env, err, scan)
    finally:
        if scan is not None and not scan.done:  # a refusal came first: close and reap it
            scan.done = True
            os.close(scan.fd)
            os.waitpid(scan.pid, 0)


def _decide(updates: list[tuple[str, str, str]], env: Mapping[str, str], err: TextIO,
            scan: _Started | None) -> int:
    refs = _git("for-each-ref", "--format=%(refname)", UPSTREAM_MARK, "refs/heads/",
                "refs/tags/", env=env).split()
    upstream_refs = {"refs/" + m.removeprefix(UPSTREAM_MARK) for m in refs
                     if m.startswith(UPSTREAM_MARK)}
    existing = {r for r in refs if not r.startswith(UPSTREAM_MARK)}
    message = check_refs(updates, upstream_refs)
    db = env.get("MLAB_DB")
    if message is None and db:
        message = check_owners(updates, existing, db, env.get("MLAB_USER", ""),
                               env.get("MLAB_REPO", ""), env, err)
    if message is None:
        limit = int(env.get("MLAB_MAX_BLOB", str(100 * 1024 * 1024)))
        large = find_large_blobs(updates, limit, env, scan)
        if large:
            path, size = large[0]
            message = (
                f"refusing push: {path} is {size} bytes ({size / 2**20:.1f} MiB), larger "
                f"than the limit of {limit} bytes ({limit / 2**20:.1f} MiB); remove it from "
                "the history (git rm --cached, git commit --amend or git rebase -i)"
            )
    if message:
        print(f"mlab: {message}", file=err)
        _report({"hook": "pre-receive", "refused": message,
                 "refs": [{"ref": r, "old": o, "new": n} for o, n, r in updates]}, env)
        return 1
    return 0


PRE_RECEIVE = r"""#!/bin/bash
# Written by the MLab code service at start; do not edit.
# Inside the service (MLAB_HOOK_PORT and MLAB_HOOK_TOKEN set per push) the policy runs in
# the service: this sends the token, the quarantine path and git's lines over loopback
# (mlab.codeservice.hookserver), prints the answer and exits with its code. It fails closed:
# no answer refuses the push. Outside the service it runs the Python hook.
if [ -z "$MLAB_HOOK_PORT" ]; then
    exec {python} -IS "${{0%/*}}/pre-receive.py"
fi
mapfile -t lines
trap '' PIPE  # an endpoint that hangs up early gets the message below, not a silent signal
if ! {{ exec 3<>"/dev/tcp/127.0.0.1/$MLAB_HOOK_PORT"; }} 2>/dev/null; then
    echo "mlab: refusing push: the code service's policy check did not answer" >&2
    exit 1
fi
{{ printf '%s\n%s\n%s\n' "$MLAB_HOOK_TOKEN" "$GIT_QUARANTINE_PATH" "${{#lines[@]}}"
  [ "${{#lines[@]}}" -eq 0 ] || printf '%s\n' "${{lines[@]}}"; }} >&3 2>/dev/null
if ! IFS= read -r code <&3 || [[ ! "$code" =~ ^[01]$ ]]; then
    echo "mlab: refusing push: the code service's policy check did not answer" >&2
    exit 1
fi
while IFS= read -r line <&3; do printf '%s\n' "$line" >&2; done
exit "$code"
"""
"""The pre-receive hook (bash; ``{python}`` is filled in by :func:`install_hooks`)."""

PRE_RECEIVE_PY = """#!{python} -IS
# Written by the MLab code service at start; do not edit.
import sys
sys.path.insert(0, {root!r})
from mlab.codeservice.hook import main
code = main(['pre-receive'])
sys.stdout.flush()
sys.stderr.flush()
import os
os._exit(code)  # no interpreter teardown: it cost the push ~10 ms
"""
"""pre-receive outside the service: this interpreter isolated (``-I -S``: no site import,
no user environment) with only this package's directory on ``sys.path``."""

POST_RECEIVE = """#!/bin/sh
# Written by the MLab code service at start; do not edit.
# Appends git's '<old> <new> <ref>' lines to the push report after a marker line; the
# service records owners, quotas and the audit entry from it (no Python start here; the
# shell's own read and echo, no cat: each program started costs the push a millisecond).
[ -n "$MLAB_PUSH_REPORT" ] || { while read -r line; do :; done; exit 0; }
{ echo '#post-receive'; while read -r line; do echo "$line"; done; } >> "$MLAB_PUSH_REPORT"
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
    """Write the hook scripts (idempotent; temp file + rename): :data:`PRE_RECEIVE`, the
    Python hook it falls back to outside the service (:data:`PRE_RECEIVE_PY`, a script
    that is not a git hook name) and :data:`POST_RECEIVE`.
    """
    hooks_dir.mkdir(parents=True, exist_ok=True)
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    scripts = {
        "pre-receive": PRE_RECEIVE.format(python=sys.executable),
        "pre-receive.py": PRE_RECEIVE_PY.format(python=sys.executable, root=str(root)),
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
