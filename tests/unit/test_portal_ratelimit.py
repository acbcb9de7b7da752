"""The portal's sign-in rate limits: per client address on every sign-in endpoint, and per
user name on failed passwords (then even the right password waits). Real Starlette app
in-process (httpx transport); Keycloak's own lockout is tested in tests/e2e/test_portal.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

from starlette.testclient import TestClient

from mlab.portal.app import build_app
from mlab.portal.config import Backend, PortalConfig
from mlab.portal.ratelimit import SignInLimits
from mlab.site import parse_site

URL = "https://portal.test"


def _client(tmp_path: Path, limits: SignInLimits) -> TestClient:
    users = tmp_path / "users"
    for name in ("alice", "bob"):
        (users / name).mkdir(parents=True)
        (users / name / "password").write_text(f"{name}-secret-pw\n")
    (tmp_path / "novnc").mkdir()
    site = parse_site({"name": "t", "users": [{"name": "alice"}, {"name": "bob"}],
                       "portal": {"enabled": True, "url": URL}})
    config = PortalConfig(site=site, users_dir=users, novnc_dir=tmp_path / "novnc",
                          backends={"alice": Backend("127.0.0.1", 1)},
                          audit_log=tmp_path / "audit.log")
    return TestClient(build_app(config, limits), base_url=URL)


def _try(client: TestClient, user: str, password: str):
    csrf = re.search(r'name=csrf value="([^"]+)"', client.get("/").text).group(1)  # type: ignore[union-attr]
    return client.post("/auth/password", data={"username": user, "password": password,
                                                "csrf": csrf}, follow_redirects=False)


def _events(tmp_path: Path) -> list[str]:
    return [json.loads(line)["event"] for line in (tmp_path / "audit.log").read_text().splitlines()]


def test_failed_passwords_lock_the_user_name_for_a_while(tmp_path: Path) -> None:
    client = _client(tmp_path, SignInLimits(per_address="100/minute", failures_per_user="3/minute"))
    assert [_try(client, "alice", f"guess-{i}").status_code for i in range(3)] == [401] * 3
    locked = _try(client, "alice", "alice-secret-pw")
    assert locked.status_code == 429, "the right password got in after the failures"
    assert 1 <= int(locked.headers["retry-after"]) <= 61
    assert "MLab: alice" not in client.get("/").text
    assert "login-throttled" in _events(tmp_path)
    assert _try(client, "bob", "bob-secret-pw").status_code == 303  # other names unaffected


def test_each_address_has_a_limit_on_sign_in_requests(tmp_path: Path) -> None:
    client = _client(tmp_path, SignInLimits(per_address="4/minute", failures_per_user="100/minute"))
    codes = [_try(client, "alice", f"guess-{i}").status_code for i in range(6)]
    assert codes[:4] == [401] * 4 and codes[4:] == [429, 429], codes


def test_default_limits_allow_a_user_who_mistypes_once(tmp_path: Path) -> None:
    client = _client(tmp_path, SignInLimits())
    assert _try(client, "alice", "typo").status_code == 401
    assert _try(client, "alice", "alice-secret-pw").status_code == 303
