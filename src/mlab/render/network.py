"""NetworkPolicies: default deny for every MLab pod, then one policy per allowed edge.

Invariant: a connection is allowed only if it is one of the edges below (the table
:data:`mlab.topology.EDGES`; tests/unit/test_topology.py holds these policies to it) (each policy is
annotated ``mlab.io/edge`` with its edge, and dump_yaml writes that as a comment):

- office --> homepod :5900 :3389 :7030 :22;   office --> airlock :22 :7030 :5900
- homepod, airlock, office --> code-service :8080
- homepod --> code-service :8080 (and, only with ``dns: cluster``, kube-dns :53)
- airlock, code-service --> internet (0.0.0.0/0 and ::/0 except private, link-local and
  cluster ranges of each family) and kube-dns :53, and the site's HTTP proxy addresses if
  it names any

Pod peers always combine a namespaceSelector on ``kubernetes.io/metadata.name`` (set by the
API server since 1.22, so it cannot be forged by a tenant) AND a podSelector in the same
list item; never an empty namespaceSelector (all namespaces), never an ipBlock for pods
(pod IPs change; ipBlock is meant for cluster-external addresses).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from mlab import topology
from mlab.render.common import (
    ANNOTATION_EDGE,
    LABEL_INSTANCE,
    LABEL_NAME,
    PORT_CODE,
    PORT_SSH,
    Component,
    metadata,
    selector,
)
from mlab.site import PRIVATE_RANGES, PRIVATE_RANGES_V6, Site

NS_LABEL = "kubernetes.io/metadata.name"
HOMEPOD_IN = list(topology.HOMEPOD_IN)
AIRLOCK_IN = list(topology.AIRLOCK_IN)


def _tcp(ports: list[int]) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": p} for p in ports]


def _dns_ports() -> list[dict[str, Any]]:
    return [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]


def _pods(site: Site, component: Component) -> dict[str, Any]:
    """A peer: this site's pods of one component, in the site's namespace only."""
    return {
        "namespaceSelector": {"matchLabels": {NS_LABEL: site.namespace}},
        "podSelector": {"matchLabels": selector(site, component)},
    }


def _kube_dns(site: Site) -> dict[str, Any]:
    """A peer: the cluster DNS pods in their namespace (``cluster.dnsNamespace``)."""
    return {
        "namespaceSelector": {"matchLabels": {NS_LABEL: site.cluster.dns_namespace}},
        "podSelector": {"matchLabels": dict(sorted(site.cluster.dns_labels.items()))},
    }


def _office(site: Site) -> list[dict[str, Any]]:
    """ipBlock peers for the office CIDRs, carving out the cluster's pod and service
    ranges where an office range contains them (so no pod can pose as an office)."""
    cluster = [
        ipaddress.ip_network(site.cluster.pod_cidr),
        ipaddress.ip_network(site.cluster.service_cidr),
    ]
    out = []
    for cidr in site.access.office_cidrs:
        net = ipaddress.ip_network(cidr)
        block: dict[str, Any] = {"cidr": cidr}
        inner = [
            str(c) for c in cluster
            if c.version == net.version and c != net and c.subnet_of(net)  # type: ignore[arg-type]
        ]
        if inner:
            block["except"] = inner
        out.append({"ipBlock": block})
    return out


def internet(site: Site) -> list[dict[str, Any]]:
    """The internet peers, one ipBlock per family.

    IPv4: 0.0.0.0/0 except RFC 1918, link-local (cloud metadata at 169.254.169.254) and the
    cluster's IPv4 pod and service ranges. IPv6: ::/0 except :data:`PRIVATE_RANGES_V6`
    (unique local fc00::/7, link-local fe80::/10, ...) and the cluster's IPv6 ranges. On an
    IPv4-only cluster the IPv6 peer matches nothing; on a dual-stack cluster it keeps the
    Airlock's and code service's IPv6 egress to the internet as narrow as the IPv4 one
    (issue 20: without it a policy engine that enforces IPv6 would either deny IPv6
    entirely or, written as ``::/0``, admit the pods' own fc00::/7 and fe80::/10 peers).
    """
    cluster = (site.cluster.pod_cidr, site.cluster.service_cidr)
    out = []
    for everything, private in (("0.0.0.0/0", PRIVATE_RANGES), ("::/0", PRIVATE_RANGES_V6)):
        version = ipaddress.ip_network(everything).version
        excepts: list[str] = []
        for cidr in (*private, *cluster):
            if ipaddress.ip_network(cidr).version == version and cidr not in excepts:
                excepts.append(cidr)
        out.append({"ipBlock": {"cidr": everything, "except": excepts}})
    return out


def _policy(
    site: Site,
    name: str,
    edge: str,
    component: Component,
    ingress: list[dict[str, Any]] | None = None,
    egress: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"podSelector": {"matchLabels": selector(site, component)}}
    types = []
    if ingress is not None:
        types.append("Ingress")
        spec["ingress"] = ingress
    if egress is not None:
        types.append("Egress")
        spec["egress"] = egress
    spec["policyTypes"] = types
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(site, name, component, annotations={ANNOTATION_EDGE: edge}),
        "spec": spec,
    }


def default_deny(site: Site) -> dict[str, Any]:
    """Deny all ingress and egress of every pod of this site (the edges add back).

    Its component label is ``homepod`` (the pods it exists for); it selects all three.
    """
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(
            site, "mlab-default-deny", "homepod",
            annotations={ANNOTATION_EDGE: "default deny: every MLab pod, ingress and egress"},
        ),
        "spec": {
            "podSelector": {"matchLabels": {LABEL_NAME: "mlab", LABEL_INSTANCE: site.name}},
            "policyTypes": ["Ingress", "Egress"],
        },
    }


def _ports_text(ports: list[int]) -> str:
    return " ".join(f":{p}" for p in ports)


def proxy_policies(site: Site) -> list[dict[str, Any]]:
    """Egress to the site's HTTP proxy (``airlock.proxy.cidrs``) on the proxy URLs' ports,
    for the Airlock and the code service; nothing when no proxy address is given."""
    proxy = site.airlock.proxy
    if not proxy.cidrs or not proxy.ports():
        return []
    peers = [{"ipBlock": {"cidr": c}} for c in proxy.cidrs]
    ports = _tcp(proxy.ports())
    edge = f"--> proxy {' '.join(proxy.cidrs)} {_ports_text(proxy.ports())}"
    out = []
    if site.airlock.enabled:
        out.append(_policy(site, "airlock-to-proxy", f"airlock {edge}", "airlock",
                           egress=[{"to": peers, "ports": ports}]))
    out.append(_policy(site, "code-service-to-proxy", f"code-service {edge}", "code-service",
                       egress=[{"to": peers, "ports": ports}]))
    return out


def _direct_desktops(site: Site) -> bool:
    """Offices reach HomePods' VNC, RDP and noVNC ports (false only when an enabled portal
    is the sole door to desktops)."""
    return not (site.portal.enabled and not site.portal.direct_desktop_ports)


def render_network(site: Site) -> list[dict[str, Any]]:
    """Every NetworkPolicy of the site, default deny first."""
    office = _office(site)
    out = [default_deny(site)]
    if office:
        # portal.directDesktopPorts false: offices keep SSH; desktops go through the portal.
        homepod_in = HOMEPOD_IN if _direct_desktops(site) else [PORT_SSH]
        out.append(_policy(
            site, "homepod-from-office", f"office --> homepod {_ports_text(homepod_in)}",
            "homepod", ingress=[{"from": office, "ports": _tcp(homepod_in)}],
        ))
    out.append(_policy(
        site, "homepod-to-code-service", f"homepod --> code-service :{PORT_CODE}", "homepod",
        egress=[{"to": [_pods(site, "code-service")], "ports": _tcp([PORT_CODE])}],
    ))
    if site.dns == "cluster":
        out.append(_policy(
            site, "homepod-to-dns", "homepod --> kube-dns :53/udp :53/tcp (dns: cluster)",
            "homepod", egress=[{"to": [_kube_dns(site)], "ports": _dns_ports()}],
        ))
    if site.airlock.enabled:
        if office:
            out.append(_policy(
                site, "airlock-from-office", f"office --> airlock {_ports_text(AIRLOCK_IN)}",
                "airlock", ingress=[{"from": office, "ports": _tcp(AIRLOCK_IN)}],
            ))
        out += [
            _policy(
                site, "airlock-to-internet",
                "airlock --> internet (not private, link-local or cluster ranges)", "airlock",
                egress=[{"to": internet(site)}],
            ),
            _policy(
                site, "airlock-to-dns", "airlock --> kube-dns :53/udp :53/tcp", "airlock",
                egress=[{"to": [_kube_dns(site)], "ports": _dns_ports()}],
            ),
            _policy(
                site, "airlock-to-code-service", f"airlock --> code-service :{PORT_CODE}",
                "airlock",
                egress=[{"to": [_pods(site, "code-service")], "ports": _tcp([PORT_CODE])}],
            ),
        ]
    out += proxy_policies(site)
    out.append(_policy(
        site, "code-service-from-homepods", f"homepod --> code-service :{PORT_CODE}",
        "code-service",
        ingress=[{"from": [_pods(site, "homepod")], "ports": _tcp([PORT_CODE])}],
    ))
    if site.airlock.enabled:
        out.append(_policy(
            site, "code-service-from-airlock", f"airlock --> code-service :{PORT_CODE}",
            "code-service",
            ingress=[{"from": [_pods(site, "airlock")], "ports": _tcp([PORT_CODE])}],
        ))
    if office:
        out.append(_policy(
            site, "code-service-from-office", f"office --> code-service :{PORT_CODE}",
            "code-service", ingress=[{"from": office, "ports": _tcp([PORT_CODE])}],
        ))
    out += [
        _policy(
            site, "code-service-to-internet",
            "code-service --> internet (not private, link-local or cluster ranges)",
            "code-service", egress=[{"to": internet(site)}],
        ),
        _policy(
            site, "code-service-to-dns", "code-service --> kube-dns :53/udp :53/tcp",
            "code-service", egress=[{"to": [_kube_dns(site)], "ports": _dns_ports()}],
        ),
    ]
    return out
