"""The isolation probe matrix (pure): every edge of DESIGN.md from every source, with the
expected outcome, built from a translated plan. Running it is the e2e tests' job."""

from __future__ import annotations

from collections import Counter

from site_kit import LOCAL_SITE, fixed_passwords, translate_fixed

from mlab.podman.plan_file import PlanFile, PodRecord
from mlab.render import render_site
from mlab.site import Tls, load_site
from mlab.tls import Issued, SiteTls, holders
from mlab.verify.matrix import HostFacts, Probe, Result, matrix, to_json

FACTS = HostFacts(listener_port=40000, host_ip="192.0.2.2", internet_ip="203.0.113.80",
                  resolvers=("10.255.255.53",))


def _matrix(tls: bool = False) -> list[Probe]:
    site = load_site(LOCAL_SITE)
    if tls:
        site = site.model_copy(update={"tls": Tls(mode="site-ca")})
        fake = Issued("CERT", "KEY")
        rendered = render_site(site, fixed_passwords(site),
                               SiteTls("CA", {h: fake for h in holders(site)}))
        plan = translate_fixed(site, rendered=rendered)
    else:
        plan = translate_fixed(site)
    return matrix(PlanFile.of(plan), FACTS, site.code_service.host, site.airlock.user)


def test_homepods_reach_the_code_service_and_nothing_else() -> None:
    probes = _matrix()
    for user in ("alice", "bob"):
        mine = [p for p in probes if p.source == f"homepod-{user}"]
        allowed = [p.target for p in mine if p.expected]
        assert allowed == ["code service code.mlab.local:80", "code service code.mlab.local:8080"]
        assert [p.host for p in mine if p.expected] == [
            "http://code.mlab.local/", "http://code.mlab.local:8080/"]
        targets = " | ".join(p.target for p in mine)
        for needle in ("code service :22", "code service :443", "code service :9418",
                       "airlock :22", "airlock :7030", ":5900",
                       "via gateway 10.89.", "via host address 192.0.2.2",
                       "internet by IP (pypi.org = 203.0.113.80)", "internet by name",
                       "metadata 169.254.169.254", "DNS query via gateway",
                       "DNS query via host resolver 10.255.255.53", "write to the share"):
            assert needle in targets, (user, needle)
        other = "bob" if user == "alice" else "alice"
        assert {p.port for p in mine if p.target.startswith(f"homepod-{other}")} == {5900, 22}
        assert all(p.container == f"mlab-local-homepod-{user}-homepod" for p in mine)


def test_airlock_reaches_pypi_debian_and_the_code_service_only() -> None:
    mine = [p for p in _matrix() if p.source == "airlock"]
    allowed = sorted(p.target for p in mine if p.expected)
    assert allowed == ["Debian mirror over HTTP", "PyPI over HTTPS",
                       "code service code.mlab.local:80",
                       "code service code.mlab.local:8080",
                       "internet by name (pypi.org)",
                       "write to the share /opt/public/airlock as airlock"]
    write = next(p for p in mine if p.kind == "write")
    assert write.user == "airlock", "root would hide a wrong owner of the share"
    blocked = Counter(p.target.split(" :")[0] for p in mine if not p.expected)
    assert blocked["homepod-alice"] == 2 and blocked["homepod-bob"] == 2


def test_host_reaches_every_published_port() -> None:
    every = [p for p in _matrix() if p.source == "host"]
    # The code service's other scheme, tried on its published port, must not answer.
    assert [(p.host, p.expected) for p in every if not p.expected] == [
        ("https://127.0.0.1:80/", False)]
    host = [p for p in every if p.expected]
    assert all(p.host in ("127.0.0.1", "http://127.0.0.1:80/") for p in host)
    # Each published port is checked in its own protocol: a TCP connect proves nothing.
    assert {(p.target.split()[1], p.kind) for p in host} == {
        ("vnc", "rfb"), ("rdp", "rdp"), ("novnc", "novnc"), ("ssh", "ssh"), ("http", "http")}
    assert sorted(p.port for p in host) == sorted(
        [80, 10022, 15900, 17030, 15901, 13389, 17031, 12201, 15902, 13390, 17032, 12202])


def test_with_tls_the_office_reaches_https_and_plain_http_must_not_answer() -> None:
    """tls.mode site-ca: the code service publishes only 443 (HTTPS), noVNC is probed over
    TLS, and plain HTTP to the HTTPS port is a probe that must find no answer."""
    host = [p for p in _matrix(tls=True) if p.source == "host"]
    code = [(p.host, p.expected, p.edge) for p in host if "code" in p.target]
    assert code == [("https://127.0.0.1:443/", True, "office --> code-service :8443"),
                    ("http://127.0.0.1:443/", False, "office --> code-service :8080")]
    assert {p.kind for p in host if p.target.split()[1] == "novnc"} == {"novnc-tls"}
    assert 80 not in {p.port for p in host}


def test_with_tls_homepods_reach_the_code_service_on_https_only() -> None:
    """tls.mode site-ca: a HomePod's allowed probes are the code service's HTTPS URL (the
    Service's 443) and its HTTPS port; the plain ones (80, 8080) must be blocked; the
    HomePod network's 443 is the Service itself under podman, so no "other port" probe."""
    for user in ("alice", "bob"):
        mine = [p for p in _matrix(tls=True) if p.source == f"homepod-{user}"]
        assert [(p.host, p.edge) for p in mine if p.expected] == [
            ("https://code.mlab.local/", "homepod --> code-service :8443"),
            ("https://code.mlab.local:8443/", "homepod --> code-service :8443")]
        plain = [(p.host, p.expected) for p in mine if p.edge == "homepod --> code-service :8080"]
        assert plain == [("http://code.mlab.local/", False),
                         ("http://code.mlab.local:8080/", False)]
        assert not [p for p in mine if p.port == 443 and "code service" in p.target]


def test_results_as_json() -> None:
    probe = Probe("homepod-alice", "c", "metadata", "tcp", "169.254.169.254", 80, False)
    assert to_json([Result(probe, True, "connected")]) == [{
        "source": "homepod-alice", "target": "metadata", "kind": "tcp", "edge": "",
        "expected": "blocked", "observed": "allowed", "ok": False, "detail": "connected"}]


def test_podman_expectations_agree_with_the_rendered_policies(local_rendered) -> None:
    """The podman matrix's hand-set expectations for pod and internet edges equal what the
    NetworkPolicy evaluator (the cluster verify's source of truth) says about network.yaml."""
    from mlab.render.common import labels
    from mlab.verify.policy_eval import Endpoint, allowed

    site, rendered = local_rendered
    policies = rendered.files["network.yaml"]
    plan = PlanFile.of(translate_fixed(site, rendered=rendered))
    ns = site.namespace

    def end(pod: PodRecord) -> Endpoint:
        return Endpoint(pod.networks[0][1], ns, labels(site, pod.component, pod.user or None))

    by_ip = {net[1]: end(p) for p in plan.pods for net in p.networks}
    code = plan.first("code-service")
    code_end = Endpoint("10.244.0.99", ns, labels(site, "code-service"))
    for net in plan.networks:
        if net.code_ip:
            by_ip[net.code_ip] = code_end
    sources = {f"homepod-{p.user}" if p.component == "homepod" else p.component: p
               for p in plan.pods}
    checked = 0
    for probe in _matrix():
        if probe.source not in sources or probe.kind == "write":
            continue
        dest, port = None, probe.port
        if probe.kind == "http" and site.code_service.host in probe.host:
            dest, port = code_end, 8443 if probe.host.startswith("https:") else 8080
        elif probe.host in by_ip:
            dest = by_ip[probe.host]
        elif probe.host in (FACTS.internet_ip, "169.254.169.254"):
            dest = Endpoint(probe.host)
        if dest is None:
            continue  # host-level targets (gateway, host listener, resolvers): podman only
        want, why = allowed(policies, end(sources[probe.source]), dest, port)
        assert probe.expected is want, (probe.source, probe.target, why)
        checked += 1
    assert checked >= 25, checked  # 29 with examples/local.yaml
    assert code  # the site has a code service pod


def test_every_check_of_the_topology_has_a_probe(local_rendered) -> None:
    """One matrix: every check of mlab.topology.checks (each edge of EDGES, each DENIED
    example) whose source the podman engine has is probed with the check's expectation,
    and every network probe stands for a check."""
    from mlab.topology import checks
    from mlab.verify.matrix import podman_facts

    site, rendered = local_rendered
    plan = PlanFile.of(translate_fixed(site, rendered=rendered))
    probes = _matrix()
    wanted = {c.name: c for c in checks(podman_facts(plan))
              if c.source in ("homepod", "airlock", "code-service", "office")
              and c.destination != "proxy"}
    assert "homepod --> code-service :8080" in wanted and "office --> homepod :3389" in wanted
    seen = {p.edge for p in probes}
    missing = sorted(set(wanted) - seen)
    assert not missing, missing
    for p in probes:
        if p.kind == "write":
            continue
        assert p.edge in wanted, (p.source, p.target, p.edge)
        assert p.expected is wanted[p.edge].expected, (p.target, p.edge)
    # An allowed edge counts only when the service answers in its protocol (never "tcp").
    assert not [p.target for p in probes if p.expected and p.kind == "tcp"]
