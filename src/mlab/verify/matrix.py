"""The isolation probe matrix of ``mlab verify`` on a podman site (pure).

``mlab verify`` and the e2e tests run the same matrix. Each probe is one attempt (TCP
connect, name lookup, UDP DNS query, HTTP(S) request) from a source (a HomePod, the Airlock
or the host) to a target, with the expected outcome taken from the checks of
:func:`mlab.topology.checks` ("a HomePod reaches the code service and nothing else"). This
module only builds the matrix (:func:`matrix`) and reads results; :mod:`mlab.probing.podman`
runs it (one ``podman exec ... python3 -c`` per source container).

An allowed probe counts only when the service answers in its own protocol (an RFB or SSH
banner, an X.224 Connection Confirm, the noVNC page, an HTTP status:
:mod:`mlab.probing.answers`); a blocked probe names how it failed (refused, timed out,
reset, unreachable).

Targets are only the site's own containers, the host's own addresses, a listener the runner
opens on 0.0.0.0 for the duration of the run, the metadata address 169.254.169.254, and the
addresses a package registry's name resolves to on the host (the Airlock must reach it, a
HomePod must not).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from mlab import topology
from mlab.topology import (
    CONTAINER_PORTS,
    PORT_CODE,
    PORT_CODE_TLS,
    PORT_CODE_TLS_SERVICE,
    SHARE_PATH,
    dial_address,
)

if TYPE_CHECKING:  # the record's shape only: this module reads no file
    from mlab.podman.plan_file import PlanFile

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
            protocol of :data:`mlab.probing.answers.PROTOCOLS` (``rfb``, ``ssh``, ``rdp``,
            ``novnc``: reached only when the service answers in that protocol).
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
"""A container port -> the protocol its service answers in (:mod:`mlab.probing.answers`);
else ``tcp``."""


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
        if (dst == "code-service" and role in ("homepod", "airlock") and tls
                and port == PORT_CODE_TLS_SERVICE):
            # Here the code service's address on a HomePod network (the NAT network, for
            # the Airlock) is also its Service's: 443 is DNAT'd to the HTTPS edge (probed
            # above), as 80 is to 8080 without tls.
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
    kind = port_kind(CONTAINER_PORTS.get(port_name, 0))
    return (f"{kind}-tls" if tls and kind == "novnc" else kind), host


def observed(expected: bool, state: str) -> bool:
    """What a probe observed from the program's state: an allowed edge counts only when
    answered; a blocked one leaks as soon as a connection opened."""
    return state == "answered" if expected else state != "blocked"


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
