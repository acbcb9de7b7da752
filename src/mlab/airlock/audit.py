"""The Airlock's audit log: one JSON object per line in ``<share>/audit.log``, append only.

Invariant: a line is written with a single ``write(2)`` on a descriptor opened with
``O_APPEND`` while holding an exclusive ``flock``, so concurrent writers (two stagings, the
SFTP wrapper) never interleave or truncate lines; nothing in MLab ever rewrites the file.
Each line holds ``time`` (RFC 3339, UTC), ``user``, ``action`` (``stage-pip``,
``stage-apt``, ``stage-url``, ``stage-git``, ``sftp-upload``), ``item`` (a file name, a
package or a URL), ``size`` (bytes, or null) and ``sha256`` (hex, or null).
The log holds no secrets: URLs are stored without their user-info part.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import getpass
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypedDict
from urllib.parse import urlsplit, urlunsplit

from mlab.errors import MlabError

AUDIT_FILE = "audit.log"


class AuditRecord(TypedDict):
    """One audit line (all keys always present)."""

    time: str
    user: str
    action: str
    item: str
    size: int | None
    sha256: str | None


def current_user() -> str:
    """The person acting: ``SUDO_USER`` under sudo, else ``MLAB_USER``, else the login name.

    ``SUDO_USER`` (set by sudo(8) to the invoking user's login name) comes first, so
    ``sudo mlab stage ...`` records the person, not ``root``; ``root`` there is ignored.
    """
    sudo_user = os.environ.get("SUDO_USER")
    if sudo_user and sudo_user != "root":
        return sudo_user
    user = os.environ.get("MLAB_USER")
    if user:
        return user
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for the uid (containers)
        return f"uid{os.getuid()}"


def redact_url(url: str) -> str:
    """``url`` without a ``user:password@`` part (so a token never reaches the log)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def make_record(
    action: str,
    item: str,
    *,
    size: int | None = None,
    sha256: str | None = None,
    user: str | None = None,
    now: _dt.datetime | None = None,
) -> AuditRecord:
    """Build one audit record (pure).

    Args:
        action: what happened, e.g. ``stage-pip``.
        item: what it happened to (file name, package, redacted URL).
        size: bytes, or None when not a file.
        sha256: hex digest, or None when not a file.
        user: acting user; None: :func:`current_user`.
        now: timestamp; None: the current UTC time.
    """
    when = (now or _dt.datetime.now(_dt.timezone.utc)).astimezone(_dt.timezone.utc)
    return AuditRecord(
        time=when.isoformat(timespec="seconds").replace("+00:00", "Z"),
        user=user or current_user(),
        action=action,
        item=item,
        size=size,
        sha256=sha256,
    )


def append(share: Path, records: Iterable[AuditRecord]) -> None:
    """Append ``records`` to ``<share>/audit.log`` (created mode 0644 if missing).

    When root creates the file (sudo, the publisher) it is given to the share's owner, or
    to the owner of ``<share>/pip`` when the share root is root's (an SFTP chroot), so the
    Airlock user can append to it afterwards.

    Raises:
        MlabError: the log cannot be written (read-only share: run this on the Airlock).
    """
    data = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode()
    if not data:
        return
    path = Path(share) / AUDIT_FILE
    try:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        else:
            _give_to_share_owner(fd, Path(share))
    except OSError as exc:
        raise MlabError(
            f"cannot write the audit log {path}: {exc.strerror}",
            hint="staging runs on the Airlock, where the share is writable",
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
    finally:
        os.close(fd)


def _give_to_share_owner(fd: int, share: Path) -> None:
    """chown a log file root just created to the share's (non-root) owner; best effort."""
    if os.geteuid() != 0:
        return
    for owner in (share, share / "pip"):
        try:
            st = owner.stat()
        except OSError:
            continue
        if st.st_uid != 0:
            try:
                os.fchown(fd, st.st_uid, st.st_gid)
            except OSError:
                pass
            return


def record(share: Path, action: str, item: str, **kwargs: Any) -> None:
    """Append one record built by :func:`make_record`."""
    append(share, [make_record(action, item, **kwargs)])


def read(share: Path) -> Iterator[AuditRecord]:
    """Yield the records of ``<share>/audit.log`` in order (none if it does not exist).

    A line that is not a JSON object (for example a line cut by a full disk) is skipped.
    """
    path = Path(share) / AUDIT_FILE
    if not path.exists():
        return
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                yield AuditRecord(
                    time=str(obj.get("time", "")),
                    user=str(obj.get("user", "")),
                    action=str(obj.get("action", "")),
                    item=str(obj.get("item", "")),
                    size=obj.get("size"),
                    sha256=obj.get("sha256"),
                )
