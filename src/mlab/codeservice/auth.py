"""HTTP Basic authentication (RFC 7617) for every request to the code service.

Invariant: a request is served only after :func:`authenticate` returned a
:class:`Principal`; a missing, malformed or wrong ``Authorization`` header gives 401 with
``WWW-Authenticate: Basic realm="MLab code service", charset="UTF-8"`` so git and browsers
prompt. Passwords are checked against argon2 hashes; a successful check is remembered in
memory for ``CACHE_SECONDS`` under a SHA-256 of user and password (never the password), so
a clone's three requests cost one argon2 verification, not three.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import threading
import time
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection

from mlab.codeservice.store import Store

REALM = "MLab code service"
CHALLENGE = f'Basic realm="{REALM}", charset="UTF-8"'
CACHE_SECONDS = 300.0
ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    """Who made a request.

    Attributes:
        name: the account name (a site user, or ``admin``).
        is_admin: the admin account.
        is_reviewer: admin, or listed in the site's ``codeService.reviewers``.
    """

    name: str
    is_admin: bool
    is_reviewer: bool


def unauthorized(detail: str = "authentication required") -> HTTPException:
    """A 401 carrying the Basic challenge (RFC 7617 section 2)."""
    return HTTPException(401, detail, headers={"WWW-Authenticate": CHALLENGE})


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """Decode ``Authorization: Basic base64(user:password)``; None if absent or malformed.

    RFC 7617: the user-id may not contain ``:``; the password may. UTF-8 is assumed
    (``charset="UTF-8"`` in our challenge).
    """
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    if not sep or not user:
        return None
    return user, password


class Authenticator:
    """Checks credentials against the store; reviewers come from the site."""

    def __init__(self, store: Store, reviewers: set[str]) -> None:
        self.store = store
        self.reviewers = reviewers
        self._cache: dict[str, tuple[float, bool]] = {}
        self._lock = threading.Lock()

    def clear_cache(self) -> None:
        """Forget remembered checks (after passwords change)."""
        with self._lock:
            self._cache.clear()

    def check(self, user: str, password: str) -> Principal | None:
        """Verify credentials (blocking; argon2 on a cache miss). None when wrong."""
        key = hashlib.sha256(f"{user}\x00{password}".encode()).hexdigest()
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
        if hit and hit[0] > now:
            is_admin = hit[1]
        else:
            result = self.store.check_password(user, password)
            if result is None:
                return None
            is_admin = result
            with self._lock:
                if len(self._cache) > 10000:
                    self._cache.clear()
                self._cache[key] = (now + CACHE_SECONDS, is_admin)
        return Principal(user, is_admin, is_admin or user in self.reviewers)


async def authenticate(request: HTTPConnection) -> Principal:
    """Authenticate a request of the app built by ``create_app``.

    Use it at the top of every route handler (issue 7's routes too)::

        principal = await authenticate(request)

    Returns:
        The caller.

    Raises:
        HTTPException: 401 with ``WWW-Authenticate`` when credentials are missing or wrong.
    """
    cached = request.scope.get("mlab.principal")
    if isinstance(cached, Principal):
        return cached
    creds = parse_basic(request.headers.get("authorization"))
    if creds is None:
        raise unauthorized()
    auth: Authenticator = request.app.state.auth
    principal = await run_in_threadpool(auth.check, *creds)
    if principal is None:
        raise unauthorized("wrong user name or password")
    request.scope["mlab.principal"] = principal
    return principal


async def require_admin(request: HTTPConnection) -> Principal:
    """Like :func:`authenticate`, then 403 unless the caller is ``admin``."""
    principal = await authenticate(request)
    if not principal.is_admin:
        raise HTTPException(403, f"{principal.name} is not the admin account")
    return principal


async def require_reviewer(request: HTTPConnection) -> Principal:
    """Like :func:`authenticate`, then 403 unless the caller is admin or a reviewer."""
    principal = await authenticate(request)
    if not principal.is_reviewer:
        raise HTTPException(
            403, f"{principal.name} is not a reviewer (site codeService.reviewers)"
        )
    return principal
