"""Portal sessions in SQLite (``--session-db``): a signed-in session survives a restart of the
portal (a second app on the same file), sign-out ends it, and the file holds no usable
session id. Real Starlette apps in-process, a real SQLite file."""

from __future__ import annotations

import re
import stat
from pathlib import Path

from starlette.testclient import TestClient

from mlab.portal.app import build_app
from mlab.portal.config import Backend, PortalConfig
from mlab.portal.sessions import SqliteSessionStore
from mlab.site import parse_site

URL = "https://portal.test"


def _app(tmp_path: Path, db: Path):
    users = tmp_path / "users"
    (users / "alice").mkdir(parents=True, exist_ok=True)
    (users / "alice" / "password").write_text("alice-secret-pw\n")
    (tmp_path / "novnc").mkdir(exist_ok=True)
    site = parse_site({"name": "t", "users": [{"name": "alice"}],
                       "portal": {"enabled": True, "url": URL}})
    return build_app(PortalConfig(site=site, users_dir=users, novnc_dir=tmp_path / "novnc",
                                  backends={"alice": Backend("127.0.0.1", 1)}, session_db=db))


def test_signed_in_session_survives_a_restart_and_sign_out_ends_it(tmp_path: Path) -> None:
    db = tmp_path / "sessions.db"
    before = TestClient(_app(tmp_path, db), base_url=URL)
    csrf = re.search(r'name=csrf value="([^"]+)"', before.get("/").text).group(1)  # type: ignore[union-attr]
    res = before.post("/auth/password", data={"username": "alice", "password": "alice-secret-pw",
                                               "csrf": csrf}, follow_redirects=False)
    assert res.status_code == 303
    sid = before.cookies["mlab_portal"]
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert sid.encode() not in db.read_bytes()  # only its SHA-256 is stored

    after = TestClient(_app(tmp_path, db), base_url=URL)  # the portal restarted
    after.cookies.set("mlab_portal", sid)
    page = after.get("/").text
    assert "MLab: alice" in page
    csrf = re.search(r'name=csrf value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    out = after.post("/auth/logout", data={"csrf": csrf}, follow_redirects=False)
    assert out.status_code == 303
    again = TestClient(_app(tmp_path, db), base_url=URL)
    again.cookies.set("mlab_portal", sid)
    assert "MLab: alice" not in again.get("/").text


def test_expired_sessions_are_gone(tmp_path: Path) -> None:
    store = SqliteSessionStore(tmp_path / "s.db", lifetime=-1)
    sid = store.save(None, {"user": "alice"})
    assert store.get(sid) is None
    fresh = SqliteSessionStore(tmp_path / "s.db", lifetime=60)
    sid = fresh.save(None, {"user": "bob"})
    assert fresh.get(sid) == {"user": "bob"}
    assert fresh.save(sid, {"user": "bob", "csrf": "x"}) == sid
    assert fresh.get(sid) == {"user": "bob", "csrf": "x"}
    assert fresh.get("unknown") is None


def test_a_desktop_bookmark_signs_in_then_opens_that_desktop(tmp_path: Path) -> None:
    client = TestClient(_app(tmp_path, tmp_path / "s.db"), base_url=URL)
    first = client.get("/desktop/alice", follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"] == "/"
    csrf = re.search(r'name=csrf value="([^"]+)"', client.get("/").text).group(1)  # type: ignore[union-attr]
    res = client.post("/auth/password", data={"username": "alice", "password": "alice-secret-pw",
                                               "csrf": csrf}, follow_redirects=False)
    assert res.status_code == 303 and res.headers["location"] == "/desktop/alice"
    # Only desktop paths are remembered: the .rdp file and anything else go to the page.
    from mlab.portal.app import _after_sign_in

    assert [_after_sign_in(p) for p in ("/desktop/alice.rdp", "//evil.example", "/desktop/a/b",
                                        None)] == ["/"] * 4
