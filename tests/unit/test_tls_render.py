"""``tls`` in the site (issue 17): the site CA (real certificates checked with the real
``openssl verify``), what the renderer and the podman translation make of it."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlab.podman.translate import translate, wanted_networks
from mlab.render import render_site
from mlab.secrets import password_keys
from mlab.site import Site, parse_site
from mlab.tls import ca_path, load_or_create, names, tls_dir

ROOT = Path(__file__).resolve().parents[2]


def _site(**changes: Any) -> Site:
    data = yaml.safe_load((ROOT / "examples" / "local.yaml").read_text())
    data.update(changes)
    return parse_site(data)


def _verify(ca: Path, cert: str, tmp: Path, name: str) -> subprocess.CompletedProcess[str]:
    (tmp / "leaf.pem").write_text(cert)
    flag = "-verify_ip" if name[0].isdigit() else "-verify_hostname"
    return subprocess.run(["openssl", "verify", "-CAfile", str(ca), flag, name,
                           str(tmp / "leaf.pem")], capture_output=True, text=True, timeout=60)


def test_the_site_ca_issues_certificates_that_openssl_accepts(tmp_path: Path) -> None:
    site = _site(tls={"mode": "site-ca", "names": ["mlab.example.org"]})
    got = load_or_create(site, tmp_path)
    assert got is not None
    assert sorted(got.issued) == ["airlock", "code-service", "homepod-alice", "homepod-bob"]
    ca = ca_path(site, tmp_path)
    for name in ("code.mlab.local", "mlab.example.org", "127.0.0.1", "localhost"):
        ok = _verify(ca, got.issued["code-service"].cert, tmp_path, name)
        assert ok.returncode == 0, ok.stdout + ok.stderr
    wrong = _verify(ca, got.issued["code-service"].cert, tmp_path, "evil.example.org")
    assert wrong.returncode != 0
    assert "code.mlab.local" not in names(site, "homepod-alice")
    # Keys are the owner's only; a second run gives the same files (stable Secrets).
    assert (tls_dir(site, tmp_path) / "ca.key").stat().st_mode & 0o077 == 0
    assert (tls_dir(site, tmp_path)).stat().st_mode & 0o077 == 0
    assert load_or_create(site, tmp_path) == got


def test_a_new_name_reissues_the_certificates_but_keeps_the_ca(tmp_path: Path) -> None:
    first = load_or_create(_site(tls={"mode": "site-ca"}), tmp_path)
    second = load_or_create(_site(tls={"mode": "site-ca", "names": ["10.1.2.3"]}), tmp_path)
    assert first is not None and second is not None
    assert first.ca == second.ca
    assert first.issued["code-service"] != second.issued["code-service"]


def test_off_makes_nothing(tmp_path: Path) -> None:
    assert load_or_create(_site(), tmp_path) is None
    assert not (tmp_path / "local" / "tls").exists()


def _render(site: Site, tmp: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    rendered = render_site(site, {k: "x" * 20 for k in password_keys(site)},
                           load_or_create(site, tmp))
    by = {(o["kind"], o["metadata"]["name"]): o
          for f in rendered.files.values() for o in f}
    return by, rendered.secrets


def test_rendered_code_service_answers_the_office_on_https_only(tmp_path: Path) -> None:
    site = _site(tls={"mode": "site-ca"})
    by, secrets = _render(site, tmp_path)
    box = by[("Deployment", "code-service")]["spec"]["template"]["spec"]["containers"][0]
    assert box["command"][-6:] == ["--tls-port", "8443", "--tls-cert", "/etc/mlab/tls/tls.crt",
                                   "--tls-key", "/etc/mlab/tls/tls.key"]
    assert {p["name"]: p["containerPort"] for p in box["ports"]} == {"http": 8080, "https": 8443}
    svc = by[("Service", "code-service")]["spec"]["ports"]
    assert [(p["port"], p["targetPort"]) for p in svc] == [(80, "http"), (443, "https")]
    office = by[("NetworkPolicy", "code-service-from-office")]["spec"]["ingress"][0]["ports"]
    assert office == [{"protocol": "TCP", "port": 8443}]
    kinds = {s["metadata"]["name"]: s["type"] for s in secrets if s["type"] == "kubernetes.io/tls"}
    assert kinds == dict.fromkeys(["homepod-alice-tls", "homepod-bob-tls", "airlock-tls",
                                   "code-service-tls"], "kubernetes.io/tls")
    hp = by[("Deployment", "homepod-alice")]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "MLAB_TLS_DIR", "value": "/etc/mlab/tls"} in hp["env"]
    assert hp["livenessProbe"]["httpGet"]["scheme"] == "HTTPS"
    vol = next(v for v in by[("Deployment", "homepod-alice")]["spec"]["template"]["spec"]
               ["volumes"] if v["name"] == "tls")
    assert vol["secret"]["secretName"] == "homepod-alice-tls"


def test_secret_mode_uses_the_sites_secret_for_the_code_service(tmp_path: Path) -> None:
    site = _site(tls={"mode": "secret", "secret": "wildcard-tls"})
    by, secrets = _render(site, tmp_path)
    vol = next(v for v in by[("Deployment", "code-service")]["spec"]["template"]["spec"]
               ["volumes"] if v["name"] == "tls")
    assert vol["secret"]["secretName"] == "wildcard-tls"
    assert "code-service-tls" not in {s["metadata"]["name"] for s in secrets}


def test_podman_publishes_only_the_https_port_of_the_code_service(tmp_path: Path) -> None:
    site = _site(tls={"mode": "site-ca"})
    rendered = render_site(site, {k: "x" * 20 for k in password_keys(site)},
                           load_or_create(site, tmp_path))
    subnets = {n: f"10.89.{250 - i}.0/24" for i, (n, _, _) in enumerate(wanted_networks(site))}
    plan = translate(site, rendered.files, rendered.secrets, subnets, "/state")
    code = plan.pod("code-service")
    assert code is not None
    assert [(p.name, p.host_port, p.container_port) for p in code.ports] == [
        ("https", 443, 8443)]
    files = {f.path for f in code.files}
    assert any(p.endswith("tls.key") for p in files), files


@pytest.mark.parametrize("tls, error", [
    ({"mode": "secret"}, "tls.secret"),
    ({"mode": "site-ca", "names": ["a b"]}, "tls.names[0]"),
])
def test_bad_tls_settings_name_the_field(tls: dict[str, Any], error: str) -> None:
    with pytest.raises(Exception, match=error.replace("[", r"\[")):
        _site(tls=tls)


def test_the_portal_checks_desktops_by_the_site_ca(tmp_path: Path) -> None:
    site = _site(tls={"mode": "site-ca"}, portal={"enabled": True})
    by, secrets = _render(site, tmp_path)
    box = by[("Deployment", "portal")]["spec"]["template"]["spec"]["containers"][0]
    command = box["command"]
    assert command[command.index("--vnc-ca") + 1] == "/etc/mlab/portal/site-ca.crt"
    ca = next(s for s in secrets if s["metadata"]["name"] == "mlab-site-ca")
    assert set(ca["stringData"]) == {"ca.crt"}  # the certificate only, never a key
    assert ca["stringData"]["ca.crt"] == load_or_create(site, tmp_path).ca  # type: ignore[union-attr]


def _vencrypt_server(ca_dir: Path, password: str):  # type: ignore[no-untyped-def]
    """A VNC server at the protocol boundary: RFB 3.8 offering only VeNCrypt X509Vnc with a
    certificate from the site CA, then VncAuth inside TLS (as Xtigervnc -SecurityTypes
    X509Vnc does), then ServerInit's first four bytes."""
    import asyncio
    import os as _os
    import ssl

    from mlab.portal.rfb import vnc_auth_response

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(ca_dir / "homepod-alice.crt", ca_dir / "homepod-alice.key")
    seen: dict[str, object] = {}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"RFB 003.008\n")
        await reader.readexactly(12)
        writer.write(b"\x01\x13")
        seen["type"] = (await reader.readexactly(1))[0]
        writer.write(b"\x00\x02")
        await reader.readexactly(2)
        writer.write(b"\x00\x01" + struct.pack(">I", 261))
        seen["subtype"] = struct.unpack(">I", await reader.readexactly(4))[0]
        writer.write(b"\x01")
        await writer.drain()
        await writer.start_tls(ctx)
        challenge = _os.urandom(16)
        writer.write(challenge)
        seen["auth_ok"] = await reader.readexactly(16) == vnc_auth_response(password, challenge)
        writer.write(struct.pack(">I", 0 if seen["auth_ok"] else 1))
        await writer.drain()
        writer.close()

    return handle, seen


async def _portal_upstream(handle: Any, ca: Path) -> tuple[Any, Any, Any]:
    """A desktop stand-in serving ``handle`` on loopback, the portal's upstream connection
    to it (``proxy._Upstream``) and a client TLS context trusting ``ca`` only."""
    import asyncio
    import ssl

    from mlab.portal import proxy

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    _, up = await loop.create_connection(proxy._Upstream, "127.0.0.1", port)
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.check_hostname = False
    return server, up, ctx


def test_portal_handshake_speaks_vencrypt_x509_to_a_tls_desktop(tmp_path: Path) -> None:
    import asyncio

    from mlab.portal import rfb

    site = _site(tls={"mode": "site-ca"})
    load_or_create(site, tmp_path)
    handle, seen = _vencrypt_server(tls_dir(site, tmp_path), "alice-pw-123")

    async def run() -> None:
        server, up, ctx = await _portal_upstream(handle, ca_path(site, tmp_path))

        async def start_tls() -> None:
            await up.start_tls(ctx)

        await rfb.client_handshake(up.read_exactly, up.write, "alice-pw-123", start_tls)
        up.close()
        server.close()

    asyncio.run(asyncio.wait_for(run(), 30))
    assert seen == {"type": 19, "subtype": 261, "auth_ok": True}


def test_portal_refuses_a_desktop_the_site_ca_did_not_sign(tmp_path: Path) -> None:
    import asyncio
    import ssl

    from mlab.portal import rfb

    site = _site(tls={"mode": "site-ca"})
    other = _site(name="other", tls={"mode": "site-ca"})
    load_or_create(site, tmp_path)
    load_or_create(other, tmp_path)
    handle, _seen = _vencrypt_server(tls_dir(other, tmp_path), "alice-pw-123")

    async def run() -> None:
        server, up, ctx = await _portal_upstream(handle, ca_path(site, tmp_path))
        try:
            with pytest.raises(ssl.SSLCertVerificationError):
                await rfb.client_handshake(up.read_exactly, up.write, "alice-pw-123",
                                           lambda: up.start_tls(ctx))
        finally:
            up.close()
            server.close()

    asyncio.run(asyncio.wait_for(run(), 30))


def test_homepods_reach_the_code_service_on_https_only_and_trust_its_ca(tmp_path: Path) -> None:
    """Issue 17, pod side: with tls the HomePod -> code-service edge is the HTTPS port (the
    NetworkPolicies and the probe matrix follow mlab.topology.EDGES), the HomePod mounts
    only the ca.crt of the code service's Secret and names it MLAB_CA_BUNDLE (the
    entrypoint trusts it system-wide), and its code-service URL is https://."""
    from mlab.topology import checks

    site = _site(tls={"mode": "site-ca"})
    by, _ = _render(site, tmp_path)
    for name in ("homepod-to-code-service", "code-service-from-homepods"):
        spec = by[("NetworkPolicy", name)]["spec"]
        rules = spec.get("egress") or spec.get("ingress")
        assert [r["ports"] for r in rules] == [[{"protocol": "TCP", "port": 8443}]], name
    pod = by[("Deployment", "homepod-alice")]["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["MLAB_CA_BUNDLE"] == "/etc/mlab/code-ca/ca.crt"
    assert env["MLAB_SERVER"] == "https://code.mlab.local"
    vol = next(v for v in pod["volumes"] if v["name"] == "code-ca")
    assert vol["secret"]["secretName"] == "code-service-tls"
    assert vol["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]  # never the key
    got = {(c.source, c.destination, c.port): c.expected
           for c in checks({"office", "airlock", "direct-desktops", "tls"})}
    assert got[("homepod", "code-service", 8443)] is True
    assert got[("homepod", "code-service", 8080)] is False
    plain = {(c.source, c.destination, c.port): c.expected
             for c in checks({"office", "airlock", "direct-desktops", "plain-http"})}
    assert plain[("homepod", "code-service", 8080)] is True
    # secret mode: the HomePods trust the CA of the site's own Secret.
    by, _ = _render(_site(tls={"mode": "secret", "secret": "wildcard-tls"}), tmp_path)
    pod = by[("Deployment", "homepod-alice")]["spec"]["template"]["spec"]
    vol = next(v for v in pod["volumes"] if v["name"] == "code-ca")
    assert vol["secret"]["secretName"] == "wildcard-tls"
    # tls off: no trust, no URL, plain HTTP as before.
    by, _ = _render(_site(), tmp_path)
    pod = by[("Deployment", "homepod-alice")]["spec"]["template"]["spec"]
    env = {e["name"] for e in pod["containers"][0]["env"]}
    assert not env & {"MLAB_CA_BUNDLE", "MLAB_SERVER"}
    assert all(v["name"] != "code-ca" for v in pod["volumes"])


def test_the_code_service_certificate_names_its_in_cluster_service(tmp_path: Path) -> None:
    site = _site(tls={"mode": "site-ca"})
    got = load_or_create(site, tmp_path)
    assert got is not None
    ca = ca_path(site, tmp_path)
    for name in ("code-service", "code-service.mlab", "code-service.mlab.svc",
                 "code-service.mlab.svc.cluster.local", site.code_service_ip):
        ok = _verify(ca, got.issued["code-service"].cert, tmp_path, name)
        assert ok.returncode == 0, (name, ok.stdout + ok.stderr)


def test_podman_homepods_reach_the_code_service_on_https_only(tmp_path: Path) -> None:
    """The podman engine's firewall: HomePod networks DNAT the code Service's 443 to 8443
    and their bridge accepts 8443 only; the Airlock's NAT network too (443 -> 8443), and
    drops 8080 (tests/unit/test_tls_airlock.py)."""
    from mlab.podman.engine import _firewall_script

    site = _site(tls={"mode": "site-ca"})
    rendered = render_site(site, {k: "x" * 20 for k in password_keys(site)},
                           load_or_create(site, tmp_path))
    subnets = {n: f"10.89.{250 - i}.0/24" for i, (n, _, _) in enumerate(wanted_networks(site))}
    plan = translate(site, rendered.files, rendered.secrets, subnets, "/state")
    text = _firewall_script(plan)
    bridge = text.split("table bridge")[-1]
    hp = plan.homepod_networks()[0]
    assert f"ip daddr {hp.code_ip} tcp dport 443 dnat ip to {hp.code_ip}:8443" in text
    assert f"ip daddr {hp.code_ip} tcp dport 8443 accept" in bridge
    assert "dport 8080" not in bridge and "dport 80 dnat ip to " + hp.code_ip not in text
    assert "airlock --> code Service :443 -> :8443" in text
