"""Issue 20 with real containers: the start gate, and link probes that can see a hole.

- The start gate: a HomePod whose forbidden address answers (a listener on the host, reached
  through the test network's gateway) starts no session and exits; one whose forbidden
  address is refused starts its sessions (SSH answers).
- The link probes can fail: in a container that keeps CAP_NET_RAW and IPv6 (what a HomePod
  had before the fix), the same program ``mlab verify`` runs opens a raw socket, its forged
  datagram (the "Airlock's" address as source) arrives at the runner's listener, and the
  host's IPv6 listener answers over link-local; in a container with the rendered capabilities
  all of it is refused.
Each test makes its own podman network (podman picks the subnet) and removes it.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import socket
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from mlab.podman.runner import podman
from mlab.probing import podman_link
from mlab.verify import link as probes_link

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

PREFIX = "mlabtest-hard-"
ENV = {"MLAB_USER": "alice", "MLAB_UID": "1001", "MLAB_PASSWORD": "gate-test-pw1"}


@pytest.fixture
def network() -> Iterator[dict[str, str]]:
    """A podman network of the test's own: name, subnet, gateway, bridge."""
    name = f"{PREFIX}{secrets.token_hex(4)}"
    podman(["network", "create", name])
    try:
        data = json.loads(podman(["network", "inspect", name]).stdout)[0]
        sub = data["subnets"][0]
        yield {"name": name, "subnet": sub["subnet"], "gateway": sub["gateway"],
               "bridge": data["network_interface"]}
    finally:
        podman(["network", "rm", "-f", name], check=False)


def _wait_exit(name: str, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = podman(["inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", name],
                       check=False).stdout.split()
        if state and state[0] in ("exited", "stopped"):
            return int(state[1])
        time.sleep(0.5)
    return None


def test_forbidden_egress_that_answers_starts_no_session(
        homepod_image: str, e2e: SimpleNamespace, containers: list[Any],
        network: dict[str, str]) -> None:
    with socket.socket() as listener:
        listener.bind(("0.0.0.0", 0))
        listener.listen(64)
        port = listener.getsockname()[1]
        c = e2e.run_container(homepod_image, PREFIX, ports=[22], env={
            **ENV, "MLAB_EGRESS_CHECK": f"{network['gateway']}:{port}",
            "MLAB_START_GATE_SECONDS": "4"}, extra=["--network", network["name"]])
        containers.append(c)
        code = _wait_exit(c.name, 120)
        listener.settimeout(0.1)
        accepted = 0
        while True:
            try:
                listener.accept()[0].close()
                accepted += 1
            except OSError:
                break
    logs = c.logs()
    assert code == 2, logs[-2000:]
    assert accepted >= 1  # the gate really reached the forbidden listener
    assert f"{network['gateway']}:{port} still accepted a TCP connection" in logs
    assert "no user session is started" in logs
    assert "starting services" not in logs


def test_forbidden_egress_refused_starts_the_sessions(
        homepod_image: str, e2e: SimpleNamespace, containers: list[Any],
        network: dict[str, str]) -> None:
    with socket.socket() as probe:
        probe.bind(("0.0.0.0", 0))
        port = probe.getsockname()[1]  # closed again below: connections are refused
    c = e2e.run_container(homepod_image, PREFIX, ports=[22], env={
        **ENV, "MLAB_EGRESS_CHECK": f"{network['gateway']}:{port}"},
        extra=["--network", network["name"]])
    containers.append(c)
    e2e.wait_for_port(c.port(22), timeout=120)
    with socket.create_connection(("127.0.0.1", c.port(22)), timeout=10) as s:
        assert s.recv(64).startswith(b"SSH-2.0-")
    logs = c.logs()
    assert "mlab-startgate: forbidden egress refused" in logs
    assert logs.index("forbidden egress refused") < logs.index("starting services for alice")


def _run_link_program(container: str, job: probes_link.LinkJob, udp: socket.socket
                      ) -> dict[str, Any]:
    arg = json.dumps({"forge": [job.forged_src, job.forged_dst, udp.getsockname()[1], job.token],
                      "targets": [list(t) for t in job.targets6], "ports": [22],
                      "timeout": 3})
    out = podman(["exec", container, "python3", "-c", probes_link.LINK_PROGRAM, arg]).stdout
    return dict(json.loads(out))


@pytest.mark.parametrize("hole", [True, False], ids=["net-raw-and-ipv6", "rendered"])
def test_link_probes_see_forged_sources_and_ipv6_only_where_they_exist(
        hole: bool, homepod_image: str, e2e: SimpleNamespace, containers: list[Any],
        network: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    if hole:  # what a HomePod was before: NET_RAW (containerd's default) and IPv6 on
        monkeypatch.setenv("MLAB_TEST_PODMAN_KEEP_IPV6", "1")
        caps = [*e2e.capabilities, "NET_RAW"]
    else:
        caps = list(e2e.capabilities)
    c = e2e.run_container(homepod_image, PREFIX, env=ENV, args=["sleep", "300"],
                          capabilities=caps, extra=["--network", network["name"]])
    containers.append(c)
    (gw_ll,) = podman_link.link_local_of(network["bridge"])
    forged = str(ipaddress.ip_network(network["subnet"])[200])  # the "Airlock's" address
    token = f"mlab-forged-{secrets.token_hex(4)}"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, \
            socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as tcp6:
        udp.bind(("0.0.0.0", 0))
        tcp6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        tcp6.bind(("::", 0))
        tcp6.listen(8)
        job = probes_link.LinkJob(
            "homepod-test", c.name, forged, network["gateway"],
            ((f"IPv6 host [{gw_ll}]", gw_ll, tcp6.getsockname()[1]),), token)
        answer = _run_link_program(c.name, job, udp)
        arrived = podman_link.collect(udp)
    rows = {r.probe.target: r for r in probes_link.results(job, answer, arrived)}
    raw = rows["raw socket (AF_INET, SOCK_RAW) as root"]
    by_ip = next(r for t, r in rows.items() if t.endswith("by raw IP"))
    host6 = rows[f"IPv6 host [{gw_ll}]"]
    if hole:
        assert not raw.ok and not by_ip.ok and not host6.ok, answer
        assert by_ip.detail.startswith(f"arrived from {forged}")
        assert "CAP_NET_RAW" in by_ip.detail and "fix:" in host6.detail
    else:
        assert raw.ok and by_ip.ok and host6.ok, answer
        assert "PermissionError" in raw.detail and "did not arrive" in by_ip.detail
        assert answer["addrs6"] == []
