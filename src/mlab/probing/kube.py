"""``mlab verify`` on a Kubernetes cluster: probe pods, a canary, the matrix, cleanup.

Order: read the site's pods and addresses; create the probe pods (HomePod, Airlock,
outsider, canary: :func:`mlab.verify.kube_matrix.probe_pod`) labelled with this run's id;
the canary (a policy denying the canary pod's egress must stop its DNS query, else the CNI
does not enforce NetworkPolicies and nothing else is worth running); then the matrix from
the probe pods and the real pods, one ``kubectl exec ... python3 -c`` per source, all
concurrently. Probe pods and the canary policy are deleted in ``finally`` (also on Ctrl-C and
SIGTERM, which the CLI turns into KeyboardInterrupt); a pod a killed run leaves behind dies
by its activeDeadlineSeconds. Needs only the namespace-scoped Role of :func:`verify_role`.
"""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from mlab.deploy.kubernetes import Kubectl
from mlab.errors import DeployError, MlabError
from mlab.probing import kube_link
from mlab.probing.podman import PROBE_PROGRAM, host_facts
from mlab.render import render_site
from mlab.render.common import LABEL_INSTANCE
from mlab.render.network import site_facts
from mlab.site import Site
from mlab.verify import kube_matrix as km
from mlab.verify.matrix import DEBIAN_URL, HTTP_TIMEOUT, TCP_TIMEOUT, observed
from mlab.verify.policy_eval import Endpoint

CANARY_WAIT = 30.0
"""Seconds the canary policy gets to take effect."""
POD_START_TIMEOUT = 180.0


class NotEnforced(MlabError):
    """The canary got through: the cluster does not enforce NetworkPolicies."""


@dataclass(frozen=True)
class KResult:
    """A probe and what it observed."""

    probe: km.KProbe
    observed: bool
    detail: str

    @property
    def ok(self) -> bool:
        """True when observed equals expected."""
        return self.observed == self.probe.expected


def verify_role(site: Site) -> dict[str, Any]:
    """The Role ``mlab verify`` needs in the site's namespace (nothing cluster-wide).

    Reading kube-system's DNS pods and ``default/endpoints/kubernetes`` is optional (two
    more probes when allowed); the site's Services give the office ingress probes.
    """
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "mlab-verify", "namespace": site.namespace},
            "rules": [
                {"apiGroups": [""], "resources": ["pods"],
                 "verbs": ["get", "list", "watch", "create", "delete", "deletecollection"]},
                {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]},
                {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list"]},
                {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"],
                 "verbs": ["get", "list", "create", "delete", "deletecollection"]},
            ]}


def _templates(site: Site) -> dict[str, dict[str, Any]]:
    out = {}
    for obj in render_site(site).objects():
        if obj["kind"] == "Deployment":
            labels = obj["spec"]["template"]["metadata"]["labels"]
            key, _ = km.role_of(labels)
            out[key] = obj["spec"]["template"]
    return out


def _try_json(kubectl: Kubectl, args: list[str]) -> dict[str, Any]:
    try:
        return kubectl.get_json(args)
    except DeployError:
        return {}


def read_facts(kubectl: Kubectl, site: Site) -> km.ClusterFacts:
    """The site's running pods and the cluster's addresses."""
    ns = site.namespace
    pods = kubectl.get_json(["pods", "-n", ns, "-l", f"{LABEL_INSTANCE}={site.name}"])
    found: dict[str, tuple[str, str, str, dict[str, str]]] = {}
    node_ip = ""
    for pod in pods.get("items", []):
        labels = pod["metadata"].get("labels", {})
        if km.VERIFY_LABEL in labels or pod["status"].get("phase") != "Running" \
                or pod["metadata"].get("deletionTimestamp"):
            continue
        key, _ = km.role_of(labels)
        found[key] = (pod["metadata"]["name"], pod["spec"]["containers"][0]["name"],
                      pod["status"].get("podIP", ""), labels)
        node_ip = node_ip or pod["status"].get("hostIP", "")
    if not found:
        raise MlabError(f"site {site.name}: no running pod in namespace {ns}",
                        hint="run `mlab apply --site FILE` first")
    dns_ns, dns_labels = site.cluster.dns_namespace, dict(site.cluster.dns_labels)
    dns_ip, dns_pod_ip = "", ""
    sel = ",".join(f"{k}={v}" for k, v in dns_labels.items())
    for svc in _try_json(kubectl, ["services", "-n", dns_ns]).get("items", []):
        want = svc["spec"].get("selector") or {}
        if want and all(dns_labels.get(k) == v for k, v in want.items()):
            dns_ip = svc["spec"].get("clusterIP", "")
    for pod in _try_json(kubectl, ["pods", "-n", dns_ns, "-l", sel]).get("items", []):
        dns_pod_ip = dns_pod_ip or pod["status"].get("podIP", "")
    api_ip, api_port, api_svc = "", 443, ""
    ep = _try_json(kubectl, ["endpoints", "kubernetes", "-n", "default"])
    for subset in ep.get("subsets", []):
        api_ip = subset["addresses"][0]["ip"]
        api_port = subset["ports"][0]["port"]
    svc = _try_json(kubectl, ["service", "kubernetes", "-n", "default"])
    api_svc = svc.get("spec", {}).get("clusterIP", "")
    facts = host_facts(0)
    try:
        mirror_ip = str(socket.getaddrinfo(urlsplit(DEBIAN_URL).hostname, 80, socket.AF_INET,
                                           socket.SOCK_STREAM)[0][4][0])
    except OSError:
        mirror_ip = ""
    resolver = next((r for r in facts.resolvers if not r.startswith("127.")), "")
    services = _try_json(kubectl, ["services", "-n", ns, "-l", f"{LABEL_INSTANCE}={site.name}"])
    return km.ClusterFacts(
        namespace=ns, pods=found, code_host=site.code_service.host, dns_service_ip=dns_ip,
        dns_endpoint=Endpoint(dns_pod_ip, dns_ns, dns_labels), api_service_ip=api_svc,
        api_endpoint=(api_ip, api_port), node_ip=node_ip, internet_ip=facts.internet_ip,
        outside_resolver=resolver, mirror_ip=mirror_ip,
        services=list(services.get("items", [])))


def _exec(kubectl: Kubectl, ns: str, pod: str, container: str,
          items: list[tuple[str, str, int]]) -> list[tuple[str, str]] | str:
    """Run the probe program in ``pod`` (on this machine, the office PC, when pod is '')."""
    program = ["-c", PROBE_PROGRAM, json.dumps(items), str(TCP_TIMEOUT), str(HTTP_TIMEOUT)]
    try:
        if not pod:
            proc = subprocess.run([sys.executable, *program], capture_output=True, text=True,
                                  timeout=HTTP_TIMEOUT + 60, check=True)
            out = proc.stdout
        else:
            out = kubectl.run(["exec", "-n", ns, pod, "-c", container, "--", "python3",
                               *program], timeout=HTTP_TIMEOUT + 60)
        return [(str(a), str(b)) for a, b in json.loads(out)]
    except (MlabError, ValueError, subprocess.SubprocessError) as exc:
        return f"could not run the probe in {pod or 'this machine'}: {exc}"


def _wait_running(kubectl: Kubectl, ns: str, run_id: str, count: int) -> None:
    deadline = time.monotonic() + POD_START_TIMEOUT
    while True:
        items = kubectl.get_json(["pods", "-n", ns, "-l", f"{km.RUN_LABEL}={run_id}"])["items"]
        phases = [p["status"].get("phase") for p in items]
        if len(items) == count and all(ph == "Running" for ph in phases):
            return
        if any(ph in ("Failed", "Succeeded") for ph in phases) or time.monotonic() > deadline:
            states = [cs.get("state") for p in items
                      for cs in p["status"].get("containerStatuses", [])]
            raise DeployError(f"verify: probe pods did not start ({phases}; {states})")
        time.sleep(1)


def canary(kubectl: Kubectl, ns: str, pod: str, dns_ip: str, run_id: str) -> None:
    """Raise NotEnforced unless a deny-all-egress policy stops the canary's DNS query.

    First the query must be answered without the policy (else the canary proves nothing and
    an error says so); then the policy is created and the query must stop within
    :data:`CANARY_WAIT` seconds.
    """
    probe = [("udp-dns", dns_ip, 53)]
    first = _exec(kubectl, ns, pod, "probe", probe)
    if isinstance(first, str) or first[0][0] != "answered":
        raise MlabError(f"verify: canary inconclusive: kube-dns {dns_ip} does not answer an "
                        f"unrestricted pod ({first})", hint="check the cluster DNS")
    kubectl.run(["create", "-f", "-"], stdin=json.dumps(km.canary_policy(ns, run_id)))
    deadline = time.monotonic() + CANARY_WAIT
    while time.monotonic() < deadline:
        got = _exec(kubectl, ns, pod, "probe", probe)
        if not isinstance(got, str) and got[0][0] == "blocked":
            return
        time.sleep(1)
    raise NotEnforced("the CNI does not enforce NetworkPolicies")


def run(site: Site, kubectl: Kubectl, on_step: Callable[[str], None] | None = None,
        user: str = "") -> list[KResult]:
    """Verify the site's edges on the cluster of ``kubectl``.

    Args:
        site: the site (its rendered policies give every expectation).
        kubectl: how to reach the cluster (current kubeconfig context by default).
        on_step: called with a short description of each step.
        user: whose HomePod labels the HomePod probe carries (default: the first user).

    Returns:
        One result per probe.

    Raises:
        NotEnforced: the canary got through.
        MlabError: the site is not running, or probe pods cannot start.
    """
    say = on_step or (lambda _m: None)
    ns = site.namespace
    policies = render_site(site).files["network.yaml"]
    say("reading the site's pods")
    facts = read_facts(kubectl, site)
    templates = _templates(site)
    user = user or site.users[0].name
    image = site.image.ref
    run_id = secrets.token_hex(4)
    probes = {
        "homepod": (templates[f"homepod-{user}"], f"homepod-{user}"),
        "outsider": ({}, "outsider"),
        "canary": ({}, "canary"),
    }
    if "airlock" in templates:
        probes["airlock"] = (templates["airlock"], "airlock")
    manifests = {role: km.probe_pod(t, f"mlab-verify-{role}-{run_id}", ns, role, run_id, image)
                 for role, (t, _) in probes.items()}
    try:
        say(f"starting {len(manifests)} probe pods")
        kubectl.run(["create", "-f", "-"], stdin=json.dumps(
            {"apiVersion": "v1", "kind": "List", "items": list(manifests.values())}))
        _wait_running(kubectl, ns, run_id, len(manifests))
        say("canary: a policy that must block a probe")
        canary(kubectl, ns, manifests["canary"]["metadata"]["name"], facts.dns_service_ip,
               run_id)
        sources = []
        for role, m in manifests.items():
            if role == "canary":
                continue
            pod = kubectl.get_json(["pod", "-n", ns, m["metadata"]["name"]])
            sources.append(km.Source(f"probe-{role}", m["metadata"]["name"], "probe", role,
                                     Endpoint(pod["status"].get("podIP", ""), ns,
                                              m["metadata"]["labels"])))
        for key in sorted(facts.pods):
            role = km.role_of(facts.pods[key][3])[1]
            sources.append(km.source_for(facts, key, role, "", ""))
        words = site_facts(site)
        probes_list = km.matrix(policies, facts, sources, words)
        probes_list += km.office_matrix(facts.services, facts.node_ip, words)
        say(f"running {len(probes_list)} probes from {len(sources)} pods, and the link "
            f"probes (raw sockets, forged source, IPv6)")
        airlock_ip = facts.pods["airlock"][2] if "airlock" in facts.pods else ""
        outsider = next(s for s in sources if s.role == "outsider")
        with ThreadPoolExecutor(max_workers=2) as pool:
            link = pool.submit(kube_link.run, kubectl, ns, sources, airlock_ip, outsider)
            rows = _run_matrix(kubectl, ns, probes_list)
            by_name = {s.name: s for s in sources}
            for r in link.result():
                p = r.probe
                target = f"{p.target} :{p.port}" if p.kind == "tcp6" and p.port else p.target
                rows.append(KResult(km.KProbe(by_name[p.source], target, p.kind, p.host,
                                              p.port, False, "below the policies (issue 20)"),
                                    r.observed, r.detail))
        return rows
    finally:
        say("removing the probe pods")
        for kind in ("pods", "networkpolicies"):
            try:
                kubectl.run(["delete", kind, "-n", ns, "-l", f"{km.RUN_LABEL}={run_id}",
                             "--wait=false", "--ignore-not-found"], timeout=60)
            except MlabError:
                pass


def _run_matrix(kubectl: Kubectl, ns: str, probes: list[km.KProbe]) -> list[KResult]:
    groups: dict[tuple[str, str], list[int]] = {}
    for i, p in enumerate(probes):
        groups.setdefault((p.source.pod, p.source.container), []).append(i)
    results: list[KResult | None] = [None] * len(probes)

    def one(key: tuple[str, str], idx: list[int]) -> None:
        items = [(probes[i].kind, probes[i].host, probes[i].port) for i in idx]
        got = _exec(kubectl, ns, key[0], key[1], items)
        for n, i in enumerate(idx):
            p = probes[i]
            if isinstance(got, str):
                results[i] = KResult(p, False, got[:200])
            else:
                state, detail = got[n]
                results[i] = KResult(p, observed(p.expected, state), detail)

    with ThreadPoolExecutor(max_workers=len(groups) or 1) as pool:
        for fut in [pool.submit(one, k, ix) for k, ix in groups.items()]:
            fut.result()
    return [r for r in results if r is not None]


def to_json(results: list[KResult]) -> list[dict[str, Any]]:
    """Rows: edge, check, source, target, kind, expected, observed, ok, detail, policy."""
    return [{"edge": f"{r.probe.source.name} --> {r.probe.target}", "check": r.probe.check,
             "source": r.probe.source.name, "target": r.probe.target, "kind": r.probe.kind,
             "expected": "allowed" if r.probe.expected else "blocked",
             "observed": "allowed" if r.observed else "blocked",
             "ok": r.ok, "detail": r.detail, "policy": r.probe.reason} for r in results]


def junit(results: list[KResult], seconds: float) -> str:
    """A JUnit XML report: one testcase per probe, a failure for each mismatch."""
    from xml.etree import ElementTree as ET

    bad = sum(1 for r in results if not r.ok)
    suite = ET.Element("testsuite", name="mlab verify", tests=str(len(results)),
                       failures=str(bad), time=f"{seconds:.1f}")
    for row in to_json(results):
        case = ET.SubElement(suite, "testcase", classname=row["source"], name=row["target"])
        if not row["ok"]:
            fail = ET.SubElement(case, "failure", message=(
                f"expected {row['expected']}, observed {row['observed']}"))
            fail.text = f"{row['detail']} ({row['policy']})"
    return ET.tostring(suite, encoding="unicode")

