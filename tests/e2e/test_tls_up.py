"""Encryption in transit (issue 17) through `mlab up` of a site with ``tls: {mode: site-ca}``,
with real clients from an office address trusting the site CA that `mlab` made.

One site (``t4tls``, its own bind address 127.0.4.17 inside ``officeCIDRs``, its own
MLAB_STATE_DIR), alice only, no Airlock:

- the code service: `git clone https://...` with ``GIT_SSL_CAINFO`` (the CA `mlab ca`
  prints) works, without it git refuses the certificate; `mlab repo approve` over HTTPS with
  ``SSL_CERT_FILE``; git over plain HTTP to the office-facing port fails without ever being
  asked for a password, and port 80 is not published at all;
- inside the HomePod (as alice, no TLS option anywhere: the code service's CA is in the
  system trust store): `git clone`/`git push` over the clone URL users type
  (``https://code.mlab.local/...``), curl and Python's ssl verify the code service; plain
  HTTP to it (the Service's port 80 and the container's 8080) never connects, so a
  Basic-auth password given to git there never leaves the pod (tcpdump in the pod's network
  namespace sees only unanswered SYNs, no payload); `mlab verify` probes both;
- VNC offers only VeNCrypt with subtype X509Vnc; the TLS handshake verifies against the
  site CA for the bind address, and VncAuth inside it logs in (ServerInit 1280x800);
- noVNC: the page over HTTPS with the CA, nothing over plain HTTP, and the WebSocket (WSS)
  logs in through the pod's VeNCrypt relay with alice's VNC password; headless Chromium
  with the CA in its NSS database shows the desktop;
- RDP: xfreerdp ``/sec:tls`` shows the desktop, ``/sec:rdp`` (standard RDP security, no
  TLS) is refused.

``mlab down --volumes`` removes the site at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import ssl
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from access_clients import Xvfb, looks_like_desktop, novnc_screenshot, rdp_session
from up_lab import UpLab, captured_packets, local_upstream, pod_capture, running, site_doc
from up_lab import exec_in as _exec

from mlab.podman.runner import podman

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

SITE = "t4tls"
BIND = "127.0.4.17"
PORTS = {"vnc": 15961, "rdp": 13461, "novnc": 17081, "ssh": 12261}


def _site_doc(image: str) -> dict[str, Any]:
    return site_doc(SITE, image, BIND, [{"name": "alice", "uid": 1001, "home": {"size": "1Gi"},
                                         "service": {"ports": PORTS}}],
                    airlock={"enabled": False}, codeService={"allowLocalUpstreams": True},
                    tls={"mode": "site-ca"})


class Lab(UpLab):
    """The running test site."""

    def __init__(self, root: Path, image: str) -> None:
        super().__init__(root, SITE, _site_doc(image), clear=("SSL_CERT_FILE", "GIT_SSL_CAINFO"))
        self.ca = Path()
        self.alice = self.box("homepod-alice", "homepod")

    def ctx(self) -> ssl.SSLContext:
        """A client context that trusts only the site CA (hostname checked)."""
        return ssl.create_default_context(cafile=str(self.ca))


@pytest.fixture(scope="module")
def lab(homepod_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with running(Lab(tmp_path_factory.mktemp(SITE), homepod_image)) as s:
        s.ca = Path(s.mlab("ca").stdout.strip())
        yield s


def _upstream(lab: Lab, tmp: Path) -> None:
    """A local upstream, approved as demo/up over HTTPS by the admin (SSL_CERT_FILE)."""
    if local_upstream(lab, tmp / "work", "tls\n"):
        lab.mlab("repo", "approve", "file:///srv/mlab/upstreams/up.git", "--as", "demo/up",
                 "--server", f"https://{BIND}", site=False,
                 env={"MLAB_USER": "admin", "MLAB_PASSWORD": lab.passwords["admin"],
                      "SSL_CERT_FILE": str(lab.ca)})


def _git(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], capture_output=True, text=True, timeout=120,
                          check=False, cwd=cwd, stdin=subprocess.DEVNULL,
                          env={"PATH": os.environ["PATH"], "HOME": str(cwd),
                               "GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1", **env})


def test_up_says_how_to_trust_the_site_ca(lab: Lab) -> None:
    assert lab.ca.is_file() and "BEGIN CERTIFICATE" in lab.ca.read_text()
    assert f"GIT_SSL_CAINFO={lab.ca}" in lab.up_log, lab.up_log[-2000:]
    status = json.loads(lab.mlab("status", "-o", "json").stdout)
    code = next(c for c in status if c["name"] == "code-service")
    # The office's URL is HTTPS; the HomePods' own (a note) stays the one users type there.
    assert [e["url"] for e in code["endpoints"]] == [f"https://{BIND}:443/",
                                                     "https://code.mlab.local/<org>/<repo>"]


def test_verify_passes_with_tls(lab: Lab) -> None:
    """`mlab verify` on the tls site: HTTPS to the code service and noVNC over TLS answer,
    plain HTTP to the HTTPS port does not (its own probe), every other edge as before."""
    proc = lab.mlab("verify", check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-4000:]
    assert f"code-service https {BIND}:443" in text, text[-4000:]
    assert f"code service http:// on the https port {BIND}:443" in text, text[-4000:]
    # The HomePod's own edge: HTTPS answers, plain HTTP is blocked (both probed from alice).
    rows = {(cells[1], cells[2]): cells[3:6] for line in text.splitlines()
            if len(cells := [c.strip() for c in line.split("│")]) > 6}
    for target in ("https://code.mlab.local/", "code.mlab.local:8443"):
        assert rows[("homepod-alice", f"code service {target}")] == [
            "allowed", "allowed", "ok"], text[-4000:]
    for target in ("code.mlab.local:80", "code.mlab.local:8080"):
        assert rows[("homepod-alice", f"code service {target}")] == [
            "blocked", "blocked", "ok"], text[-4000:]


def test_git_clone_over_https_with_the_site_ca(lab: Lab, tmp_path: Path) -> None:
    _upstream(lab, tmp_path)
    url = f"https://alice:{quote(lab.passwords['alice'], safe='')}@{BIND}/demo/up"
    ok = _git("clone", "-q", url, "ok", env={"GIT_SSL_CAINFO": str(lab.ca)}, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "ok" / "README").read_text() == "tls\n"
    # Without the CA: git refuses the certificate (no password is sent to an unknown server).
    no = _git("clone", "-q", url, "no", env={}, cwd=tmp_path)
    assert no.returncode != 0 and "certificate" in no.stderr.lower(), no.stderr


def test_plain_http_to_the_office_port_carries_no_password(lab: Lab, tmp_path: Path) -> None:
    _upstream(lab, tmp_path)
    asked = tmp_path / "asked"
    helper = tmp_path / "askpass.sh"
    helper.write_text(f"#!/bin/sh\necho asked >> {asked}\necho nothing\n")
    helper.chmod(0o755)
    plain = _git("clone", "-q", f"http://{BIND}:443/demo/up", "plain",
                 env={"GIT_ASKPASS": str(helper)}, cwd=tmp_path)
    assert plain.returncode != 0
    assert not asked.exists(), "git was asked for a password over plain HTTP"
    # Port 80 (plain HTTP) is not published to the office at all.
    with pytest.raises(OSError):
        socket.create_connection((BIND, 80), timeout=5).close()


def test_the_homepod_clones_and_pushes_over_https_with_no_option(lab: Lab,
                                                                 tmp_path: Path) -> None:
    """As alice in her HomePod, the clone URL users type is https:// and git, curl and
    Python verify the code service against the system trust store (no CA option, no
    http.sslVerify=false): clone, commit, push a branch of hers, see it on the server."""
    _upstream(lab, tmp_path)
    pw = quote(lab.passwords["alice"], safe="")
    env = _exec(lab.alice, "cat /etc/environment")
    assert "MLAB_SERVER=https://code.mlab.local" in env, env
    out = _exec(lab.alice, (
        "set -e; cd /tmp; rm -rf up; "
        f"git clone -q https://alice:{pw}@code.mlab.local/demo/up up && cat up/README; "
        "cd up; git -c user.name=A -c user.email=a@example.org commit -q --allow-empty "
        "-m 'from the homepod over https'; git push -q origin HEAD:refs/heads/alice/tls; "
        "git ls-remote origin refs/heads/alice/tls | cut -c1-40; git rev-parse HEAD; "
        "git config --show-origin --get-regexp '^http\\.' || true"), "alice")
    lines = out.split()
    assert lines[0] == "tls", out
    assert lines[1] == lines[2], f"the pushed branch is not on the server:\n{out}"
    assert "sslverify" not in out.lower() and "sslcainfo" not in out.lower(), out
    curl = _exec(lab.alice, "curl -sS -o /dev/null -w '%{http_code} %{ssl_verify_result}' "
                 "https://code.mlab.local/", "alice")
    assert curl.split()[1] == "0", curl  # verified against the system store
    # Python's ssl (what pip and `mlab request` use): an HTTP status, not a TLS error.
    py = _exec(lab.alice, "python3 - <<'PY'\nimport urllib.error, urllib.request as u\n"
               "try:\n    print(u.urlopen('https://code.mlab.local/', timeout=30).status)\n"
               "except urllib.error.HTTPError as e:\n    print(e.code)\nPY", "alice")
    assert py.strip().isdigit(), py
    # pip (Debian's, as users run it): the index URL answers over verified TLS; what it
    # finds there (no such project) is not a certificate error.
    pip = podman(["exec", "-u", "alice", lab.alice, "bash", "-lc",
                  "python3 -m pip download -q --no-input --no-deps -d /tmp/pipdl --index-url "
                  "https://code.mlab.local/simple/ mlab-no-such-project 2>&1"],
                 check=False, timeout=120)
    text = pip.stdout + pip.stderr
    assert "No matching distribution" in text or "Could not find a version" in text, text
    assert "CERTIFICATE_VERIFY_FAILED" not in text and "SSLError" not in text, text


def test_plain_http_from_the_homepod_never_connects(lab: Lab, tmp_path: Path) -> None:
    """Plain HTTP to the code service from the HomePod (Service port 80, container port
    8080) does not connect, and a git clone that carries alice's Basic-auth password in the
    URL sends nothing but SYNs: tcpdump in the pod's network namespace sees no packet with
    a payload to either port and no answer from the code service."""
    _upstream(lab, tmp_path)
    for url in ("http://code.mlab.local/", "http://code.mlab.local:8080/"):
        proc = podman(["exec", "-u", "alice", lab.alice, "curl", "-sS", "--max-time", "5",
                       "-o", "/dev/null", url], check=False, timeout=60)
        assert proc.returncode != 0, f"{url} answered from the HomePod: {proc.stdout}"
    pcap = tmp_path / "plain.txt"
    pw = quote(lab.passwords["alice"], safe="")
    with pod_capture(lab.alice, pcap, "tcp port 80 or tcp port 8080"):
        for port in ("", ":8080"):
            proc = podman(["exec", "-u", "alice", lab.alice, "timeout", "15", "git",
                           "clone", "-q",
                           f"http://alice:{pw}@code.mlab.local{port}/demo/up",
                           f"/tmp/plain{port.strip(':')}"], check=False, timeout=60)
            assert proc.returncode != 0, proc.stdout + proc.stderr
    text, lines = captured_packets(pcap)
    assert all("Flags [S]" in ln for ln in lines), "a connection got past the SYN:\n" + text
    assert "Authorization" not in text and lab.passwords["alice"] not in text, text


def _rfb_security(host: str, port: int) -> tuple[bytes, list[int]]:
    with socket.create_connection((host, port), timeout=20) as s:
        f = s.makefile("rwb")
        version = f.read(12)
        f.write(b"RFB 003.008\n")
        f.flush()
        (count,) = f.read(1)
        return version, list(f.read(count))


def test_vnc_offers_only_vencrypt_x509(lab: Lab) -> None:
    from mlab.portal.rfb import vnc_auth_response

    version, types = _rfb_security(BIND, PORTS["vnc"])
    assert version == b"RFB 003.008\n"
    assert types == [19], f"security types {types}: only VeNCrypt (19) may be offered"

    async def login() -> tuple[list[int], int, int]:
        reader, writer = await asyncio.open_connection(BIND, PORTS["vnc"])
        await reader.readexactly(12)
        writer.write(b"RFB 003.008\n")
        (count,) = await reader.readexactly(1)
        await reader.readexactly(count)
        writer.write(bytes([19]))
        assert await reader.readexactly(2) == b"\x00\x02"
        writer.write(b"\x00\x02")
        assert await reader.readexactly(1) == b"\x00"
        (n,) = await reader.readexactly(1)
        subtypes = list(struct.unpack(f">{n}I", await reader.readexactly(4 * n)))
        writer.write(struct.pack(">I", 261))
        assert await reader.readexactly(1) == b"\x01"
        # The site CA verifies the desktop's certificate for the address dialled.
        await writer.start_tls(lab.ctx(), server_hostname=BIND)

        async def write(data: bytes) -> None:
            writer.write(data)
            await writer.drain()

        # Inside TLS the server goes on with VncAuth (RFC 6143 7.2.2): the DES answer that
        # the portal gives too (mlab.portal.rfb).
        challenge = await reader.readexactly(16)
        await write(vnc_auth_response(lab.passwords["alice"], challenge))
        assert struct.unpack(">I", await reader.readexactly(4))[0] == 0, "VncAuth refused"
        await write(b"\x01")  # ClientInit: shared
        width, height = struct.unpack(">HH", await reader.readexactly(4))
        writer.close()
        with contextlib.suppress(Exception):  # TLS close_notify; the socket closes either way
            await asyncio.wait_for(writer.wait_closed(), 5)
        writer.transport.abort()
        return subtypes, width, height

    subtypes, width, height = asyncio.run(asyncio.wait_for(login(), 60))
    assert subtypes == [261], f"VeNCrypt subtypes {subtypes}: only X509Vnc (261)"
    assert (width, height) == (1280, 800)


def test_novnc_over_https_only_with_the_site_ca(lab: Lab) -> None:
    import websocket

    from mlab.portal.rfb import vnc_auth_response

    page = httpx.get(f"https://{BIND}:{PORTS['novnc']}/vnc.html", verify=lab.ctx(),
                     timeout=30, trust_env=False)
    assert page.status_code == 200 and "noVNC" in page.text
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://{BIND}:{PORTS['novnc']}/vnc.html", timeout=10, trust_env=False)
    ws = websocket.create_connection(
        f"wss://{BIND}:{PORTS['novnc']}/websockify", subprotocols=["binary"], timeout=30,
        sslopt={"ca_certs": str(lab.ca)})
    buf = b""

    def read(n: int) -> bytes:
        nonlocal buf
        while len(buf) < n:
            buf += ws.recv()
        out, buf = buf[:n], buf[n:]
        return out

    try:
        assert read(12) == b"RFB 003.008\n"
        ws.send_binary(b"RFB 003.008\n")
        (count,) = read(1)
        assert list(read(count)) == [2], "the relay offers the browser VncAuth only"
        ws.send_binary(b"\x02")
        ws.send_binary(vnc_auth_response(lab.passwords["alice"], read(16)))
        assert struct.unpack(">I", read(4))[0] == 0, "VncAuth through the relay refused"
        ws.send_binary(b"\x01")
        assert struct.unpack(">HH", read(4)) == (1280, 800)
    finally:
        ws.close()


def test_browser_shows_the_desktop_over_https_trusting_the_site_ca(lab: Lab,
                                                                   tmp_path: Path) -> None:
    """Headless Chromium (no certificate flags: it refuses what it does not trust) with the
    site CA imported into its NSS database, as a user would: noVNC's page over HTTPS, its
    WebSocket over WSS, the desktop on screen."""
    url = (f"https://{BIND}:{PORTS['novnc']}/vnc.html?autoconnect=1&resize=scale"
           f"&password={lab.passwords['alice']}")
    out = tmp_path / "tls-browser.png"
    assert novnc_screenshot(url, out, tmp_path, ca=lab.ca), "noVNC did not connect over WSS"
    assert looks_like_desktop(out), f"no desktop in {out}"


def test_rdp_is_tls_only(lab: Lab, tmp_path: Path) -> None:
    seen, shot = rdp_session(BIND, PORTS["rdp"], "alice", lab.passwords["alice"], tmp_path,
                             wait=60, extra=["/sec:tls"])
    assert seen, f"no desktop over RDP with TLS (last screenshot {shot})"
    x = Xvfb(tmp_path)
    try:
        refused = subprocess.run(
            ["xfreerdp", f"/v:{BIND}:{PORTS['rdp']}", "/u:alice",
             f"/p:{lab.passwords['alice']}", "/sec:rdp", "/cert:ignore"],
            capture_output=True, text=True, timeout=60, check=False,
            env={**os.environ, "DISPLAY": x.display})
    finally:
        x.close()
    text = refused.stdout + refused.stderr
    assert refused.returncode != 0, text[-2000:]
    assert "ERRCONNECT_CONNECT_TRANSPORT_FAILED" in text, text[-2000:]
    # xrdp says why, in the pod's log (its console log, docs/image.md).
    log = podman(["logs", "--since", "2m", lab.alice], check=False, timeout=60)
    xrdp = [line for line in (log.stdout + log.stderr).splitlines() if "TLS" in line]
    assert any("TLS connection established" in line for line in xrdp), xrdp[-20:]
    assert any("Server requires TLS for security, but the client did not request TLS" in line
               for line in xrdp), xrdp[-20:]


def _rdp_log(lab: Lab, tmp: Path, name: str, seconds: float = 20) -> str:
    """xfreerdp (TLS) offering a drive, under Xvfb for ``seconds``; its DEBUG log."""
    share = tmp / "drive"
    share.mkdir(exist_ok=True)
    (share / "weights.bin").write_text("secret")
    log = tmp / f"{name}.log"
    x = Xvfb(tmp)
    try:
        with open(log, "w") as sink:
            client = subprocess.Popen(
                ["xfreerdp", f"/v:{BIND}:{PORTS['rdp']}", "/u:alice",
                 f"/p:{lab.passwords['alice']}", "/cert:ignore", "/sec:tls",
                 f"/drive:probe,{share}", "/log-level:DEBUG"],
                stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, "DISPLAY": x.display})
            try:
                client.wait(timeout=seconds)
            except subprocess.TimeoutExpired:
                client.terminate()
                client.wait(timeout=10)
    finally:
        x.close()
    return log.read_text(errors="replace")


LOADED = "Loading device service drive [probe]"
"""FreeRDP 2.11's rdpdr client: the drive it will announce (client side, before any PDU)."""
SERVER_SPOKE = "RDPDR_USER_LOGGEDON_PDU"
"""FreeRDP 2.11's rdpdr client logs this while reading the server's capability PDU, which a
server sends only on a device-redirection channel it serves (MS-RDPEFS 3.2.5.1.5): the
sign that the server took up the drive channel."""


def test_rdp_drive_channel_is_not_taken_up(lab: Lab, tmp_path: Path) -> None:
    """xfreerdp with ``/drive:`` loads its drive, and xrdp (``rdpdr=false``) never speaks
    device redirection to it. The control: the same client against the same pod with
    ``rdpdr=true`` set by hand sees the server's rdpdr capabilities. (A drive never shows up
    as files either way here: xrdp's chansrv mounts redirected drives with FUSE, and a
    container has no /dev/fuse: "fuse: device not found" in the pod's log.)"""
    text = _rdp_log(lab, tmp_path, "reviewed")
    assert LOADED in text, text[-3000:]
    assert SERVER_SPOKE not in text, "the server spoke device redirection"
    xrdp_ini = "/etc/xrdp/xrdp.ini"
    restart = "supervisorctl -c /etc/mlab/supervisord.conf restart xrdp && sleep 2"
    try:
        _exec(lab.alice, f"sed -i 's/^rdpdr=false/rdpdr=true/' {xrdp_ini} && {restart}")
        control = _rdp_log(lab, tmp_path, "control")
        assert LOADED in control and SERVER_SPOKE in control, control[-3000:]
    finally:
        _exec(lab.alice, f"sed -i 's/^rdpdr=true/rdpdr=false/' {xrdp_ini} && {restart}")
    assert "rdpdr=false" in _exec(lab.alice, f"grep ^rdpdr= {xrdp_ini}")
