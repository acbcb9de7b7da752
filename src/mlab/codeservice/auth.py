"""HTTP Basic authentication (RFC 7617) for every request to the code service.

Invariant: a request is served only after :func:`authenticate` returned a
:class:`Principal`; a missing, malformed or wrong ``Authorization`` header gives 401 with
``WWW-Authenticate: Basic realm="MLab code service", charset="UTF-8"`` so git and browsers
prompt. Passwords are checked against argon2 hashes; a successful check is remembered in
memory for ``CACHE_SECONDS`` under a SHA-256 of user and password (never the password), so
a clone's three requests cost one argon2 verification, not three.

Brute force and memory (issue 13, item 7): failed logins are counted per account and per
client address over ``limits.loginWindow`` seconds; past ``loginFailuresPerAccount`` or
``loginFailuresPerAddress`` every login of that account or from that address is answered
429 with ``Retry-After`` until the window has passed (checked before any password, so a
locked account cannot be guessed either), and the lockout is written to the audit log.
At most ``maxConcurrentHashes`` argon2 checks run at once (each needs 64 MiB); others
wait. An unknown account name costs no hash: the answer waits as long as a real check
takes on average (an exponential moving average of measured checks) and is the same 401,
so neither the time nor the answer tells which names exist.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

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


@dataclass(frozen=True)
class LoginLimits:
    """Failed-login limits (site ``codeService.limits``); see the module docstring."""

    per_account: int = 10
    per_address: int = 30
    window: float = 300.0
    concurrent_hashes: int = 2


class FailureCounter:
    """Failed logins per key in a sliding window (in memory: a restart forgets them)."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._seen: dict[str, deque[float]] = {}

    def _live(self, key: str, now: float) -> deque[float]:
        times = self._seen.setdefault(key, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            self._seen.pop(key, None)
        return times

    def retry_after(self, key: str, now: float) -> float | None:
        """Seconds until ``key`` may try again, or None when it is not locked."""
        times = self._live(key, now)
        if len(times) < self.limit:
            return None
        return max(1.0, times[-self.limit] + self.window - now)

    def fail(self, key: str, now: float) -> bool:
        """Count a failure; True when this one reached the limit (the lockout starts)."""
        times = self._live(key, now)
        times.append(now)
        self._seen[key] = times
        if len(self._seen) > 100000:  # bounded memory under a flood of names
            self._seen.clear()
        return len(times) == self.limit


class Authenticator:
    """Checks credentials against the store; reviewers come from the site."""

    def __init__(self, store: Store, reviewers: set[str], limits: LoginLimits | None = None,
                 audit_log: Path | None = None) -> None:
        self.store = store
        self.reviewers = reviewers
        self.limits = limits or LoginLimits()
        self.audit_log = audit_log
        self._cache: dict[str, tuple[float, bool]] = {}
        self._lock = threading.Lock()
        self.accounts = FailureCounter(self.limits.per_account, self.limits.window)
        self.addresses = FailureCounter(self.limits.per_address, self.limits.window)
        self._hashing: asyncio.Semaphore | None = None
        self.hash_seconds = 0.05
        """Moving average of an argon2 check, seconds (the wait given to unknown names)."""

    def cached(self, user: str, password: str) -> Principal | None:
        """The principal when these credentials were verified in the last CACHE_SECONDS."""
        key = hashlib.sha256(f"{user}\x00{password}".encode()).hexdigest()
        with self._lock:
            hit = self._cache.get(key)
        if hit and hit[0] > time.monotonic():
            return Principal(user, hit[1], hit[1] or user in self.reviewers)
        return None

    def locked(self, user: str, address: str) -> float | None:
        """Seconds to wait when the account or the address is locked out, else None."""
        now = time.monotonic()
        waits = [w for w in (self.accounts.retry_after(user, now),
                             self.addresses.retry_after(address, now)) if w is not None]
        return max(waits) if waits else None

    def failed(self, user: str, address: str) -> None:
        """Count a failed login; audit the start of a lockout."""
        from mlab.codeservice import audit

        now = time.monotonic()
        for kind, counter, key in (("account", self.accounts, user),
                                   ("address", self.addresses, address)):
            if counter.fail(key, now) and self.audit_log is not None:
                try:
                    audit.append(self.audit_log, "lockout", kind=kind, account=user,
                                 remote=address, failures=counter.limit,
                                 seconds=counter.window)
                except OSError:
                    pass

    async def verify(self, user: str, password: str) -> Principal | None:
        """Check credentials with bounded argon2 work (see the module docstring)."""
        hit = self.cached(user, password)
        if hit is not None:
            return hit
        if not await run_in_threadpool(self.store.has_account, user):
            await asyncio.sleep(self.hash_seconds)
            return None
        if self._hashing is None:
            self._hashing = asyncio.Semaphore(self.limits.concurrent_hashes)
        async with self._hashing:
            start = time.monotonic()
            principal = await run_in_threadpool(self.check, user, password)
            self.hash_seconds = 0.8 * self.hash_seconds + 0.2 * (time.monotonic() - start)
        return principal

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
    address = request.client.host if request.client else ""
    wait = auth.locked(creds[0], address)
    if wait is not None:
        raise HTTPException(
            429, f"too many failed logins for {creds[0]!r} or from {address}; try again in "
            f"{wait:.0f} s", headers={"Retry-After": str(int(wait + 0.999))})
    principal = await auth.verify(*creds)
    if principal is None:
        auth.failed(creds[0], address)
        raise unauthorized("wrong user name or password")
    request.scope["mlab.principal"] = principal
    on_login = getattr(request.app.state, "on_login", None)
    if on_login is not None:  # reviewed branches: where service accounts log in from
        on_login(principal.name, address)
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
