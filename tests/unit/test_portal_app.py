"""The portal without a provider (MLab passwords), its RFB arithmetic, its site fields and
its rendered edges. Real Starlette app in-process (httpx transport); the end-to-end tests
with Keycloak, Chromium and a HomePod are in tests/e2e/test_portal.py."""

from __future__ import annotations

import asyncio
import re
import struct
import warnings
from pathlib import Path

import pytest
from starlette.testclient import TestClient
from vncdotool.rfb import _vnc_des, des_encrypt

from mlab.errors import SiteError, UsageError
from mlab.portal import rfb
from mlab.portal.app import build_app
from mlab.portal.config import Backend, PortalConfig, parse_backends
from mlab.render import render_site
from mlab.site import parse_site

URL = "https://portal.test"


def _site(**portal):
    return parse_site({"name": "t", "users": [{"name": "alice"}, {"name": "bob"}],
                       "access": {"officeCIDRs": ["10.20.0.0/16"]},
                       "portal": {"enabled": True, "url": URL, **portal}})


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    users = tmp_path / "users"
    for name in ("alice", "bob"):
        (users / name).mkdir(parents=True)
        (users / name / "password").write_text(f"{name}-secret-pw\n")
    novnc = tmp_path / "novnc"
    novnc.mkdir()
    config = PortalConfig(site=_site(), users_dir=users, novnc_dir=novnc,
                          backends={"alice": Backend("127.0.0.1", 1), "bob": Backend("127.0.0.1", 1)},
                          audit_log=tmp_path / "audit.log")
    return TestClient(build_app(config), base_url=URL)


def _csrf(html: str) -> str:
    m = re.search(r'name=csrf value="([^"]+)"', html)
    assert m, html
    return m.group(1)


def _sign_in(client: TestClient, user: str, password: str):
    page = client.get("/")
    return client.post("/auth/password", data={"username": user, "password": password,
                                                "csrf": _csrf(page.text)},
                       headers={"Origin": URL}, follow_redirects=False)


def test_password_sign_in_rotates_the_session_and_sets_safe_cookie(client: TestClient) -> None:
    first = client.get("/")
    anonymous = client.cookies.get("mlab_portal")
    assert "HttpOnly" in first.headers["set-cookie"] and "SameSite=Lax" in first.headers["set-cookie"]
    assert "Secure" in first.headers["set-cookie"]
    ok = client.post("/auth/password", data={"username": "alice", "password": "alice-secret-pw",
                                              "csrf": _csrf(first.text)}, follow_redirects=False)
    assert ok.status_code == 303
    assert client.cookies.get("mlab_portal") != anonymous
    assert "MLab: alice" in client.get("/").text


@pytest.mark.parametrize("user,password", [("alice", "wrong"), ("mallory", "x"), ("alice", "")],
                         ids=["wrong-password", "unknown-user", "empty"])
def test_password_sign_in_refuses_and_audits(client: TestClient, tmp_path: Path, user, password) -> None:
    res = _sign_in(client, user, password)
    assert res.status_code in (401, 422)
    assert "MLab: " not in client.get("/").text
    assert '"event": "login-failed"' in (tmp_path / "audit.log").read_text()


def test_form_without_csrf_token_is_refused(client: TestClient) -> None:
    client.get("/")
    res = client.post("/auth/password", data={"username": "alice", "password": "alice-secret-pw"})
    assert res.status_code == 403
    assert _sign_in(client, "alice", "alice-secret-pw").status_code == 303
    page = client.get("/")
    assert client.post("/auth/logout", data={}).status_code == 403
    assert client.post("/auth/logout", data={"csrf": _csrf(page.text)},
                       headers={"Origin": "https://evil.test"}).status_code == 403
    assert "MLab: alice" in client.get("/").text
    out = client.post("/auth/logout", data={"csrf": _csrf(page.text)}, follow_redirects=False)
    assert out.status_code == 303
    assert "id=signin" in client.get("/").text


def test_desktop_routes_only_for_their_user(client: TestClient) -> None:
    assert _sign_in(client, "bob", "bob-secret-pw").status_code == 303
    assert client.get("/desktop/alice", follow_redirects=False).status_code == 403
    assert client.get("/desktop/alice.rdp", follow_redirects=False).status_code == 403
    own = client.get("/desktop/bob", follow_redirects=False)
    assert own.status_code == 303 and "path=desktop%2Fbob%2Fwebsockify" in own.headers["location"]
    rdp = client.get("/desktop/bob.rdp")
    assert "username:s:bob" in rdp.text and rdp.headers["content-type"].startswith("application/x-rdp")


def test_vnc_auth_response_matches_vncdotool() -> None:
    challenge = bytes(range(16))
    for password in ("alice-secret-pw", "short", ""):
        with warnings.catch_warnings():  # vncdotool uses cryptography's moved TripleDES
            warnings.simplefilter("ignore")
            expected = des_encrypt(_vnc_des(password), challenge)
        assert rfb.vnc_auth_response(password, challenge) == expected


def _pipe(data: bytes):
    buf = bytearray(data)
    sent = bytearray()

    async def read(n: int) -> bytes:
        if len(buf) < n:
            raise asyncio.IncompleteReadError(bytes(buf), n)
        out = bytes(buf[:n])
        del buf[:n]
        return out

    async def write(b: bytes) -> None:
        sent.extend(b)

    return read, write, sent


def test_server_handshake_offers_only_none() -> None:
    read, write, sent = _pipe(b"RFB 003.008\n\x01")
    asyncio.run(rfb.server_handshake(read, write))
    assert bytes(sent) == b"RFB 003.008\n\x01\x01" + struct.pack(">I", 0)
    read, write, _ = _pipe(b"RFB 003.008\n\x02")
    with pytest.raises(rfb.HandshakeError):
        asyncio.run(rfb.server_handshake(read, write))


def test_client_handshake_reports_a_refused_password() -> None:
    reply = b"RFB 003.008\n\x01\x02" + bytes(16) + struct.pack(">I", 1) + struct.pack(">I", 6) + b"denied"
    read, write, sent = _pipe(reply)
    with pytest.raises(rfb.HandshakeError, match="denied"):
        asyncio.run(rfb.client_handshake(read, write, "pw"))
    assert bytes(sent[:13]) == b"RFB 003.008\n\x02"


@pytest.mark.parametrize("issuer", ["http://sso.example.org/realms/x", "ftp://x", "https://x/?a=1"])
def test_issuer_must_be_https_except_on_loopback(issuer: str) -> None:
    with pytest.raises(SiteError, match="portal.oidc.issuer"):
        _site(oidc={"issuer": issuer, "clientId": "c"})
    assert _site(oidc={"issuer": "http://127.0.0.1:8080/realms/x", "clientId": "c"})


def test_backend_option_errors_name_the_fix() -> None:
    site = _site()
    assert parse_backends(["alice=10.0.0.5:5901"], site)["alice"] == Backend("10.0.0.5", 5901)
    assert parse_backends([], site)["bob"] == Backend("homepod-bob.mlab.svc", 5900)
    with pytest.raises(UsageError, match="USER=HOST:PORT"):
        parse_backends(["alice"], site)
    with pytest.raises(UsageError, match="not a user"):
        parse_backends(["carol=h:1"], site)


def _policies(site):
    objs = render_site(site).files["network.yaml"]
    return {o["metadata"]["name"]: o for o in objs}


def test_portal_only_site_admits_desktop_ports_from_the_portal_alone() -> None:
    only = _policies(_site(directDesktopPorts=False))
    office = only["homepod-from-office"]["spec"]["ingress"][0]["ports"]
    assert office == [{"protocol": "TCP", "port": 22}]
    portal_in = only["homepod-from-portal"]["spec"]["ingress"][0]
    assert portal_in["ports"] == [{"protocol": "TCP", "port": 5900}]
    assert portal_in["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "portal"
    both = _policies(_site())
    assert len(both["homepod-from-office"]["spec"]["ingress"][0]["ports"]) == 4
    none = _policies(parse_site({"name": "t", "users": [{"name": "a"}]}))
    assert not [n for n in none if "portal" in n]


def test_podman_runs_the_portal_on_the_host_with_each_homepods_address() -> None:
    from site_kit import translate_fixed

    ports = lambda n: {"vnc": 5900 + n, "rdp": 3389 + n, "novnc": 7030 + n, "ssh": 2222 + n}  # noqa: E731
    site = parse_site({"name": "t", "airlock": {"enabled": False},
                       "users": [{"name": "alice", "service": {"ports": ports(1)}},
                                 {"name": "bob", "service": {"ports": ports(2)}}],
                       "portal": {"enabled": True, "url": "http://localhost:8443"}})
    plan = translate_fixed(site, host_ca=None)
    pod = plan.pod("portal")
    assert pod is not None and pod.networks == ()
    spec = pod.manifest["spec"]
    assert spec["hostNetwork"] is True
    command = spec["containers"][0]["command"]
    assert command[command.index("--port") + 1] == "8443"
    assert command[command.index("--host") + 1] == "127.0.0.1"
    backends = [command[i + 1] for i, a in enumerate(command) if a == "--backend"]
    hp = {n.user: n.pod_ip for n in plan.homepod_networks()}
    assert backends == [f"alice={hp['alice']}:5900", f"bob={hp['bob']}:5900"]
    assert [(p.host_ip, p.host_port, p.via) for p in pod.ports] == [("127.0.0.1", 8443, "host")]
    paths = {f.path for f in pod.files}
    assert any(p.endswith("alice/password") for p in paths)


@pytest.mark.parametrize("direct", [True, False])
def test_podman_publishes_only_ssh_when_the_portal_is_the_only_door(direct: bool) -> None:
    from site_kit import translate_fixed

    site = parse_site({"name": "t", "airlock": {"enabled": False}, "users": [{"name": "alice"}],
                       "portal": {"enabled": True, "url": "http://localhost:8443",
                                  "directDesktopPorts": direct}})
    plan = translate_fixed(site, host_ca=None)
    homepod = next(p for p in plan.pods if p.component == "homepod")
    names = sorted(p.name for p in homepod.ports)
    assert names == (["novnc", "rdp", "ssh", "vnc"] if direct else ["ssh"])
    command = plan.pod("portal").manifest["spec"]["containers"][0]["command"]
    hp = {n.user: n.pod_ip for n in plan.homepod_networks()}
    assert f"alice={hp['alice']}:5900" in command  # the portal still reaches the desktop
