"""Per-user push quotas: ref updates and pushed bytes per UTC day (issue 13, item 8).

Invariant: usage is counted in the service's SQLite file (table ``quota_usage``), one row
per user and UTC day, all repositories together. Bytes are counted by the service (the
request body it copied to git) after each push, refused or not: a refused 200 MB push
still cost the service 200 MB. Ref updates are counted by the post-receive hook (only the
updates git applied). Limits come from the site (``codeService.limits.maxRefsPerDay``,
``maxPushBytesPerDay``); the service hands the remaining bytes to git as
``receive.maxInputSize``, and the pre-receive hook refuses a push with more ref updates
than are left.

Imports only the standard library: the hooks use it once per push.
"""

from __future__ import annotations

import datetime as dt
import sqlite3

from mlab.codeservice.owners import use_connection

TYPE_CHECKING = False  # not `from typing import`: typing (with re) costs the hook ~8 ms a push

if TYPE_CHECKING:  # imported by the hook on every push: only what runs
    from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS quota_usage (
    user TEXT NOT NULL,
    day TEXT NOT NULL,               -- UTC date, YYYY-MM-DD
    refs INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user, day)
);
"""


def today() -> str:
    """The current UTC day as ``YYYY-MM-DD``."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")


def create_tables(db_path: Path | str) -> None:
    """Create this module's table (the service does it once at start)."""
    with use_connection(db_path) as db:
        db.executescript(SCHEMA)


def usage(db_path: Path | str | sqlite3.Connection, user: str) -> tuple[int, int]:
    """Today's ``(ref updates, bytes)`` of ``user``."""
    with use_connection(db_path) as db:
        row = db.execute("SELECT refs, bytes FROM quota_usage WHERE user=? AND day=?",
                         (user, today())).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def add(db_path: Path | str | sqlite3.Connection, user: str, refs: int, nbytes: int) -> None:
    """Count ``refs`` ref updates and ``nbytes`` bytes pushed by ``user`` today."""
    with use_connection(db_path) as db:
        with db:
            db.execute(
                "INSERT INTO quota_usage(user, day, refs, bytes) VALUES (?,?,?,?) "
                "ON CONFLICT(user, day) DO UPDATE SET refs=refs+excluded.refs, "
                "bytes=bytes+excluded.bytes", (user, today(), refs, nbytes))


def add_bytes(db_path: Path | str | sqlite3.Connection, user: str, nbytes: int) -> None:
    """Count ``nbytes`` pushed by ``user`` today."""
    add(db_path, user, 0, nbytes)


def add_refs(db_path: Path | str | sqlite3.Connection, user: str, count: int) -> None:
    """Count ``count`` ref updates pushed by ``user`` today."""
    add(db_path, user, count, 0)


def bytes_left(db_path: Path | str | sqlite3.Connection, user: str, limit: int) -> int:
    """Bytes ``user`` may still push today (0 or less: none)."""
    return limit - usage(db_path, user)[1]


def refs_left(db_path: Path | str | sqlite3.Connection, user: str, limit: int) -> int:
    """Ref updates ``user`` may still push today."""
    return limit - usage(db_path, user)[0]
