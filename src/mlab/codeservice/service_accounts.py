"""Accounts of components, not people: the Airlock's login and the export publisher.

Invariant: a service account logs in only when its password file exists, and never reaches
git: ``may_use_git`` is False for both, so neither can clone a mirror or fetch a user's
branch (issue 13: anything that reaches the internet sees approved exports and nothing
else). The Airlock's account (``airlock.user``) submits package requests; the publisher's
(:data:`mlab.site.PUBLISHER_ACCOUNT`) lists exports and adds notes (``mlab.requests.api``).
"""

from __future__ import annotations

from pathlib import Path

from mlab.codeservice.store import Store
from mlab.site import PUBLISHER_ACCOUNT, Site


def service_account_names(site: Site) -> tuple[str, ...]:
    """The service accounts of ``site``: ``airlock.user`` and the publisher (none without
    an Airlock)."""
    if not site.airlock.enabled:
        return ()
    return (site.airlock.user, PUBLISHER_ACCOUNT)


def load_service_accounts(store: Store, site: Site, users_dir: Path, taken: set[str]) -> set[str]:
    """Store the hash of each service account whose ``<users_dir>/<name>/password`` is
    readable and not empty (like a user's; without one the account cannot log in).

    Args:
        store: the database.
        site: the site.
        users_dir: directory holding ``<name>/password`` files (projected Secrets).
        taken: names already loaded (site users, admin); never overwritten.

    Returns:
        The names loaded.
    """
    loaded: set[str] = set()
    for name in service_account_names(site):
        if name in taken:
            continue
        try:
            password = (users_dir / name / "password").read_text(encoding="utf-8").strip("\r\n")
        except OSError:
            password = ""
        if password:
            store.set_password(name, password)
            loaded.add(name)
    return loaded


def may_use_git(site: Site, name: str) -> bool:
    """Whether the account ``name`` may use git smart HTTP (clone, fetch, push).

    False for the service accounts: the Airlock reaches the internet, so its account must
    not read mirrors or users' branches; the publisher needs none.
    """
    return name not in service_account_names(site)
