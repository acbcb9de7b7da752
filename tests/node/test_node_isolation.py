"""Isolation under kube-router, by real connection attempts from inside the pods.

A HomePod reaches the code service and nothing else; IPv6 does not exist in pods; a
datagram with a forged source address never leaves a pod's veth (the node's anti-spoofing,
the second wall behind HomePods' dropped capabilities); the Airlock reaches PyPI and Debian.
A blocked probe must fail to connect: a connect that succeeds is a hole, whatever answers
(an upstream proxy may answer for unrouted addresses on these machines).
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
from nodekit import NAMESPACE, Node, apply_with_machine_ca

from mlab.node import layout

pytestmark = [pytest.mark.e2e, pytest.mark.node]

CONNECT = r"""
import json, socket, sys
out = {}
for name, host, port in json.loads(sys.argv[1]):
    try:
        socket.create_connection((host, port), timeout=3).close()
        out[name] = "open"
    except OSError as e:
        out[name] = f"{type(e).__name__} {e.errno}"
print(json.dumps(out))
"""

HTTP_STATUS = r"""
import sys, urllib.request, urllib.error
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=20).status)
except urllib.error.HTTPError as e:
    print(e.code)
"""

NO_DNS = r"""
import json, socket
out = {}
try:
    socket.getaddrinfo("pypi.org", 443)
    out["getaddrinfo"] = "resolved"
except OSError as e:
    out["getaddrinfo"] = "failed"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
query = bytes.fromhex("abcd01000001000000000000") + b"\x04pypi\x03org\x00\x00\x01\x00\x01"
s.sendto(query, ("%s", 53))
try:
    s.recvfrom(512)
    out["udp53"] = "answered"
except OSError:
    out["udp53"] = "no answer"
print(json.dumps(out))
""" % layout.DNS_SERVICE_IP

IPV6 = r"""
import json, socket
out = {"if_inet6": open("/proc/net/if_inet6").read()}
out["disable_ipv6"] = open("/proc/sys/net/ipv6/conf/all/disable_ipv6").read().strip()
for name, addr in (("all-nodes", "ff02::1"), ("link-local", "fe80::1")):
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.sendto(b"x", (addr, 5900, 0, socket.if_nametoindex("eth0")))
        out[name] = "sent"
    except OSError as e:
        out[name] = f"{type(e).__name__} {e.errno}"
try:
    open("/proc/sys/net/ipv6/conf/all/disable_ipv6", "w").write("0")
    out["re-enable"] = "written"
except OSError as e:
    out["re-enable"] = f"{type(e).__name__} {e.errno}"
print(json.dumps(out))
"""


def _probe(node: Node, target: str, edges: list[tuple[str, str, int]]) -> dict[str, str]:
    proc = node.exec_py(target, CONNECT, json.dumps(edges))
    return json.loads(proc.stdout)


def test_homepod_reaches_the_code_service_and_nothing_else(site_up: Node) -> None:
    code_ip = site_up.pod_ip(NAMESPACE, "app.kubernetes.io/component=code-service")
    airlock_ip = site_up.pod_ip(NAMESPACE, "app.kubernetes.io/component=airlock")
    bob_ip = site_up.pod_ip(NAMESPACE, "mlab.io/user=bob")
    status = site_up.exec_py("deploy/homepod-alice", HTTP_STATUS, "http://code.mlab.local/")
    assert status.stdout.strip() == "401"  # the code service answered (it wants a login)
    blocked = [
        ("internet-ip", "1.1.1.1", 443), ("internet-ip-80", "151.101.0.223", 80),
        ("metadata", "169.254.169.254", 80),
        ("airlock-ssh", airlock_ip, 22), ("airlock-novnc", airlock_ip, 7030),
        ("bob-vnc", bob_ip, 5900), ("bob-ssh", bob_ip, 22), ("bob-rdp", bob_ip, 3389),
        ("apiserver-svc", layout.KUBERNETES_SERVICE_IP, 443),
        ("apiserver", layout.NODE_IP, layout.APISERVER_PORT),
        ("kubelet", layout.NODE_IP, layout.KUBELET_PORT),
        ("kubelet-gw", layout.POD_GATEWAY, layout.KUBELET_PORT),
        ("kube-router-health", layout.POD_GATEWAY, layout.KUBE_ROUTER_HEALTH_PORT),
        ("dns-tcp", layout.DNS_SERVICE_IP, 53),
        ("code-other-port", code_ip, 22),
    ]
    result = _probe(site_up, "deploy/homepod-alice", blocked)
    assert not [k for k, v in result.items() if v == "open"], result
    dns = json.loads(site_up.exec_py("deploy/homepod-alice", NO_DNS).stdout)
    assert dns == {"getaddrinfo": "failed", "udp53": "no answer"}


def test_pods_have_no_ipv6(site_up: Node) -> None:
    for target in ("deploy/homepod-alice", "deploy/airlock"):
        out = json.loads(site_up.exec_py(target, IPV6).stdout)
        assert out["if_inet6"] == "" and out["disable_ipv6"] == "1", out
        assert out["all-nodes"].startswith("OSError") and out["link-local"].startswith("OSError")
        assert out["re-enable"].startswith("OSError"), out  # /proc/sys is read-only


def test_airlock_reaches_pypi_and_debian(site_up: Node, tmp_path: Path) -> None:
    apply_with_machine_ca(site_up, tmp_path)  # these machines' TLS-intercepting proxy
    for url in ("https://pypi.org/simple/pip/",
                "http://deb.debian.org/debian/dists/bookworm/Release"):
        proc = site_up.exec_py("deploy/airlock", HTTP_STATUS, url, timeout=90)
        assert proc.stdout.strip() == "200", (url, proc.stdout, proc.stderr)


SEND_RAW = r"""
import socket, struct, sys
src, dst, port, payload = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].encode()
udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload
total = 20 + len(udp)
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 1, 0, 64, socket.IPPROTO_UDP, 0,
                 socket.inet_aton(src), socket.inet_aton(dst))
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
s.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
for _ in range(3):
    s.sendto(ip + udp, (dst, 0))
print("sent")
"""

SPOOFER_NS = "mlab-node-test"


@pytest.fixture(scope="module")
def spoofer(site_up: Node) -> str:
    """A pod with root and CAP_NET_RAW in a namespace without policies (worse than any
    HomePod: the node's anti-spoofing must hold even then). Returns its name."""
    site_up.kubectl("create", "namespace", SPOOFER_NS, check=False)
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "spoofer", "namespace": SPOOFER_NS},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{
                "name": "spoofer", "image": "localhost/mlab/homepod:latest",
                "imagePullPolicy": "Never", "command": ["sleep", "infinity"],
                "securityContext": {"capabilities": {"add": ["NET_RAW"]}},
            }],
        },
    }
    site_up.kubectl("apply", "-f", "-", stdin=json.dumps(pod))
    site_up.kubectl("-n", SPOOFER_NS, "wait", "pod/spoofer", "--for=condition=Ready",
                    "--timeout=180s", timeout=200)
    return "pod/spoofer"


def _listen_udp() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((layout.NODE_IP, 0))
    s.settimeout(0.2)
    return s


def _received(s: socket.socket, seconds: float) -> list[tuple[bytes, str]]:
    got, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            data, (addr, _port) = s.recvfrom(2048)
            got.append((data, addr))
        except TimeoutError:
            pass
    return got


def test_forged_source_never_leaves_the_pod(site_up: Node, spoofer: str) -> None:
    own = site_up.json("-n", SPOOFER_NS, "get", "pod", "spoofer")["status"]["podIP"]
    airlock_ip = site_up.pod_ip(NAMESPACE, "app.kubernetes.io/component=airlock")
    listener = _listen_udp()
    port = listener.getsockname()[1]
    try:
        for src, tag in ((own, "own-source"), (airlock_ip, "spoofed-as-airlock"),
                         ("192.0.2.77", "spoofed-unknown")):
            site_up.exec_py(spoofer, SEND_RAW, src, layout.NODE_IP, str(port), tag,
                            namespace=SPOOFER_NS)
        got = _received(listener, 3.0)
    finally:
        listener.close()
    tags = {data.decode() for data, _ in got}
    # The control: the raw path works and the listener hears the pod's own address.
    assert "own-source" in tags, got
    assert {a for _, a in got} == {own}, got
    assert tags == {"own-source"}, got
