"""The portal under the local engine: ``mlab up`` of a site with ``portal.enabled`` runs
the rendered portal pod (from the HomePod image, on the host network), and a browser signs
in through Keycloak (a public client, PKCE only) and sees alice's desktop through it. The
site has ``directDesktopPorts: false``: alice's VNC, RDP and noVNC ports are not published
(only SSH), so the portal is the only way to her desktop. The site has ``tls: {mode:
site-ca}``: alice's VNC server offers only VeNCrypt X509Vnc, so the desktop shows only if
the portal speaks VeNCrypt and trusts the site CA.

Own site ``t4portal`` on its own bind address (127.0.7.1) and MLAB_STATE_DIR; the Airlock
is disabled to keep the machine's load down. ``mlab down --volumes`` at the end.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
import yaml
from cli_runner import Run, mlab_site
from portal_harness import Browser, Keycloak, Person, open_desktop, realm_json, sign_in

from mlab.podman.runner import podman

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

SITE = "t4portal"
BIND = "127.0.7.1"
PORTAL_PORT = 18443
ALICE = Person("alice", "Alice-Up-" + secrets.token_hex(4))


@pytest.fixture(scope="module")
def up(homepod_image: str, tmp_path_factory) -> Iterator[SimpleNamespace]:
    tmp = tmp_path_factory.mktemp("portal-up")
    url = f"http://{BIND}:{PORTAL_PORT}"
    keycloak = Keycloak(tmp, realm_json(url, None, [ALICE]))
    site_file = tmp / f"{SITE}.yaml"
    env = {**os.environ, "MLAB_STATE_DIR": str(tmp / "state")}

    def mlab(*args: str) -> Run:
        return mlab_site(site_file, *args, env=env, timeout=900, check=False)

    try:
        repo, tag = homepod_image.rsplit(":", 1)
        site_file.write_text(yaml.safe_dump({
            "apiVersion": "mlab.io/v1", "name": SITE,
            "image": {"repository": repo, "tag": tag, "pullPolicy": "Never"},
            "access": {"bindAddress": BIND, "ports": {"portal": PORTAL_PORT}},
            "users": [{"name": "alice", "service": {"ports": {
                "vnc": 15951, "rdp": 13451, "novnc": 17051, "ssh": 12251}}}],
            "airlock": {"enabled": False},
            "codeService": {"reviewers": ["alice"]},
            "portal": {"enabled": True, "url": url, "directDesktopPorts": False,
                       "oidc": {"issuer": keycloak.issuer, "clientId": "mlab-portal"}},
            # Desktops offer VeNCrypt X509Vnc only: the portal speaks it, checking the
            # desktop's certificate against the site CA (--vnc-ca).
            "tls": {"mode": "site-ca"},
        }))
        mlab("down", "--volumes")  # leftovers of an interrupted run
        keycloak.wait()
        proc = mlab("up")
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        yield SimpleNamespace(url=url, keycloak=keycloak)
    finally:
        proc = mlab("down", "--volumes")
        keycloak.stop()
        assert proc.returncode == 0, proc.stderr[-2000:]


def test_up_runs_the_portal_and_it_opens_alices_desktop(up, e2e, tmp_path) -> None:
    browser = Browser(tmp_path)
    try:
        sign_in(browser, up.url, ALICE.name, ALICE.password)
        # Her requests and, as a reviewer, the queue: read from the code service as alice.
        text = browser.evaluate("document.body.innerText")
        assert "Your requests" in text and "Review queue" in text, text
        assert "not available" not in text, text
        assert "Staged on the Airlock" in text and "Nothing is staged yet" in text, text
        open_desktop(browser, timeout=60)
        time.sleep(2)
        shot = tmp_path / "desktop.png"
        browser.screenshot(shot)
        assert e2e.looks_like_desktop(shot), f"no desktop in {shot}"
    finally:
        browser.close()
    logs = podman(["logs", f"mlab-{SITE}-portal-portal"], check=False)
    text = logs.stdout + logs.stderr
    assert '"event": "login", "user": "alice"' in text, text[-2000:]
    assert '"event": "desktop-open", "user": "alice"' in text, text[-2000:]
    # What the portal got through: a VNC server that offers VeNCrypt X509Vnc and nothing else.
    cmd = podman(["exec", f"mlab-{SITE}-homepod-alice-homepod", "sh", "-c",
                  "tr '\\0' ' ' < /proc/$(pgrep -x Xtigervnc)/cmdline"], check=False).stdout
    assert "-SecurityTypes X509Vnc" in cmd, cmd


def _banner(port: int) -> bytes | None:
    try:
        with socket.create_connection((BIND, port), timeout=3) as s:
            s.settimeout(3)
            return s.recv(16)
    except OSError:
        return None


def test_only_ssh_is_published_when_the_portal_is_the_only_door(up) -> None:
    assert (_banner(12251) or b"").startswith(b"SSH-2.0"), "alice's SSH is not published"
    for name, port in (("vnc", 15951), ("rdp", 13451), ("novnc", 17051)):
        with pytest.raises(ConnectionRefusedError):  # nothing listens, no DNAT rule
            socket.create_connection((BIND, port), timeout=5).close()
            pytest.fail(f"alice's {name} port {port} is published")
