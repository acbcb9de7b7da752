"""The edge table (mlab.topology.EDGES) against the NetworkPolicies rendered for every example
site: each active edge has its policies and is allowed by the evaluator, each rendered edge
annotation is a row of the table, and each denied class is denied."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mlab.render import render_site
from mlab.render.common import ANNOTATION_EDGE, labels
from mlab.render.network import site_facts
from mlab.site import Site, load_site
from mlab.topology import DENIED, EDGES, PORT_DNS, Edge, checks, edge_active
from mlab.verify.policy_eval import Endpoint, allowed

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
PUBLIC = "151.101.0.223"
PEERS = {"metadata": "169.254.169.254", "private": "10.0.0.1", "internet": PUBLIC,
         "node": "10.0.0.2", "outside-dns": "203.0.113.53"}


def _facts(site: Site) -> set[str]:
    facts = set()
    if site.access.office_cidrs:
        facts.add("office")
    if site.airlock.enabled:
        facts.add("airlock")
    if site.portal.enabled:
        facts.add("portal")
        if site.portal.direct_desktop_ports:
            facts.add("direct-desktops")
    else:
        facts.add("direct-desktops")
    if site.dns == "cluster":
        facts.add("dns-cluster")
    if site.airlock.proxy.cidrs and site.airlock.proxy.ports():
        facts.add("proxy")
    if site.portal.enabled and site.portal.oidc is not None:
        facts.add("oidc")
    if site.portal.enabled and site.portal.wake:
        facts.add("wake")
    facts.add("tls" if site.tls.mode != "off" else "plain-http")
    return facts


def _endpoint(site: Site, who: str) -> Endpoint:
    if who in ("homepod", "airlock", "code-service", "portal"):
        user = site.users[0].name if who == "homepod" else None
        return Endpoint(f"10.244.9.{len(who)}", site.namespace, labels(site, who, user))  # type: ignore[arg-type]
    if who == "outsider":  # a pod of the namespace without MLab's labels
        return Endpoint("10.244.9.77", site.namespace, {})
    if who == "kube-dns":
        return Endpoint("10.244.9.99", site.cluster.dns_namespace, dict(site.cluster.dns_labels))
    if who == "office":
        return Endpoint(str(next(iter(_hosts(site.access.office_cidrs[0])))))
    if who == "proxy":
        return Endpoint(str(next(iter(_hosts(site.airlock.proxy.cidrs[0])))))
    if who == "identity-provider":
        assert site.portal.oidc is not None
        cidrs = site.portal.oidc.cidrs
        return Endpoint(str(next(iter(_hosts(cidrs[0])))) if cidrs else PUBLIC)
    if who == "api-server":
        return Endpoint(str(next(iter(_hosts(site.cluster.api_server_cidrs[0])))))
    return Endpoint(PEERS[who])


def _hosts(cidr: str):  # type: ignore[no-untyped-def]
    import ipaddress

    net = ipaddress.ip_network(cidr)
    return net.hosts() if net.num_addresses > 1 else iter([net.network_address])


def _ports(site: Site, edge: Edge) -> list[tuple[int, str]]:
    if edge.destination == "kube-dns":
        return [(PORT_DNS, "UDP"), (PORT_DNS, "TCP")]
    if edge.destination == "proxy":
        return [(p, "TCP") for p in site.airlock.proxy.ports()]
    if edge.destination == "internet":
        return [(443, "TCP")]
    if edge.destination == "identity-provider":
        assert site.portal.oidc is not None
        return [(site.portal.oidc.issuer_port, "TCP")]
    if edge.destination == "api-server":
        return [(site.cluster.api_server_port, "TCP")]
    return [(p, "TCP") for p in edge.ports]


def _edge_words(text: str) -> tuple[str, str]:
    """(source, destination) of a policy's ``mlab.io/edge`` annotation."""
    m = re.match(r"(\S+) (?:\S+ )?--> (\S+)", text)
    assert m, f"edge annotation {text!r} has no 'source --> destination'"
    dest = m.group(2)
    return m.group(1), dest


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_active_edge_is_allowed(path: Path) -> None:
    site = load_site(path)
    policies = render_site(site).files["network.yaml"]
    facts = _facts(site)
    active = [e for e in EDGES if edge_active(e, facts)]
    assert active, "no edge is active"
    for edge in active:
        src, dst = _endpoint(site, edge.source), _endpoint(site, edge.destination)
        for port, proto in _ports(site, edge):
            ok, why = allowed(policies, src, dst, port, proto)
            assert ok, f"{path.stem}: {edge} port {port}/{proto} is denied: {why}"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_denied_class_is_denied(path: Path) -> None:
    site = load_site(path)
    policies = render_site(site).files["network.yaml"]
    for source, dest, port in DENIED:
        if "airlock" in (source, dest) and not site.airlock.enabled:
            continue
        ok, why = allowed(policies, _endpoint(site, source), _endpoint(site, dest), port)
        assert not ok, f"{path.stem}: {source} --> {dest} :{port} is allowed: {why}"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_policy_is_a_table_edge(path: Path) -> None:
    site = load_site(path)
    facts = _facts(site)
    table = {(e.source, e.destination) for e in EDGES if edge_active(e, facts)}
    for policy in render_site(site).files["network.yaml"]:
        text = policy["metadata"]["annotations"][ANNOTATION_EDGE]
        if text.startswith("default deny"):
            continue
        pair = _edge_words(text)
        if pair[1] == "proxy" and text.startswith(("airlock", "code-service")):
            assert (pair[0], "proxy") in table
            continue
        assert pair in table, f"{path.stem}: policy {policy['metadata']['name']} ({text}) " \
            "is no active row of mlab.topology.EDGES"


def test_removing_a_policy_breaks_its_edge() -> None:
    site = load_site(ROOT / "examples" / "local.yaml")
    policies = [p for p in render_site(site).files["network.yaml"]
                if p["metadata"]["name"] != "homepod-to-code-service"]
    edge = next(e for e in EDGES if (e.source, e.destination) == ("homepod", "code-service"))
    ok, _ = allowed(policies, _endpoint(site, "homepod"), _endpoint(site, "code-service"),
                    edge.ports[0])
    assert not ok


def test_identity_provider_on_the_internet_is_one_flat_peer_list() -> None:
    """portal.oidc without cidrs: egress to the internet ipBlocks (a flat peer list)."""
    import yaml

    raw = yaml.safe_load((ROOT / "examples" / "portal-cluster.yaml").read_text(encoding="utf-8"))
    raw["portal"]["oidc"].pop("cidrs", None)
    site = Site.model_validate(raw)
    policy = next(p for p in render_site(site).files["network.yaml"]
                  if p["metadata"]["name"] == "portal-to-identity-provider")
    peers = policy["spec"]["egress"][0]["to"]
    assert all(isinstance(p, dict) and "ipBlock" in p for p in peers), peers
    ok, why = allowed([policy], _endpoint(site, "portal"), Endpoint(PUBLIC), 443)
    assert ok, why


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_the_probe_matrix_holds_every_edge_and_denied_example(path: Path) -> None:
    """mlab.topology.checks (what both `mlab verify` engines probe): each port of each active
    edge allowed, each DENIED example blocked, and every check's expectation is what the
    rendered policies say (peers outside the cluster by a representative address)."""
    site = load_site(path)
    facts = site_facts(site)
    assert facts - {"always"} == _facts(site)
    rows = {c.name: c for c in checks(facts)}
    for edge in EDGES:
        if edge_active(edge, facts):
            for port in edge.ports or (0,):
                name = f"{edge.source} --> {edge.destination}" + (f" :{port}" if port else "")
                assert rows[name].expected, name
    for source, dest, port in DENIED:
        if "airlock" in (source, dest) and not site.airlock.enabled:
            continue
        assert not rows[f"{source} --> {dest} :{port}"].expected
    policies = render_site(site).files["network.yaml"]
    for check in rows.values():
        if check.destination in ("proxy", "internet") or not check.port:
            continue
        proto = "UDP" if check.destination == "kube-dns" else "TCP"
        ok, why = allowed(policies, _endpoint(site, check.source),
                          _endpoint(site, check.destination), check.port, proto)
        assert ok is check.expected, (path.stem, check.name, why)


def test_an_inactive_edge_is_a_blocked_check() -> None:
    """Portal as the only door to desktops: office --> homepod keeps :22 and loses the rest;
    dns: none: homepod --> kube-dns is probed and must be blocked."""
    rows = {c.name: c.expected for c in checks({"office", "portal", "airlock"})}
    assert rows["office --> homepod :22"] and not rows["office --> homepod :5900"]
    assert rows["homepod --> kube-dns :53"] is False
    assert "airlock --> proxy" not in rows  # no proxy: nothing to probe
