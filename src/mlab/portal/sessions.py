"""Server-side sessions for the portal: the browser holds only a random id.

Invariants:
- The cookie ``mlab_portal`` carries 32 random bytes (``secrets.token_urlsafe``) and
  nothing else; the session's content (user, groups, CSRF token, the sign-in's PKCE
  verifier and state) stays in the portal's memory. A stolen cookie is useless once the
  session ends (sign-out, expiry, portal restart).
- The cookie is ``Secure; HttpOnly; SameSite=Lax; Path=/``. Lax, not Strict: the provider
  redirects the browser back to ``/auth/callback`` from another site, and that top-level
  GET must carry the cookie that holds the sign-in's state. Browsers treat
  ``http://localhost`` as a secure context, so Secure cookies also work there.
- The id changes when a user signs in (no session fixation: an id planted before the
  sign-in never becomes a signed-in session).
- Every form has the session's CSRF token, compared in constant time (:func:`check_csrf`).
- With ``--session-db FILE`` (:class:`SqliteSessionStore`) sessions survive a restart of the
  portal: the file (0600) keys each session by the SHA-256 of its id, so a copy of the file
  gives no cookie that works. One portal replica (SQLite is one machine's file).

The session is exposed to handlers as ``request.session`` (a dict, Starlette's convention,
which Authlib's Starlette client uses for the sign-in state).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

COOKIE = "mlab_portal"
ROTATE = "_rotate"
"""Set ``request.session[ROTATE] = True`` to give the session a new id (at sign-in)."""
CSRF = "csrf"


@dataclass
class _Entry:
    data: dict[str, Any]
    expires: float


@dataclass
class SessionStore:
    """Sessions in memory, each with an absolute lifetime.

    Attributes:
        lifetime: seconds a session lives from its creation (``portal.sessionHours``).
    """

    lifetime: float
    _items: dict[str, _Entry] = field(default_factory=dict)

    def get(self, sid: str | None) -> dict[str, Any] | None:
        """A copy of the session ``sid``, or None when unknown or expired."""
        if not sid:
            return None
        entry = self._items.get(sid)
        if entry is None:
            return None
        if entry.expires < time.time():
            del self._items[sid]
            return None
        return dict(entry.data)

    def save(self, sid: str | None, data: dict[str, Any]) -> str:
        """Store ``data`` under ``sid`` (a new id when None); return the id."""
        now = time.time()
        if sid is None or sid not in self._items:
            sid = secrets.token_urlsafe(32)
            self._items[sid] = _Entry(data, now + self.lifetime)
        else:
            self._items[sid].data = data
        self._purge(now)
        return sid

    def delete(self, sid: str | None) -> None:
        """End the session ``sid`` (sign-out); unknown ids are ignored."""
        if sid:
            self._items.pop(sid, None)

    def _purge(self, now: float) -> None:
        for key in [k for k, e in self._items.items() if e.expires < now]:
            del self._items[key]


class SqliteSessionStore:
    """Sessions in a SQLite file, so that they survive a restart of the portal.

    Same interface as :class:`SessionStore`. The table holds ``SHA-256(id)``, the session as
    JSON, and its expiry (epoch seconds); expired rows are deleted as new sessions are made.

    Args:
        path: the database file (created 0600; its directory must exist).
        lifetime: seconds a session lives from its creation (``portal.sessionHours``).

    Raises:
        sqlite3.Error: the file is not a database or cannot be opened.
    """

    def __init__(self, path: os.PathLike[str] | str, lifetime: float) -> None:
        self.lifetime = lifetime
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS sessions (key TEXT PRIMARY KEY, "
                             "data TEXT NOT NULL, expires REAL NOT NULL)")

    @staticmethod
    def _key(sid: str) -> str:
        return hashlib.sha256(sid.encode()).hexdigest()

    def get(self, sid: str | None) -> dict[str, Any] | None:
        """The session ``sid``, or None when unknown or expired."""
        if not sid:
            return None
        with self._lock:
            row = self._db.execute("SELECT data, expires FROM sessions WHERE key = ?",
                                   (self._key(sid),)).fetchone()
        if row is None or row[1] < time.time():
            return None
        return dict(json.loads(row[0]))

    def save(self, sid: str | None, data: dict[str, Any]) -> str:
        """Store ``data`` under ``sid`` (a new id when None or unknown); return the id."""
        now = time.time()
        text = json.dumps(data)
        with self._lock:
            if sid is not None:
                updated = self._db.execute(
                    "UPDATE sessions SET data = ? WHERE key = ? AND expires >= ?",
                    (text, self._key(sid), now)).rowcount
                if updated:
                    return sid
            sid = secrets.token_urlsafe(32)
            self._db.execute("INSERT INTO sessions VALUES (?, ?, ?)",
                             (self._key(sid), text, now + self.lifetime))
            self._db.execute("DELETE FROM sessions WHERE expires < ?", (now,))
        return sid

    def delete(self, sid: str | None) -> None:
        """End the session ``sid`` (sign-out); unknown ids are ignored."""
        if sid:
            with self._lock:
                self._db.execute("DELETE FROM sessions WHERE key = ?", (self._key(sid),))


def csrf_token(session: dict[str, Any]) -> str:
    """The session's CSRF token, created on first use (32 random bytes, URL-safe)."""
    if CSRF not in session:
        session[CSRF] = secrets.token_urlsafe(32)
    return str(session[CSRF])


def check_csrf(session: dict[str, Any], submitted: object) -> bool:
    """True when ``submitted`` (a form field) equals the session's CSRF token."""
    expected = session.get(CSRF)
    return (isinstance(expected, str) and isinstance(submitted, str)
            and secrets.compare_digest(expected, submitted))


def cookie_header(sid: str, max_age: int | None) -> str:
    """The Set-Cookie value for ``sid`` (``max_age`` 0 deletes it)."""
    parts = [f"{COOKIE}={sid}", "Path=/", "HttpOnly", "Secure", "SameSite=Lax"]
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    return "; ".join(parts)


class SessionMiddleware:
    """ASGI middleware: loads ``scope["session"]`` from the store, saves it after the
    handler, and sets or clears the cookie. WebSocket scopes get the session read-only."""

    def __init__(self, app: ASGIApp, store: SessionStore | SqliteSessionStore) -> None:
        self.app = app
        self.store = store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        sid = _cookie(scope)
        loaded = self.store.get(sid)
        if loaded is None:
            sid = None
        scope["session"] = dict(loaded or {})
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        before = loaded

        async def send_wrapper(message: Message) -> None:
            nonlocal sid
            if message["type"] == "http.response.start":
                session = scope["session"]
                headers = MutableHeaders(scope=message)
                if session.pop(ROTATE, False):
                    self.store.delete(sid)
                    sid = None
                if session:
                    if session != before or sid is None:
                        new = self.store.save(sid, session)
                        if new != sid:
                            headers.append("Set-Cookie", cookie_header(new, None))
                        sid = new
                elif sid is not None:
                    self.store.delete(sid)
                    headers.append("Set-Cookie", cookie_header("", 0))
            await send(message)

        await self.app(scope, receive, send_wrapper)


def _cookie(scope: Scope) -> str | None:
    for key, value in scope.get("headers", []):
        if key == b"cookie":
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(value.decode("latin-1"))
            except Exception:  # noqa: BLE001 - a malformed Cookie header means no session
                return None
            if COOKIE in jar:
                return jar[COOKIE].value
    return None
