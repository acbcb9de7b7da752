"""The code service's SQLite database: accounts (argon2 hashes) and the mirror registry.

Invariant: passwords never reach the database or a log in clear; only argon2id hashes
(RFC 9106, argon2-cffi defaults) are stored. Every call opens its own connection (SQLite
connections are not shared between threads) in WAL mode, except :meth:`Store.get_repo`,
asked on every git request, which reads through a connection kept per thread; the service
also keeps one idle connection open (:meth:`Store.keep_open`). So the request handlers,
the background sync and other parts (issue 7's requests tables live in the same file) can
use the database at once. Timestamps are UTC seconds since the epoch (floats).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from mlab.dbfile import private_db

SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    name TEXT PRIMARY KEY,
    hash TEXT NOT NULL,
    is_admin INTEGER NOT NULL DEFAULT 0,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS repos (
    name TEXT PRIMARY KEY,          -- org/repo
    upstream TEXT NOT NULL,
    approved_by TEXT NOT NULL,
    approved_at REAL NOT NULL,
    last_sync REAL,                 -- time of the last attempt
    last_ok REAL,                   -- time of the last successful sync
    last_result TEXT,               -- 'ok' or the error line
    conflicts TEXT NOT NULL DEFAULT '[]'  -- JSON list of branch names
);
"""

_hasher = PasswordHasher()


@dataclass(frozen=True)
class RepoRecord:
    """One approved mirror, as the registry holds it."""

    name: str
    upstream: str
    approved_by: str
    approved_at: float
    last_sync: float | None
    last_ok: float | None
    last_result: str | None
    conflicts: str

    def as_json(self) -> dict[str, object]:
        """A JSON-ready dict (the API's repository shape)."""
        import json

        return {
            "name": self.name,
            "upstream": self.upstream,
            "approved_by": self.approved_by,
            "approved_at": self.approved_at,
            "last_sync": self.last_sync,
            "last_ok": self.last_ok,
            "last_result": self.last_result,
            "conflicts": json.loads(self.conflicts or "[]"),
        }


class Store:
    """Access to the database file at ``path`` (created with its schema on first use)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        path.parent.mkdir(parents=True, exist_ok=True)
        private_db(path)
        with self.connect() as db:
            # WAL is a property of the file (sqlite.org/wal.html): set once here, not per call.
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)

    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A connection in a transaction: committed on success, rolled back on error."""
        db = sqlite3.connect(self.path, timeout=30)  # busy timeout 30 s
        try:
            with db:
                yield db
        finally:
            db.close()

    def keep_open(self) -> None:
        """Hold one connection open until this process exits (the service calls it).

        SQLite checkpoints the WAL into the database file and deletes it whenever the last
        connection to the file closes (sqlite.org/wal.html, "Automatic Checkpoint" and
        "Persistence of WAL mode"); with a connection per call that was every call: a
        checkpoint and its disk syncs on each push's bookkeeping (about 6 ms a push,
        issue 18). With this one open no other close is the last; SQLite still
        checkpoints when the WAL reaches 1,000 pages.
        """
        if getattr(self, "_keeper", None) is None:
            keeper = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
            keeper.execute("SELECT count(*) FROM sqlite_master").fetchone()  # opens -wal, -shm
            self._keeper = keeper

    # accounts ---------------------------------------------------------------------------
    def set_password(self, name: str, password: str, is_admin: bool = False) -> None:
        """Store ``password``'s argon2 hash for ``name`` unless the stored hash matches it."""
        if self.check_password(name, password) is not None:
            return
        with self.connect() as db:
            db.execute(
                "INSERT INTO accounts(name, hash, is_admin, updated) VALUES (?,?,?,?) "
                "ON CONFLICT(name) DO UPDATE SET hash=excluded.hash, "
                "is_admin=excluded.is_admin, updated=excluded.updated",
                (name, _hasher.hash(password), int(is_admin), time.time()),
            )

    def remove_accounts_except(self, keep: set[str]) -> None:
        """Delete accounts not in ``keep`` (users removed from the site lose access)."""
        with self.connect() as db:
            for (name,) in db.execute("SELECT name FROM accounts").fetchall():
                if name not in keep:
                    db.execute("DELETE FROM accounts WHERE name=?", (name,))

    def has_account(self, name: str) -> bool:
        """True when an account ``name`` exists (cheap: no hash)."""
        with self.connect() as db:
            return db.execute("SELECT 1 FROM accounts WHERE name=?", (name,)).fetchone() \
                is not None

    def check_password(self, name: str, password: str) -> bool | None:
        """Verify a password (slow: argon2).

        Returns:
            None when the account is unknown or the password is wrong, else ``is_admin``.
        """
        with self.connect() as db:
            row = db.execute(
                "SELECT hash, is_admin FROM accounts WHERE name=?", (name,)
            ).fetchone()
        if row is None:
            # Same cost as a real check, so timing does not reveal which names exist.
            with contextlib.suppress(VerificationError, InvalidHashError):
                _hasher.verify(_DUMMY_HASH, password)
            return None
        try:
            _hasher.verify(row[0], password)
        except (VerificationError, InvalidHashError):
            return None
        return bool(row[1])

    # repos ------------------------------------------------------------------------------
    def add_repo(self, name: str, upstream: str, approved_by: str) -> None:
        """Register an approved mirror (replacing nothing: the name must be new)."""
        with self.connect() as db:
            db.execute(
                "INSERT INTO repos(name, upstream, approved_by, approved_at) VALUES (?,?,?,?)",
                (name, upstream, approved_by, time.time()),
            )

    def remove_repo(self, name: str) -> bool:
        """Forget a mirror; True if it was registered."""
        with self.connect() as db:
            return db.execute("DELETE FROM repos WHERE name=?", (name,)).rowcount > 0

    def get_repo(self, name: str) -> RepoRecord | None:
        """The registry row of ``name`` (``org/repo``), or None.

        Asked on every git request, on the event loop: read through this thread's kept
        connection (a new connection cost about 0.35 ms). Outside a transaction each
        SELECT reads the latest commit, so a revoke is seen by the next request.
        """
        db = getattr(self._local, "reader", None)
        if db is None:
            db = self._local.reader = sqlite3.connect(self.path, timeout=30)
        rows = db.execute(f"SELECT {_COLS} FROM repos WHERE name=?", (name,)).fetchall()
        return RepoRecord(*rows[0]) if rows else None

    def list_repos(self) -> list[RepoRecord]:
        """Every registered mirror, sorted by name."""
        with self.connect() as db:
            rows = db.execute(f"SELECT {_COLS} FROM repos ORDER BY name").fetchall()
        return [RepoRecord(*r) for r in rows]

    def record_sync(self, name: str, ok: bool, result: str, conflicts: str) -> None:
        """Store the outcome of a sync attempt (``result`` is 'ok' or one error line)."""
        now = time.time()
        with self.connect() as db:
            if ok:
                db.execute(
                    "UPDATE repos SET last_sync=?, last_ok=?, last_result=?, conflicts=? "
                    "WHERE name=?",
                    (now, now, result, conflicts, name),
                )
            else:
                db.execute(
                    "UPDATE repos SET last_sync=?, last_result=? WHERE name=?",
                    (now, result, name),
                )


_COLS = "name, upstream, approved_by, approved_at, last_sync, last_ok, last_result, conflicts"
_DUMMY_HASH = _hasher.hash("mlab-dummy-password")
