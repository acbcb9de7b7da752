"""Accounts: admin password from a file or generated once; site users from password files;
only argon2 hashes in the database."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from mlab.codeservice.accounts import admin_password, load_accounts
from mlab.codeservice.store import Store
from mlab.errors import UsageError
from mlab.site import parse_site


def test_admin_password_file_and_generated(tmp_path: Path) -> None:
    f = tmp_path / "admin"
    f.write_text("from-secret\n")
    assert admin_password(tmp_path, f) == ("from-secret", False)
    with pytest.raises(UsageError, match="MLAB_ADMIN_PASSWORD_FILE"):
        admin_password(tmp_path, tmp_path / "missing")
    first, generated = admin_password(tmp_path, None)
    assert generated and len(first) >= 20
    assert (tmp_path / "admin-password").stat().st_mode & 0o777 == 0o600
    assert admin_password(tmp_path, None) == (first, False)


def test_load_accounts(tmp_path: Path) -> None:
    site = parse_site({"name": "t", "users": [{"name": "alice"}, {"name": "carol"}]})
    (tmp_path / "users" / "alice").mkdir(parents=True)
    (tmp_path / "users" / "alice" / "password").write_text("pw-alice\n")
    (tmp_path / "users" / "airlock").mkdir(parents=True)
    (tmp_path / "users" / "airlock" / "password").write_text("pw-airlock")
    (tmp_path / "users" / "mlab-publisher").mkdir(parents=True)
    (tmp_path / "users" / "mlab-publisher" / "password").write_text("pw-publisher\n")
    store = Store(tmp_path / "db.sqlite")
    store.set_password("mallory", "old")  # a user no longer in the site
    missing = load_accounts(store, site, tmp_path / "users", "admin-pw")
    assert missing == ["carol"]
    assert store.check_password("alice", "pw-alice") is False
    assert store.check_password("alice", "wrong") is None
    assert store.check_password("admin", "admin-pw") is True
    assert store.check_password("mallory", "old") is None
    assert store.check_password("airlock", "pw-airlock") is False
    assert store.check_password("mlab-publisher", "pw-publisher") is False
    raw = sqlite3.connect(tmp_path / "db.sqlite").execute("SELECT hash FROM accounts").fetchall()
    assert all(h.startswith("$argon2id$") for (h,) in raw)
    assert not any("pw-alice" in h for (h,) in raw)
