"""Load the accounts the service accepts: the site's users and ``admin``.

Invariant: the accounts table holds exactly the site users that have a password file plus
``admin``; a user removed from the site (or whose file is gone) loses access at the next
start. Passwords are read from files (Kubernetes Secrets mounted as files, the CONTRACTS
layout ``<users_dir>/<user>/password``) and stored only as argon2 hashes.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from mlab.codeservice.auth import ADMIN
from mlab.codeservice.service_accounts import load_service_accounts
from mlab.codeservice.store import Store
from mlab.errors import UsageError
from mlab.site import Site

log = logging.getLogger(__name__)


def _read_secret(path: Path) -> str:
    return path.read_text(encoding="utf-8").strip("\r\n")


def admin_password(data_dir: Path, password_file: Path | None) -> tuple[str, bool]:
    """The admin password, and whether it was generated just now.

    Args:
        data_dir: the service's data directory; a generated password is kept in
            ``<data_dir>/admin-password`` (mode 0600).
        password_file: ``MLAB_ADMIN_PASSWORD_FILE``; None to use or generate the one above.

    Raises:
        UsageError: ``password_file`` is given but unreadable or empty.
    """
    if password_file is not None:
        try:
            value = _read_secret(password_file)
        except OSError as exc:
            raise UsageError(
                f"MLAB_ADMIN_PASSWORD_FILE {password_file}: cannot read it: {exc.strerror}"
            ) from None
        if not value:
            raise UsageError(f"MLAB_ADMIN_PASSWORD_FILE {password_file}: the file is empty")
        return value, False
    kept = data_dir / "admin-password"
    if kept.exists():
        return _read_secret(kept), False
    value = secrets.token_urlsafe(18)
    tmp = data_dir / ".admin-password.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(value + "\n")
    tmp.replace(kept)
    return value, True


def load_accounts(store: Store, site: Site, users_dir: Path, admin: str) -> list[str]:
    """Store the hashes of every site user with a password file, of admin, and of the
    service accounts (the Airlock's and the export publisher's) whose password files exist.

    Args:
        store: the database.
        site: the site (its ``users``).
        users_dir: directory holding ``<user>/password`` files.
        admin: the admin password.

    Returns:
        The names of site users without a readable password file (they cannot log in).
    """
    missing = []
    keep = {ADMIN}
    store.set_password(ADMIN, admin, is_admin=True)
    for user in site.users:
        if user.name == ADMIN:
            log.warning("[mlab/admin] a site user named admin cannot log in to the code "
                        "service (the name is the admin account's); rename the user")
            continue
        path = users_dir / user.name / "password"
        try:
            password = _read_secret(path)
        except OSError:
            password = ""
        if not password:
            missing.append(user.name)
            continue
        store.set_password(user.name, password)
        keep.add(user.name)
    # The Airlock's and the export publisher's accounts (issue 13: no git access).
    keep |= load_service_accounts(store, site, users_dir, keep)
    store.remove_accounts_except(keep)
    for name in missing:
        log.warning("[mlab/%s] no password file %s/%s/password: this user cannot log in",
                    name, users_dir, name)
    return missing
