"""The Airlock's export publisher: approved exports in, verified copies out, revoked ones gone.

Invariant: ``<export root>/<id>/`` exists exactly for approved export requests whose every
file matched its recorded size and sha256 when copied; anything else named by a request id
is removed. A publication is built in ``<export root>/.tmp-<id>-<pid>/`` and renamed into
place, so a downloader never sees a half-copied export.

Security: the outbox belongs to the HomePod user, who can change it after approval (that is
why every byte is re-hashed here) and can plant symbolic links. The Airlock mounts every
user's outbox under ``/opt/outbox/<user>/``, so a link resolved here could reach another
user's outbox or the Airlock's own files. Every path component is therefore opened with
``O_NOFOLLOW`` relative to its parent's descriptor (``openat``), and only regular files are
read: a link, FIFO or device anywhere on the path blocks the publication.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
def _open_dir(root: Path, parts: list[str]) -> Iterator[int]:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts:
            nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = nfd
        yield fd
    finally:
        os.close(fd)


def _open_file(root: Path, relpath: str) -> int:
    """Open ``root/relpath`` for reading without following any link; a regular file only.

    Raises:
        OSError: missing, a link (ELOOP), a directory, or not a regular file.
    """
    *dirs, name = relpath.split("/")
    with _open_dir(root, dirs) as dfd:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dfd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(0, "not a regular file", relpath)
    return fd


def _verify_copy(src_root: Path, entry: dict[str, Any], dst_root: Path,
                 progress: Callable[[int], None] | None) -> str | None:
    """Copy one listed file while hashing it; return a problem, or None when it matches."""
    path = str(entry["path"])
    try:
        fd = _open_file(src_root, path)
    except OSError as exc:
        why = "a symbolic link" if exc.errno == 40 else (exc.strerror or "unreadable")
        return f"{path}: {why}"
    with os.fdopen(fd, "rb") as fin:
        if os.fstat(fin.fileno()).st_size != entry["size"]:
            return f"{path}: size {os.fstat(fin.fileno()).st_size} differs from recorded {entry['size']}"
        dst = dst_root / path
        dst.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        with open(dst, "wb") as fout:
            size, digest = sha256_stream(fin.read, fout.write, progress)
        os.chmod(dst, 0o644)
    if size != entry["size"]:
        return f"{path}: size {size} differs from recorded {entry['size']}"
    if digest != entry["sha256"]:
        return f"{path}: sha256 {digest[:12]}... differs from recorded {str(entry['sha256'])[:12]}..."
    return None


def publish_one(request: dict[str, Any], outbox_root: Path, export_root: Path,
                progress: Callable[[int], None] | None = None) -> Outcome:
    """Verify and publish one approved export to ``export_root/<id>/``.

    Args:
        request: as the API returns it: ``id``, ``owner``, ``outbox``, ``files``.
        outbox_root: where every user's outbox is mounted (``/opt/outbox``), read as
            ``<outbox_root>/<owner>/<outbox>/<path>``.
        export_root: ``/opt/public/airlock/export``.
        progress: called with bytes copied.

    Returns:
        ``published`` or ``blocked`` (with the first problem); on ``blocked`` nothing is left.
    """
    rid = int(request["id"])
    final = export_root / str(rid)
    if final.exists():
        return Outcome(rid, "unchanged", "already published")
    export_root.mkdir(parents=True, exist_ok=True)
    tmp = export_root / f".tmp-{rid}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(mode=0o700)
    try:
        src_parts = [str(request["owner"]), str(request["outbox"])]
        try:
            with _open_dir(outbox_root, src_parts):
                pass
        except OSError as exc:
            return Outcome(rid, "blocked", f"outbox {'/'.join(src_parts)}: {exc.strerror}")
        src_root = outbox_root.joinpath(*src_parts)
        sums: list[str] = []
        for entry in request["files"]:
            problem = _verify_copy(src_root, entry, tmp, progress)
            if problem:
                return Outcome(rid, "blocked", f"verification failed: {problem}")
            sums.append(f"{entry['sha256']}  {entry['path']}\n")
        names = {str(e["path"]) for e in request["files"]}
        sums_name = SUMS_NAME if SUMS_NAME not in names else f"{SUMS_NAME}.mlab"
        (tmp / sums_name).write_text("".join(sums), encoding="utf-8")
        os.chmod(tmp / sums_name, 0o644)
        os.chmod(tmp, 0o755)
        try:
            os.rename(tmp, final)
        except OSError:
            if final.is_dir():  # another publisher run won the race; its copy is verified too
                return Outcome(rid, "unchanged", "already published")
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
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
        for child in sorted(export_root.iterdir()):
            if child.name.startswith(".tmp-"):
                shutil.rmtree(child, ignore_errors=True)
            elif child.name.isdigit() and int(child.name) not in approved:
                shutil.rmtree(child)
                outcomes.append(Outcome(int(child.name), "unpublished", "removed: not approved"))
    for rid in sorted(approved):
        outcome = publish_one(approved[rid], outbox_root, export_root, progress)
        log.info("[mlab/request-%s] %s: %s", rid, outcome.action, outcome.detail)
        if outcome.action != "unchanged":
            outcomes.append(outcome)
    return outcomes
