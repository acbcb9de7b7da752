"""Password state: generated once, stable, 0600, atomic, corrupt state never overwritten."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from mlab.errors import MlabError
from mlab.secrets import load_or_create_passwords, passwords_path
from mlab.site import parse_site


def _site(*users: str):
    return parse_site({"name": "t", "users": [{"name": u} for u in users]})


def test_created_once_and_stable(tmp_path: Path) -> None:
    first = load_or_create_passwords(_site("alice"), tmp_path)
    assert set(first) == {"alice", "airlock", "admin", "mlab-publisher"}
    assert len(set(first.values())) == 4 and all(len(v) == 20 for v in first.values())
    path = passwords_path(_site("alice"), tmp_path)
    assert path == tmp_path / "t" / "passwords.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = load_or_create_passwords(_site("alice", "bob"), tmp_path)
    assert {k: again[k] for k in first} == first and "bob" in again
    assert not list(path.parent.glob("*.tmp"))


def test_env_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLAB_STATE_DIR", str(tmp_path))
    load_or_create_passwords(_site("alice"))
    assert (tmp_path / "t" / "passwords.json").exists()


def test_corrupt_state_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "t" / "passwords.json"
    path.parent.mkdir()
    path.write_text("{not json")
    with pytest.raises(MlabError, match="passwords.json"):
        load_or_create_passwords(_site("alice"), tmp_path)
    assert path.read_text() == "{not json"
