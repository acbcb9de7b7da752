"""The portal end to end with real parts: Keycloak (the provider, its own login page),
headless Chromium, ``mlab portal serve`` and a HomePod container for alice.

- alice signs in through Keycloak, opens her desktop through the portal's WebSocket proxy
  (the portal answers VncAuth itself), and the screenshot shows the XFCE desktop;
- bob, signed in too, cannot open alice's desktop: not the page, not the WebSocket (from
  his browser or with his cookie by hand);
- cookies are Secure, HttpOnly, SameSite=Lax; forms need the CSRF token and the portal's
  Origin; sign-out ends the session; the audit log names the users;
- Keycloak's brute-force detection (on in MLab's realm) locks carol after wrong passwords
  typed on its own login page: then even her right password does not sign her in.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import websocket

from portal_harness import (
    Browser,
    Keycloak,
    Person,
    Portal,
    free_port,
    open_desktop,
    open_login_form,
    realm_json,
    sign_in,
)

pytestmark = pytest.mark.e2e

PREFIX = "mlabtest-portal-"
ALICE = Person("alice", "Alice-Sso-" + secrets.token_hex(4))
BOB = Person("bob", "Bob-Sso-" + secrets.token_hex(4), ("reviewers",))
CAROL = Person("carol", "Carol-Sso-" + secrets.token_hex(4))  # only for the lockout test
DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.fixture(scope="module")
def stack(homepod_image: str, e2e, tmp_path_factory) -> Iterator[SimpleNamespace]:
    """Keycloak, alice's HomePod and the portal (bob has no running HomePod)."""
    tmp = tmp_path_factory.mktemp("portal")
    port = free_port()
    url = f"http://localhost:{port}"
    client_secret = secrets.token_urlsafe(24)
    keycloak = Keycloak(tmp, realm_json(url, client_secret, [ALICE, BOB, CAROL]))
    pod = portal = None
    try:
        vnc_password = "Vnc-" + secrets.token_hex(6)
        users = tmp / "users"
        for name, pw in (("alice", vnc_password), ("bob", "Vnc-" + secrets.token_hex(6))):
            (users / name).mkdir(parents=True)
            (users / name / "password").write_text(pw + "\n")
        secret = tmp / "alice-password"
        secret.write_text(vnc_password + "\n")
        pod = e2e.run_container(
            homepod_image, PREFIX,
            env={"MLAB_USER": "alice", "MLAB_UID": "1000", "MLAB_MODE": "homepod",
                 "MLAB_PASSWORD_FILE": "/etc/mlab/secret/password", "MLAB_SUDO": "0"},
            ports=(5900, 7030), volumes=(f"{secret}:/etc/mlab/secret/password:ro",))
        e2e.wait_until_ready(pod)
        e2e.wait_for_port(pod.port(5900))
        keycloak.wait()
        site = tmp / "site.yaml"
        site.write_text(json.dumps({
            "apiVersion": "mlab.io/v1", "name": "portaltest",
            "users": [{"name": "alice"}, {"name": "bob"}],
            "portal": {"enabled": True, "url": url, "oidc": {
                "issuer": keycloak.issuer, "clientId": "mlab-portal",
                "clientSecretSecret": "portal-oidc", "reviewerGroup": "reviewers"}},
        }))
        portal = Portal(tmp, site, port, users,
                        {"alice": f"127.0.0.1:{pod.port(5900)}", "bob": f"127.0.0.1:{free_port()}"},
                        client_secret)
        yield SimpleNamespace(url=url, portal=portal, keycloak=keycloak, pod=pod, tmp=tmp)
    finally:
        if portal is not None:
            portal.stop()
        if pod is not None:
            pod.remove()
        keycloak.stop()


def _session_cookie(browser: Browser) -> str:
    return next(c["value"] for c in browser.cookies() if c["name"] == "mlab_portal")


def test_sign_in_through_keycloak_shows_own_desktop(stack, e2e, tmp_path) -> None:
    browser = Browser(tmp_path)
    try:
        start = time.monotonic()
        sign_in(browser, stack.url, ALICE.name, ALICE.password)
        assert browser.evaluate("document.getElementById('state').textContent") == "running"
        cookie = next(c for c in browser.cookies() if c["name"] == "mlab_portal")
        assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Lax"
        open_desktop(browser)
        time.sleep(2)  # the first full framebuffer update
        shot = tmp_path / "portal-desktop.png"
        browser.screenshot(shot)
        print(f"sign-in to desktop: {time.monotonic() - start:.1f} s")
        if os.environ.get("MLAB_UPDATE_SCREENSHOTS") == "1":
            shutil.copyfile(shot, DOCS / "portal-desktop.png")
        assert e2e.looks_like_desktop(shot), f"no desktop in {shot}"
        # The browser never saw the VNC password: noVNC was offered security type None.
        assert "password" not in browser.evaluate("location.search")
    finally:
        browser.close()
    events = [(r["event"], r.get("user")) for r in stack.portal.audit_records()]
    assert ("login", "alice") in events
    assert ("desktop-open", "alice") in events


def test_second_user_cannot_open_the_first_users_desktop(stack, tmp_path) -> None:
    browser = Browser(tmp_path)
    try:
        sign_in(browser, stack.url, BOB.name, BOB.password)
        # His own page offers his desktop, not alice's.
        assert "/desktop/bob" in browser.evaluate("document.getElementById('open').href")
        browser.goto(f"{stack.url}/desktop/alice")
        browser.wait_for("document.title.startsWith('Not yours')")
        # The WebSocket itself, from bob's page (same origin, his cookie sent).
        opened = browser.evaluate(
            "new Promise(r => { const w = new WebSocket("
            f"'ws://localhost:{stack.portal.port}/desktop/alice/websockify', ['binary']);"
            " w.onopen = () => r('opened'); w.onclose = e => r('closed ' + e.code); })")
        assert opened.startswith("closed"), opened
        # noVNC's own page pointed at alice's socket does not connect either.
        browser.goto(f"{stack.url}/novnc/vnc.html?autoconnect=1&path=desktop/alice/websockify")
        time.sleep(4)
        assert not browser.evaluate(
            "document.documentElement.classList.contains('noVNC_connected')")
        cookie = _session_cookie(browser)
    finally:
        browser.close()
    # By hand with bob's cookie and the right Origin: refused before any upgrade.
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(
            f"ws://127.0.0.1:{stack.portal.port}/desktop/alice/websockify",
            cookie=f"mlab_portal={cookie}", origin=stack.url, timeout=10)
    assert refused.value.status_code == 403
    page = httpx.get(f"http://127.0.0.1:{stack.portal.port}/desktop/alice",
                     headers={"Cookie": f"mlab_portal={cookie}"})
    assert page.status_code == 403
    denied = [r for r in stack.portal.audit_records() if r["event"] == "desktop-denied"]
    assert denied and all(r["user"] == "bob" and r["desktop"] == "alice" for r in denied)
    assert ("login", "bob") in [(r["event"], r.get("user")) for r in stack.portal.audit_records()]


def test_own_desktop_socket_needs_the_portals_origin(stack, tmp_path) -> None:
    browser = Browser(tmp_path)
    try:
        sign_in(browser, stack.url, ALICE.name, ALICE.password)
        cookie = _session_cookie(browser)
    finally:
        browser.close()
    ws_url = f"ws://127.0.0.1:{stack.portal.port}/desktop/alice/websockify"
    # Another site's page cannot ride on alice's cookie (cross-site WebSocket hijacking).
    with pytest.raises(websocket.WebSocketBadStatusException):
        websocket.create_connection(ws_url, cookie=f"mlab_portal={cookie}",
                                    origin="http://evil.example", timeout=10)
    # The same request from the portal's origin gets an RFB server that offers "None".
    ws = websocket.create_connection(ws_url, cookie=f"mlab_portal={cookie}",
                                     origin=stack.url, subprotocols=["binary"], timeout=20)
    try:
        assert ws.recv() == b"RFB 003.008\n"
        ws.send_binary(b"RFB 003.008\n")
        assert ws.recv() == b"\x01\x01"
    finally:
        ws.close()


def test_cookie_flags_csrf_and_sign_out(stack, tmp_path) -> None:
    base = f"http://127.0.0.1:{stack.portal.port}"
    anonymous = httpx.get(base + "/")
    set_cookie = anonymous.headers["set-cookie"]
    for flag in ("HttpOnly", "Secure", "SameSite=Lax", "Path=/"):
        assert flag in set_cookie, set_cookie
    browser = Browser(tmp_path)
    try:
        sign_in(browser, stack.url, BOB.name, BOB.password)
        cookie = _session_cookie(browser)
        csrf = browser.evaluate("document.querySelector('input[name=csrf]').value")
    finally:
        browser.close()
    # The signed-in session got a new id (no fixation of the anonymous one).
    assert cookie not in set_cookie
    jar = {"Cookie": f"mlab_portal={cookie}"}
    assert "MLab: bob" in httpx.get(base + "/", headers=jar).text
    no_token = httpx.post(base + "/auth/logout", headers=jar, data={})
    assert no_token.status_code == 403
    wrong = httpx.post(base + "/auth/logout", headers=jar, data={"csrf": "x" * 43})
    assert wrong.status_code == 403
    foreign = httpx.post(base + "/auth/logout", data={"csrf": csrf},
                         headers={**jar, "Origin": "http://evil.example"})
    assert foreign.status_code == 403
    assert "MLab: bob" in httpx.get(base + "/", headers=jar).text  # still signed in
    out = httpx.post(base + "/auth/logout", headers={**jar, "Origin": stack.url},
                     data={"csrf": csrf})
    assert out.status_code == 303
    assert "max-age=0" in out.headers.get("set-cookie", "").lower()
    after = httpx.get(base + "/", headers=jar)
    assert "id=signin" in after.text and "MLab: bob" not in after.text
    assert ("logout", "bob") in [(r["event"], r.get("user")) for r in stack.portal.audit_records()]


def test_failed_sign_in_is_audited(stack, tmp_path) -> None:
    browser = Browser(tmp_path)
    try:
        open_login_form(browser, stack.url)
        # The user cancels at the provider: it redirects back with error=access_denied.
        state = browser.evaluate("new URL(location.href).searchParams.get('state')")
        browser.goto(f"{stack.url}/auth/callback?error=access_denied&state={state}")
        browser.wait_for("document.title.startsWith('Sign-in failed')")
    finally:
        browser.close()
    assert any(r["event"] == "login-failed" for r in stack.portal.audit_records())


def _keycloak_try(browser: Browser, user: str, password: str) -> None:
    """Type ``user``/``password`` on Keycloak's login form and wait for the next page."""
    browser.evaluate(
        "window.__before = true;"
        f"document.getElementById('username').value = {json.dumps(user)};"
        f"document.getElementById('password').value = {json.dumps(password)};"
        "document.getElementById('kc-login').click(); true")
    browser.wait_for("!window.__before && document.readyState === 'complete'", timeout=60)


def test_keycloak_locks_an_account_after_wrong_passwords(stack, tmp_path) -> None:
    browser = Browser(tmp_path)
    try:
        open_login_form(browser, stack.url)
        for attempt in range(5):
            _keycloak_try(browser, CAROL.name, f"wrong-{attempt}")
            assert browser.evaluate("document.getElementById('kc-form-login') !== null")
        _keycloak_try(browser, CAROL.name, CAROL.password)
        time.sleep(2)
        where = browser.evaluate("location.href")
        assert not where.startswith(stack.url), f"carol got in after 5 failures: {where}"
        assert browser.evaluate("document.getElementById('kc-form-login') !== null")
    finally:
        browser.close()
    assert ("login", "carol") not in [(r["event"], r.get("user"))
                                      for r in stack.portal.audit_records()]
