"""Cross-site requests, password guessing and the database files, against the real service
over real HTTP (issue 13, items 6, 7 and 8)."""

from __future__ import annotations

import json
import stat
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from cs_support import PASSWORDS, Service, module_service, start_service, stop_service

SITE = """  limits:
    loginFailuresPerAccount: 5
    loginFailuresPerAddress: 1000
    loginWindow: 60
"""


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with module_service(tmp_path_factory, "web", SITE) as service:
        yield service


def _admin(svc: Service) -> tuple[str, str]:
    return ("admin", svc.admin_password)


@pytest.mark.parametrize("headers,status", [
    ({"Content-Type": "text/plain", "Origin": "https://evil.example"}, 403),
    ({"Content-Type": "application/json", "Origin": "https://evil.example"}, 403),
    ({"Content-Type": "application/json", "Origin": "null"}, 403),
    ({"Content-Type": "application/json", "Referer": "https://evil.example/x"}, 403),
    ({"Content-Type": "text/plain"}, 415),
    ({"Content-Type": "application/x-www-form-urlencoded"}, 415),
    ({}, 415),
], ids=["text-cross-site", "json-cross-site", "origin-null", "referer-cross-site",
        "text-plain", "form", "no-type"])
def test_forged_state_changes_are_refused(svc: Service, headers: dict[str, str],
                                          status: int) -> None:
    """On main all of these returned success with cached Basic credentials."""
    for path, body in (("/api/sync", b"{}"), ("/api/repos/org/web/sync", b"{}"),
                       ("/api/repos", b'{"url": "file:///nonexistent/x.git", "name": "e/x"}'),
                       ("/api/requests/1/approve", b"{}")):
        r = httpx.post(svc.url + path, content=body, headers=headers, auth=_admin(svc),
                       trust_env=False, timeout=60)
        assert r.status_code == status, (path, r.status_code, r.text)
        assert "error" in r.json()
    r = httpx.delete(svc.url + "/api/repos/org/web", auth=_admin(svc), trust_env=False,
                     headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    with svc.client() as c:
        assert any(x["name"] == "org/web" for x in c.get("/api/repos").json())


def test_same_origin_and_non_browser_clients_still_work(svc: Service) -> None:
    same = {"Content-Type": "application/json", "Origin": svc.url}
    r = httpx.post(svc.url + "/api/repos/org/web/sync", content=b"{}", headers=same,
                   auth=_admin(svc), trust_env=False, timeout=60)
    assert r.status_code == 200, r.text
    with svc.client() as c:  # the CLI's way: JSON, no Origin
        assert c.post("/api/sync", json={}).status_code == 200


def test_password_guessing_is_locked_out_and_audited(svc: Service) -> None:
    url = svc.url + "/api/whoami"
    codes = [httpx.get(url, auth=("alice", f"guess-{i}"), trust_env=False).status_code
             for i in range(5)]
    assert codes == [401] * 5
    r = httpx.get(url, auth=("alice", "guess-6"), trust_env=False)
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    # Locked means locked: the right password is refused too until the window passes.
    assert httpx.get(url, auth=("alice", PASSWORDS["alice"]), trust_env=False
                     ).status_code == 429
    assert httpx.get(url, auth=("bob", PASSWORDS["bob"]), trust_env=False).status_code == 200
    audit = [json.loads(x) for x in (svc.data / "audit.log").read_text().splitlines()]
    assert any(a["event"] == "lockout" and a["account"] == "alice" and a["kind"] == "account"
               for a in audit)


def test_unknown_names_get_the_same_answer_as_wrong_passwords(svc: Service) -> None:
    url = svc.url + "/api/whoami"
    unknown = httpx.get(url, auth=("nobody-1", "x"), trust_env=False)
    wrong = httpx.get(url, auth=("bob", "wrong"), trust_env=False)
    assert unknown.status_code == wrong.status_code == 401
    assert unknown.json() == wrong.json()
    assert unknown.headers["www-authenticate"] == wrong.headers["www-authenticate"]


def test_databases_are_private(svc: Service) -> None:
    """They hold password hashes and who asked for what: 0600 (main: 0644)."""
    with svc.client("bob") as c:  # the requests database is made on first use
        assert c.get("/api/requests").status_code == 200
    files = sorted(p for p in svc.data.rglob("*.sqlite*") if p.is_file())
    assert {p.name for p in files} >= {"mlab.sqlite", "requests.sqlite"}, files
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_concurrent_logins_are_bounded_in_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """64 concurrent logins took the service from 59 MiB to 2,140 MiB on main."""
    monkeypatch.setenv("MLAB_TEST_HOME", str(tmp_path))
    service = start_service(tmp_path, "  limits:\n    loginFailuresPerAccount: 1000\n"
                            "    loginFailuresPerAddress: 1000\n")
    try:
        def login(i: int) -> int:
            user = ("alice", "bob", f"ghost{i}")[i % 3]
            return httpx.get(service.url + "/api/whoami", auth=(user, f"wrong-{i}"),
                             trust_env=False, timeout=120).status_code

        start = time.monotonic()
        with ThreadPoolExecutor(max_workers=64) as pool:
            codes = list(pool.map(login, range(64)))
        assert codes == [401] * 64
        status = Path(f"/proc/{service.proc.pid}/status").read_text()
        peak_kib = int(next(x for x in status.splitlines() if x.startswith("VmHWM:")).split()[1])
        assert peak_kib < 600 * 1024, f"peak {peak_kib // 1024} MiB"
        assert time.monotonic() - start < 120
    finally:
        stop_service(service)
