"""The Airlock's export publisher: approved exports in, verified copies out, revoked ones gone.

Invariant: ``<export root>/<id>/`` exists exactly for approved export requests whose every
file matched its recorded size and sha256 when copied; anything else named by a request id
is removed. A publication is built in ``<export root>/.tmp-<id>-<pid>/`` and renamed into
place, so a downloader never sees a half-copied export.

Security: the outbox belongs to the HomePod user, who can change it after approval (that is
why every byte is re-hashed here) and can plant symbolic links. The Airlock mounts every
user's outbox under ``/opt/outbox/<user>/`` in the publisher, so a link resolved here could
reach another user's outbox or the publisher's own files. The outbox directory is opened
once, every component with ``O_NOFOLLOW`` relative to its parent's descriptor (``openat``),
and every file is opened relative to that descriptor, never through a path again: a
directory swapped for a link after the first check cannot redirect a read (issue 13). Only
regular files are read: a link, FIFO or device anywhere on the path blocks the
publication. Writes into the export root (in the share, which the Airlock's root may
change) go the same way, with ``O_EXCL``, so a planted link never redirects a write.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlab.requests.checksums import sha256_stream

log = logging.getLogger(__name__)

SUMS_NAME = "SHA256SUMS"
"""Checksum file written next to the published files (``sha256sum -c`` format)."""


@dataclass(frozen=True)
class Outcome:
    """What the publisher did with one request.

    Attributes:
        id: the request id.
        action: ``published``, ``blocked`` (verification failed; nothing published),
            ``unpublished`` (removed: no longer approved) or ``unchanged``.
        detail: one line for the log and the request's history.
    """

    id: int
    action: str
    detail: str


@contextmanager
def _open_dir(root: Path | int, parts: list[str]) -> Iterator[int]:
    """A descriptor of ``root/parts...``, every component opened without following links.

    ``root`` is a path (opened with ``O_NOFOLLOW`` on its last component) or a directory
    descriptor (used, never closed). The yielded descriptor is closed on exit.

    Raises:
        OSError: a component is missing, a link (ELOOP) or not a directory (ENOTDIR).
    """
    if isinstance(root, int):
        fd = os.dup(root)
    else:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for part in parts:
            nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = nfd
        yield fd
    finally:
        os.close(fd)


def _open_file(root_fd: int, relpath: str) -> int:
    """Open ``relpath`` under the directory ``root_fd`` for reading, following no link at
    any component; a regular file only.

    Raises:
        OSError: missing, a link (ELOOP), a directory, or not a regular file.
    """
    *dirs, name = relpath.split("/")
    with _open_dir(root_fd, dirs) as dfd:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dfd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(0, "not a regular file", relpath)
    return fd


def _create_file(root_fd: int, relpath: str) -> int:
    """Create ``relpath`` (new, mode 0644) under the directory ``root_fd``, making its
    parent directories (0755) on the way; no component may be a link or exist as a file.

    The publication directory sits in the share, which the Airlock's root can change while
    we write: a directory swapped for a link must not redirect a write into the publisher's
    own filesystem.

    Raises:
        OSError: a component is a link or not a directory, or the file exists.
    """
    *dirs, name = relpath.split("/")
    fd = os.dup(root_fd)
    try:
        for part in dirs:
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
            except FileExistsError:
                pass
            nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = nfd
        return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644,
                       dir_fd=fd)
    finally:
        os.close(fd)


def _verify_copy(src_fd: int, entry: dict[str, Any], dst_fd: int,
                 progress: Callable[[int], None] | None) -> str | None:
    """Copy one listed file from the outbox directory ``src_fd`` into the publication
    directory ``dst_fd`` while hashing it; return a problem, or None when it matches."""
    path = str(entry["path"])
    try:
        fd = _open_file(src_fd, path)
    except OSError as exc:
        why = "a symbolic link" if exc.errno == errno.ELOOP else (exc.strerror or "unreadable")
        return f"{path}: {why}"
    with os.fdopen(fd, "rb") as fin:
        if os.fstat(fin.fileno()).st_size != entry["size"]:
            return f"{path}: size {os.fstat(fin.fileno()).st_size} differs from recorded {entry['size']}"
        try:
            out = _create_file(dst_fd, path)
        except OSError as exc:
            return f"{path}: cannot write the copy: {exc.strerror}"
        with os.fdopen(out, "wb") as fout:
            size, digest = sha256_stream(fin.read, fout.write, progress)
            os.fchmod(fout.fileno(), 0o644)
    if size != entry["size"]:
        return f"{path}: size {size} differs from recorded {entry['size']}"
    if digest != entry["sha256"]:
        return f"{path}: sha256 {digest[:12]}... differs from recorded {str(entry['sha256'])[:12]}..."
    return None


def _exists(dir_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _remove(dir_fd: int, name: str) -> None:
    """Remove the entry ``name`` of ``dir_fd``: a tree (never following links), or a link
    or file someone planted."""
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)


def publish_one(request: dict[str, Any], outbox_root: Path, export_root: Path,
                progress: Callable[[int], None] | None = None) -> Outcome:
    """Verify and publish one approved export to ``export_root/<id>/``.

    Every file is read through descriptors: the outbox directory ``<owner>/<outbox>`` is
    opened once, component by component with ``O_NOFOLLOW``, and every file below it is
    opened relative to that descriptor, so swapping a directory for a link between checks
    (a race the user controls) cannot redirect a read. Writes go the same way into
    ``export_root``.

    Args:
        request: as the API returns it: ``id``, ``owner``, ``outbox``, ``files``.
        outbox_root: where every user's outbox is mounted (``/opt/outbox`` in the
            publisher), read as ``<outbox_root>/<owner>/<outbox>/<path>``.
        export_root: ``/opt/public/airlock/export``.
        progress: called with bytes copied.

    Returns:
        ``published`` or ``blocked`` (with the first problem); on ``blocked`` nothing is left.
    """
    rid = int(request["id"])
    export_root.mkdir(parents=True, exist_ok=True)
    with _open_dir(export_root, []) as efd:
        if _exists(efd, str(rid)):
            return Outcome(rid, "unchanged", "already published")
        tmp = f".tmp-{rid}-{os.getpid()}"
        if _exists(efd, tmp):
            _remove(efd, tmp)
        os.mkdir(tmp, 0o700, dir_fd=efd)
        try:
            src_parts = [str(request["owner"]), str(request["outbox"])]
            with ExitStack() as stack:
                try:
                    src_fd = stack.enter_context(_open_dir(outbox_root, src_parts))
                except OSError as exc:
                    return Outcome(rid, "blocked",
                                   f"outbox {'/'.join(src_parts)}: {exc.strerror}")
                tfd = stack.enter_context(_open_dir(efd, [tmp]))
                sums: list[str] = []
                for entry in request["files"]:
                    problem = _verify_copy(src_fd, entry, tfd, progress)
                    if problem:
                        return Outcome(rid, "blocked", f"verification failed: {problem}")
                    sums.append(f"{entry['sha256']}  {entry['path']}\n")
                names = {str(e["path"]) for e in request["files"]}
                sums_name = SUMS_NAME if SUMS_NAME not in names else f"{SUMS_NAME}.mlab"
                with os.fdopen(_create_file(tfd, sums_name), "w", encoding="utf-8") as fh:
                    fh.write("".join(sums))
                os.fchmod(tfd, 0o755)
            try:
                os.rename(tmp, str(rid), src_dir_fd=efd, dst_dir_fd=efd)
            except OSError:
                if _exists(efd, str(rid)):  # another publisher run won the race
                    return Outcome(rid, "unchanged", "already published")
                raise
        finally:
            if _exists(efd, tmp):
                _remove(efd, tmp)
    total = sum(int(e["size"]) for e in request["files"])
    return Outcome(rid, "published", f"published {len(request['files'])} files, {total} bytes, sha256 verified")


def sync_exports(requests: list[dict[str, Any]], outbox_root: Path, export_root: Path,
                 progress: Callable[[int], None] | None = None) -> list[Outcome]:
    """Make ``export_root`` hold exactly the verified approved exports.

    Args:
        requests: every export request (any state) with ``id``, ``state``, ``owner``,
            ``outbox``, ``files``; approved ones are published, the directories of all
            others (revoked, unknown ids) are removed.
        outbox_root: see :func:`publish_one`.
        export_root: see :func:`publish_one`.

    Returns:
        One :class:`Outcome` per request or directory acted on (``unchanged`` ones omitted).
    """
    outcomes: list[Outcome] = []
    approved = {int(r["id"]): r for r in requests if r.get("kind", "export") == "export"
                and r["state"] == "approved"}
    if export_root.is_dir():
        with _open_dir(export_root, []) as efd:
            for name in sorted(os.listdir(efd)):
                if name.startswith(".tmp-"):
                    _remove(efd, name)
                elif name.isdigit() and int(name) not in approved:
                    _remove(efd, name)
                    outcomes.append(Outcome(int(name), "unpublished", "removed: not approved"))
    for rid in sorted(approved):
        outcome = publish_one(approved[rid], outbox_root, export_root, progress)
        log.info("[mlab/request-%s] %s: %s", rid, outcome.action, outcome.detail)
        if outcome.action != "unchanged":
            outcomes.append(outcome)
    return outcomes
