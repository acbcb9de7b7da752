"""Who owns a user branch or tag, and which ref names a user may push (issue 13, items 4, 5, 8).

Invariant: every user ref (a branch or tag under ``refs/heads/`` or ``refs/tags/`` without
an upstream marker) has at most one owner, recorded in the service's SQLite file (table
``ref_owners``) by the post-receive hook when the push that created it succeeded. Only its
owner changes or deletes it; reviewers and the admin delete any user ref through
``DELETE /api/repos/ORG/REPO/refs/REF`` (``mlab repo delete-ref``). The site chooses how
names are handed out (``codeService.refPolicy``):

- ``creator`` (default): anyone may create a name nobody holds (``feature_1``), except
  names under another account's namespace (``refs/heads/<other>/...``); it is then theirs.
  The seed's ``feature_1`` flow works because the office PC's ``mlab relay start`` pushes
  ``feature_1`` with the engineer's own account (``MLAB_USER``), the same account the
  engineer uses in the HomePod to push to it.
- ``namespace``: users push only ``refs/heads/<user>/...`` and ``refs/tags/<user>/...``
  (``mlab relay start alice/feature_1``).

A ref without a recorded owner (pushed before owners were recorded) belongs to the account
its namespace names, else to no one: only a reviewer can delete it.

Names that make git or people guess are refused on creation: ``HEAD`` as a component,
names that repeat a namespace (``refs/heads/refs/...``, ``refs/heads/tags/...``), names
that look like an object id (7 to 40 hex digits), a branch named like an existing tag and
the reverse.

Imports only the standard library: the hooks use it once per push.
"""

from __future__ import annotations

import sqlite3
import time

TYPE_CHECKING = False  # not `from typing import`: typing (with re) costs the hook ~8 ms a push

if TYPE_CHECKING:  # imported by the hook on every push: only what runs
    from pathlib import Path

ZERO = "0" * 40
SCHEMA = """
CREATE TABLE IF NOT EXISTS ref_owners (
    repo TEXT NOT NULL,
    ref TEXT NOT NULL,               -- refs/heads/X or refs/tags/X
    owner TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (repo, ref)
);
CREATE TABLE IF NOT EXISTS ref_notices (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user TEXT NOT NULL,
    repo TEXT NOT NULL,
    text TEXT NOT NULL,
    created REAL NOT NULL,
    shown INTEGER NOT NULL DEFAULT 0
);
"""
_HEX = frozenset("0123456789abcdefABCDEF")


def _hexish(part: str) -> bool:
    """7 to 40 hex digits: a name git would confuse with an abbreviated object id.

    Plain string code, not ``re``: the pre-receive hook imports this module on every push
    and ``re`` alone costs it about 6 ms of start-up (issue 18).
    """
    return 7 <= len(part) <= 40 and all(c in _HEX for c in part)
_NAMESPACES = ("refs/", "heads/", "tags/", "remotes/", "mlab/")


class use_connection:  # noqa: N801  (used as a function: ``with use_connection(db) as c``)
    """``db`` itself when it is a connection (left open), else a new one (closed after).

    A small class rather than ``contextlib.contextmanager``: the hook imports this module
    on every push, and ``contextlib`` costs it about 4 ms of start-up.
    """

    def __init__(self, db: Path | str | sqlite3.Connection) -> None:
        self._db = db
        self._own: sqlite3.Connection | None = None

    def __enter__(self) -> sqlite3.Connection:
        if isinstance(self._db, sqlite3.Connection):
            return self._db
        self._own = connect(self._db)
        return self._own

    def __exit__(self, *exc: object) -> None:
        if self._own is not None:
            self._own.close()
            self._own = None


def connect(db_path: Path | str) -> sqlite3.Connection:
    """A connection to the service's database (:func:`create_tables` made the tables)."""
    db = sqlite3.connect(str(db_path), timeout=30)
    db.execute("PRAGMA busy_timeout=30000")
    # WAL (set by the Store) with synchronous=NORMAL: a commit does not wait for the disk;
    # a power cut may lose the last bookkeeping rows, never corrupt the file (sqlite.org/wal).
    db.execute("PRAGMA synchronous=NORMAL")
    return db


def create_tables(db_path: Path | str) -> None:
    """Create this module's tables (the service does it once at start)."""
    with use_connection(db_path) as db:
        db.executescript(SCHEMA)


def short_name(ref: str) -> str:
    """``refs/heads/a/b`` -> ``a/b``; ``refs/tags/v1`` -> ``v1``."""
    return ref.removeprefix("refs/heads/").removeprefix("refs/tags/")


def namespace_of(ref: str, accounts: set[str]) -> str | None:
    """The account whose namespace holds ``ref`` (``refs/heads/alice/x`` -> alice), or None."""
    first, sep, _rest = short_name(ref).partition("/")
    return first if sep and first in accounts else None


def ambiguous(ref: str, existing: set[str]) -> str | None:
    """Why creating ``ref`` would be ambiguous, or None (pure).

    Args:
        ref: the full name being created.
        existing: the repository's current ref names (full).
    """
    short = short_name(ref)
    parts = short.split("/")
    if "HEAD" in parts:
        return f"{ref} has a component named HEAD, which git reads as the current branch"
    if short.startswith(_NAMESPACES):
        return f"{ref} repeats a ref namespace ({short.split('/')[0]}/), which git resolves ambiguously"
    if _hexish(parts[-1]):
        return f"{ref} looks like a commit id, which git would confuse with one"
    other = ("refs/tags/" if ref.startswith("refs/heads/") else "refs/heads/") + short
    if other in existing:
        kind = "tag" if other.startswith("refs/tags/") else "branch"
        return f"{ref}: a {kind} named {short} exists; git would resolve {short} ambiguously"
    return None


def check_update(user: str, ref: str, old: str, new: str, *, policy: str, owner: str | None,
                 accounts: set[str]) -> str | None:
    """The ownership rule for one ref update (pure). The refusal, or None to accept.

    Args:
        user: the pushing account.
        ref: full ref name (a branch or tag, not an upstream one: checked before).
        old: the ref's current value (40 zeros: it does not exist).
        new: the pushed value (40 zeros: delete).
        policy: ``creator`` or ``namespace`` (site ``codeService.refPolicy``).
        owner: the recorded owner, or None.
        accounts: every account name (their namespaces are reserved).
    """
    space = namespace_of(ref, accounts)
    mine = f"refs/heads/{user}/<topic>"
    if policy == "namespace" and space != user:
        return (f"refusing {ref}: this site lets you push only under refs/heads/{user}/ and "
                f"refs/tags/{user}/ (codeService.refPolicy: namespace); e.g. "
                f"git push origin HEAD:{mine}")
    if space is not None and space != user:
        return f"refusing {ref}: it is in {space}'s namespace; push HEAD:{mine} instead"
    if old == ZERO:
        return None  # a new name: it becomes the pusher's
    holder = owner or space
    if holder != user:
        who = f"belongs to {holder}" if holder else "has no recorded owner"
        verb = "delete" if new == ZERO else "update"
        return (f"refusing to {verb} {ref}: it {who}; push your work as a branch of your "
                f"own (git push origin HEAD:{mine}), or ask a reviewer to delete it "
                "(mlab repo delete-ref)")
    return None


def owners(db_path: Path | str | sqlite3.Connection, repo: str, refs: list[str]) -> dict[str, str]:
    """The recorded owners of ``refs`` in ``repo`` (refs without one are absent)."""
    with use_connection(db_path) as db:
        found = {}
        for ref in refs:
            row = db.execute("SELECT owner FROM ref_owners WHERE repo=? AND ref=?",
                             (repo, ref)).fetchone()
            if row:
                found[ref] = row[0]
        return found


def accounts(db_path: Path | str | sqlite3.Connection) -> set[str]:
    """Every account name of the service."""
    with use_connection(db_path) as db:
        with_table = db.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='accounts'").fetchone()
        return {r[0] for r in db.execute("SELECT name FROM accounts")} if with_table else set()


def record(db_path: Path | str | sqlite3.Connection, repo: str, user: str,
           updates: list[tuple[str, str, str]]) -> None:
    """After a push: created refs become ``user``'s, deleted refs lose their owner."""
    with use_connection(db_path) as db:
        with db:
            for old, new, ref in updates:
                if new == ZERO:
                    db.execute("DELETE FROM ref_owners WHERE repo=? AND ref=?", (repo, ref))
                elif old == ZERO:
                    db.execute(
                        "INSERT INTO ref_owners(repo, ref, owner, created) VALUES (?,?,?,?) "
                        "ON CONFLICT(repo, ref) DO UPDATE SET owner=excluded.owner, "
                        "created=excluded.created", (repo, ref, user, time.time()))


def forget(db_path: Path | str | sqlite3.Connection, repo: str, ref: str) -> str | None:
    """Drop the owner record of ``ref``; returns the owner it had."""
    with use_connection(db_path) as db:
        with db:
            row = db.execute("SELECT owner FROM ref_owners WHERE repo=? AND ref=?",
                             (repo, ref)).fetchone()
            db.execute("DELETE FROM ref_owners WHERE repo=? AND ref=?", (repo, ref))
        return row[0] if row else None


def moved(db_path: Path | str | sqlite3.Connection, repo: str, old_ref: str, new_ref: str,
          accounts_: set[str], text: str) -> str | None:
    """A sync moved a user ref aside: carry its owner over and leave the owner a notice.

    Returns:
        The owner (recorded, else the namespace's account), or None when nobody owns it.
    """
    with use_connection(db_path) as db:
        with db:
            row = db.execute("SELECT owner FROM ref_owners WHERE repo=? AND ref=?",
                             (repo, old_ref)).fetchone()
            owner = row[0] if row else namespace_of(old_ref, accounts_)
            db.execute("DELETE FROM ref_owners WHERE repo=? AND ref=?", (repo, old_ref))
            if owner:
                db.execute(
                    "INSERT OR REPLACE INTO ref_owners(repo, ref, owner, created) "
                    "VALUES (?,?,?,?)", (repo, new_ref, owner, time.time()))
                db.execute("INSERT INTO ref_notices(user, repo, text, created) "
                           "VALUES (?,?,?,?)", (owner, repo, text, time.time()))
        return owner


def take_notices(db_path: Path | str | sqlite3.Connection, user: str) -> list[str]:
    """Unshown notices of ``user`` (marked shown): ``"org/repo: text"`` lines. Reads only
    (no write transaction, no disk sync) when there is nothing to show."""
    with use_connection(db_path) as db:
        rows = db.execute("SELECT id, repo, text FROM ref_notices WHERE user=? AND "
                          "shown=0 ORDER BY id", (user,)).fetchall()
        if rows:
            with db:
                db.executemany("UPDATE ref_notices SET shown=1 WHERE id=?",
                               [(r[0],) for r in rows])
        return [f"{r[1]}: {r[2]}" for r in rows]


def notices(db_path: Path | str | sqlite3.Connection, user: str) -> list[dict[str, object]]:
    """Every notice of ``user``, newest first (the API's shape)."""
    with use_connection(db_path) as db:
        rows = db.execute("SELECT repo, text, created FROM ref_notices WHERE user=? "
                          "ORDER BY id DESC", (user,)).fetchall()
        return [{"repo": r[0], "text": r[1], "time": r[2]} for r in rows]
