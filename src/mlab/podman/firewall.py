"""Host firewall of the podman engine: MLab's own nftables tables, one pair per site.

Invariant: everything MLab adds to the host firewall lives in two tables named for the site,
``inet mlab_<site>`` and ``bridge mlab_<site>``; ``mlab up`` replaces them atomically
(one ``nft -f`` transaction), ``mlab down`` deletes them, and no other table is touched.
Our chains only drop or DNAT (an ``accept`` in one table does not bypass another table's
drop), so podman's own rules keep working.

Why these rules (measured on Debian 12, podman 4.3.1, netavark):

- A podman ``--internal`` network has no route out, but its containers still reach every
  host service bound to 0.0.0.0 through the bridge gateway: ``input`` drops new
  connections from HomePod subnets (gateway, host services, DNS alike).
- The host routes between bridges: ``forward`` drops anything routed into or out of a
  HomePod subnet except published-port traffic (DNAT) and its replies.
- HomePod and code service share a bridge, where ``inet`` rules do not apply to switched
  frames: the ``bridge`` table lets through only TCP to the code service's :8080 and its
  replies (edge ``homepod --> code-service :8080``) and drops the rest.
- The code Service maps port 80 to targetPort 8080 (kube-proxy's job on a cluster):
  ``prerouting`` DNATs ``<code-service address>:80`` to ``:8080`` for traffic from the
  HomePod networks and the NAT network (Airlock), so ``http://<codeService.host>/<org>/<repo>``
  works there. Those packets are switched, not routed; they meet the ``inet`` hooks because
  the bridge netfilter (``br_netfilter``, ``net.bridge.bridge-nf-call-iptables=1``) passes
  bridged IPv4 through them (measured: set on the Debian 12 hosts, loaded with podman's
  bridge networks). The ``bridge`` filter sees the packet after the DNAT, so it still lets
  only :8080 through.
- netavark publishes no ports on internal networks: HomePod Services are DNAT rules here
  (``prerouting`` for other hosts, ``output`` for the host itself), masqueraded to the
  gateway so the reply comes back through the host. Loopback bind addresses also need
  ``net.ipv4.conf.<bridge>.route_localnet=1``, which the engine sets on the bridge.
- The Airlock and code service (NAT network) reach the internet but not private and
  link-local ranges (cloud metadata 169.254.169.254) nor host services other than DNS
  (DESIGN.md: "Airlock --> internet, except 10/8, 172.16/12, 192.168/16, 169.254/16").
- IPv6: every rule above matches IPv4 only, and a netavark network without ``--ipv6`` still
  gives each container and the bridge an ``fe80::`` link-local address (measured: a "HomePod"
  reached a host service and a non-allowed code-service port over IPv6 link-local). MLab
  networks carry no IPv6 at all: the containers have ``disable_ipv6`` set (MLab's
  containers.conf), the engine sets it on the bridges, and here every IPv6 packet in or out of
  an MLab bridge is dropped (``input``, ``forward`` and the bridge ``forward``), so no chain
  default-accepts IPv6 on an MLab network even if a container had an IPv6 address.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from mlab import topology
from mlab.errors import DeployError, ToolMissingError
from mlab.site import PRIVATE_RANGES

DNAT_PRIORITY = -105
"""Before netavark's iptables-nft dstnat (-100), so our published ports win."""
FILTER_PRIORITY = -5
"""Before the filter tables at priority 0 (podman's)."""


def _edge(source: str, destination: str) -> topology.Edge:
    """The first row of :data:`mlab.topology.EDGES` from ``source`` to ``destination``."""
    return next(e for e in topology.EDGES if (e.source, e.destination) == (source, destination))


HOMEPOD_TO_CODE = tuple(e for e in topology.EDGES
                        if (e.source, e.destination) == ("homepod", "code-service"))
"""The HomePod -> code-service edges (plain HTTP, or HTTPS with ``tls``): the bridge table's
one accept and the Service DNAT on HomePod networks carry the active one's port."""


def homepod_code_port(facts: set[str]) -> int:
    """The code service's container port HomePods reach on a site with ``facts`` (the
    condition words): :data:`mlab.topology.PORT_CODE`, or its HTTPS port with ``tls``."""
    return _code_port("homepod", facts)


def _code_port(source: str, facts: set[str]) -> int:
    edge = topology.active_edge(source, "code-service", facts)
    assert edge is not None and edge.ports, f"no active {source} --> code-service edge"
    return edge.ports[0]


AIRLOCK_TO_CODE = tuple(e for e in topology.EDGES
                        if (e.source, e.destination) == ("airlock", "code-service"))
"""The Airlock -> code-service edges (plain HTTP, or HTTPS with ``tls``): the NAT network's
Service DNAT and its accept carry the active one's port."""


def airlock_code_port(facts: set[str]) -> int:
    """The code service's container port the Airlock (its login and export publisher)
    reaches on a site with ``facts``: :data:`mlab.topology.PORT_CODE`, or its HTTPS port
    with ``tls`` (the edge table, :data:`mlab.topology.EDGES`)."""
    # The NAT network's rules exist whether or not the Airlock runs.
    return _code_port("airlock", facts | {"airlock"})


NAT_TO_DNS = (_edge("airlock", "kube-dns"), _edge("code-service", "kube-dns"))
"""The input chain's DNS accept for the NAT network (the host's resolver stands for kube-dns)."""
RULE_EDGES: tuple[topology.Edge, ...] = (
    *(e for e in topology.EDGES if (e.source, e.destination) == ("office", "homepod")),
    *HOMEPOD_TO_CODE,
    _edge("office", "airlock"),
    _edge("airlock", "internet"),
    *NAT_TO_DNS,
    *AIRLOCK_TO_CODE,
    _edge("airlock", "proxy"),
    _edge("code-service", "proxy"),
    *(e for e in topology.EDGES if (e.source, e.destination) == ("office", "code-service")),
    _edge("code-service", "internet"),
)
"""The edges :func:`ruleset` carries (the podman engine has no portal and gives HomePods no
resolver); tests/unit/test_podman_translate.py checks this is every edge of the table that
can be active on podman, so a new edge fails there until it has its rules."""


@dataclass(frozen=True)
class HomepodNet:
    """One HomePod network as the firewall sees it.

    Attributes:
        user: the HomePod user (used in rule comments).
        subnet: IPv4 CIDR of the internal network.
        code_ip: the code service's address on it.
        pod_ip: the HomePod's address on it.
        bridge: the network's Linux bridge (``podman3``); '' when unknown (no IPv6 rule).
    """

    user: str
    subnet: str
    code_ip: str
    pod_ip: str
    bridge: str = ""


@dataclass(frozen=True)
class Dnat:
    """A published HomePod port: ``host_ip:host_port`` -> ``pod_ip:container_port`` TCP."""

    host_ip: str
    host_port: int
    pod_ip: str
    container_port: int
    comment: str


def table_name(site: str) -> str:
    """``mlab_<site>`` (nft identifiers take letters, digits and underscores)."""
    return "mlab_" + site.replace("-", "_")


def _daddr(host_ip: str) -> str:
    if ipaddress.ip_address(host_ip).is_unspecified:
        return "fib daddr type local"
    return f"ip daddr {host_ip}"


def ruleset(
    site: str,
    homepods: Sequence[HomepodNet],
    dnats: Sequence[Dnat],
    nat_subnet: str | None,
    code_port: int = topology.PORT_CODE,
    service_port: int | None = None,
    nat_code_port: int = topology.PORT_CODE,
    proxies: Sequence[tuple[str, int]] = (),
    offices: Sequence[str] = (),
    nat_bridge: str = "",
    macs: Sequence[str] = (),
    block_ipv6: bool = True,
) -> str:
    """The nft script that (re)creates the site's two tables atomically.

    Args:
        site: site name.
        homepods: the HomePod networks.
        dnats: published HomePod ports.
        nat_subnet: the Airlock/code-service NAT network's CIDR, or None.
        code_port: the code service's container port HomePods reach (the Service's
            ``targetPort``; :func:`homepod_code_port`: the HTTPS port with ``tls``). The
            Airlock keeps :data:`mlab.topology.PORT_CODE` (its edge in the table).
        service_port: the code Service's ``port`` HomePods dial: DNAT'd to ``code_port`` on
            the code service's address of their network. None: ``code_port``'s Service port
            (:data:`mlab.topology.CODE_SERVICE_PORTS`).
        nat_code_port: the code service's container port the Airlock reaches on the NAT
            network (:func:`airlock_code_port`: the HTTPS port with ``tls``); its Service
            port (:data:`mlab.topology.CODE_SERVICE_PORTS`) is DNAT'd to it there. With
            ``tls`` the plain port is dropped from the NAT network (the Airlock and the
            code service share its bridge, so nothing else would keep it out).
        proxies: (IPv4, TCP port) of the Airlock's outbound proxies, allowed from the NAT
            network even inside a private range (``airlock.proxy``).
        offices: ``access.officeCIDRs``: the only sources that other hosts may reach
            published ports from (the NetworkPolicies' office edges); empty: none. The
            host's own connections (to a loopback bind address) are not forwarded and are
            not affected.
        nat_bridge: the NAT network's bridge ('' when unknown).
        macs: the MAC addresses of every site container on every site network (fixed by
            the engine): the bridge table matches switched IPv6 frames by them.
        block_ipv6: drop every IPv6 packet in or out of the site's bridges (HomePods and
            NAT network). False only for the test switch that shows what verify finds
            without it (:data:`mlab.podman.runner.KEEP_IPV6_ENV`).

    Returns:
        Text for ``nft -f -``: declares, flushes by deletion and re-adds both tables, so an
        unchanged site gives the same ruleset (idempotent).
    """
    t = table_name(site)
    if service_port is None:
        service_port = topology.CODE_SERVICE_PORTS[code_port]
    # The Airlock's edge to the code service on the NAT network (HTTPS with tls).
    nat_port, nat_service = nat_code_port, topology.CODE_SERVICE_PORTS[nat_code_port]
    # The code service's address on the NAT network (the engine's third address of a subnet).
    nat_code = str(ipaddress.ip_network(nat_subnet)[2]) if nat_subnet else ""
    bridges = sorted({b for b in [nat_bridge, *(hp.bridge for hp in homepods)] if b})
    ip6_in, ip6_fwd, ip6_br = _ipv6_rules(bridges, macs) if block_ipv6 else ([], [], [])
    lines = [
        f"table inet {t}", f"delete table inet {t}",
        f"table bridge {t}", f"delete table bridge {t}",
        f"table inet {t} {{",
        f"  comment \"MLab site {site}: podman engine rules (mlab down removes them)\"",
        "  chain prerouting {",
        f"    type nat hook prerouting priority {DNAT_PRIORITY}; policy accept;",
    ]
    dnat_rules = [
        f"    {_daddr(d.host_ip)} tcp dport {d.host_port} dnat ip to {d.pod_ip}:{d.container_port}"
        f" comment \"{d.comment}\""
        for d in dnats
    ]
    lines += dnat_rules
    service_rules = [
        f"    ip saddr {hp.subnet} ip daddr {hp.code_ip} tcp dport {service_port}"
        f" dnat ip to {hp.code_ip}:{code_port}"
        f" comment \"homepod-{hp.user} --> code Service :{service_port} -> :{code_port}\""
        for hp in homepods
    ]
    if nat_subnet:
        service_rules.append(
            f"    ip saddr {nat_subnet} ip daddr {nat_code} tcp dport {nat_service}"
            f" dnat ip to {nat_code}:{nat_port}"
            f" comment \"airlock --> code Service :{nat_service} -> :{nat_port}\"")
    lines += service_rules
    lines += [
        "  }",
        "  chain output {",
        f"    type nat hook output priority {DNAT_PRIORITY}; policy accept;",
        *dnat_rules,
        "  }",
        "  chain postrouting {",
        "    type nat hook postrouting priority 95; policy accept;",
    ]
    for hp in homepods:
        lines.append(
            f"    ip saddr != {hp.subnet} ip daddr {hp.subnet} ct status dnat masquerade"
            f" comment \"published ports of homepod-{hp.user}: reply through the gateway\""
        )
    lines += [
        "  }",
        "  chain input {",
        f"    type filter hook input priority {FILTER_PRIORITY}; policy accept;",
        *ip6_in,
        "    ct state established,related accept",
    ]
    for hp in homepods:
        lines.append(
            f"    ip saddr {hp.subnet} drop comment \"homepod-{hp.user} --> host: denied\""
        )
    if nat_subnet:
        dns = NAT_TO_DNS[0].ports[0]
        lines += [
            f"    ip saddr {nat_subnet} udp dport {dns} accept comment \"airlock, code-service --> DNS\"",
            f"    ip saddr {nat_subnet} tcp dport {dns} accept",
            f"    ip saddr {nat_subnet} drop comment \"airlock, code-service --> host: denied\"",
        ]
    lines += [
        "  }",
        "  chain forward {",
        f"    type filter hook forward priority {FILTER_PRIORITY}; policy accept;",
        *ip6_fwd,
        "    ct state established,related accept",
    ]
    office = f"{{ {', '.join(offices)} }}" if offices else ""
    if nat_subnet:
        lines.append(
            f"    ip saddr {nat_subnet} ip daddr {nat_code} tcp dport {nat_port} ct status dnat"
            f" ct original proto-dst {nat_service} accept"
            f" comment \"airlock --> code Service :{nat_service} (DNAT to :{nat_port})\"")
        if nat_port != topology.PORT_CODE:
            lines.append(
                f"    ip saddr {nat_subnet} ip daddr {nat_code} tcp dport {topology.PORT_CODE}"
                f" drop comment \"airlock --> code-service :{topology.PORT_CODE}: denied"
                f" (HTTPS :{nat_port} only)\"")
        # Published ports of the NAT pods (netavark's DNAT) from other hosts: offices only.
        lines.append(
            f"    ip daddr {nat_subnet} ct status dnat "
            + (f"ip saddr != {office} " if office else "")
            + "drop comment \"not office --> airlock, code-service published ports: denied\""
        )
    for hp in homepods:
        if nat_subnet:
            lines.append(
                f"    ip saddr {nat_subnet} ip daddr {hp.subnet} drop"
                f" comment \"airlock, code-service --> homepod-{hp.user} published ports: denied\""
            )
        if office:
            lines.append(
                f"    ip daddr {hp.pod_ip} ct status dnat ip saddr {office} accept"
                f" comment \"office --> homepod-{hp.user} published ports\"")
        lines += [
            f"    ip saddr {hp.subnet} ip daddr != {hp.subnet} drop"
            f" comment \"homepod-{hp.user} --> anything routed: denied\"",
            f"    ip daddr {hp.subnet} ip saddr != {hp.subnet} drop"
            f" comment \"anything routed --> homepod-{hp.user}: denied\"",
        ]
    if nat_subnet:
        private = ", ".join(PRIVATE_RANGES)
        for ip, port in proxies:
            lines.append(f"    ip saddr {nat_subnet} ip daddr {ip} tcp dport {port} accept"
                         " comment \"airlock --> proxy\"")
        lines.append(
            f"    ip saddr {nat_subnet} ip daddr != {nat_subnet} ip daddr {{ {private} }} drop"
            " comment \"airlock, code-service --> private and link-local ranges: denied\""
        )
    lines += ["  }", "}", f"table bridge {t} {{", "  chain forward {",
              f"    type filter hook forward priority {FILTER_PRIORITY}; policy accept;",
              *ip6_br]
    for hp in homepods:
        lines += [
            f"    ip saddr {hp.subnet} ip daddr {hp.code_ip} tcp dport {code_port} accept"
            f" comment \"homepod-{hp.user} --> code-service :{code_port}\"",
            f"    ip saddr {hp.code_ip} ip daddr {hp.subnet} tcp sport {code_port} accept",
            f"    ip saddr {hp.subnet} drop comment \"homepod-{hp.user}: everything else denied\"",
            f"    ip daddr {hp.subnet} drop",
        ]
    lines += ["  }", "}", ""]
    return "\n".join(lines)


def _ipv6_rules(bridges: Sequence[str], macs: Sequence[str]
                ) -> tuple[list[str], list[str], list[str]]:
    """Rules dropping IPv6 on the site's networks: (inet input, inet forward, bridge forward).

    ``meta nfproto ipv6`` with the bridge names matches IPv6 in the ``inet`` family (to the
    host, routed). Frames switched between a bridge's ports (container to container) never
    meet the ``inet`` hooks as IPv6 (br_netfilter passes only IPv4 through them here), and
    this kernel rejects ``meta ibrname`` in the bridge family ("Operation not supported",
    measured), so the bridge table matches them by the containers' fixed MAC addresses.
    """
    why = "MLab networks carry no IPv6 (docs/security.md)"
    inp: list[str] = []
    fwd: list[str] = []
    br: list[str] = []
    if bridges:
        names = "{ " + ", ".join(f'"{b}"' for b in bridges) + " }"
        inp.append(f"    iifname {names} meta nfproto ipv6 drop comment \"--> host over IPv6: {why}\"")
        fwd += [f"    iifname {names} meta nfproto ipv6 drop comment \"routed IPv6 out: {why}\"",
                f"    oifname {names} meta nfproto ipv6 drop comment \"routed IPv6 in: {why}\""]
    if macs:
        set_ = "{ " + ", ".join(sorted(set(macs))) + " }"
        br += [f"    ether saddr {set_} ether type ip6 drop comment \"switched IPv6 out: {why}\"",
               f"    ether daddr {set_} ether type ip6 drop comment \"switched IPv6 in: {why}\""]
    return inp, fwd, br


def delete_script(site: str) -> str:
    """The nft script that removes the site's tables (no error when they are absent)."""
    t = table_name(site)
    return "\n".join([
        f"table inet {t}", f"delete table inet {t}",
        f"table bridge {t}", f"delete table bridge {t}", "",
    ])


def _nft(script: str, what: str) -> None:
    nft = shutil.which("nft")
    if not nft:
        raise ToolMissingError("nft is not installed", hint="install it: apt-get install nftables")
    proc = subprocess.run([nft, "-f", "-"], input=script, text=True, capture_output=True,
                          check=False)
    if proc.returncode != 0:
        err = (proc.stderr or "").strip().splitlines()
        raise DeployError(f"nft: {what} failed: {err[0] if err else proc.returncode}",
                          hint="mlab up needs root and nftables")


def apply(script: str) -> None:
    """Load a script from :func:`ruleset` in one transaction.

    Raises:
        ToolMissingError: nft is missing.
        DeployError: nft rejected it (first line of its error).
    """
    _nft(script, "loading the site's firewall tables")


def remove(site: str) -> None:
    """Delete the site's tables (nothing else).

    Raises:
        ToolMissingError: nft is missing.
        DeployError: nft failed.
    """
    _nft(delete_script(site), "deleting the site's firewall tables")


def listing(site: str) -> str:
    """The site's tables as ``nft list`` prints them ('' when absent)."""
    nft = shutil.which("nft")
    if not nft:
        return ""
    out = []
    for family in ("inet", "bridge"):
        proc = subprocess.run([nft, "list", "table", family, table_name(site)],
                              text=True, capture_output=True, check=False)
        if proc.returncode == 0:
            out.append(proc.stdout)
    return "".join(out)


def set_route_localnet(interface: str) -> None:
    """Let DNAT from a loopback address leave through ``interface`` (a HomePod bridge).

    Raises:
        DeployError: the sysctl could not be written.
    """
    _sysctl(f"/proc/sys/net/ipv4/conf/{interface}/route_localnet")


def set_forwarding(interface: str) -> None:
    """Let replies of published HomePod ports be routed back to other hosts.

    netavark turns forwarding off on an internal network's bridge (measured: the SYN-ACK of a
    DNAT'd connection from another host died there). A HomePod still cannot send anything
    routed: it has no route beyond its subnet, and :func:`ruleset`'s forward chain drops
    every new connection out of HomePod subnets; only replies (conntrack) pass.

    Raises:
        DeployError: the sysctl could not be written.
    """
    _sysctl(f"/proc/sys/net/ipv4/conf/{interface}/forwarding")


def set_ipv6_off(interface: str) -> None:
    """Take IPv6 off a site bridge (no ``fe80::`` address of the host on that network).

    A kernel without IPv6 (``ipv6.disable=1``, no ``/proc/sys/net/ipv6``) has nothing to
    take off.

    Raises:
        DeployError: the sysctl could not be written.
    """
    if not os.path.isdir("/proc/sys/net/ipv6"):
        return
    _sysctl(f"/proc/sys/net/ipv6/conf/{interface}/disable_ipv6")


def _sysctl(path: str) -> None:
    try:
        with open(path, "w", encoding="ascii") as fh:
            fh.write("1")
    except OSError as exc:
        raise DeployError(f"cannot set {path}: {exc.strerror}", hint="mlab up needs root") from None
