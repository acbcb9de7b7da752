"""The portal's "Open desktop" on a stopped HomePod: it starts it (once), shows a page that
reloads itself, and opens noVNC once the VNC server answers with its RFB banner; nobody
else's HomePod is ever started. Real Starlette app in-process; the wake function is the
injection point (the real one, ``mlab.cull.local.wake``, runs in tests/e2e/test_portal_wake.py)
and here starts a real TCP server that speaks the RFB banner."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from mlab.errors import UsageError
from mlab.portal.app import build_app
from mlab.portal.config import Backend, PortalConfig
from mlab.portal.wake import make_waker
from mlab.site import parse_site

URL = "https://portal.test"


class FakeHomePod:
    """A VNC server that is down until :meth:`wake` (called by the portal) starts it."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[str] = []
        self.fail = fail
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server: socket.socket | None = None

    def wake(self, user: str) -> None:
        self.calls.append(user)
        if self.fail:
            raise UsageError(f"wake: site t has no HomePod for {user!r}; run `mlab up`")
        time.sleep(0.3)  # a wake takes a moment
        self.server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        assert self.server is not None
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            conn.sendall(b"RFB 003.008\n")
            conn.close()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


def _client(tmp_path: Path, pod: FakeHomePod) -> TestClient:
    users = tmp_path / "users"
    for name in ("alice", "bob"):
        (users / name).mkdir(parents=True, exist_ok=True)
        (users / name / "password").write_text(f"{name}-secret-pw\n")
    novnc = tmp_path / "novnc"
    novnc.mkdir(exist_ok=True)
    site = parse_site({"name": "t", "users": [{"name": "alice"}, {"name": "bob"}],
                       "portal": {"enabled": True, "url": URL}})
    config = PortalConfig(site=site, users_dir=users, novnc_dir=novnc,
                          backends={"alice": Backend("127.0.0.1", pod.port),
                                    "bob": Backend("127.0.0.1", pod.port)},
                          audit_log=tmp_path / "audit.log", waker=pod.wake)
    return TestClient(build_app(config), base_url=URL)


def _sign_in(client: TestClient, user: str) -> None:
    page = client.get("/")
    csrf = re.search(r'name=csrf value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    res = client.post("/auth/password", data={"username": user, "password": f"{user}-secret-pw",
                                               "csrf": csrf}, follow_redirects=False)
    assert res.status_code == 303


def _events(tmp_path: Path) -> list[tuple[str, str | None]]:
    lines = (tmp_path / "audit.log").read_text().splitlines()
    return [(r["event"], r.get("user")) for r in map(json.loads, lines)]


def test_open_desktop_wakes_a_stopped_homepod_once_then_opens_novnc(tmp_path: Path) -> None:
    pod = FakeHomePod()
    try:
        client = _client(tmp_path, pod)
        _sign_in(client, "alice")
        assert "stopped (Open desktop starts it)" in client.get("/").text
        first = client.get("/desktop/alice", follow_redirects=False)
        assert first.status_code == 200 and 'http-equiv=refresh' in first.text
        assert "id=waking" in first.text
        again = client.get("/desktop/alice", follow_redirects=False)  # the page reloads
        assert again.status_code in (200, 303)
        deadline = time.monotonic() + 10
        while True:
            res = client.get("/desktop/alice", follow_redirects=False)
            if res.status_code == 303 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert res.status_code == 303, res.text
        assert "path=desktop%2Falice%2Fwebsockify" in res.headers["location"]
        assert pod.calls == ["alice"], "woken more than once"
        assert _events(tmp_path).count(("desktop-wake", "alice")) == 1
        assert "State: <b id=state>running</b>" in client.get("/").text
    finally:
        pod.close()


def test_another_users_desktop_is_never_woken(tmp_path: Path) -> None:
    pod = FakeHomePod()
    try:
        client = _client(tmp_path, pod)
        _sign_in(client, "bob")
        assert client.get("/desktop/alice", follow_redirects=False).status_code == 403
        time.sleep(0.5)
        assert pod.calls == []
        assert ("desktop-denied", "bob") in _events(tmp_path)
    finally:
        pod.close()


def test_a_failed_wake_is_shown_once_then_tried_again(tmp_path: Path) -> None:
    pod = FakeHomePod(fail=True)
    client = _client(tmp_path, pod)
    _sign_in(client, "alice")
    assert client.get("/desktop/alice").status_code == 200
    deadline = time.monotonic() + 10
    while True:
        res = client.get("/desktop/alice")
        if res.status_code == 503 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert res.status_code == 503 and "run `mlab up`" in res.text
    assert "refresh" not in res.text
    client.get("/desktop/alice")  # tries again
    time.sleep(0.3)
    assert pod.calls == ["alice", "alice"]


def test_wake_engine_names_the_choices() -> None:
    site = parse_site({"name": "t", "users": [{"name": "alice"}]})
    assert make_waker("none", site) is None
    assert callable(make_waker("podman", site)) and callable(make_waker("kubernetes", site))
    with pytest.raises(UsageError, match="none, podman, kubernetes"):
        make_waker("docker", site)
