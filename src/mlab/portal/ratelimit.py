"""Sign-in rate limits of the portal (docs/portal.md, "Security").

Passwords are guessed by trying many; two limits make that slow (the `limits` library's
moving windows, in the portal's memory, one replica):

- per client address, on every sign-in endpoint (``/auth/login``, ``/auth/callback``,
  ``/auth/password``): :data:`PER_ADDRESS`. Behind a proxy that hides client addresses the
  proxy's address is the key, so this becomes one shared limit: keep it generous.
- per user name, on failed password sign-ins (sites without a provider):
  :data:`FAILURES_PER_USER`; once spent, even the right password is refused until the
  window moves on (the answer does not say which, so it leaks nothing).

With an identity provider, passwords are typed on the provider's page and the provider must
lock accounts itself (Keycloak: the realm's brute-force detection, which the realm MLab's
tests import turns on; docs/portal.md says how). Source of the numbers: NIST SP 800-63B
section 5.2.2 (at most 100 consecutive failures per account; fewer is stricter).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

PER_ADDRESS = "30/minute"
"""Requests to the sign-in endpoints per client address."""
FAILURES_PER_USER = "5/15 minutes"
"""Failed password sign-ins per user name before that name is refused for a while."""


@dataclass
class SignInLimits:
    """The portal's sign-in limits (strings in the `limits` notation, e.g. ``5/minute``)."""

    per_address: str = PER_ADDRESS
    failures_per_user: str = FAILURES_PER_USER
    _limiter: MovingWindowRateLimiter = field(
        default_factory=lambda: MovingWindowRateLimiter(MemoryStorage()))

    def __post_init__(self) -> None:
        self._address: RateLimitItem = parse(self.per_address)
        self._failures: RateLimitItem = parse(self.failures_per_user)

    def address_allows(self, address: str) -> bool:
        """Count one sign-in request from ``address``; False once over the limit."""
        return self._limiter.hit(self._address, "address", address)

    def user_allows(self, user: str) -> bool:
        """True while ``user`` has failures left (does not count one)."""
        return self._limiter.test(self._failures, "user", user)

    def user_failed(self, user: str) -> None:
        """Count one failed password sign-in of ``user``."""
        self._limiter.hit(self._failures, "user", user)

    def retry_after(self, address: str | None = None, user: str | None = None) -> int:
        """Seconds until the address (or user) may try again, at least 1."""
        item, keys = ((self._address, ("address", address)) if address is not None
                      else (self._failures, ("user", user or "")))
        reset, _ = self._limiter.get_window_stats(item, *keys)
        return max(1, int(reset - time.time()) + 1)
