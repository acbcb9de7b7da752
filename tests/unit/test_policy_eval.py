"""The NetworkPolicy evaluator on the rendered policies of examples/local.yaml (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlab.render import render_site
from mlab.render.common import labels
from mlab.site import load_site
from mlab.verify import kube_matrix as km
from mlab.verify.policy_eval import Endpoint, allowed, match_selector

ROOT = Path(__file__).resolve().parents[2]
SITE = load_site(ROOT / "examples" / "local.yaml")
POLICIES = render_site(SITE).files["network.yaml"]
NS = SITE.namespace
HOME_A = Endpoint("10.244.0.10", NS, labels(SITE, "homepod", "alice"))
HOME_B = Endpoint("10.244.0.11", NS, labels(SITE, "homepod", "bob"))
AIRLOCK = Endpoint("10.244.0.12", NS, labels(SITE, "airlock"))
CODE = Endpoint("10.244.0.13", NS, labels(SITE, "code-service"))
OUTSIDER = Endpoint("10.244.0.14", NS, {"run": "x"})
DNS = Endpoint("10.244.0.2", "kube-system", dict(SITE.cluster.dns_labels))
INTERNET = Endpoint("151.101.0.223")


@pytest.mark.parametrize(("src", "dst", "port", "proto", "want"), [
    (HOME_A, CODE, 8080, "TCP", True),
    (HOME_A, CODE, 22, "TCP", False),
    (HOME_A, HOME_B, 5900, "TCP", False),
    (HOME_A, AIRLOCK, 22, "TCP", False),
    (HOME_A, INTERNET, 443, "TCP", False),
    (HOME_A, DNS, 53, "UDP", SITE.dns == "cluster"),
    (HOME_A, Endpoint("169.254.169.254"), 80, "TCP", False),
    (AIRLOCK, CODE, 8080, "TCP", True),
    (AIRLOCK, INTERNET, 443, "TCP", True),
    (AIRLOCK, DNS, 53, "UDP", True),
    (AIRLOCK, DNS, 53, "TCP", True),
    (AIRLOCK, HOME_A, 5900, "TCP", False),
    (AIRLOCK, Endpoint("10.0.0.1"), 443, "TCP", False),
    (AIRLOCK, Endpoint("192.168.1.1"), 443, "TCP", False),
    (AIRLOCK, Endpoint("169.254.169.254"), 80, "TCP", False),
    (CODE, INTERNET, 443, "TCP", True),
    (OUTSIDER, CODE, 8080, "TCP", False),
    (OUTSIDER, HOME_A, 22, "TCP", False),
    (OUTSIDER, INTERNET, 443, "TCP", True),
])
def test_rendered_policies(src: Endpoint, dst: Endpoint, port: int, proto: str,
                           want: bool) -> None:
    ok, why = allowed(POLICIES, src, dst, port, proto)
    assert ok is want, why


def test_deleting_one_policy_denies_exactly_its_edge() -> None:
    without = [p for p in POLICIES if p["metadata"]["name"] != "code-service-from-homepods"]
    assert allowed(without, HOME_A, CODE, 8080)[0] is False
    assert "ingress isolated" in allowed(without, HOME_A, CODE, 8080)[1]
    assert allowed(without, AIRLOCK, CODE, 8080)[0] is True


def test_allow_all_egress_opens_the_internet_for_homepods() -> None:
    extra = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
             "metadata": {"name": "allow-all", "namespace": NS},
             "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]}}
    assert allowed([*POLICIES, extra], HOME_A, INTERNET, 443) == (True, "egress allow-all")


def test_selectors() -> None:
    assert match_selector({}, {"a": "1"})
    assert not match_selector(None, {"a": "1"})
    expr = {"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "2"]},
                                 {"key": "b", "operator": "DoesNotExist"}]}
    assert match_selector(expr, {"a": "2"})
    assert not match_selector(expr, {"a": "2", "b": ""})
    assert not match_selector(expr, {"a": "3"})


def _facts() -> km.ClusterFacts:
    pods = {"homepod-alice": ("a", "homepod", HOME_A.ip, HOME_A.labels),
            "homepod-bob": ("b", "homepod", HOME_B.ip, HOME_B.labels),
            "airlock": ("l", "airlock", AIRLOCK.ip, AIRLOCK.labels),
            "code-service": ("c", "code-service", CODE.ip, CODE.labels)}
    return km.ClusterFacts(NS, pods, SITE.code_service.host, "10.96.0.10", DNS, "10.96.0.1",
                           ("192.0.2.2", 6443), "192.0.2.2", INTERNET.ip, "9.9.9.9", INTERNET.ip)


def test_matrix_covers_every_denied_class_and_every_allowed_edge() -> None:
    facts = _facts()
    src = km.Source("probe-homepod", "p", "probe", "homepod", HOME_A)
    air = km.Source("probe-airlock", "q", "probe", "airlock", AIRLOCK)
    probes = km.matrix(POLICIES, facts, [src, air])
    home = {p.target: p.expected for p in probes if p.source is src}
    assert home["code service http://code.mlab.local/"] is True
    for denied in ("internet by IP 151.101.0.223:443", "DNS via outside resolver 9.9.9.9",
                   "metadata 169.254.169.254:80", "kubernetes.default 10.96.0.1:443",
                   "API server endpoint 192.0.2.2:6443", "node 192.0.2.2:10250 (kubelet)",
                   "airlock :22", "homepod-bob :5900", "code service :22 (other port)"):
        assert home[denied] is False, denied
    lock = {p.target: p.expected for p in probes if p.source is air}
    assert lock["Debian mirror over HTTP (151.101.0.223)"] is True
    assert lock["homepod-alice :5900"] is False
    assert lock["DNS via kube-dns 10.96.0.10"] is True


def test_probe_pod_has_the_template_labels_and_is_never_ready() -> None:
    tpl = next(o for o in render_site(SITE).objects() if o["kind"] == "Deployment"
               and o["metadata"]["name"].endswith("alice"))["spec"]["template"]
    pod = km.probe_pod(tpl, "p", NS, "homepod", "abcd", SITE.image.ref)
    want = {**tpl["metadata"]["labels"], km.VERIFY_LABEL: "homepod", km.RUN_LABEL: "abcd"}
    assert pod["metadata"]["labels"] == want
    assert pod["spec"]["containers"][0]["imagePullPolicy"] == "Never"
    assert pod["spec"]["containers"][0]["readinessProbe"]["exec"]["command"] == ["false"]
    assert pod["spec"]["hostAliases"] == tpl["spec"]["hostAliases"]


def test_documented_role_is_the_rendered_one() -> None:
    import re

    import yaml

    from mlab.probing.kube import verify_role

    text = (ROOT / "docs" / "verify.md").read_text()
    block = re.search(r"```yaml\n(kind: Role.*?|apiVersion: rbac.*?)```", text, re.S)
    assert block, "docs/verify.md has no Role block"
    documented = yaml.safe_load(block.group(1))
    assert documented["rules"] == verify_role(SITE)["rules"]
    assert documented["kind"] == "Role"  # namespace-scoped, never a ClusterRole


def test_junit_and_json_rows() -> None:
    from xml.etree import ElementTree as ET

    from mlab.probing.kube import KResult, junit, to_json

    src = km.Source("probe-homepod", "p", "probe", "homepod", HOME_A)
    good = KResult(km.KProbe(src, "code service", "http", "h", 0, True, "egress x"), True,
                   "HTTP 401")
    bad = KResult(km.KProbe(src, "metadata", "tcp", "m", 80, False, "source egress isolated"),
                  True, "connected")
    rows = to_json([good, bad])
    assert [r["ok"] for r in rows] == [True, False]
    assert rows[1]["edge"] == "probe-homepod --> metadata"
    assert rows[1]["observed"] == "allowed" and rows[1]["expected"] == "blocked"
    suite = ET.fromstring(junit([good, bad], 1.5))
    assert suite.get("tests") == "2" and suite.get("failures") == "1"
    failure = suite.findall("testcase")[1].find("failure")
    assert failure is not None and "expected blocked" in failure.get("message", "")


def test_cluster_matrix_binds_every_check_of_the_topology() -> None:
    """The cluster verify probes the same matrix as the podman one (mlab.topology.checks):
    every check from a source it has (HomePod, Airlock, code service, outsider) has a probe,
    and each probe's expectation from the policies equals the check's, except at the node's
    TEST-NET address (docs/verify.md: not a private range, so the Airlock reaches it)."""
    from mlab.render.network import site_facts
    from mlab.topology import checks

    facts = _facts()
    words = site_facts(SITE)
    sources = [km.Source("probe-homepod", "p", "probe", "homepod", HOME_A),
               km.Source("probe-airlock", "q", "probe", "airlock", AIRLOCK),
               km.Source("probe-outsider", "o", "probe", "outsider",
                         Endpoint("10.244.0.77", NS, {})),
               km.source_for(facts, "code-service", "code-service", "", "")]
    probes = km.matrix(POLICIES, facts, sources, words)
    wanted = {c.name: c for c in checks(words) if c.source != "office"
              and c.destination != "proxy"}
    assert {p.check for p in probes} == set(wanted)
    for p in probes:
        if "192.0.2.2" in p.target or p.target.startswith("kubernetes.default"):
            continue  # the API server and kubelet at 192.0.2.2
        assert p.expected is wanted[p.check].expected, (p.source.name, p.target, p.reason)
        # An allowed edge counts only when the service answers in its protocol.
        assert not (p.expected and p.kind == "tcp"), p.target


def test_office_ingress_probes_every_exposed_port() -> None:
    """office PC --> every port the site's Services expose (ClusterIP, externalIPs, NodePort),
    in the service's own protocol, expected from the office edges."""
    from mlab.render.network import site_facts

    services = [o for o in render_site(SITE).objects() if o["kind"] == "Service"]
    for i, svc in enumerate(services):
        svc["spec"]["clusterIP"] = f"10.96.1.{i + 1}"
    services[0]["spec"].update(type="NodePort", externalIPs=["192.0.2.9"])
    services[0]["spec"]["ports"][0]["nodePort"] = 30080
    probes = km.office_matrix(services, "192.0.2.2", site_facts(SITE))
    rows = {p.target: p for p in probes}
    assert all(p.source.role == "office" and p.expected for p in probes)
    alice = {t.split()[1]: p.kind for t, p in rows.items() if t.startswith("homepod-alice")}
    assert alice == {"vnc": "rfb", "rdp": "rdp", "novnc": "novnc", "ssh": "ssh"}
    code = [p for p in probes if p.check == "office --> code-service :8080"]
    assert {p.host for p in code} >= {"http://192.0.2.9:80/", "http://192.0.2.2:30080/"}
    assert all(p.kind == "http" for p in code)
    assert {p.check for p in probes} == {"office --> code-service :8080",
                                         "office --> airlock :22", "office --> airlock :7030",
                                         "office --> airlock :5900", "office --> homepod :5900",
                                         "office --> homepod :3389", "office --> homepod :7030",
                                         "office --> homepod :22"}


def test_office_ingress_with_tls_speaks_tls() -> None:
    """With ``tls`` the office probes the code service's HTTPS port (allowed) and its plain
    HTTP port (blocked by the office edge), and noVNC over TLS."""
    from mlab.render.network import site_facts
    from mlab.site import Tls

    site = SITE.model_copy(update={"tls": Tls(mode="site-ca")})
    services = [o for o in render_site(site).objects() if o["kind"] == "Service"]
    for i, svc in enumerate(services):
        svc["spec"]["clusterIP"] = f"10.96.1.{i + 1}"
    probes = km.office_matrix(services, "", site_facts(site))
    ip = next(s["spec"]["clusterIP"] for s in services if s["metadata"]["name"] == "code-service")
    code = {(p.host, p.expected, p.check) for p in probes if "code-service" in p.check}
    # The plain port's blocked office edge is not probed on the ClusterIP (no office
    # routes there; the node's own connections pass the policies): only where offices arrive.
    assert code == {(f"https://{ip}:443/", True, "office --> code-service :8443")}
    code_svc = next(s for s in services if s["metadata"]["name"] == "code-service")
    code_svc["spec"]["externalIPs"] = ["192.0.2.80"]
    probes = km.office_matrix(services, "", site_facts(site))
    code = {(p.host, p.expected, p.check) for p in probes if "code-service" in p.check}
    assert code == {(f"https://{ip}:443/", True, "office --> code-service :8443"),
                    ("https://192.0.2.80:443/", True, "office --> code-service :8443"),
                    ("http://192.0.2.80:80/", False, "office --> code-service :8080")}
    assert {p.kind for p in probes if p.target.split()[1] == "novnc"} == {"novnc-tls"}
