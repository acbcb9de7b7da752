"""NetworkPolicy shape rules that nca cannot see: one commented policy per edge, peers that
AND a non-empty namespaceSelector with a podSelector, ipBlocks only for non-pod addresses."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlab.render import render_site
from mlab.site import load_site, parse_site

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_peers_and_comments(path: Path) -> None:
    site = load_site(path)
    rendered = render_site(site)
    policies = rendered.files["network.yaml"]
    assert policies[0]["metadata"]["name"] == "mlab-default-deny"
    docs = rendered.texts()["network.yaml"].split("\n---\n")[1:]
    assert len(docs) == len(policies)
    for doc, policy in zip(docs, policies):
        edge = policy["metadata"]["annotations"]["mlab.io/edge"]
        assert doc.startswith(f"# {edge}\n")
        spec = policy["spec"]
        rules = [*(r.get("from", []) for r in spec.get("ingress", [])),
                 *(r.get("to", []) for r in spec.get("egress", []))]
        assert len(spec.get("ingress", [])) + len(spec.get("egress", [])) <= 1, "one edge each"
        for peers in rules:
            for peer in peers:
                if "ipBlock" in peer:
                    assert set(peer) == {"ipBlock"}
                    continue
                assert set(peer) == {"namespaceSelector", "podSelector"}
                assert peer["namespaceSelector"]["matchLabels"], "empty namespaceSelector"
                assert peer["podSelector"]["matchLabels"], "empty podSelector"


def test_office_range_containing_the_cluster_is_carved_out() -> None:
    site = parse_site({"name": "s", "users": [{"name": "a"}],
                       "access": {"officeCIDRs": ["10.0.0.0/8", "192.168.1.0/24"]}})
    policy = next(p for p in render_site(site).files["network.yaml"]
                  if p["metadata"]["name"] == "homepod-from-office")
    blocks = [peer["ipBlock"] for peer in policy["spec"]["ingress"][0]["from"]]
    assert blocks == [{"cidr": "10.0.0.0/8", "except": ["10.244.0.0/16", "10.96.0.0/12"]},
                      {"cidr": "192.168.1.0/24"}]


def test_no_office_means_no_ingress_policy() -> None:
    site = parse_site({"name": "s", "users": [{"name": "a"}]})
    names = [p["metadata"]["name"] for p in render_site(site).files["network.yaml"]]
    assert "homepod-from-office" not in names and "homepod-to-code-service" in names
