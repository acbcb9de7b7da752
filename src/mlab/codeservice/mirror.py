"""Mirroring: bring a mirror's upstream branches and tags in line with its upstream.

Rules (docs/code-service.md, "Mirroring rules"), which :func:`plan_sync` implements as a
pure function and :func:`sync_repo` applies in one ``git update-ref --stdin`` transaction:

- upstream is fetched into ``refs/mlab/incoming/*`` (our own namespace, so ``+`` and
  ``--prune`` there can never touch a user's ref);
- a ref is *upstream-owned* when it has a marker ``refs/mlab/upstream/<heads|tags>/X``;
  owned refs follow upstream, force-pushes included; a rewrite (old tip not an ancestor of
  the new) or an upstream deletion first keeps the old tip as
  ``refs/mlab/backup/<UTC time>/<heads|tags>/X`` and logs ``old..new``;
- a ref upstream has and the mirror lacks is created and becomes owned;
- upstream always wins its own names (issue 13, item 5): a user ref (no marker) with the
  name of an upstream ref, or one that blocks it on disk (``hotfix/x`` blocks ``hotfix``,
  ``hotfix`` blocks ``hotfix/x``), is moved aside to
  ``refs/<heads|tags>/moved-by-mlab/<UTC time>/<name>`` (kept, its owner told and the move
  audited by the caller) in a first transaction, and upstream's ref is created in the
  second; a user ref already equal to upstream's is simply adopted. So a user ref never
  stops a sync, and no clone ever sees a user's commit under upstream's name;
- apart from that, a sync never deletes or changes a ref without a marker;
- a failed fetch changes nothing in the visible refs (the error is recorded by the caller).

Every update in the transaction names the value it expects, so a push racing with a sync
makes one of them fail cleanly instead of losing an update.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock, Timeout

from mlab.errors import MlabError, TemporaryError

log = logging.getLogger(__name__)

INCOMING = "refs/mlab/incoming/"
UPSTREAM = "refs/mlab/upstream/"
BACKUP = "refs/mlab/backup/"
ZERO = "0" * 40
FETCH_TIMEOUT = 3600


class SyncError(TemporaryError):
    """A sync failed for a reason that may pass (upstream unreachable, a racing push);
    retried later."""


class UpstreamError(MlabError):
    """The upstream answered that it will not serve this URL (no such repository, not a git
    repository, authentication refused): retrying the same URL cannot help. The code service
    answers it with HTTP 422."""

    http_status = 422


class RefNotFound(MlabError):
    """The named ref does not exist (HTTP 404)."""

    http_status = 404


PERMANENT_GIT_ERRORS = (
    "does not appear to be a git repository", "not found", "no such file",
    "does not exist", "authentication failed", "could not read username",
    "permission denied", "error: 401", "error: 403", "error: 404", "the requested url returned error: 4",
    "not valid: is this a git repository", "unsupported url", "protocol '",
)
"""Substrings (lower case) of git's stderr that make a fetch failure permanent."""


@dataclass
class SyncPlan:
    """What a sync will do; ``commands`` is ``git update-ref --stdin`` input lines."""

    commands: list[str] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    moves: list[tuple[str, str, str]] = field(default_factory=list)
    """User refs moved aside first: ``(old full name, new full name, sha)``."""
    adopted: list[str] = field(default_factory=list)
    """User refs equal to upstream's that became upstream refs (full names)."""

    @property
    def move_commands(self) -> list[str]:
        """The first transaction: ``git update-ref --stdin`` lines that move user refs."""
        lines = []
        for old, new, sha in self.moves:
            lines += [f"create {new} {sha}", f"delete {old} {sha}"]
        return lines


MOVED = "moved-by-mlab"
"""Directory (under ``refs/heads/`` or ``refs/tags/``) of user refs moved aside by a sync."""


def _blocking(short: str, user_refs: dict[str, str]) -> list[str]:
    """User refs that ``short`` clashes with: same name, or a file/directory clash."""
    return sorted(u for u in user_refs
                  if u == short or u.startswith(short + "/") or short.startswith(u + "/"))


def plan_sync(
    incoming: dict[str, str],
    owned: dict[str, str],
    current: dict[str, str],
    is_ancestor: Callable[[str, str], bool],
    stamp: str,
) -> SyncPlan:
    """Compute a sync (pure apart from the ``is_ancestor`` question).

    Args:
        incoming: upstream's refs as fetched, short names (``heads/main``, ``tags/v1``) to sha.
        owned: the upstream markers, short name to sha (the value last mirrored).
        current: the mirror's visible refs, short name to sha.
        is_ancestor: ``is_ancestor(old, new)`` is True when ``new`` fast-forwards ``old``.
        stamp: the backup directory name, e.g. ``20260101T120000Z``.

    Returns:
        The plan; an empty ``commands`` list means nothing changes.
    """
    plan = SyncPlan()
    current = dict(current)
    user_refs = {k: v for k, v in current.items() if k not in owned}

    def backup(short: str, old: str) -> None:
        plan.commands.append(f"create {BACKUP}{stamp}/{short} {old}")

    for short, new in sorted(incoming.items()):
        if short in owned:
            continue
        for clash in _blocking(short, user_refs):
            sha = user_refs.pop(clash)
            if clash == short and sha == new:
                plan.adopted.append(f"refs/{short}")
                continue
            kind, _, rest = clash.partition("/")
            target = f"refs/{kind}/{MOVED}/{stamp}/{rest}"
            plan.moves.append((f"refs/{clash}", target, sha))
            plan.changes.append(f"refs/{clash}: moved aside to {target} (upstream has "
                                f"refs/{short})")
            del current[clash]

    for short, new in sorted(incoming.items()):
        ref = f"refs/{short}"
        have = current.get(short)
        if ref in plan.adopted:
            plan.commands.append(f"create {UPSTREAM}{short} {new}")
            plan.changes.append(f"{ref}: a user's ref equal to upstream's is now upstream's")
            continue
        if short in owned:
            if have == new:
                if owned[short] != new:
                    plan.commands.append(f"update {UPSTREAM}{short} {new} {owned[short]}")
                continue
            if have is None:
                plan.commands.append(f"create {ref} {new}")
                plan.changes.append(f"{ref}: re-created at {new[:12]}")
            else:
                if is_ancestor(have, new):
                    plan.changes.append(f"{ref}: {have[:12]}..{new[:12]}")
                else:
                    backup(short, have)
                    plan.changes.append(
                        f"{ref}: forced update {have[:12]}...{new[:12]} "
                        f"(old tip kept as {BACKUP}{stamp}/{short})"
                    )
                plan.commands.append(f"update {ref} {new} {have}")
            plan.commands.append(f"update {UPSTREAM}{short} {new} {owned[short]}")
        else:  # a clashing user ref was moved aside or adopted above
            plan.commands.append(f"create {ref} {new}")
            plan.commands.append(f"create {UPSTREAM}{short} {new}")
            plan.changes.append(f"{ref}: new at {new[:12]}")
    for short, marked in sorted(owned.items()):
        if short in incoming:
            continue
        ref = f"refs/{short}"
        have = current.get(short)
        if have is not None:
            backup(short, have)
            plan.commands.append(f"delete {ref} {have}")
            plan.changes.append(
                f"{ref}: deleted upstream (old tip kept as {BACKUP}{stamp}/{short})"
            )
        plan.commands.append(f"delete {UPSTREAM}{short} {marked}")
    return plan


def _git(repo: Path, *args: str, input: str | None = None, timeout: float = 600,
         check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/false",
           "LC_ALL": "C"}
    return subprocess.run(
        ["git", f"--git-dir={repo}", *args], input=input, capture_output=True, text=True,
        timeout=timeout, env=env, check=check,
    )


def _refs(repo: Path, prefix: str) -> dict[str, str]:
    out = _git(repo, "for-each-ref", "--format=%(objectname) %(refname)", prefix).stdout
    refs = {}
    for line in out.splitlines():
        sha, name = line.split(" ", 1)
        refs[name.removeprefix(prefix)] = sha
    return refs


def init_mirror(repo: Path, hooks_dir: Path) -> None:
    """Create an empty bare mirror at ``repo`` configured for the service."""
    subprocess.run(["git", "init", "-q", "--bare", str(repo)], check=True,
                   capture_output=True)
    for key, value in (
        ("http.receivepack", "true"),
        ("http.uploadpack", "true"),
        ("core.hooksPath", str(hooks_dir)),
        ("receive.fsckObjects", "true"),
        ("uploadpack.allowFilter", "true"),
        ("core.logAllRefUpdates", "always"),
        ("gc.reflogExpire", "never"),
    ):
        _git(repo, "config", key, value)
    # The service's bookkeeping refs are neither advertised nor fetchable nor pushable.
    for hidden in (INCOMING.rstrip("/"), UPSTREAM.rstrip("/")):
        _git(repo, "config", "--add", "transfer.hideRefs", hidden)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "(no message)"


def git_error(stderr: str) -> str:
    """git's meaningful error lines, joined with ``; ``.

    The ``fatal:``/``error:`` lines when there are any (git's advice that follows, such as
    "Please make sure you have the correct access rights / and the repository exists.", is
    wrapped prose, and its last line alone reads as a fragment); otherwise every non-empty
    line. ``'(no message)'`` when git said nothing.
    """
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(("fatal:", "error:"))]
    return "; ".join(errors or lines) or "(no message)"


def fetch_error(stderr: str) -> MlabError:
    """The error for a failed ``git fetch``: :class:`UpstreamError` when git's message says
    the URL cannot be served (:data:`PERMANENT_GIT_ERRORS`), else :class:`SyncError`."""
    message = f"fetch from upstream failed: {git_error(stderr)}"
    lowered = stderr.lower()
    if any(needle in lowered for needle in PERMANENT_GIT_ERRORS):
        return UpstreamError(message, hint="check the upstream URL")
    return SyncError(message)


@dataclass(frozen=True)
class SyncResult:
    """Outcome of a successful sync: ``changes`` and ``conflicts`` are one line each;
    ``moved`` lists user refs moved aside ``(old, new, sha)``; ``adopted`` user refs that
    became upstream's (same value)."""

    changes: list[str]
    conflicts: list[str]
    moved: list[tuple[str, str, str]] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)


def sync_repo(repo: Path, upstream: str, wait: float = 600) -> SyncResult:
    """Fetch ``upstream`` and apply the mirroring rules to the bare repository ``repo``.

    Only one sync per repository runs at a time (a lock file next to it).

    Args:
        repo: the mirror's bare repository.
        upstream: the upstream URL (already checked against the site's rules).
        wait: seconds to wait for another sync of the same repository; 0 to give up.

    Raises:
        SyncError: the fetch or the ref transaction failed for a reason that may pass; the
            visible refs are unchanged.
        UpstreamError: the upstream cannot serve this URL (git's message names why).
    """
    lock = FileLock(str(repo) + ".sync.lock")
    try:
        lock.acquire(timeout=wait)
    except Timeout:
        raise SyncError(f"{repo.name}: another sync is running") from None
    try:
        return _sync_locked(repo, upstream)
    finally:
        lock.release()


def _sync_locked(repo: Path, upstream: str) -> SyncResult:
    try:
        fetched = _git(
            repo, "-c", "fetch.fsckObjects=true", "fetch", "--quiet", "--no-tags", "--prune",
            "--no-write-fetch-head", upstream,
            f"+refs/heads/*:{INCOMING}heads/*", f"+refs/tags/*:{INCOMING}tags/*",
            timeout=FETCH_TIMEOUT, check=False,
        )
    except subprocess.TimeoutExpired:
        raise SyncError(f"fetch from upstream timed out after {FETCH_TIMEOUT} s") from None
    if fetched.returncode != 0:
        raise fetch_error(fetched.stderr)
    incoming = _refs(repo, INCOMING)
    owned = _refs(repo, UPSTREAM)
    current = {f"heads/{k}": v for k, v in _refs(repo, "refs/heads/").items()}
    current.update({f"tags/{k}": v for k, v in _refs(repo, "refs/tags/").items()})

    def is_ancestor(old: str, new: str) -> bool:
        return _git(repo, "merge-base", "--is-ancestor", old, new, check=False).returncode == 0

    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    plan = plan_sync(incoming, owned, current, is_ancestor, stamp)
    # Two transactions: git cannot delete refs/heads/a/b and create refs/heads/a in one.
    for commands in (plan.move_commands, plan.commands):
        if not commands:
            continue
        script = "start\n" + "\n".join(commands) + "\nprepare\ncommit\n"
        done = _git(repo, "update-ref", "--stdin", input=script, check=False)
        if done.returncode != 0:
            raise SyncError(f"updating refs failed: {ref_error(done.stderr)}")
    _set_head(repo, upstream, incoming)
    for line in plan.changes:
        log.info("[mlab/%s] %s", repo.name, line)
    for ref in plan.conflicts:
        log.warning("[mlab/%s] %s exists upstream and as a user's branch; kept the user's",
                    repo.name, ref)
    return SyncResult(plan.changes, plan.conflicts, plan.moves, plan.adopted)


def ref_error(stderr: str) -> str:
    """git's ref-transaction error with its real cause named (not a guess).

    ``is at X but expected Y`` means a push changed the ref during the sync (retried at the
    next sync); ``exists; cannot create`` is a file/directory name clash.
    """
    line = _last_line(stderr)
    if "but expected" in line:
        return f"{line} (a push changed this ref during the sync; the next sync retries)"
    if "exists; cannot create" in line:
        return f"{line} (two ref names clash as file and directory)"
    return line


def delete_user_ref(repo: Path, ref: str) -> dict[str, str]:
    """Delete the user branch or tag ``ref``, keeping its tip as a backup ref.

    Returns:
        ``{"old": sha, "backup": backup ref name}``.

    Raises:
        MlabError: ``ref`` is upstream's (it follows upstream; it is not deleted by hand),
            or it does not exist.
    """
    short = ref.removeprefix("refs/")
    if _git(repo, "rev-parse", "--verify", "-q", f"{UPSTREAM}{short}", check=False).stdout:
        raise MlabError(f"{ref} mirrors upstream and cannot be deleted by hand",
                        hint="only user branches and tags can be deleted")
    old = _git(repo, "rev-parse", "--verify", "-q", ref, check=False).stdout.strip()
    if not old:
        raise RefNotFound(f"no ref {ref} in this repository", hint="list them with git ls-remote")
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    backup = f"{BACKUP}{stamp}/{short}"
    script = f"start\ncreate {backup} {old}\ndelete {ref} {old}\nprepare\ncommit\n"
    done = _git(repo, "update-ref", "--stdin", input=script, check=False)
    if done.returncode != 0:
        raise SyncError(f"deleting {ref} failed: {ref_error(done.stderr)}")
    return {"old": old, "backup": backup}


def _set_head(repo: Path, upstream: str, incoming: dict[str, str]) -> None:
    """Point HEAD at upstream's default branch (asked at every sync: it can change)."""
    head = _git(repo, "symbolic-ref", "HEAD", check=False).stdout.strip()
    out = _git(repo, "ls-remote", "--symref", upstream, "HEAD", check=False).stdout
    for line in out.splitlines():
        if line.startswith("ref: ") and line.endswith("\tHEAD"):
            target = line[5:].split("\t")[0]
            if target.startswith("refs/heads/") and target != head and \
                    f"heads/{target[11:]}" in incoming:
                _git(repo, "symbolic-ref", "HEAD", target)
            return


def locked(repo: Path) -> bool:
    """True while a sync of ``repo`` holds its lock."""
    lock = FileLock(str(repo) + ".sync.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False


__all__ = ["MlabError", "SyncError", "UpstreamError", "fetch_error", "git_error", "SyncResult", "init_mirror", "plan_sync", "sync_repo"]
