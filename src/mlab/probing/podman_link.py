"""Run the link probes (:mod:`mlab.verify.link`) in every HomePod of a podman site.

Opens, for the run, a UDP listener (the forged datagrams' destination) and an IPv6 TCP
listener on the host; reads the host bridges' link-local addresses; one ``podman exec``
per HomePod.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import socket
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mlab.errors import MlabError
from mlab.podman.plan_file import PlanFile
from mlab.podman.runner import podman_command, podman_env
from mlab.topology import PORT_CODE, PORT_NOVNC, PORT_RDP, PORT_SSH, PORT_VNC
from mlab.verify.link import LINK_PORTS, LINK_PROGRAM, LinkJob, eui64_link_local, results
from mlab.verify.matrix import TCP_TIMEOUT, Result


def link_local_of(interface: str, inet6: str = "/proc/net/if_inet6") -> list[str]:
    """The ``fe80::`` addresses a host interface has now, else the EUI-64 address of its
    current MAC (what it would have with IPv6 on).

    A bridge keeps the link-local address made from the MAC it had when it came up, and
    takes a port's MAC later (measured on a podman network), so the MAC alone is not enough.
    """
    found = []
    try:
        for line in Path(inet6).read_text().splitlines():
            parts = line.split()
            if parts[-1] == interface and parts[0].startswith("fe80"):
                found.append(str(ipaddress.IPv6Address(int(parts[0], 16))))
    except OSError:
        pass
    if found:
        return found
    try:
        return [eui64_link_local(Path(f"/sys/class/net/{interface}/address").read_text().strip())]
    except (OSError, ValueError):
        return []


def jobs(plan: PlanFile, host_ip: str, listener6: int, bridges: dict[str, list[str]],
         token: str) -> list[LinkJob]:
    """One :class:`LinkJob` per HomePod of a podman plan (``plan.json``).

    Args:
        plan: the engine's plan record.
        host_ip: the host's address, where the forged datagram goes.
        listener6: the TCP port of the host's IPv6 listener.
        bridges: network name -> the link-local addresses of its bridge (the host's side;
            :func:`link_local_of`).
        token: run token; each job's is ``<token>-<user>``.

    Returns:
        Jobs in plan order; their IPv6 targets are every other container's EUI-64
        link-local address (MLab fixes their MACs) on its service ports, and the host
        bridge's on ``listener6``, 22, 6443 and 10250.
    """
    from mlab.podman.objects import mac_for

    airlock = plan.first("airlock")
    out = []
    for hp in plan.components("homepod"):
        targets: list[tuple[str, str, int]] = []
        for other in plan.pods:
            if other is hp:
                continue
            who = other.deployment
            ports = {"homepod": (PORT_VNC, PORT_RDP, PORT_NOVNC, PORT_SSH),
                     "airlock": (PORT_SSH, PORT_NOVNC, PORT_VNC),
                     "code-service": (PORT_SSH, PORT_CODE)}.get(other.component, (PORT_SSH,))
            for net, ip in other.networks:
                ll = eui64_link_local(mac_for(net, ip))
                targets += [(f"IPv6 {who} [{ll}]:{port}", ll, port) for port in ports]
        for net, _ip in hp.networks:
            for ll in bridges.get(net, []):
                targets += [(f"IPv6 host (bridge of {net}) [{ll}]:{port}", ll, port)
                            for port in (listener6, 22, 6443, 10250)]
        forged_src = airlock.networks[0][1] if airlock else ""
        out.append(LinkJob(f"homepod-{hp.user}", hp.containers[0], forged_src, host_ip,
                           tuple(targets), f"{token}-{hp.user}"))
    return out


def _exec(container: str, job: LinkJob, udp_port: int) -> dict[str, Any] | None:
    arg = json.dumps({
        "forge": [job.forged_src, job.forged_dst, udp_port, job.token] if job.forged_src else None,
        "targets": [list(t) for t in job.targets6], "ports": [*LINK_PORTS],
        "timeout": TCP_TIMEOUT,
    })
    argv = podman_command(["exec", container, "python3", "-c", LINK_PROGRAM, arg])
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, env=podman_env(),
                              timeout=120, check=False)
        return json.loads(proc.stdout) if proc.returncode == 0 else None
    except (subprocess.TimeoutExpired, ValueError):
        return None


def collect(sock: socket.socket, seconds: float = 3.0) -> dict[str, str]:
    """Every datagram that reaches ``sock`` within ``seconds``: payload -> source address.

    A forged datagram can be late on a loaded machine: reading once would call it "did not
    arrive" and pass a hole, so the listener is read for the whole window.
    """
    got: dict[str, str] = {}
    deadline = time.monotonic() + seconds
    while True:
        got.update(_drain(sock))
        if time.monotonic() >= deadline:
            return got
        time.sleep(0.1)


def _drain(sock: socket.socket) -> dict[str, str]:
    got: dict[str, str] = {}
    sock.setblocking(False)
    while True:
        try:
            data, addr = sock.recvfrom(2048)
        except (BlockingIOError, InterruptedError):
            return got
        got[data.decode("ascii", "replace").strip()] = addr[0]


def run(plan: PlanFile, host_ip: str,
        on_source: Callable[[str], None] | None = None) -> list[Result]:
    """Run every HomePod's link job against a podman site.

    Opens, for the run: a UDP listener on 0.0.0.0 (the forged datagrams' destination) and a
    TCP listener on ``::`` (IPv6 only) that the IPv6 probes try through each bridge.

    Args:
        plan: the engine's ``plan.json``.
        host_ip: the host's address (:func:`mlab.probing.podman.host_facts`).
        on_source: called with each source name as its probes start.

    Returns:
        Rows in plan order (see :func:`results`).
    """
    from mlab.podman.objects import bridge_of

    bridges: dict[str, list[str]] = {}
    for net in plan.networks:
        try:
            bridges[net.name] = link_local_of(bridge_of(net.name))
        except MlabError:  # a missing network only loses its targets
            continue
    token = "mlab-forged-" + secrets.token_hex(6)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, \
            socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as tcp6:
        udp.bind(("0.0.0.0", 0))
        tcp6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        tcp6.bind(("::", 0))
        tcp6.listen(64)
        todo = jobs(plan, host_ip, tcp6.getsockname()[1], bridges, token)

        def one(job: LinkJob) -> dict[str, Any] | None:
            if on_source:
                on_source(job.source)
            return _exec(job.container, job, udp.getsockname()[1])

        with ThreadPoolExecutor(max_workers=max(1, min(8, len(todo)))) as pool:
            answers = list(pool.map(one, todo))
        arrived = collect(udp)
    out: list[Result] = []
    for job, answer in zip(todo, answers, strict=True):
        mine = {k: v for k, v in arrived.items() if k.startswith(job.token + ":")}
        out += results(job, answer, mine)
    return out
