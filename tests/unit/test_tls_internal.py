"""``tls`` in the site (issue 17), the pods' own password-bearing edges: the Airlock's login,
its export publisher and the portal reach the code service over HTTPS only, trusting its
CA; with ``tls`` off nothing changes."""

from __future__ import annotations

import http.server
import json
import ssl
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlab.errors import MlabError
from mlab.podman.engine import _firewall_script
from mlab.podman.translate import translate, wanted_networks
from mlab.render import render_site
from mlab.requests.client import RequestsClient
from mlab.secrets import password_keys
from mlab.site import Site, parse_site
from mlab.tls import ca_path, load_or_create
from mlab.topology import checks

ROOT = Path(__file__).resolve().parents[2]


def _site(**changes: Any) -> Site:
    data = yaml.safe_load((ROOT / "examples" / "local.yaml").read_text())
    data.update(changes)
    return parse_site(data)


def _render(site: Site, tmp: Path) -> tuple[dict[tuple[str, str], Any], Any]:
    rendered = render_site(site, {k: "x" * 20 for k in password_keys(site)},
                           load_or_create(site, tmp))
    by = {(o["kind"], o["metadata"]["name"]): o for f in rendered.files.values() for o in f}
    return by, rendered


def _containers(by: dict[tuple[str, str], Any]) -> dict[str, dict[str, Any]]:
    pod = by[("Deployment", "airlock")]["spec"]["template"]["spec"]
    return {c["name"]: c for c in pod["containers"]}


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container["env"]}


def test_airlock_and_publisher_reach_the_code_service_on_https_only(tmp_path: Path) -> None:
    """With tls the Airlock's edge is 8443 in both NetworkPolicies; the login container and
    the publisher get https://<codeService.host>; the login trusts the code CA (after the
    proxy's, MLAB_CA_BUNDLE lists both), the publisher checks it alone (SSL_CERT_FILE);
    both mount only the ca.crt of the code service's Secret."""
    site = _site(tls={"mode": "site-ca"}, airlock={"enabled": True, "caBundleSecret": "proxy-ca"})
    by, _ = _render(site, tmp_path)
    for name in ("airlock-to-code-service", "code-service-from-airlock"):
        spec = by[("NetworkPolicy", name)]["spec"]
        rules = spec.get("egress") or spec.get("ingress")
        assert [r["ports"] for r in rules] == [[{"protocol": "TCP", "port": 8443}]], name
    boxes = _containers(by)
    login, publisher = _env(boxes["airlock"]), _env(boxes["publisher"])
    assert login["MLAB_SERVER"] == publisher["MLAB_SERVER"] == "https://code.mlab.local"
    assert login["MLAB_CA_BUNDLE"] == "/etc/mlab/ca/ca.crt:/etc/mlab/code-ca/ca.crt"
    assert publisher["SSL_CERT_FILE"] == "/etc/mlab/code-ca/ca.crt"
    for box in boxes.values():
        assert {"name": "code-ca", "mountPath": "/etc/mlab/code-ca",
                "readOnly": True} in box["volumeMounts"]
    pod = by[("Deployment", "airlock")]["spec"]["template"]["spec"]
    vol = next(v for v in pod["volumes"] if v["name"] == "code-ca")
    assert vol["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]  # never the key
    # Without a proxy CA the login trusts the code CA alone.
    by, _ = _render(_site(tls={"mode": "site-ca"}, airlock={"enabled": True}), tmp_path)
    assert _env(_containers(by)["airlock"])["MLAB_CA_BUNDLE"] == "/etc/mlab/code-ca/ca.crt"
    got = {(c.source, c.destination, c.port): c.expected
           for c in checks({"office", "airlock", "tls"})}
    assert got[("airlock", "code-service", 8443)] is True
    assert got[("airlock", "code-service", 8080)] is False


def test_airlock_without_tls_keeps_plain_http(tmp_path: Path) -> None:
    """tls off: the Airlock's edge stays 8080; no code CA, no https URL, no SSL_CERT_FILE."""
    by, _ = _render(_site(airlock={"enabled": True, "caBundleSecret": "proxy-ca"}), tmp_path)
    spec = by[("NetworkPolicy", "airlock-to-code-service")]["spec"]
    assert [r["ports"] for r in spec["egress"]] == [[{"protocol": "TCP", "port": 8080}]]
    boxes = _containers(by)
    assert _env(boxes["airlock"])["MLAB_CA_BUNDLE"] == "/etc/mlab/ca/ca.crt"
    for box in boxes.values():
        assert not _env(box).keys() & {"MLAB_SERVER", "SSL_CERT_FILE"}
    pod = by[("Deployment", "airlock")]["spec"]["template"]["spec"]
    assert all(v["name"] != "code-ca" for v in pod["volumes"])


def _firewall(site: Site, tmp: Path) -> tuple[str, str]:
    _, rendered = _render(site, tmp)
    subnets = {n: f"10.89.{250 - i}.0/24" for i, (n, _, _) in enumerate(wanted_networks(site))}
    plan = translate(site, rendered.files, rendered.secrets, subnets, "/state")
    return _firewall_script(plan), str(plan.nat_network().subnet)


def test_podman_nat_network_reaches_the_code_service_on_https_only(tmp_path: Path) -> None:
    """podman: with tls the NAT network DNATs the code Service's 443 to 8443, accepts only
    that, and drops 8080 to the code service (the Airlock shares its bridge); tls off keeps
    80 -> 8080 and no drop."""
    text, nat = _firewall(_site(tls={"mode": "site-ca"}, airlock={"enabled": True}), tmp_path)
    code = nat.rsplit(".", 1)[0] + ".2"
    assert (f"ip saddr {nat} ip daddr {code} tcp dport 443 dnat ip to {code}:8443") in text
    assert (f"ip saddr {nat} ip daddr {code} tcp dport 8443 ct status dnat"
            " ct original proto-dst 443 accept") in text
    assert f"ip saddr {nat} ip daddr {code} tcp dport 8080 drop" in text
    assert f"dnat ip to {code}:8080" not in text
    text, nat = _firewall(_site(airlock={"enabled": True}), tmp_path)
    assert f"ip saddr {nat} ip daddr {code} tcp dport 80 dnat ip to {code}:8080" in text
    assert "tcp dport 8080 drop" not in text and ":8443" not in text


def test_portal_reaches_the_code_service_on_https_only(tmp_path: Path) -> None:
    """With tls the portal's edge is 8443; it calls https://code-service (a name of the
    code service's certificate) checked against the ca.crt of its Secret (never the key);
    tls off keeps http://code-service and no CA. The podman portal (on the host) dials the
    code service's published HTTPS port on the bind address."""
    site = _site(tls={"mode": "site-ca"}, portal={"enabled": True})
    by, rendered = _render(site, tmp_path)
    for name in ("portal-to-code-service", "code-service-from-portal"):
        spec = by[("NetworkPolicy", name)]["spec"]
        rules = spec.get("egress") or spec.get("ingress")
        assert [r["ports"] for r in rules] == [[{"protocol": "TCP", "port": 8443}]], name
    pod = by[("Deployment", "portal")]["spec"]["template"]["spec"]
    command = pod["containers"][0]["command"]
    assert command[command.index("--code-url") + 1] == "https://code-service"
    assert command[command.index("--code-ca") + 1] == "/etc/mlab/portal/code-ca.crt"
    sources = next(v for v in pod["volumes"] if v["name"] == "portal-secrets")["projected"]
    assert {"secret": {"name": "code-service-tls", "items": [
        {"key": "ca.crt", "path": "code-ca.crt"}]}} in sources["sources"]
    subnets = {n: f"10.89.{250 - i}.0/24" for i, (n, _, _) in enumerate(wanted_networks(site))}
    plan = translate(site, rendered.files, rendered.secrets, subnets, "/state")
    portal = next(p for p in plan.pods if p.component == "portal")
    args = portal.manifest["spec"]["containers"][0]["command"]
    assert any(f.path.endswith("code-ca.crt") for f in portal.files), portal.files
    assert args[args.index("--code-url") + 1] == "https://127.0.0.1:443"
    by, _ = _render(_site(portal={"enabled": True}), tmp_path)
    command = by[("Deployment", "portal")]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[command.index("--code-url") + 1] == "http://code-service"
    assert "--code-ca" not in command


class _Requests(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = json.dumps({"requests": [{"id": 1}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_requests_client_checks_the_code_service_by_the_given_ca(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The portal's client (cafile = --code-ca) over real TLS: the code service's
    certificate from the site CA verifies against it; without it (no SSL_CERT_FILE, the
    system store) the call fails on the certificate before any request is sent."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    site = _site(tls={"mode": "site-ca"})
    got = load_or_create(site, tmp_path)
    assert got is not None
    (tmp_path / "tls.crt").write_text(got.issued["code-service"].cert)
    (tmp_path / "tls.key").write_text(got.issued["code-service"].key)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Requests)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"https://127.0.0.1:{server.server_address[1]}"
        ca = str(ca_path(site, tmp_path))
        assert RequestsClient(url, "alice", "pw", timeout=10, cafile=ca).list() == [{"id": 1}]
        with pytest.raises(MlabError, match="(?i)certificate"):
            RequestsClient(url, "alice", "pw", timeout=10).list()
    finally:
        server.shutdown()
        server.server_close()
