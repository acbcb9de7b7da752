"""NetworkPolicies: default deny for every MLab pod, then one policy per allowed edge.

Invariant: a connection is allowed only if it is an edge of the table
:data:`mlab.topology.EDGES` (source, destination, ports, condition), from which the policies
here are generated; each policy is annotated ``mlab.io/edge`` with its edge (dump_yaml writes
that as a comment), and tests/unit/test_topology.py holds the rendered policies to the table.
In short:

- office --> homepod :5900 :3389 :7030 :22;   office --> airlock :22 :7030 :5900
- homepod, airlock, office --> code-service :8080 (with ``tls``: :8443 only)
- homepod --> code-service :8080, :8443 with ``tls`` (and, only with ``dns: cluster``,
  kube-dns :53)
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
from typing import Any, cast

from mlab import topology
from mlab.render.common import (
    ANNOTATION_EDGE,
    LABEL_INSTANCE,
    LABEL_NAME,
    Component,
    metadata,
    selector,
)
from mlab.site import PRIVATE_RANGES, PRIVATE_RANGES_V6, Site

NS_LABEL = "kubernetes.io/metadata.name"


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


def site_facts(site: Site) -> set[str]:
    """The words of :attr:`mlab.topology.Edge.condition` that hold for ``site``."""
    facts = {"always"}
    if site.access.office_cidrs:
        facts.add("office")
    if site.airlock.enabled:
        facts.add("airlock")
    if site.portal.enabled:
        facts.add("portal")
    if site.direct_desktops:
        facts.add("direct-desktops")
    if site.dns == "cluster":
        facts.add("dns-cluster")
    if site.airlock.proxy.cidrs and site.airlock.proxy.ports():
        facts.add("proxy")
    if site.portal.enabled and site.portal.oidc is not None:
        facts.add("oidc")
    if site.portal.enabled and site.portal.wake:
        facts.add("wake")
    facts.add("tls" if site.tls.enabled else "plain-http")
    return facts


def _edge_text(site: Site, edge: topology.Edge) -> str:
    """The ``mlab.io/edge`` annotation of one table edge."""
    head = f"{edge.source} --> {edge.destination}"
    if edge.destination == "kube-dns":
        return head + " :53/udp :53/tcp" + (" (dns: cluster)" if edge.condition == "dns-cluster" else "")
    if edge.destination == "internet":
        return head + " (not private, link-local or cluster ranges)"
    if edge.destination == "identity-provider":
        oidc = site.portal.oidc
        assert oidc is not None
        where = " ".join(oidc.cidrs) if oidc.cidrs else "on the internet"
        return f"{head} {where} {_ports_text(_site_ports(site, edge))}"
    if edge.destination == "api-server":
        return (f"{head} {' '.join(site.cluster.api_server_cidrs)} "
                f"{_ports_text(_site_ports(site, edge))}")
    return f"{head} {_ports_text(list(edge.ports))}"


def _site_ports(site: Site, edge: topology.Edge) -> list[int]:
    """The TCP ports of an edge to a peer whose port the site gives (identity provider:
    the issuer's; API server: ``cluster.apiServerPort``), else the edge's own."""
    if edge.destination == "identity-provider" and site.portal.oidc is not None:
        return [site.portal.oidc.issuer_port]
    if edge.destination == "api-server":
        return [site.cluster.api_server_port]
    return list(edge.ports)


def _peers(site: Site, who: str) -> list[dict[str, Any]]:
    if who == "office":
        return _office(site)
    if who == "kube-dns":
        return [_kube_dns(site)]
    if who == "internet":
        return internet(site)
    if who == "identity-provider":
        oidc = site.portal.oidc
        assert oidc is not None
        return [{"ipBlock": {"cidr": c}} for c in oidc.cidrs] if oidc.cidrs else internet(site)
    if who == "api-server":
        return [{"ipBlock": {"cidr": c}} for c in site.cluster.api_server_cidrs]
    return [_pods(site, cast(Component, who))]


def _rule(site: Site, edge: topology.Edge, side: str) -> dict[str, Any]:
    rule: dict[str, Any] = {("to" if side == "egress" else "from"):
                            _peers(site, edge.destination if side == "egress" else edge.source)}
    if edge.destination == "kube-dns":
        rule["ports"] = _dns_ports()
    elif edge.destination != "internet":
        rule["ports"] = _tcp(_site_ports(site, edge))
    return rule


def edge_policies(site: Site, order: list[tuple[str, str, str, str]]) -> list[dict[str, Any]]:
    """The policies of the active table edges (:data:`mlab.topology.EDGES`), in ``order``.

    Args:
        site: the site (its facts pick the active edges, see :func:`site_facts`).
        order: (policy name, source, destination, ``egress`` or ``ingress``) rows; an
            egress policy selects the source's pods, an ingress one the destination's. A row
            whose edge is not active on the site renders nothing.

    Returns:
        New NetworkPolicy dicts, one per row with an active edge.
    """
    facts = site_facts(site)
    out = []
    for name, source, destination, side in order:
        edge = topology.active_edge(source, destination, facts)
        if edge is None:
            continue
        component = edge.source if side == "egress" else edge.destination
        rules = [_rule(site, edge, side)]
        out.append(_policy(site, name, _edge_text(site, edge), cast(Component, component),
                           **{side: rules}))
    return out


POLICIES_BEFORE_PROXY = [
    ("homepod-from-office", "office", "homepod", "ingress"),
    ("homepod-to-code-service", "homepod", "code-service", "egress"),
    ("homepod-to-dns", "homepod", "kube-dns", "egress"),
    ("airlock-from-office", "office", "airlock", "ingress"),
    ("airlock-to-internet", "airlock", "internet", "egress"),
    ("airlock-to-dns", "airlock", "kube-dns", "egress"),
    ("airlock-to-code-service", "airlock", "code-service", "egress"),
]
POLICIES_AFTER_PROXY = [
    ("code-service-from-homepods", "homepod", "code-service", "ingress"),
    ("code-service-from-airlock", "airlock", "code-service", "ingress"),
    ("code-service-from-office", "office", "code-service", "ingress"),
    ("code-service-to-internet", "code-service", "internet", "egress"),
    ("code-service-to-dns", "code-service", "kube-dns", "egress"),
]
"""The policies of :func:`render_network` around the proxy's (order kept for stable output)."""


def render_network(site: Site) -> list[dict[str, Any]]:
    """Every NetworkPolicy of the site, default deny first, then the table's edges."""
    return ([default_deny(site)] + edge_policies(site, POLICIES_BEFORE_PROXY)
            + proxy_policies(site) + edge_policies(site, POLICIES_AFTER_PROXY))
