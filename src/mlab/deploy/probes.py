"""The isolation probe matrix: real connection attempts from inside the running containers.

``mlab verify`` and the e2e tests run the same matrix. Each probe is one attempt (TCP
connect, name lookup, UDP DNS query, HTTP(S) request) from a source (a HomePod, the Airlock
or the host) to a target, with the expected outcome taken from the network edges of
DESIGN.md ("a HomePod reaches the code service and nothing else"). The matrix is pure
(:func:`matrix`); :func:`run` executes it: one ``podman exec ... python3 -c`` per source
container, all of that source's probes concurrently, so the whole matrix takes about as long
as its slowest blocked probe (a dropped packet waits for the time-out).

An allowed probe counts only when the service answers in its own protocol (an RFB or SSH
banner, an X.224 Connection Confirm, the noVNC page, an HTTP status: :mod:`answers`); a
blocked probe names how it failed (refused, timed out, reset, unreachable).

Targets are only the site's own containers, the host's own addresses, a listener this module
opens on 0.0.0.0 for the duration of the run, the metadata address 169.254.169.254, and the
addresses a package registry's name resolves to on the host (the Airlock must reach it, a
HomePod must not).
"""

from __future__ import annotations

import inspect
import json
import socket
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from mlab import topology
from mlab.deploy import answers
from mlab.podman.plan_file import PlanFile
from mlab.podman.runner import podman_command, podman_env
from mlab.topology import (
    PORT_CODE,
    PORT_CODE_TLS,
    PORT_CODE_TLS_SERVICE,
    SHARE_PATH,
    dial_address,
)

TCP_TIMEOUT = 3.0
"""Seconds a TCP or DNS probe waits; a dropped SYN counts as blocked after this."""
HTTP_TIMEOUT = 20.0
"""Seconds an HTTP(S) probe to the internet may take (the Airlock's allowed edges)."""

PYPI_URL = "https://pypi.org/simple/pip/"
DEBIAN_URL = "http://deb.debian.org/debian/dists/bookworm/Release"
INTERNET_NAME = "pypi.org"
METADATA_IP = "169.254.169.254"
SHARE = SHARE_PATH
"""The Airlock share: read-write in the Airlock, read-only in HomePods (a write probe)."""


@dataclass(frozen=True)
class Probe:
    """One connection attempt.

    Attributes:
        source: ``homepod-<user>``, ``airlock`` or ``host``.
        container: podman container the probe runs in ('' for the host).
        target: what is tried, for the table (``code-service :8080``).
        kind: ``tcp`` (connect), ``dns`` (getaddrinfo), ``udp-dns`` (raw query to a
            server), ``http`` (GET a URL; any HTTP status counts as reached), ``write``
            (create and delete a file in a directory; "allowed" means writable), or a
            protocol of :data:`answers.PROTOCOLS` (``rfb``, ``ssh``, ``rdp``, ``novnc``:
            reached only when the service answers in that protocol).
        host: address or name; for ``http`` the URL; for ``write`` the directory.
        port: TCP/UDP port (0 for dns/http).
        expected: True when the edge is allowed.
        user: the user the probe runs as inside the container (``podman exec -u``);
            '' for the container's default (root).
        edge: the check of :func:`mlab.topology.checks` the probe stands for
            (``homepod --> code-service :8080``); '' for the link probes.
    """

    source: str
    container: str
    target: str
    kind: str
    host: str
    port: int
    expected: bool
    user: str = ""
    edge: str = ""


@dataclass(frozen=True)
class Result:
    """A probe and what it observed, with a short detail.

    ``observed`` is True for an allowed probe only when the service answered; for a
    blocked probe as soon as a connection opened (an answer or not: a leak either way).
    """

    probe: Probe
    observed: bool
    detail: str

    @property
    def ok(self) -> bool:
        """True when observed equals expected."""
        return self.observed == self.probe.expected


@dataclass(frozen=True)
class HostFacts:
    """Addresses the matrix needs from the host.

    Attributes:
        listener_port: a TCP port the runner listens on at 0.0.0.0 during the run.
        host_ip: the host's own (primary) address.
        internet_ip: an address ``pypi.org`` resolves to on the host ('' if unresolvable).
        resolvers: the host's DNS servers (/etc/resolv.conf).
    """

    listener_port: int
    host_ip: str
    internet_ip: str
    resolvers: tuple[str, ...]


PORT_KIND = {topology.PORT_VNC: "rfb", topology.PORT_SSH: "ssh", topology.PORT_RDP: "rdp",
             topology.PORT_NOVNC: "novnc"}
"""A container port -> the protocol its service answers in (:mod:`answers`); else ``tcp``."""


def port_kind(port: int) -> str:
    """The probe kind of a TCP port: its protocol (:data:`PORT_KIND`), else ``tcp``."""
    return PORT_KIND.get(port, "tcp")


def podman_facts(plan: PlanFile) -> set[str]:
    """The condition words (:class:`mlab.topology.Edge`) that hold for a podman site.

    The host is the office PC (it dials the published ports); HomePod networks are
    ``--internal --disable-dns`` (no resolver: no ``dns-cluster``); the engine has no portal
    (``direct-desktops``); ``airlock`` when the plan has an Airlock pod; ``tls`` when the code
    service publishes its ``https`` port, else ``plain-http``.
    """
    words = {"always", "office", "direct-desktops"}
    if plan.first("airlock"):
        words.add("airlock")
    code = plan.first("code-service")
    words.add("tls" if code and any(p.name == "https" for p in code.ports) else "plain-http")
    return words


def matrix(plan: PlanFile, facts: HostFacts, code_host: str,
           airlock_user: str = "") -> list[Probe]:
    """Every probe for a deployed site: the checks of :func:`mlab.topology.checks` bound to
    the plan's containers and addresses.

    Args:
        plan: the engine's ``plan.json`` (pods with containers, networks, ports).
        facts: host addresses.
        code_host: the code service's host name (``codeService.host``).
        airlock_user: ``airlock.user``: the Airlock's share-write probe runs as this user
            (root would hide a wrong owner of the share); '' runs it as root.

    Returns:
        Probes grouped by source: each HomePod, the Airlock, the code service, then the
        host (the office). Each carries its check's name (``edge``) and expectation; the
        share write (a mount, not a network edge) is the one probe added to them: read-only
        in HomePods, writable in the Airlock (docs/CONTRACTS.md).
    """
    checks = topology.checks(podman_facts(plan))
    tls = "tls" in podman_facts(plan)
    nat = plan.nat_network()
    homepods = plan.components("homepod")
    airlock = plan.first("airlock")
    code_pod = plan.first("code-service")
    out: list[Probe] = []

    def bind(box: str, role: str, check: topology.Check, gw: str, code_ip: str,
             ) -> list[tuple[str, str, str, int]]:
        """(target, kind, host, port) rows for one check from one source."""
        dst, port = check.destination, check.port
        if dst == "code-service" and port == PORT_CODE:
            # The URL users type (Service port 80, DNAT'd to :8080) and the container port.
            return [(f"code service {code_host}:80", "http", f"http://{code_host}/", 0),
                    (f"code service {code_host}:{PORT_CODE}", "http",
                     f"http://{code_host}:{PORT_CODE}/", 0)]
        if dst == "code-service" and port == PORT_CODE_TLS:
            # With tls: the HTTPS URL users type (Service port 443, DNAT'd) and the port.
            return [(f"code service https://{code_host}/", "http", f"https://{code_host}/", 0),
                    (f"code service {code_host}:{PORT_CODE_TLS}", "http",
                     f"https://{code_host}:{PORT_CODE_TLS}/", 0)]
        if dst == "code-service" and role == "homepod" and tls and port == PORT_CODE_TLS_SERVICE:
            # Here the code service's address on a HomePod network is also its Service's:
            # 443 is DNAT'd to the HTTPS edge (probed above), as 80 is to 8080 without tls.
            return []
        if dst == "code-service":
            return [(f"code service :{port} (other port)", "tcp", code_ip, port)]
        if dst == "airlock" and airlock:
            return [(f"airlock :{port}", port_kind(port), airlock.networks[0][1], port)]
        if dst == "homepod":
            return [(f"homepod-{o.user} :{port}", port_kind(port), o.networks[0][1], port)
                    for o in homepods if o.containers[0] != box]
        if dst == "node":
            return [(f"host service on 0.0.0.0 via gateway {gw}", "tcp", gw, facts.listener_port),
                    (f"host service on 0.0.0.0 via host address {facts.host_ip}", "tcp",
                     facts.host_ip, facts.listener_port),
                    (f"gateway {gw} :53 (tcp)", "tcp", gw, 53)]
        if dst == "private":  # the gateway is the host's address in a private range
            return [(f"host service on 0.0.0.0 via gateway {gw}", "tcp", gw, facts.listener_port)]
        if dst == "internet" and check.expected:
            # Plain HTTP from the code service: no trust store of the Airlock's in the way.
            mirror = [("Debian mirror over HTTP", "http", DEBIAN_URL, 0)]
            return [("PyPI over HTTPS", "http", PYPI_URL, 0), *mirror] if role == "airlock" \
                else mirror
        if dst == "internet":
            return [(f"internet by IP ({INTERNET_NAME} = {facts.internet_ip}) :443", "tcp",
                     facts.internet_ip, 443)] if facts.internet_ip else []
        if dst == "kube-dns":  # podman's resolver would answer at the network's gateway
            rows = [(f"internet by name ({INTERNET_NAME})", "dns", INTERNET_NAME, 0)]
            if role == "homepod":
                rows.append((f"DNS query via gateway {gw}", "udp-dns", gw, 53))
            return rows
        if dst == "outside-dns":
            return [(f"DNS query via host resolver {r}", "udp-dns", r, 53)
                    for r in facts.resolvers]
        if dst == "metadata":
            return [(f"metadata {METADATA_IP} :80", "tcp", METADATA_IP, 80)]
        return []  # proxy: outside the site, reached only through the internet edge

    def from_source(src: str, box: str, role: str, gw: str, code_ip: str) -> None:
        for check in checks:
            if check.source == role:
                for target, kind, host, port in bind(box, role, check, gw, code_ip):
                    out.append(Probe(src, box, target, kind, host, port, check.expected,
                                     edge=check.name))

    for hp in homepods:
        src, box = f"homepod-{hp.user}", hp.containers[0]
        net = plan.network(hp.networks[0][0])
        from_source(src, box, "homepod", net.gateway, net.code_ip)
        out.append(Probe(src, box, f"write to the share {SHARE}", "write", SHARE, 0, False,
                         edge="homepod share read-only"))
    if airlock:
        box = airlock.containers[0]
        from_source("airlock", box, "airlock", nat.gateway, nat.code_ip)
        out.append(Probe("airlock", box, f"write to the share {SHARE} as "
                         f"{airlock_user or 'root'}", "write", SHARE, 0, True, airlock_user,
                         edge="airlock share read-write"))
    if code_pod:
        from_source("code-service", code_pod.containers[0], "code-service",
                    nat.gateway, nat.code_ip)
    for pod in plan.pods:
        for port in pod.ports:
            host = dial_address(port.host_ip)
            kind, where = host_kind(port.name, host, port.host_port,
                                    "tls" in podman_facts(plan))
            check = topology.Check("office", pod.component, port.container_port,
                                   topology.allows("office", pod.component,
                                                   port.container_port, podman_facts(plan)))
            out.append(Probe("host", "", f"{pod.deployment} {port.name} "
                             f"{host}:{port.host_port}", kind, where, port.host_port,
                             check.expected, edge=check.name))
    if code_pod and code_pod.ports:
        # The code service's other scheme (office --> code-service :8080 with tls, :8443
        # without): not published, so it is tried on the published port. Plain HTTP to the
        # HTTPS port must get no HTTP answer (no password is ever asked for in clear).
        port = code_pod.ports[0]
        host = dial_address(port.host_ip)
        other = "http" if port.name == "https" else "https"
        for check in checks:
            if (check.source, check.destination) == ("office", "code-service") \
                    and check.port != port.container_port and not check.expected:
                out.append(Probe("host", "", f"code service {other}:// on the {port.name} "
                                 f"port {host}:{port.host_port}", "http",
                                 f"{other}://{host}:{port.host_port}/", port.host_port,
                                 False, edge=check.name))
    return out


def host_kind(port_name: str, host: str, port: int, tls: bool = False) -> tuple[str, str]:
    """The probe kind and target of a published port: its protocol (``vnc`` -> ``rfb``,
    ``rdp``, ``novnc``, ``ssh``) with ``host``, or ``http`` with the URL for the code
    service's ``http`` or ``https`` port; ``tcp`` for a port name MLab does not know. With
    ``tls`` (the site's ``tls.mode`` is not off) noVNC is spoken over TLS (``novnc-tls``);
    RFB and RDP negotiate their TLS inside the protocol, after the answer recognised."""
    if port_name in ("http", "https"):
        return "http", f"{port_name}://{host}:{port}/"
    kind = answers.PORT_PROTOCOL.get(port_name, "tcp")
    return (f"{kind}-tls" if tls and kind == "novnc" else kind), host


# The program run inside a container and on the host (python3, standard library only; the
# source of `answers` comes first). It reads a JSON list of [kind, host, port] and prints a
# JSON list of [state, detail], state "answered", "connected" (no answer) or "blocked".
_PROGRAM_BODY = r"""
import json, socket, sys, threading, time, urllib.request
TCP, HTTP = float(sys.argv[2]), float(sys.argv[3])
class Unanswered(Exception):
    pass
def tcp(host, port):
    with socket.create_connection((host, port), timeout=TCP):
        return "connected"
def talk(kind, host, port, tls=False):
    s = socket.create_connection((host, port), timeout=TCP)
    data, deadline = b"", time.monotonic() + TCP
    try:
        if tls:  # reachability, not identity: the site CA is not in every container
            import ssl
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            s = ctx.wrap_socket(s, server_hostname=host)
        s.sendall(request(kind, host))
        while len(data) < MAX_ANSWER and time.monotonic() < deadline:
            found = recognise(kind, data)
            if found:
                return found
            s.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            data += chunk
        found = recognise(kind, data)
        if found:
            return found
        raise Unanswered(describe(kind, data))
    except OSError as e:
        raise Unanswered("connected, then " + failure(e))
    finally:
        s.close()
def dns(host, port):
    return "resolved to " + socket.getaddrinfo(host, None)[0][4][0]
def udp_dns(host, port):
    q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + b"".join(
        bytes([len(p)]) + p.encode() for p in "pypi.org".split(".")) + b"\x00\x00\x01\x00\x01"
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(TCP)
    s.sendto(q, (host, port)); s.recvfrom(512)
    return "answered"
def write(path, port):
    import os, tempfile
    fd, name = tempfile.mkstemp(dir=path, prefix=".mlab-verify-")
    os.close(fd); os.unlink(name)
    return "wrote a file"
def http(url, port):
    ctx = None
    if url.startswith("https:"):  # as talk(): the answer counts, not the certificate
        import ssl
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=HTTP, context=ctx) as r:
            return "HTTP %d" % r.status
    except urllib.error.HTTPError as e:
        return "HTTP %d" % e.code
KINDS = {"tcp": tcp, "dns": dns, "udp-dns": udp_dns, "http": http, "write": write}
probes = json.loads(sys.argv[1]); out = [None] * len(probes)
def one(i, kind, host, port):
    try:
        if kind in PROTOCOLS:
            out[i] = ["answered", talk(kind, host, port)]
        elif kind.endswith("-tls") and kind[:-4] in PROTOCOLS:
            out[i] = ["answered", talk(kind[:-4], host, port, tls=True)]
        else:
            out[i] = ["answered", KINDS[kind](host, port)]
    except Unanswered as e:
        out[i] = ["connected", str(e)[:160]]
    except Exception as e:
        out[i] = ["blocked", failure(e)]
ts = [threading.Thread(target=one, args=(i, *p)) for i, p in enumerate(probes)]
[t.start() for t in ts]; [t.join() for t in ts]
print(json.dumps(out))
"""
PROBE_PROGRAM = inspect.getsource(answers) + _PROGRAM_BODY


def observed(expected: bool, state: str) -> bool:
    """What a probe observed from the program's state: an allowed edge counts only when
    answered; a blocked one leaks as soon as a connection opened."""
    return state == "answered" if expected else state != "blocked"


def _run_in(container: str, probes: list[Probe], user: str = "") -> list[Result]:
    """Run ``probes`` in ``container`` (as ``user``), or on the host when container is ''."""
    args = json.dumps([[p.kind, p.host, p.port] for p in probes])
    as_user = ["-u", user] if user else []
    program = ["-c", PROBE_PROGRAM, args, str(TCP_TIMEOUT), str(HTTP_TIMEOUT)]
    argv = (podman_command(["exec", *as_user, container, "python3", *program]) if container
            else [sys.executable, *program])
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, env=podman_env(),
                              timeout=HTTP_TIMEOUT + 60, check=False)
        replies = json.loads(proc.stdout) if proc.returncode == 0 else None
    except (subprocess.TimeoutExpired, ValueError):
        replies = None
    if replies is None:
        why = "could not run the probe " + (f"in {container}" if container else "on the host")
        return [Result(p, False, why) for p in probes]
    return [Result(p, observed(p.expected, str(a[0])), str(a[1]))
            for p, a in zip(probes, replies, strict=True)]


def host_facts(listener_port: int) -> HostFacts:
    """Look up the host's address, the registry's address and the resolvers."""
    internet_ip = ""
    try:
        infos = socket.getaddrinfo(INTERNET_NAME, 443, socket.AF_INET, socket.SOCK_STREAM)
        internet_ip = str(infos[0][4][0])
    except OSError:
        pass
    host_ip = "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect((internet_ip or "192.0.2.1", 9))  # no packet is sent
            host_ip = sock.getsockname()[0]
        except OSError:
            pass
    resolvers = []
    try:
        with open("/etc/resolv.conf", encoding="utf-8") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver" and ":" not in parts[1]:
                    resolvers.append(parts[1])
    except OSError:
        pass
    return HostFacts(listener_port, host_ip, internet_ip, tuple(resolvers[:1]))


def run(plan: PlanFile, code_host: str,
        on_source: Callable[[str], None] | None = None,
        airlock_user: str = "") -> list[Result]:
    """Run the whole matrix against a deployed site.

    Opens a TCP listener on 0.0.0.0 (an ephemeral port) for the run, so "a service the host
    binds on all addresses" is a real target.

    Args:
        plan: the engine's ``plan.json``.
        code_host: ``codeService.host``.
        on_source: called with each source name as its probes start.
        airlock_user: see :func:`matrix`.

    Returns:
        One result per probe, in :func:`matrix` order.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("0.0.0.0", 0))
        listener.listen(64)
        facts = host_facts(listener.getsockname()[1])
        probes = matrix(plan, facts, code_host, airlock_user)
        groups: dict[tuple[str, str], list[int]] = {}
        for index, p in enumerate(probes):
            groups.setdefault((p.container, p.user), []).append(index)
        results: list[Result | None] = [None] * len(probes)

        def one_group(key: tuple[str, str], indexes: list[int]) -> None:
            container, user = key
            items = [probes[i] for i in indexes]
            if on_source and not user:
                on_source(items[0].source)
            done = _run_in(container, items, user)
            for i, res in zip(indexes, done, strict=True):
                results[i] = res

        with ThreadPoolExecutor(max_workers=len(groups) or 1) as pool:
            for fut in [pool.submit(one_group, c, ix) for c, ix in groups.items()]:
                fut.result()
    return [r for r in results if r is not None]


def to_json(results: list[Result]) -> list[dict[str, Any]]:
    """Results as plain dicts: source, target, kind, edge, expected, observed, ok, detail."""
    return [
        {**{k: v for k, v in asdict(r.probe).items()
            if k in ("source", "target", "kind", "edge")},
         "expected": "allowed" if r.probe.expected else "blocked",
         "observed": "allowed" if r.observed else "blocked",
         "ok": r.ok, "detail": r.detail}
        for r in results
    ]
