"""The request store: SQLite tables of requests and their history.

Invariant: a request's ``state`` always equals the ``to_state`` of its last event, because
both are written in one ``BEGIN IMMEDIATE`` transaction after :func:`mlab.requests.model.plan`
approved the move; two reviewers approving at once are serialized by SQLite's write lock, so
the two-person rule cannot be raced. Events are never updated or deleted.

Schema (file ``requests.sqlite`` in the code service's data directory)::

    requests(id, kind, owner, state, reason, created_at, updated_at, payload JSON)
    events(seq, request_id, at, actor, action, from_state, to_state, comment)

Times are ISO 8601 UTC strings with seconds (``2026-11-29T13:31:32Z``); ``seq`` orders events
globally, so "approval order" is the order of the ``seq`` of each approving event.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlab.dbfile import private_db
from mlab.requests.model import (
    Actor,
    Forbidden,
    InvalidRequest,
    Kind,
    NotFound,
    State,
    Step,
    can_see,
    check_transition,
    plan,
)

Records = list[dict[str, Any]]
"""Requests as JSON objects (a name of its own: in the class body its ``list`` method hides
the builtin)."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    owner TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id INTEGER NOT NULL REFERENCES requests(id),
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    from_state TEXT,
    to_state TEXT NOT NULL,
    comment TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_request ON events(request_id, seq);
CREATE INDEX IF NOT EXISTS requests_owner ON requests(owner, id);
"""


def now_utc() -> str:
    """The current time as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def publisher_note_refusal(kind: str, state: State, action: str) -> str | None:
    """What the Airlock's publisher account may note (issue 13, item 8), pure.

    The publisher reports what it did to exports, nothing else: ``published`` and
    ``blocked`` only on an approved export (a "published" note on an unapproved one would
    claim a review that never happened), ``unpublished`` only on an export that is no
    longer approved, and no free-form notes. Reviewers note anything.

    Returns:
        Why the note is refused, or None to accept it.
    """
    if kind != "export":
        return f"the publisher notes exports only, not {kind} requests"
    if action in ("published", "blocked") and state is not State.APPROVED:
        return f"the publisher cannot note {action!r} on a {state.value} export (only approved)"
    if action == "unpublished" and state is State.APPROVED:
        return "the publisher cannot note 'unpublished' on an approved export"
    if action == "note":
        return "the publisher adds only published, blocked and unpublished notes"
    return None


class RequestStore:
    """Requests and their history in one SQLite file.

    Args:
        path: the database file; its directory must exist. Created on first use.
        two_person: kinds that need two distinct approvers (``codeService.twoPersonApproval``).

    Every method opens its own connection, so a store may be shared by threads.
    """

    def __init__(self, path: str | Path, two_person: list[str] | tuple[str, ...] = ()) -> None:
        self.path = Path(path)
        self.two_person = tuple(str(k) for k in two_person)
        self._init_lock = threading.Lock()
        self._ready = False

    @contextmanager
    def _connect(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        if not self._ready:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            private_db(self.path)  # it holds no passwords, but who asked for what: 0600
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA foreign_keys = ON")
            if not self._ready:
                with self._init_lock:
                    conn.execute("PRAGMA journal_mode = WAL")
                    conn.executescript(SCHEMA)
                    self._ready = True
            if write:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            else:
                yield conn
        finally:
            conn.close()

    # --- writes ---------------------------------------------------------------------------

    def create(self, *, kind: Kind, owner: str, reason: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Store a new ``submitted`` request with its ``submit`` event; return it (as :meth:`get`)."""
        at = now_utc()
        with self._connect(write=True) as conn:
            cur = conn.execute(
                "INSERT INTO requests (kind, owner, state, reason, created_at, updated_at, payload)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (str(kind), owner, str(State.SUBMITTED), reason, at, at, json.dumps(payload)),
            )
            rid = int(cur.lastrowid or 0)
            conn.execute(
                "INSERT INTO events (request_id, at, actor, action, from_state, to_state, comment)"
                " VALUES (?, ?, ?, 'submit', NULL, ?, ?)",
                (rid, at, owner, str(State.SUBMITTED), reason),
            )
        return self.get(rid, Actor(owner))

    def act(self, request_id: int, action: str, actor: Actor, comment: str | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Apply ``action`` by ``actor`` to a request.

        Returns:
            ``(request, events)``: the request after the action (as :meth:`get`) and the
            events just recorded (dicts as in ``history``), for notifications.

        Raises:
            NotFound: no such request, or not visible to the actor.
            Forbidden, Conflict, InvalidRequest: see :func:`mlab.requests.model.plan`.
        """
        with self._connect(write=True) as conn:
            row = conn.execute("SELECT * FROM requests WHERE id = ?", (request_id,)).fetchone()
            if row is None or not can_see(actor, row["owner"]):
                raise NotFound(f"request {request_id}: no such request")
            state = State(row["state"])
            steps = plan(
                action,
                request_id=request_id,
                kind=Kind(row["kind"]),
                owner=row["owner"],
                state=state,
                approvers=self._approvers(conn, request_id),
                actor=actor,
                two_person=self.two_person,
                comment=comment,
            )
            at = now_utc()
            recorded: list[dict[str, Any]] = []
            for step in steps:
                check_transition(step.from_state, step.to_state)
                recorded.append(self._record(conn, request_id, at, actor.name, step))
            conn.execute(
                "UPDATE requests SET state = ?, updated_at = ? WHERE id = ?",
                (str(steps[-1].to_state), at, request_id),
            )
        return self.get(request_id, actor), recorded

    def preview(self, request_id: int, action: str, actor: Actor,
                comment: str | None = None) -> tuple[dict[str, Any], list[Step]]:
        """Plan ``action`` without recording it: what :meth:`act` would do now.

        Used where a decision has a side effect that must succeed before it is recorded
        (approving a mirror request creates the mirror first). Between a preview and the
        :meth:`act` another reviewer may act; :meth:`act` plans again and refuses what is no
        longer allowed.

        Returns:
            ``(request, steps)``: the request (as :meth:`get`, without history) and the
            planned events; the last step's ``to_state`` is the state after the action.

        Raises:
            NotFound, Forbidden, Conflict, InvalidRequest: as :meth:`act`.
        """
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM requests WHERE id = ?", (request_id,)).fetchone()
            if row is None or not can_see(actor, row["owner"]):
                raise NotFound(f"request {request_id}: no such request")
            steps = plan(
                action, request_id=request_id, kind=Kind(row["kind"]), owner=row["owner"],
                state=State(row["state"]), approvers=self._approvers(conn, request_id),
                actor=actor, two_person=self.two_person, comment=comment,
            )
            return self._to_dict(row, None), steps

    @staticmethod
    def _record(conn: sqlite3.Connection, rid: int, at: str, who: str, step: Step) -> dict[str, Any]:
        cur = conn.execute(
            "INSERT INTO events (request_id, at, actor, action, from_state, to_state, comment)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (rid, at, who, step.action, str(step.from_state), str(step.to_state), step.comment),
        )
        return {
            "seq": int(cur.lastrowid or 0),
            "at": at,
            "by": who,
            "action": step.action,
            "from": str(step.from_state),
            "to": str(step.to_state),
            "comment": step.comment,
        }

    def note(self, request_id: int, actor: Actor, action: str, comment: str,
             publisher: bool = False) -> dict[str, Any]:
        """Record an event that does not change the state (e.g. ``published``, ``blocked``).

        Only reviewers, the admin and the Airlock's publisher (``publisher``) add notes.

        Raises:
            Forbidden: the actor does not review.
            NotFound: no such request.
        """
        if not (actor.reviews or publisher):
            raise Forbidden(f"request {request_id}: only reviewers and the publisher add notes")
        if action not in ("published", "blocked", "unpublished", "note"):
            raise InvalidRequest(f"action: {action!r} is not a note kind")
        with self._connect(write=True) as conn:
            row = conn.execute("SELECT state, kind FROM requests WHERE id = ?",
                               (request_id,)).fetchone()
            if row is None:
                raise NotFound(f"request {request_id}: no such request")
            state = State(row["state"])
            if not actor.reviews:
                refusal = publisher_note_refusal(str(row["kind"]), state, action)
                if refusal:
                    raise Forbidden(f"request {request_id}: {refusal}")
            return self._record(
                conn, request_id, now_utc(), actor.name, Step(action, state, state, comment[:4000])
            )

    # --- reads ----------------------------------------------------------------------------

    @staticmethod
    def _approvers(conn: sqlite3.Connection, rid: int) -> list[str]:
        rows = conn.execute(
            "SELECT actor FROM events WHERE request_id = ? AND action = 'approve' ORDER BY seq",
            (rid,),
        ).fetchall()
        return [r["actor"] for r in rows]

    @staticmethod
    def _to_dict(row: sqlite3.Row, history: list[dict[str, Any]] | None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": row["id"],
            "kind": row["kind"],
            "owner": row["owner"],
            "state": row["state"],
            "reason": row["reason"],
            "created_at": row["created_at"],
            "updated_at": row["updated_at"],
        }
        out.update(json.loads(row["payload"]))
        if history is not None:
            out["history"] = history
            out["approvers"] = [e["by"] for e in history if e["action"] == "approve"]
        return out

    @staticmethod
    def _history(conn: sqlite3.Connection, rid: int) -> list[dict[str, Any]]:
        rows = conn.execute(
            "SELECT * FROM events WHERE request_id = ? ORDER BY seq", (rid,)
        ).fetchall()
        return [
            {
                "seq": r["seq"],
                "at": r["at"],
                "by": r["actor"],
                "action": r["action"],
                "from": r["from_state"],
                "to": r["to_state"],
                "comment": r["comment"],
            }
            for r in rows
        ]

    def get(self, request_id: int, actor: Actor) -> dict[str, Any]:
        """One request with its payload, ``history`` (events in order) and ``approvers``.

        Raises:
            NotFound: no such request, or the actor may not see it (same answer, so a user
                cannot probe other users' request ids).
        """
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM requests WHERE id = ?", (request_id,)).fetchone()
            if row is None or not can_see(actor, row["owner"]):
                raise NotFound(f"request {request_id}: no such request")
            return self._to_dict(row, self._history(conn, request_id))

    def list(
        self,
        actor: Actor,
        *,
        all_users: bool = False,
        kind: str | None = None,
        state: str | None = None,
        history: bool = False,
    ) -> list[dict[str, Any]]:
        """Requests the actor may see, newest first.

        Args:
            actor: who asks; a non-reviewer only ever gets their own requests.
            all_users: reviewers: every user's requests (else their own).
            kind: only this kind. None: all.
            state: only this state. None: all.
            history: include each request's history.

        Raises:
            Forbidden: ``all_users`` asked by someone who does not review.
        """
        if all_users and not actor.reviews:
            raise Forbidden(
                f"{actor.name!r} is not a reviewer; only reviewers list every user's requests"
            )
        sql = "SELECT * FROM requests WHERE 1 = 1"
        args: list[Any] = []
        if not all_users:
            sql += " AND owner = ?"
            args.append(actor.name)
        if kind:
            sql += " AND kind = ?"
            args.append(kind)
        if state:
            sql += " AND state = ?"
            args.append(state)
        sql += " ORDER BY id DESC"
        with self._connect() as conn:
            rows = conn.execute(sql, args).fetchall()
            return [
                self._to_dict(r, self._history(conn, r["id"]) if history else None) for r in rows
            ]

    def exports_for_publisher(self) -> Records:
        """Every export request (any state, no history): what the Airlock publisher syncs.

        Only the outbox location, file list and state are needed; reasons and history stay
        with reviewers.
        """
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT * FROM requests WHERE kind = 'export' ORDER BY id"
            ).fetchall()
            out = []
            for r in rows:
                item = self._to_dict(r, None)
                item.pop("reason", None)
                out.append(item)
            return out

    def approved_packages(self) -> Records:
        """Approved package requests in approval order (the ``seq`` of their approving event).

        Returns:
            List of ``{"id", "owner", "reason", "script", "approved_at", "approvers"}``.
        """
        sql = (
            "SELECT r.*, e.seq AS approved_seq, e.at AS approved_at FROM requests r"
            " JOIN events e ON e.request_id = r.id AND e.to_state = 'approved'"
            " WHERE r.kind = 'package' AND r.state = 'approved' ORDER BY e.seq"
        )
        out = []
        with self._connect() as conn:
            for r in conn.execute(sql).fetchall():
                payload = json.loads(r["payload"])
                out.append(
                    {
                        "id": r["id"],
                        "owner": r["owner"],
                        "reason": r["reason"],
                        "script": payload["script"],
                        "approved_at": r["approved_at"],
                        "approvers": self._approvers(conn, r["id"]),
                    }
                )
        return out
