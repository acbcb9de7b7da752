"""Build a network-config-analyzer (nca) scheme that proves MLab's edges for one site.

Every query is a NetworkPolicy that describes a set of connections; ``permits`` holds when
the rendered policies allow all of them, ``forbids`` when they allow none. nca only knows the
pods and namespaces it is given, so the pod list holds, beside one pod per rendered
Deployment, decoys that a too-broad selector would let through: a second user's HomePod, pods
with MLab's labels in another namespace, a look-alike kube-dns outside kube-system, and a
non-DNS pod in kube-system.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import yaml

from mlab.render import Rendered
from mlab.site import Site

NS = "kubernetes.io/metadata.name"
COMPONENT = "app.kubernetes.io/component"
USER = "mlab.io/user"
DECOY_NS = "other"


def _pod(name: str, namespace: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": {"containers": [{"name": "c", "image": "x"}]},
    }


def _ns(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {NS: name}}}


def pods_and_namespaces(site: Site, rendered: Rendered) -> tuple[list[dict], list[dict], str]:
    """Pods (rendered + decoys), namespaces, and the name of the decoy second user."""
    pods = []
    templates: dict[str, dict[str, str]] = {}
    for objs in rendered.files.values():
        for obj in objs:
            if obj["kind"] == "Deployment":
                labels = obj["spec"]["template"]["metadata"]["labels"]
                pods.append(_pod(obj["metadata"]["name"] + "-0", site.namespace, labels))
                templates.setdefault(labels[COMPONENT], labels)
    other_user = "zz-other-user"
    if "homepod" in templates:
        pods.append(_pod("homepod-other-0", site.namespace, {**templates["homepod"], USER: other_user}))
        pods.append(_pod("decoy-homepod", DECOY_NS, templates["homepod"]))
    for component, labels in templates.items():
        if component != "homepod":
            pods.append(_pod(f"decoy-{component}", DECOY_NS, labels))
    dns_labels = dict(site.cluster.dns_labels)
    pods.append(_pod("coredns-0", site.cluster.dns_namespace, dns_labels))
    pods.append(_pod("metrics-server-0", site.cluster.dns_namespace, {"k8s-app": "metrics-server"}))
    pods.append(_pod("fake-dns-0", DECOY_NS, dns_labels))
    names = sorted({site.namespace, site.cluster.dns_namespace, DECOY_NS})
    return pods, [_ns(n) for n in names], other_user


def _peer_pods(namespace: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {NS: namespace}},
            "podSelector": {"matchLabels": labels}}


def _all_ns_pods() -> dict[str, Any]:
    return {"namespaceSelector": {}, "podSelector": {}}


def _tcp(*ports: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": p} for p in ports]


def _ranges(proto: str, excluded: tuple[int, ...]) -> list[dict[str, Any]]:
    out = []
    start = 1
    for port in sorted(excluded):
        if port > start:
            out.append({"protocol": proto, "port": start, "endPort": port - 1})
        start = port + 1
    if start <= 65535:
        out.append({"protocol": proto, "port": start, "endPort": 65535})
    return out


def _all_but(*ports: int, udp: tuple[int, ...] = ()) -> list[dict[str, Any]]:
    """Every TCP port except ``ports``, every UDP port except ``udp``, every SCTP port."""
    return [*_ranges("TCP", ports), *_ranges("UDP", udp), *_ranges("SCTP", ())]


def _all_but_53() -> list[dict[str, Any]]:
    """Every TCP and UDP port except 53."""
    return [{"protocol": proto, "port": lo, "endPort": hi}
            for proto in ("TCP", "UDP") for lo, hi in ((1, 52), (54, 65535))]


def _ip(cidr: str) -> dict[str, Any]:
    return {"ipBlock": {"cidr": cidr}}


def queries(site: Site, other_user: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(name, ``permits``|``forbids``, query policy spec) for every edge check."""
    ns = site.namespace
    inst = "app.kubernetes.io/instance"
    homepods = {inst: site.name, COMPONENT: "homepod"}
    airlock = {inst: site.name, COMPONENT: "airlock"}
    code = {inst: site.name, COMPONENT: "code-service"}
    portal = {inst: site.name, COMPONENT: "portal"}
    portal_only = site.portal.enabled and not site.portal.direct_desktop_ports
    dns = dict(site.cluster.dns_labels)
    dns_ns = site.cluster.dns_namespace
    dns_ports = [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
    first_user = site.users[0].name if site.users else None

    def egress(sel: dict[str, str], peers: list[dict], ports: list[dict] | None = None) -> dict:
        rule: dict[str, Any] = {"to": peers}
        if ports:
            rule["ports"] = ports
        return {"podSelector": {"matchLabels": sel}, "policyTypes": ["Egress"], "egress": [rule]}

    def ingress(sel: dict[str, str], peers: list[dict], ports: list[dict] | None = None) -> dict:
        rule: dict[str, Any] = {"from": peers}
        if ports:
            rule["ports"] = ports
        return {"podSelector": {"matchLabels": sel}, "policyTypes": ["Ingress"], "ingress": [rule]}

    q: list[tuple[str, str, dict[str, Any]]] = []
    internet = ["8.8.8.8/32", "140.82.112.0/20", "2606:4700::/32"]
    # Dual-stack (issue 20): unique local and link-local IPv6 are private too, and NAT64
    # would name the private IPv4 ranges.
    private6 = [_ip("fc00::/7"), _ip("fe80::/10"), _ip("64:ff9b::/96")]
    private = []
    proxies = [ipaddress.ip_network(c) for c in site.airlock.proxy.cidrs]
    for cidr in ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.169.254/32",
                 site.cluster.pod_cidr, site.cluster.service_cidr]:
        net = ipaddress.ip_network(cidr)
        inner = [str(p) for p in proxies if p != net and p.subnet_of(net)]  # type: ignore[arg-type]
        private.append({"ipBlock": {"cidr": cidr, **({"except": inner} if inner else {})}})
    for i, cidr in enumerate(site.access.office_cidrs):
        office = [_ip(cidr)]
        if site.users:
            if portal_only:  # desktops through the portal alone; SSH stays open
                q.append((f"office{i}-to-homepod-22", "permits", ingress(homepods, office, _tcp(22))))
                q.append((f"office{i}-to-homepod-desktop-ports", "forbids",
                          ingress(homepods, office, _all_but(22))))
                q.append((f"office{i}-to-portal-8443", "permits", ingress(portal, office, _tcp(8443))))
                q.append((f"office{i}-to-portal-other-ports", "forbids",
                          ingress(portal, office, _all_but(8443))))
            else:
                q.append((f"office{i}-to-homepod-5900-3389-7030-22", "permits",
                          ingress(homepods, office, _tcp(5900, 3389, 7030, 22))))
                q.append((f"office{i}-to-homepod-other-ports", "forbids",
                          ingress(homepods, office, _all_but(5900, 3389, 7030, 22))))
        if site.airlock.enabled:
            q.append((f"office{i}-to-airlock-22-7030-5900", "permits",
                      ingress(airlock, office, _tcp(22, 7030, 5900))))
            q.append((f"office{i}-to-airlock-other-ports", "forbids",
                      ingress(airlock, office, _all_but(22, 7030, 5900))))
        q.append((f"office{i}-to-code-service-8080", "permits", ingress(code, office, _tcp(8080))))
        q.append((f"office{i}-to-code-service-other-ports", "forbids",
                  ingress(code, office, _all_but(8080))))
    q.append(("internet-to-anything", "forbids",
              ingress({inst: site.name}, [_ip("8.8.8.0/24"), _ip("1.0.0.0/8")])))
    if site.users:
        q += [
            ("homepod-to-code-service-8080", "permits",
             egress(homepods, [_peer_pods(ns, code)], _tcp(8080))),
            ("homepod-to-code-service-other-ports", "forbids",
             egress(homepods, [_peer_pods(ns, code)], _all_but(8080))),
            ("homepod-to-internet", "forbids", egress(homepods, [_ip("0.0.0.0/0")])),
            ("homepod-to-ipv6", "forbids", egress(homepods, [_ip("::/0")])),
            ("homepod-to-metadata-169.254.169.254", "forbids",
             egress(homepods, [_ip("169.254.169.254/32")])),
            ("homepod-to-airlock", "forbids", egress(homepods, [_peer_pods(ns, airlock)])),
            ("homepod-to-other-user-homepod", "forbids",
             egress({USER: first_user}, [_peer_pods(ns, {USER: other_user})])),
            ("other-user-homepod-to-homepod", "forbids",
             egress({USER: other_user}, [_peer_pods(ns, {USER: first_user})])),
            ("homepod-to-decoy-namespace", "forbids",
             egress(homepods, [_peer_pods(DECOY_NS, {})])),
            ("homepod-to-non-dns-kube-system", "forbids",
             egress(homepods, [_peer_pods(dns_ns, {"k8s-app": "metrics-server"})])),
        ]
        if site.dns == "cluster":
            q.append(("homepod-to-kube-dns-53", "permits",
                      egress(homepods, [_peer_pods(dns_ns, dns)], dns_ports)))
            q.append(("homepod-to-kube-dns-other-ports", "forbids",
                      egress(homepods, [_peer_pods(dns_ns, dns)], _all_but_53())))
        else:
            q.append(("homepod-to-kube-dns", "forbids", egress(homepods, [_peer_pods(dns_ns, dns)])))
    if site.airlock.enabled:
        q += [
            ("airlock-to-internet", "permits", egress(airlock, [_ip(c) for c in internet])),
            ("airlock-to-kube-dns-53", "permits",
             egress(airlock, [_peer_pods(dns_ns, dns)], dns_ports)),
            ("airlock-to-code-service-8080", "permits",
             egress(airlock, [_peer_pods(ns, code)], _tcp(8080))),
            ("airlock-to-private-and-metadata", "forbids", egress(airlock, private)),
            ("airlock-to-ipv6-private-and-link-local", "forbids", egress(airlock, private6)),
            ("airlock-to-homepod", "forbids", egress(airlock, [_peer_pods(ns, homepods)])),
            ("airlock-to-decoy-namespace", "forbids", egress(airlock, [_peer_pods(DECOY_NS, {})])),
            ("airlock-to-any-pod-but-code-and-dns", "forbids",
             egress(airlock, [_all_ns_pods()], _all_but(53, 8080, udp=(53,)))),
        ]
    proxy = site.airlock.proxy
    if proxy.cidrs and proxy.ports():
        peers = [_ip(c) for c in proxy.cidrs]
        q.append(("code-service-to-proxy", "permits", egress(code, peers, _tcp(*proxy.ports()))))
        if site.airlock.enabled:
            q.append(("airlock-to-proxy", "permits", egress(airlock, peers, _tcp(*proxy.ports()))))
            q.append(("airlock-to-proxy-other-ports", "forbids",
                      egress(airlock, peers, _all_but(*proxy.ports()))))
        if site.users:
            q.append(("homepod-to-proxy", "forbids", egress(homepods, peers)))
    q += [
        ("code-service-to-internet", "permits", egress(code, [_ip(c) for c in internet], _tcp(443))),
        ("code-service-to-kube-dns-53", "permits", egress(code, [_peer_pods(dns_ns, dns)], dns_ports)),
        ("code-service-to-private-and-metadata", "forbids", egress(code, private)),
        ("code-service-to-ipv6-private-and-link-local", "forbids", egress(code, private6)),
        ("code-service-to-homepod", "forbids", egress(code, [_peer_pods(ns, homepods)])),
        ("code-service-to-decoy-namespace", "forbids", egress(code, [_peer_pods(DECOY_NS, {})])),
        ("decoy-namespace-to-code-service", "forbids",
         egress({COMPONENT: "homepod"}, [_peer_pods(ns, code)])),
    ]
    if site.portal.enabled:
        q += [
            ("portal-to-homepod-5900", "permits", egress(portal, [_peer_pods(ns, homepods)], _tcp(5900))),
            ("portal-to-homepod-other-ports", "forbids",
             egress(portal, [_peer_pods(ns, homepods)], _all_but(5900))),
            ("portal-to-code-service-8080", "permits", egress(portal, [_peer_pods(ns, code)], _tcp(8080))),
            ("portal-to-code-service-other-ports", "forbids",
             egress(portal, [_peer_pods(ns, code)], _all_but(8080))),
            ("portal-to-airlock", "forbids", egress(portal, [_peer_pods(ns, airlock)])),
            ("homepod-to-portal", "forbids", egress(homepods, [_peer_pods(ns, portal)])),
            ("portal-to-decoy-namespace", "forbids", egress(portal, [_peer_pods(DECOY_NS, {})])),
            ("portal-to-kube-dns-53", "permits", egress(portal, [_peer_pods(dns_ns, dns)], dns_ports)),
        ]
        oidc = site.portal.oidc
        if oidc is not None and oidc.cidrs:
            q.append(("portal-to-identity-provider", "permits",
                      egress(portal, [_ip(c) for c in oidc.cidrs], _tcp(443))))
            q.append(("portal-to-internet", "forbids", egress(portal, [_ip("8.8.8.8/32")])))
        api = site.cluster.api_server_cidrs
        if site.portal.wake and api:
            port = site.cluster.api_server_port
            q.append(("portal-to-api-server", "permits",
                      egress(portal, [_ip(c) for c in api], _tcp(port))))
            q.append(("portal-to-api-server-other-ports", "forbids",
                      egress(portal, [_ip(c) for c in api], _all_but(port))))
            q.append(("homepod-to-api-server", "forbids",
                      egress(homepods, [_ip(c) for c in api])))
    return q


def write_scheme(site: Site, rendered: Rendered, workdir: Path) -> tuple[Path, dict[str, str]]:
    """Write the nca inputs and scheme under ``workdir``.

    Returns:
        (scheme path, query name to ``permits``/``forbids``).
    """
    pods, namespaces, other_user = pods_and_namespaces(site, rendered)
    (workdir / "policies").mkdir(parents=True)
    (workdir / "queries").mkdir()
    (workdir / "policies" / "network.yaml").write_text(
        yaml.safe_dump_all(rendered.files["network.yaml"]))
    (workdir / "pods.yaml").write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": pods}))
    (workdir / "namespaces.yaml").write_text(
        yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": namespaces}))
    configs: list[dict[str, Any]] = [{"name": "mlab", "networkPolicyList": ["policies/network.yaml"]}]
    query_list = []
    kinds: dict[str, str] = {}
    for name, kind, spec in queries(site, other_user):
        # the decoy-namespace source lives in DECOY_NS, every other query in the site's
        namespace = DECOY_NS if name.startswith("decoy-namespace") else site.namespace
        policy = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                  "metadata": {"name": name.replace(".", "-")[:63], "namespace": namespace},
                  "spec": spec}
        (workdir / "queries" / f"{name}.yaml").write_text(yaml.safe_dump(policy))
        configs.append({"name": f"q-{name}", "networkPolicyList": [f"queries/{name}.yaml"]})
        query_list.append({"name": name, kind: ["mlab", f"q-{name}"], "expected": 0})
        kinds[name] = kind
    scheme = {"namespaceList": "namespaces.yaml", "podList": "pods.yaml",
              "networkConfigList": configs, "queries": query_list}
    path = workdir / "scheme.yaml"
    path.write_text(yaml.safe_dump(scheme, sort_keys=False))
    return path, kinds
