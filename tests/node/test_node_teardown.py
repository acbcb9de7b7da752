"""`mlab delete` never lets a HomePod run without its NetworkPolicies (CVE-2024-7598).

A process in alice's HomePod keeps connecting to a listener on the node's address (a
forbidden edge) every 50 ms while `mlab delete` runs; the listener must never see it.
A pod without policies reaches the same listener: the control that the edge exists.
Runs last in tests/node (it removes the site; the next module's fixture applies it again).
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from nodekit import NAMESPACE, SITE, Node

from mlab.node import cri, layout
from mlab.node.layout import default_layout

pytestmark = [pytest.mark.e2e, pytest.mark.node]

LOOP = r"""
import socket, sys, time
host, port = sys.argv[1], int(sys.argv[2])
while True:
    try:
        socket.create_connection((host, port), timeout=0.2).close()
    except OSError:
        pass
    time.sleep(0.05)
"""


PS = r"""
import glob
n = 0
for path in glob.glob("/proc/[0-9]*/cmdline"):
    try:
        n += b"create_connection" in open(path, "rb").read() and b"glob" not in open(path, "rb").read()
    except OSError:
        pass
print(n)
"""


class Listener:
    """A TCP listener on the node's address that records every peer address."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind((layout.NODE_IP, 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.peers: list[str] = []
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop:
            try:
                conn, (addr, _) = self.sock.accept()
                self.peers.append(addr)
                conn.close()
            except OSError:
                pass

    def close(self) -> None:
        self.stop = True
        self.thread.join(5)
        self.sock.close()


def _start_loop(node: Node, target: str, namespace: str, port: int) -> None:
    node.kubectl("-n", namespace, "exec", target, "--", "sh", "-c",
                 f"nohup python3 -c '{LOOP}' {layout.NODE_IP} {port} >/dev/null 2>&1 &")


def test_delete_never_lets_a_homepod_out(site_up: Node) -> None:
    alice = site_up.pod_ip(NAMESPACE, "mlab.io/user=alice")
    listener = Listener()
    try:
        ns = "mlab-node-test"
        site_up.kubectl("create", "namespace", ns, check=False)
        site_up.kubectl("-n", ns, "run", "control", "--image=localhost/mlab/homepod:latest",
                        "--image-pull-policy=Never", "--restart=Never", "--command", "--",
                        "sleep", "infinity", check=False)
        site_up.kubectl("-n", ns, "wait", "pod/control", "--for=condition=Ready",
                        "--timeout=180s", timeout=200)
        control = site_up.json("-n", ns, "get", "pod", "control")["status"]["podIP"]
        _start_loop(site_up, "pod/control", ns, listener.port)
        _start_loop(site_up, "deploy/homepod-alice", NAMESPACE, listener.port)
        time.sleep(2)
        running = site_up.exec_py("deploy/homepod-alice", PS)
        assert int(running.stdout) >= 1, "the probe loop does not run in alice's HomePod"
        proc = site_up.mlab("delete", "--site", str(SITE), "--timeout", "300")
        assert proc.returncode == 0, proc.stderr
        time.sleep(3)
        assert site_up.json("-n", NAMESPACE, "get", "pods", "-l",
                            "mlab.io/user=alice")["items"] == []
        assert site_up.json("-n", NAMESPACE, "get", "networkpolicies")["items"] == []
    finally:
        listener.close()
        subprocess.run([str(site_up.kubectl_bin), "delete", "namespace", "mlab-node-test",
                        "--wait=false"], env=site_up.env, capture_output=True, check=False)
    assert control in listener.peers  # the edge exists without policies
    assert alice not in listener.peers, "alice's HomePod got out during mlab delete"


def _node_processes() -> list[str]:
    """Command lines of live processes that belong to the node (its programs and shims)."""
    from mlab.node.layout import RUN_DIR

    marks = (str(default_layout().root), str(RUN_DIR))
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(m in cmd for m in marks) and "pytest" not in cmd:
            found.append(cmd[:120])
    return found


def test_down_stops_everything_and_up_comes_back(node: Node) -> None:
    node.kubectl("-n", "default", "run", "sleeper", "--image=localhost/mlab/homepod:latest",
                 "--image-pull-policy=Never", "--restart=Never", "--command", "--",
                 "sleep", "infinity", check=False)
    node.kubectl("-n", "default", "wait", "pod/sleeper", "--for=condition=Ready",
                 "--timeout=180s", timeout=200)
    proc = node.mlab("node", "down", timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert _node_processes() == []
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert layout.BRIDGE not in links
    addrs = subprocess.run(["ip", "-o", "addr", "show", "dev", "lo"], capture_output=True,
                           text=True).stdout
    assert layout.NODE_IP not in addrs
    raw = subprocess.run(["iptables", "-t", "raw", "-S"], capture_output=True, text=True).stdout
    assert layout.ANTISPOOF_CHAIN not in raw
    status = node.mlab("node", "status")
    assert status.returncode == 1 and "stopped" in status.stdout
    start = time.monotonic()
    proc = node.mlab("node", "up", "-q", *node.up_args, timeout=900)
    assert proc.returncode == 0, proc.stderr
    print(f"node up (cached) after down: {time.monotonic() - start:.1f}s")
    assert node.mlab("node", "status").returncode == 0
    # containerd was started fresh: the kubelet must not have met a CRI still initialising
    # (it exits on "server is not initialized yet"; mlab.node.cri is the wait for it)
    log = default_layout().log("kubelet").read_text(errors="replace")
    assert "server is not initialized yet" not in log.split("=== mlab node: starting")[-1]


def test_cri_probe_tells_a_serving_cri_from_any_other_socket(node: Node, tmp_path: Path) -> None:
    """The wait before the kubelet starts: true only where a CRI answers a Version call."""
    sock = default_layout().containerd_socket
    assert cri.cri_serving(sock)
    assert not cri.cri_serving(sock.with_name(sock.name + ".ttrpc"))  # live, not gRPC
    assert not cri.cri_serving(tmp_path / "missing.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(tmp_path / "silent.sock"))
    listener.listen()
    try:
        assert not cri.cri_serving(tmp_path / "silent.sock", timeout=1.0)  # never answers
    finally:
        listener.close()
