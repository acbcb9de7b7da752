"""The rendered portal on the real node (issues 15 and 16), with real parts only.

Keycloak runs on the host at the node's address over HTTPS (a test CA the portal trusts
through ``portal.oidc.caBundleSecret``); the portal is the rendered Deployment, reached by
headless Chromium at its NodePort over HTTPS (``portal.tlsSecret``); its NetworkPolicies
(``portal-to-identity-provider``, ``portal-to-api-server``) are the only way out of it.

- alice signs in on Keycloak's own page, opens her desktop (noVNC through the portal's
  WebSocket proxy to her HomePod pod), and the screenshot shows the XFCE desktop;
- bob, signed in, cannot open alice's desktop (page, WebSocket from his browser, by hand);
- the portal pod's ServiceAccount token reads and scales alice's HomePod Deployment and is
  refused (403) on the code service's; HomePods reach neither Keycloak nor the API server;
- with alice culled (Deployment at 0), "Open desktop" wakes her (``wake`` and
  ``desktop-wake`` in the portal's audit, the pod's log) and her desktop answers.

Own site ``t15node`` in its own namespace; ``mlab delete --delete-data`` at the end.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import socket
import ssl
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import websocket
import yaml
from access_clients import looks_like_desktop
from nodekit import Node

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from portal_harness import (  # noqa: E402
    Browser,
    Keycloak,
    Person,
    Tls,
    open_desktop,
    realm_json,
    sign_in,
    wait_novnc,
)

pytestmark = [pytest.mark.e2e, pytest.mark.node, pytest.mark.timeout(1800)]

SITE = "t15node"
NAMESPACE = "mlab-t15"
NODE_PORT = 30815
ALICE = Person("alice", "Alice-Node-" + secrets.token_hex(4))
BOB = Person("bob", "Bob-Node-" + secrets.token_hex(4))


def _spki_hash(cert_pem: bytes) -> str:
    """Chromium's ``--ignore-certificate-errors-spki-list`` entry for a certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    der = x509.load_pem_x509_certificate(cert_pem).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def _certificates(tmp: Path, node_ip: str) -> dict[str, Any]:
    """A test CA and two server certificates for the node's address (Keycloak, portal)."""
    from mlab.node.pki import Identity, make_ca, make_cert

    ca_cert, ca_key = make_ca()
    out: dict[str, Any] = {"ca": tmp / "ca.crt", "ca_pem": ca_cert, "spki": []}
    out["ca"].write_bytes(ca_cert)
    for name in ("keycloak", "portal"):
        cert, key = make_cert(Identity(name, name, server=True, ips=(node_ip,)), ca_cert, ca_key)
        (tmp / f"{name}.crt").write_bytes(cert)
        (tmp / f"{name}.key").write_bytes(key)
        (tmp / f"{name}.key").chmod(0o600)
        out[name] = (cert, key)
        out["spki"].append(_spki_hash(cert))
    return out


def _secret(name: str, data: dict[str, bytes], kind: str = "Opaque") -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Secret", "type": kind,
                       "metadata": {"name": name, "namespace": NAMESPACE},
                       "data": {k: base64.b64encode(v).decode() for k, v in data.items()}})


@pytest.fixture(scope="module")
def portal(node: Node, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    from mlab.node.layout import NODE_IP

    tmp = tmp_path_factory.mktemp(SITE)
    url = f"https://{NODE_IP}:{NODE_PORT}"
    certs = _certificates(tmp, NODE_IP)
    client_secret = secrets.token_urlsafe(24)
    keycloak = Keycloak(tmp, realm_json(url, client_secret, [ALICE, BOB]), host=NODE_IP,
                        tls=Tls(tmp / "keycloak.crt", tmp / "keycloak.key", certs["ca"]))
    site_file = tmp / f"{SITE}.yaml"
    env = {**node.env, "MLAB_STATE_DIR": str(tmp / "state")}

    def mlab(*args: str) -> Any:
        import subprocess

        return subprocess.run([sys.executable, "-m", "mlab.cli.main", *args, "--site",
                               str(site_file)], capture_output=True, text=True, env=env,
                              timeout=900, check=False)

    try:
        site_file.write_text(yaml.safe_dump({
            "apiVersion": "mlab.io/v1", "name": SITE, "namespace": NAMESPACE,
            "image": {"repository": "localhost/mlab/homepod", "tag": "latest",
                      "pullPolicy": "Never"},
            "access": {"officeCIDRs": ["127.0.0.0/8"]},
            "cluster": {"apiServerCIDRs": [f"{NODE_IP}/32"], "apiServerPort": 6443},
            "users": [{"name": "alice", "uid": 1001}, {"name": "bob", "uid": 1002}],
            "airlock": {"enabled": False},
            "codeService": {"host": "code.t15.local", "clusterIP": "10.96.0.215"},
            "portal": {
                "enabled": True, "url": url, "tlsSecret": "portal-tls",
                "directDesktopPorts": False, "wake": True,
                "service": {"type": "NodePort", "nodePort": NODE_PORT},
                "oidc": {"issuer": keycloak.issuer, "clientId": "mlab-portal",
                         "clientSecretSecret": "portal-oidc", "caBundleSecret": "idp-ca",
                         "cidrs": [f"{NODE_IP}/32"]},
            },
        }))
        node.clear_leftovers(site_file)
        node.kubectl("create", "namespace", NAMESPACE, check=False)
        portal_cert, portal_key = certs["portal"]
        for doc in (_secret("portal-tls", {"tls.crt": portal_cert, "tls.key": portal_key},
                            "kubernetes.io/tls"),
                    _secret("portal-oidc", {"clientSecret": client_secret.encode()}),
                    _secret("idp-ca", {"ca.crt": certs["ca_pem"]})):
            node.kubectl("apply", "--server-side", "-f", "-", stdin=doc)
        proc = mlab("apply", "--timeout", "600")
        assert proc.returncode == 0, proc.stdout[-1500:] + proc.stderr[-2500:]
        keycloak.wait(timeout=400)
        keycloak.warm(url)  # as docs/portal.md advises a site after each Keycloak start
        yield SimpleNamespace(
            url=url, node=node, keycloak=keycloak, tmp=tmp, ca=certs["ca"],
            flags=(f"--ignore-certificate-errors-spki-list={','.join(certs['spki'])}",))
    finally:
        proc = mlab("delete", "--delete-data")
        node.kubectl("-n", NAMESPACE, "delete", "secret", "portal-tls", "portal-oidc", "idp-ca",
                     "--ignore-not-found", check=False)
        keycloak.stop()
        assert proc.returncode == 0, proc.stderr[-2000:]


def _audit(p: SimpleNamespace) -> list[dict[str, Any]]:
    """The portal's audit records: the JSON lines of its pod's log (``--audit-log /dev/stderr``)."""
    out = p.node.kubectl("-n", NAMESPACE, "logs", "deploy/portal", "--tail=-1").stdout
    records = []
    for line in out.splitlines():
        if line.startswith("{"):
            try:
                records.append(json.loads(line))
            except ValueError:
                pass
    return records


def _events(p: SimpleNamespace) -> list[tuple[str, str | None]]:
    return [(r["event"], r.get("user")) for r in _audit(p)]


def _sign_in(p: SimpleNamespace, browser: Browser, person: Person) -> None:
    """:func:`sign_in` through Keycloak's page; on failure the message has the browser's
    error page text and the end of the portal pod's log.

    Once in six runs (session 4) the browser ended on ``chrome-error://`` right after
    Keycloak's redirect to the callback: a network error page, not an answer of the portal
    (an HTTP error would show the portal's page). That one case is printed and the whole
    sign-in is tried once more from the start (the code in the callback is single-use).
    """
    try:
        sign_in(browser, p.url, person.name, person.password)
        return
    except TimeoutError as exc:
        where = browser.evaluate("location.href") or ""
        if not where.startswith("chrome-error://"):
            _sign_in_failed(p, browser, exc)
        page = browser.evaluate("document.body ? document.body.innerText.slice(0, 400) : ''")
        print(f"\nsign-in ended on a network error page, once more from the start: {page!r}")
        browser.call("Network.clearBrowserCookies")  # Keycloak's session too: its form again
    try:
        sign_in(browser, p.url, person.name, person.password)
    except TimeoutError as exc:
        _sign_in_failed(p, browser, exc)


def _sign_in_failed(p: SimpleNamespace, browser: Browser, exc: TimeoutError) -> None:
    """Raise AssertionError with the page's text and the end of the portal pod's log."""
    page = browser.evaluate("document.body ? document.body.innerText.slice(0, 400) : ''")
    log = p.node.kubectl("-n", NAMESPACE, "logs", "deploy/portal", "--tail=30",
                         check=False).stdout
    raise AssertionError(f"{exc}\npage: {page}\nportal log:\n{log}") from None


def test_alice_signs_in_on_keycloak_and_sees_her_desktop(portal, tmp_path) -> None:
    browser = Browser(tmp_path, portal.flags)
    try:
        start = time.monotonic()
        _sign_in(portal, browser, ALICE)
        assert browser.evaluate("document.getElementById('state').textContent") == "running"
        # Keycloak's own page was the one that took the password, at the provider's address.
        cookie = next(c for c in browser.cookies() if c["name"] == "mlab_portal")
        assert cookie["secure"] and cookie["httpOnly"]
        open_desktop(browser, timeout=90)
        time.sleep(2)  # the first full framebuffer update
        shot = tmp_path / "node-portal-desktop.png"
        browser.screenshot(shot)
        print(f"\nsign-in to desktop through the node's portal: {time.monotonic() - start:.1f} s")
        assert looks_like_desktop(shot), f"no desktop in {shot}"
        assert "password" not in browser.evaluate("location.search")
    finally:
        browser.close()
    events = _events(portal)
    assert ("login", "alice") in events and ("desktop-open", "alice") in events, events


def test_bob_cannot_open_alices_desktop(portal, tmp_path) -> None:
    browser = Browser(tmp_path, portal.flags)
    try:
        _sign_in(portal, browser, BOB)
        assert "/desktop/bob" in browser.evaluate("document.getElementById('open').href")
        browser.goto(f"{portal.url}/desktop/alice")
        browser.wait_for("document.title.startsWith('Not yours')")
        host = portal.url.removeprefix("https://")
        opened = browser.evaluate(
            "new Promise(r => { const w = new WebSocket("
            f"'wss://{host}/desktop/alice/websockify', ['binary']);"
            " w.onopen = () => r('opened'); w.onclose = e => r('closed ' + e.code); })")
        assert opened.startswith("closed"), opened
        cookie = next(c["value"] for c in browser.cookies() if c["name"] == "mlab_portal")
    finally:
        browser.close()
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(
            f"wss://{host}/desktop/alice/websockify", cookie=f"mlab_portal={cookie}",
            origin=portal.url, timeout=20,
            sslopt={"cert_reqs": ssl.CERT_REQUIRED, "ca_certs": str(portal.ca)})
    assert refused.value.status_code == 403
    denied = [r for r in _audit(portal) if r["event"] == "desktop-denied"]
    assert denied and all(r["user"] == "bob" and r["desktop"] == "alice" for r in denied)


PORTAL_TOKEN_PROBE = r"""
import json
from mlab.cull.incluster import InCluster
from mlab.errors import DeployError
api = InCluster.from_pod()
out = {"alice": api.replicas("mlab-t15", "homepod-alice")}
api.scale("mlab-t15", "homepod-alice", out["alice"])  # a no-op patch: allowed
try:
    api.scale("mlab-t15", "code-service", 0)
    out["code-service"] = "scaled"
except DeployError as exc:
    out["code-service"] = str(exc)
try:
    api.replicas("mlab-t15", "homepod-bob")
    out["bob"] = "read"
except DeployError as exc:
    out["bob"] = str(exc)
print(json.dumps(out))
"""


def test_portal_token_scales_homepods_only(portal) -> None:
    # MLab's own client, with the token Kubernetes mounted in the portal's pod.
    proc = portal.node.kubectl("-n", NAMESPACE, "exec", "deploy/portal", "--",
                               "/opt/mlab/venv/bin/python", "-c", PORTAL_TOKEN_PROBE, timeout=120)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["alice"] == 1, out
    assert "403" in out["code-service"] and "forbidden" in out["code-service"], out
    assert out["bob"] == "read", out  # every user's HomePod is in the Role, nothing else
    replicas = portal.node.json("-n", NAMESPACE, "get", "deployment/code-service")["spec"]["replicas"]
    assert replicas == 1


HOMEPOD_PROBE = r"""
import json, socket, sys
out = {}
for name, port in (("keycloak", int(sys.argv[2])), ("api-server", 6443)):
    try:
        socket.create_connection((sys.argv[1], port), timeout=5).close()
        out[name] = "connected"
    except OSError as exc:
        out[name] = type(exc).__name__
print(json.dumps(out))
"""


def test_homepods_reach_neither_keycloak_nor_the_api_server(portal) -> None:
    from mlab.node.layout import NODE_IP

    proc = portal.node.exec_py("deploy/homepod-alice", HOMEPOD_PROBE, NODE_IP,
                               str(portal.keycloak.port), namespace=NAMESPACE)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"keycloak": out["keycloak"], "api-server": out["api-server"]}
    print(f"\nalice's HomePod to Keycloak and the API server: {out}")
    assert "connected" not in out.values(), out


def _vnc_banner(node: Node) -> bytes:
    """The RFB banner of alice's VNC Service, read from inside the portal pod."""
    code = ("import socket; s = socket.create_connection(('homepod-alice.mlab-t15.svc', 5900), "
            "timeout=5); print(s.recv(12).decode())")
    return node.exec_py("deploy/portal", code, namespace=NAMESPACE).stdout.strip().encode()


def test_open_desktop_wakes_culled_alice(portal, tmp_path) -> None:
    node = portal.node
    # The culler's stop (mlab cull --kubernetes scales to 0; tests/node/test_node_cull.py).
    node.kubectl("-n", NAMESPACE, "scale", "deployment/homepod-alice", "--replicas=0")
    node.kubectl("-n", NAMESPACE, "wait", "pods", "-l", "mlab.io/user=alice", "--for=delete",
                 "--timeout=180s", timeout=200)
    browser = Browser(tmp_path, portal.flags)
    try:
        _sign_in(portal, browser, ALICE)
        state = browser.evaluate("document.getElementById('state').textContent")
        assert state.startswith("stopped"), state
        clicked = time.monotonic()
        browser.evaluate("document.getElementById('open').click()")
        browser.wait_for("document.getElementById('waking') !== null", timeout=30)
        marks: dict[str, float] = {}
        # The waiting page reloads itself and opens noVNC once the VNC server answers.
        browser.wait_for("location.pathname.endsWith('vnc.html')", timeout=240, poll=0.5)
        open_desktop_connected(browser, marks)
        print(f"\nOpen desktop on culled alice to noVNC connected: "
              f"{marks['connected'] - clicked:.1f} s")
        time.sleep(2)
        shot = tmp_path / "woken-desktop.png"
        browser.screenshot(shot)
        assert looks_like_desktop(shot), f"no desktop in {shot}"
    finally:
        browser.close()
    assert node.json("-n", NAMESPACE, "get", "deployment/homepod-alice")["spec"]["replicas"] == 1
    assert _vnc_banner(node).startswith(b"RFB ")
    records = _audit(portal)
    wakes = [r for r in records if r["event"] == "wake"]
    assert [(r["user"], r["was_culled"], r["engine"]) for r in wakes] == [
        ("alice", True, "kubernetes")], wakes
    assert ("desktop-wake", "alice") in [(r["event"], r.get("user")) for r in records]


def open_desktop_connected(browser: Browser, marks: dict[str, float]) -> None:
    """Wait for noVNC's connected state on the page already shown; ``marks['connected']``."""
    wait_novnc(browser, 60)
    marks["connected"] = time.monotonic()



def test_a_renewed_tls_secret_is_served_without_a_restart(portal) -> None:
    """The portal's ``tlsSecret`` renewed in place (what cert-manager does): the same pod
    serves the new certificate once the kubelet has swapped its Secret volume (about a
    minute) and the portal's next look (mlab.cli.serving.TLS_RECHECK_S). Last in the module:
    the browser flags of the other tests trust the first certificate only."""
    from mlab.node.layout import NODE_IP
    from mlab.node.pki import Identity, make_ca, make_cert

    def served() -> bytes:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        with socket.create_connection((NODE_IP, NODE_PORT), timeout=5) as raw, \
                ctx.wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True)
        assert der is not None
        return der

    node = portal.node
    pod = node.json("-n", NAMESPACE, "get", "pods", "-l", "app.kubernetes.io/component=portal")
    before = [p["metadata"]["uid"] for p in pod["items"]]
    old = served()
    ca_cert, ca_key = make_ca()
    cert, key = make_cert(Identity("portal", "portal-renewed", server=True, ips=(NODE_IP,)),
                          ca_cert, ca_key)
    node.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-",
                 stdin=_secret("portal-tls", {"tls.crt": cert, "tls.key": key},
                               "kubernetes.io/tls"))
    start = time.monotonic()
    new = ssl.PEM_cert_to_DER_cert(cert.decode())
    while (got := served()) != new:
        assert got == old, "the portal serves neither the old nor the new certificate"
        assert time.monotonic() - start < 240, "the renewed certificate not served after 240 s"
        time.sleep(2)
    print(f"\nrenewed portal-tls served after {time.monotonic() - start:.0f} s")
    pod = node.json("-n", NAMESPACE, "get", "pods", "-l", "app.kubernetes.io/component=portal")
    assert [p["metadata"]["uid"] for p in pod["items"]] == before  # the same pod, no restart
