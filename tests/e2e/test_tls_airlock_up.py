"""The Airlock's side of encryption in transit (issue 17): with ``tls: {mode: site-ca}`` the
Airlock's login and its export publisher reach the code service over HTTPS only, through
`mlab up` with real clients.

One site (``t4tlsair``, its own bind address 127.0.4.19 inside ``officeCIDRs``, its own
MLAB_STATE_DIR), alice and reviewer bob, the Airlock, exports delivered to its share:

- the publisher (its own code-service account and password) publishes an approved export
  over HTTPS: alice exports from her HomePod, bob approves over HTTPS from this machine
  (``SSL_CERT_FILE`` = the site CA), the verified copy lands in the Airlock's share;
- as the Airlock's own user (no TLS option: the code service's CA is in the system trust
  store, next to any proxy CA), ``MLAB_SERVER`` is ``https://code.mlab.local``, curl and
  Python's ssl verify the code service, and the Airlock's login is accepted there;
- plain HTTP to the code service from the Airlock pod (the Service's port 80, the
  container's 8080) never connects: a Basic-auth request sends nothing but SYNs, answered
  at most by a reset (tcpdump in the pod's network namespace, which the publisher shares);
- `mlab verify` probes the Airlock's HTTPS edge allowed and both plain ports blocked.

``mlab down --volumes`` removes the site at the end.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from up_lab import UpLab, captured_packets, pod_capture, running, site_doc
from up_lab import exec_in as _exec

from mlab.podman.runner import podman

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

SITE = "t4tlsair"
BIND = "127.0.4.19"
PUBLISH_WAIT = 150.0
"""Seconds to wait for the supervised publisher (it passes every 30 s)."""


def _site_doc(image: str) -> dict[str, Any]:
    users = [{"name": u, "uid": 1001 + i, "home": {"size": "1Gi"}, "service": {"ports": {
        "vnc": 15981 + i, "rdp": 13481 + i, "novnc": 17091 + i, "ssh": 12281 + i}}}
        for i, u in enumerate(["alice", "bob"])]
    return site_doc(
        SITE, image, BIND, users,
        airlock={"service": {"ports": {"vnc": 15980, "novnc": 17090, "ssh": 10181}}},
        codeService={"reviewers": ["bob"]},
        egress={"exportDelivery": "share"},
        tls={"mode": "site-ca"},
    )


class Lab(UpLab):
    """The running test site."""

    def __init__(self, root: Path, image: str) -> None:
        super().__init__(root, SITE, _site_doc(image), clear=("SSL_CERT_FILE", "GIT_SSL_CAINFO"))
        self.ca = Path()
        self.airlock = self.box("airlock", "airlock")
        self.publisher = self.box("airlock", "publisher")
        self.alice = self.box("homepod-alice", "homepod")


@pytest.fixture(scope="module")
def lab(homepod_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with running(Lab(tmp_path_factory.mktemp(SITE), homepod_image)) as s:
        s.ca = Path(s.mlab("ca").stdout.strip())
        yield s


def test_the_publisher_publishes_an_approved_export_over_https(lab: Lab) -> None:
    _exec(lab.alice, "mkdir -p ~/out && echo 'model v3' > ~/out/notes.txt", "alice")
    # `podman exec` passes no PAM, so no login environment (no SSL_CERT_FILE): `mlab
    # request` verifies the code service against the system store the entrypoint added the
    # code CA to.
    out = _exec(lab.alice, "cd ~/out && env -u SSL_CERT_FILE "
                "mlab request export notes.txt --reason 'for ACME'", "alice")
    match = re.search(r"request (\d+)", out)
    assert match, out
    rid = match.group(1)
    env = {"MLAB_USER": "bob", "MLAB_PASSWORD": lab.passwords["bob"],
           "SSL_CERT_FILE": str(lab.ca)}
    lab.mlab("request", "approve", rid, "--comment", "ok", "--server", f"https://{BIND}",
             site=False, env=env)
    env_pub = _exec(lab.publisher, "tr '\\0' '\\n' < /proc/1/environ | grep -E "
                    "'^(MLAB_SERVER|SSL_CERT_FILE)='")
    assert "MLAB_SERVER=https://code.mlab.local" in env_pub, env_pub
    deadline = time.monotonic() + PUBLISH_WAIT
    while podman(["exec", lab.airlock, "test", "-f",
                  f"/opt/public/airlock/export/{rid}/SHA256SUMS"], check=False).returncode:
        if time.monotonic() > deadline:
            logs = podman(["logs", lab.publisher], check=False)
            raise AssertionError(f"request {rid} not published after {PUBLISH_WAIT} s:\n"
                                 f"{(logs.stdout + logs.stderr)[-3000:]}")
        time.sleep(2)
    assert _exec(lab.airlock, f"cat /opt/public/airlock/export/{rid}/notes.txt") == "model v3\n"


def test_the_airlock_login_reaches_the_code_service_over_https(lab: Lab) -> None:
    """As the Airlock's user, with no TLS option anywhere: the https URL is the one set,
    curl verifies the certificate against the system store and the login is accepted
    (200 for the requests API; 401 without it), Python's ssl verifies too."""
    env = _exec(lab.airlock, "cat /etc/environment", "airlock")
    assert "MLAB_SERVER=https://code.mlab.local" in env, env
    curl = ("curl -sS -o /dev/null -w '%{http_code} %{ssl_verify_result}' "
            "https://code.mlab.local/api/requests")
    authed = _exec(lab.airlock, f"{curl} -u airlock:\"$(cat $MLAB_PASSWORD_FILE)\"", "airlock")
    assert authed.split() == ["200", "0"], authed
    anonymous = _exec(lab.airlock, curl, "airlock")
    assert anonymous.split() == ["401", "0"], anonymous
    py = _exec(lab.airlock, "python3 - <<'PY'\nimport urllib.error, urllib.request as u\n"
               "try:\n    print(u.urlopen('https://code.mlab.local/', timeout=30).status)\n"
               "except urllib.error.HTTPError as e:\n    print(e.code)\nPY", "airlock")
    assert py.strip().isdigit(), py


def test_plain_http_from_the_airlock_never_connects(lab: Lab, tmp_path: Path) -> None:
    """Plain HTTP to the code service from the Airlock pod (port 80 and 8080) does not
    connect, and a request carrying the Airlock's Basic-auth login sends nothing but SYNs
    (8080 is dropped; port 80 is no longer DNAT'd and finds nothing listening: a reset)."""
    for url in ("http://code.mlab.local/", "http://code.mlab.local:8080/"):
        proc = podman(["exec", "-u", "airlock", lab.airlock, "curl", "-sS", "--max-time", "5",
                       "-o", "/dev/null", url], check=False, timeout=60)
        assert proc.returncode != 0, f"{url} answered from the Airlock: {proc.stdout}"
    pcap = tmp_path / "plain.txt"
    password = lab.passwords["airlock"]
    with pod_capture(lab.airlock, pcap, "tcp port 80 or tcp port 8080"):
        for port in ("", ":8080"):
            proc = podman(["exec", "-u", "airlock", lab.airlock, "bash", "-c",
                           "curl -sS --max-time 8 -o /dev/null -u "
                           f"airlock:\"$(cat $MLAB_PASSWORD_FILE)\" "
                           f"http://code.mlab.local{port}/api/requests"],
                          check=False, timeout=60)
            assert proc.returncode != 0, proc.stdout + proc.stderr
    text, lines = captured_packets(pcap)
    # Out: SYNs only (no payload); in: at most a reset (nothing listens on the code
    # service's port 80 here; 8080 is dropped, its SYNs go unanswered).
    assert all("Flags [S]" in ln for ln in lines if " Out " in ln), "past the SYN:\n" + text
    assert all("Flags [R.]" in ln for ln in lines if " In " in ln), "an answer:\n" + text
    assert "Authorization" not in text and password not in text, text


def test_verify_probes_the_airlock_https_edge(lab: Lab) -> None:
    proc = lab.mlab("verify", check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-5000:]
    rows = {(cells[1], cells[2]): cells[3:6] for line in text.splitlines()
            if len(cells := [c.strip() for c in line.split("│")]) > 6}
    airlock = {k: v for k, v in rows.items() if k[0] == "airlock" and "code" in k[1]}
    for target in ("https://code.mlab.local/", "code.mlab.local:8443"):
        assert airlock[("airlock", f"code service {target}")] == [
            "allowed", "allowed", "ok"], (airlock, text[-5000:])
    for target in ("code.mlab.local:80", "code.mlab.local:8080"):
        assert airlock[("airlock", f"code service {target}")] == [
            "blocked", "blocked", "ok"], (airlock, text[-5000:])
