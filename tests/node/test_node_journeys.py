"""User journeys on the node, through the Services as the site exposes them.

From the node itself (kube-router admits node-local traffic, as a cluster admits its own
nodes): SSH into alice's HomePod with her password, the VNC server's RFB banner, and her
home surviving the deletion of her pod (the Deployment brings it back on the same claim).
"""

from __future__ import annotations

import json
import re
import socket
import time

import paramiko
import pytest
from nodekit import NAMESPACE, SITE, Node

from mlab.secrets import passwords_path
from mlab.site import load_site

pytestmark = [pytest.mark.e2e, pytest.mark.node]


def _service(node: Node, name: str) -> tuple[str, dict[str, int]]:
    svc = node.json("-n", NAMESPACE, "get", "service", name)
    return svc["spec"]["clusterIP"], {p["name"]: p["port"] for p in svc["spec"]["ports"]}


def _ssh(host: str, port: int, user: str, password: str, command: str) -> str:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # noqa: S507 - test pod
    deadline = time.monotonic() + 90
    while True:
        try:
            client.connect(host, port=port, username=user, password=password, timeout=10,
                           allow_agent=False, look_for_keys=False)
            break
        except (OSError, paramiko.SSHException):
            if time.monotonic() > deadline:
                raise
            time.sleep(2)
    try:
        # examples/local.yaml is in the reviewed posture: SSH gives an interactive shell only
        # (docs/egress.md), so the command is typed into one, between two marker lines.
        chan = client.invoke_shell()
        chan.settimeout(60)
        chan.sendall(f"printf '%s\\n' MLAB-B''EGIN; {command}; printf '%s\\n' MLAB-E''ND; exit\n"
                     .encode())
        data = b""
        while True:
            chunk = chan.recv(65536)
            if not chunk:
                break
            data += chunk
        text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", data.decode(errors="replace"))  # bash's
        lines = [ln.strip() for ln in text.replace("\r", "").split("\n")]  # bracketed paste
        return "\n".join(lines[lines.index("MLAB-BEGIN") + 1:lines.index("MLAB-END")])
    finally:
        client.close()


def test_ssh_vnc_and_home_survives_pod_deletion(site_up: Node) -> None:
    password = json.loads(passwords_path(load_site(SITE)).read_text())["alice"]
    ip, ports = _service(site_up, "homepod-alice")
    assert _ssh(ip, ports["ssh"], "alice", password, "id -un; echo kept > ~/journey.txt; "
                "cat ~/journey.txt").split() == ["alice", "kept"]
    with socket.create_connection((ip, ports["vnc"]), timeout=10) as s:
        # TigerVNC's greeting: "RFB 003.008" (or 003.003 while it rate-limits a source).
        banner = s.recv(12)
        assert banner.startswith(b"RFB 003.") and banner.endswith(b"\n"), banner
    old = site_up.json("-n", NAMESPACE, "get", "pods", "-l", "mlab.io/user=alice")["items"]
    site_up.kubectl("-n", NAMESPACE, "delete", "pod", old[0]["metadata"]["name"], "--wait=true")
    site_up.kubectl("-n", NAMESPACE, "rollout", "status", "deployment/homepod-alice",
                    "--timeout=300s", timeout=330)
    new = site_up.json("-n", NAMESPACE, "get", "pods", "-l", "mlab.io/user=alice")["items"]
    assert [p["metadata"]["uid"] for p in new] != [p["metadata"]["uid"] for p in old]
    assert _ssh(ip, ports["ssh"], "alice", password, "cat ~/journey.txt").strip() == "kept"
