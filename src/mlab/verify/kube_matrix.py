"""The probe matrix of ``mlab verify`` on a Kubernetes cluster (pure).

Sources are short-lived probe pods with exactly the labels (and DNS, security context,
image) of the rendered pod templates of a HomePod and of the Airlock, an outsider pod with
none of MLab's labels, and the site's real pods. The expected outcome of every probe is not
written here: :func:`expect` evaluates the rendered NetworkPolicies (network.yaml, via
:mod:`mlab.verify.policy_eval`) for the probe's source labels and its destination endpoint.
Allowed probes must get the service's own answer (:mod:`mlab.probing.answers`; HTTP status).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from mlab import topology
from mlab.topology import (
    CONTAINER_PORTS,
    LABEL_COMPONENT,
    LABEL_USER,
    PORT_CODE,
    PORT_CODE_TLS,
    PORT_KUBELET,
    PORT_PORTAL,
)
from mlab.verify import policy_eval
from mlab.verify.matrix import DEBIAN_URL, METADATA_IP, host_kind, port_kind
from mlab.verify.policy_eval import Endpoint

VERIFY_LABEL = "mlab.io/verify-probe"
"""Label of every probe pod and canary policy (value: the role); cleanup selects on it."""
RUN_LABEL = "mlab.io/verify-run"
"""Label naming one run (so concurrent runs do not delete each other's pods)."""
PROBE_LIFETIME = 900
"""activeDeadlineSeconds of a probe pod: the kubelet kills one a crashed run left behind."""


@dataclass(frozen=True)
class Source:
    """Where probes run: a pod (and container) with its labels."""

    name: str
    pod: str
    container: str
    role: str
    endpoint: Endpoint


@dataclass(frozen=True)
class KProbe:
    """One attempt from a source, with its expected outcome, why, and the check of
    :func:`mlab.topology.checks` it stands for ('' for the link probes)."""

    source: Source
    target: str
    kind: str
    host: str
    port: int
    expected: bool
    reason: str
    check: str = ""


@dataclass
class ClusterFacts:
    """What the matrix needs from the cluster (read by :mod:`mlab.probing.kube`).

    Attributes:
        namespace: the site's namespace.
        pods: component or ``homepod-<user>`` -> (pod name, container, IP, labels).
        code_host: the code service's host name (hostAliases in the pods).
        dns_service_ip: the cluster DNS Service address ('' if not found).
        dns_endpoint: a DNS pod (its namespace and labels; IP '' if not readable).
        api_service_ip: ``kubernetes.default``'s address (from a pod's environment).
        api_endpoint: (address, port) of the API server behind it ('' if not readable).
        node_ip: the node's address (a pod's ``status.hostIP``).
        internet_ip: an address of pypi.org ('' when it does not resolve).
        outside_resolver: a DNS server outside the cluster ('' for none).
        mirror_ip: an address of deb.debian.org ('' when it does not resolve).
        namespaces: namespace name -> its labels (for namespaceSelector peers).
        services: the site's Services as read from the cluster (the office ingress).
    """

    namespace: str
    pods: dict[str, tuple[str, str, str, dict[str, str]]]
    code_host: str
    dns_service_ip: str
    dns_endpoint: Endpoint
    api_service_ip: str
    api_endpoint: tuple[str, int]
    node_ip: str
    internet_ip: str
    outside_resolver: str
    mirror_ip: str = ""
    namespaces: dict[str, dict[str, str]] = field(default_factory=dict)
    services: list[dict[str, Any]] = field(default_factory=list)


def probe_pod(template: dict[str, Any], name: str, namespace: str, role: str,
              run_id: str, image: str) -> dict[str, Any]:
    """A probe pod: the template's labels, DNS, security context and env, running sleep.

    Args:
        template: a rendered Deployment's ``spec.template`` (None-like {} for the outsider:
            no MLab label, cluster DNS).
        name: pod name.
        namespace: the site's namespace.
        role: ``homepod``, ``airlock``, ``outsider`` or ``canary`` (the VERIFY_LABEL value).
        run_id: this run's id.
        image: the site's image (``imagePullPolicy: Never``: nothing is pulled).

    Returns:
        A Pod manifest. It is never Ready (its readiness probe fails), so no Service sends
        traffic to it although it carries a HomePod's or the Airlock's labels, and it has no
        ``pod-template-hash`` label, so no ReplicaSet adopts it.
    """
    meta = template.get("metadata", {})
    spec = template.get("spec", {})
    labels = {k: v for k, v in (meta.get("labels") or {}).items() if k != "pod-template-hash"}
    labels.update({VERIFY_LABEL: role, RUN_LABEL: run_id})
    box = (spec.get("containers") or [{}])[0]
    container: dict[str, Any] = {
        "name": "probe", "image": image, "imagePullPolicy": "Never",
        "command": ["sleep", str(PROBE_LIFETIME)],
        "readinessProbe": {"exec": {"command": ["false"]}, "periodSeconds": 3600},
        "env": [e for e in box.get("env", []) if "value" in e],
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"},
                      "limits": {"cpu": "500m", "memory": "256Mi"}},
    }
    if "securityContext" in box:
        container["securityContext"] = copy.deepcopy(box["securityContext"])
    pod_spec: dict[str, Any] = {
        "containers": [container], "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 0, "activeDeadlineSeconds": PROBE_LIFETIME,
        "automountServiceAccountToken": False, "enableServiceLinks": False,
    }
    for key in ("hostAliases", "dnsPolicy", "dnsConfig", "securityContext"):
        if key in spec:
            pod_spec[key] = copy.deepcopy(spec[key])
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": pod_spec}


def canary_policy(namespace: str, run_id: str) -> dict[str, Any]:
    """A NetworkPolicy that denies all egress of this run's canary pod."""
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": f"mlab-verify-canary-{run_id}", "namespace": namespace,
                         "labels": {VERIFY_LABEL: "canary", RUN_LABEL: run_id}},
            "spec": {"podSelector": {"matchLabels": {VERIFY_LABEL: "canary",
                                                     RUN_LABEL: run_id}},
                     "policyTypes": ["Egress"], "egress": []}}


def expect(policies: list[dict[str, Any]], facts: ClusterFacts, source: Source,
           dest: Endpoint, port: int, protocol: str = "TCP") -> tuple[bool, str]:
    """The outcome network.yaml promises for one connection (:func:`policy_eval.allowed`)."""
    return policy_eval.allowed(policies, source.endpoint, dest, port, protocol,
                               facts.namespaces)


def _pod_end(facts: ClusterFacts, key: str) -> Endpoint | None:
    if key not in facts.pods:
        return None
    _, _, ip, labels = facts.pods[key]
    return Endpoint(ip, facts.namespace, labels)


def _bind(check: topology.Check, src: Source, facts: ClusterFacts, code: Endpoint | None,
          airlock: Endpoint | None, homepods: list[str],
          ) -> list[tuple[str, str, str, int, Endpoint, int, str]]:
    """Rows for one check from one source: (target, kind, host, port, endpoint the packets
    reach, its port, protocol)."""
    dst, port = check.destination, check.port
    dns = facts.dns_endpoint
    api_ip, api_port = facts.api_endpoint
    if dst == "code-service" and code and src.role != "code-service":
        if port == PORT_CODE:
            return [(f"code service http://{facts.code_host}/", "http",
                     f"http://{facts.code_host}/", 0, code, PORT_CODE, "TCP"),
                    (f"code service {code.ip}:{PORT_CODE}", "http",
                     f"http://{code.ip}:{PORT_CODE}/", 0, code, PORT_CODE, "TCP")]
        if port == PORT_CODE_TLS:  # with tls: the Service's 443 and the container port
            return [(f"code service https://{facts.code_host}/", "http",
                     f"https://{facts.code_host}/", 0, code, PORT_CODE_TLS, "TCP"),
                    (f"code service {code.ip}:{PORT_CODE_TLS}", "http",
                     f"https://{code.ip}:{PORT_CODE_TLS}/", 0, code, PORT_CODE_TLS, "TCP")]
        return [(f"code service :{port} (other port)", "tcp", code.ip, port, code, port, "TCP")]
    if dst == "airlock" and airlock:
        return [(f"airlock :{port}", port_kind(port), airlock.ip, port, airlock, port, "TCP")]
    if dst == "homepod":
        ends = [(key, _pod_end(facts, key)) for key in homepods if key != src.name]
        return [(f"{key} :{port}", port_kind(port), hp.ip, port, hp, port, "TCP")
                for key, hp in ends if hp is not None]
    if dst == "internet" and check.expected:
        # Plain HTTP: any status is the mirror's (or the site proxy's) answer, with no TLS
        # trust store in the way (a TLS-intercepting proxy's CA is not in certifi).
        return [(f"Debian mirror over HTTP ({facts.mirror_ip})", "http", DEBIAN_URL, 0,
                 Endpoint(facts.mirror_ip), 80, "TCP")] if facts.mirror_ip else []
    if dst == "internet":
        return [(f"internet by IP {facts.internet_ip}:443", "tcp", facts.internet_ip, 443,
                 Endpoint(facts.internet_ip), 443, "TCP")] if facts.internet_ip else []
    if dst == "kube-dns":
        rows = [("internet by name (pypi.org)", "dns", "pypi.org", 0, dns, 53, "UDP")]
        if facts.dns_service_ip:
            rows.append((f"DNS via kube-dns {facts.dns_service_ip}", "udp-dns",
                         facts.dns_service_ip, 53, dns, 53, "UDP"))
        if dns.ip:
            rows.append((f"DNS via kube-dns pod {dns.ip}", "udp-dns", dns.ip, 53, dns, 53, "UDP"))
        return rows
    if dst == "outside-dns" and facts.outside_resolver:
        return [(f"DNS via outside resolver {facts.outside_resolver}", "udp-dns",
                 facts.outside_resolver, 53, Endpoint(facts.outside_resolver), 53, "UDP")]
    if dst == "metadata":
        return [(f"metadata {METADATA_IP}:80", "tcp", METADATA_IP, 80, Endpoint(METADATA_IP),
                 80, "TCP")]
    if dst in ("node", "private"):  # the node's addresses: private on most clusters
        rows = []
        if facts.api_service_ip and api_ip:
            rows.append((f"kubernetes.default {facts.api_service_ip}:443", "tcp",
                         facts.api_service_ip, 443, Endpoint(api_ip), api_port, "TCP"))
        if api_ip:
            rows.append((f"API server endpoint {api_ip}:{api_port}", "tcp", api_ip, api_port,
                         Endpoint(api_ip), api_port, "TCP"))
        if facts.node_ip:
            rows.append((f"node {facts.node_ip}:{PORT_KUBELET} (kubelet)", "tcp", facts.node_ip,
                         PORT_KUBELET, Endpoint(facts.node_ip), PORT_KUBELET, "TCP"))
        return rows
    return []  # proxy: outside the cluster, reached only through the internet edge


def matrix(policies: list[dict[str, Any]], facts: ClusterFacts,
           sources: list[Source], words: set[str] | None = None) -> list[KProbe]:
    """Every check of :func:`mlab.topology.checks` bound to every source of its role.

    Args:
        policies: the rendered NetworkPolicies (network.yaml).
        facts: the cluster's addresses.
        sources: probe pods and real pods (``role``: homepod, airlock, outsider,
            code-service).
        words: the site's condition words (``mlab.render.network.site_facts``); None:
            ``always`` and ``airlock`` when the Airlock runs.

    Returns:
        Probes in source order, each with its check's name. The expectation of each is
        evaluated from ``policies`` at the address the packets reach (the check says which
        edge or denied example it stands for; tests/unit/test_topology.py shows the two
        agree for every example site).
    """
    code = _pod_end(facts, "code-service")
    airlock = _pod_end(facts, "airlock")
    if words is None:
        words = {"always", *(["airlock"] if airlock else [])}
    checks = topology.checks(words)
    homepods = sorted(k for k in facts.pods if k.startswith("homepod-"))
    out: list[KProbe] = []
    for src in sources:
        for check in checks:
            if check.source != src.role:
                continue
            for target, kind, host, port, dest, dport, proto in _bind(
                    check, src, facts, code, airlock, homepods):
                ok, why = expect(policies, facts, src, dest, dport, proto)
                out.append(KProbe(src, target, kind, host, port, ok, why, check.name))
    return out


OFFICE = Source("office", "", "", "office", Endpoint(""))
"""The machine ``mlab verify`` runs on, standing for an office PC (``access.officeCIDRs``)."""


def office_matrix(services: list[dict[str, Any]], node_ip: str, words: set[str]
                  ) -> list[KProbe]:
    """The office PC -> site ingress: every port the site's Services expose, from this machine.

    Args:
        services: the site's Service objects as read from the cluster (with ``clusterIP``).
        node_ip: the node's address (NodePorts answer there; '' for none).
        words: the site's condition words (``mlab.render.network.site_facts``).

    Returns:
        One probe per Service port and address (the ClusterIP, reachable from a node; each
        ``externalIPs`` address; the node's NodePort), expected allowed when an active edge
        ``office --> <component>`` lists the container port, else blocked (not on the
        ClusterIP: no office routes there, and the node's own connections pass the
        policies); the service must
        answer in its protocol (HTTP status for the code service; the portal by TCP connect,
        as its TLS certificate may be the site's own).
    """
    out: list[KProbe] = []
    for svc in services:
        component = (svc["metadata"].get("labels") or {}).get(LABEL_COMPONENT, "")
        spec = svc["spec"]
        for sp in spec.get("ports", []):
            name = sp.get("name", "")
            cport = {"code-service": PORT_CODE_TLS if name == "https" else PORT_CODE,
                     "portal": PORT_PORTAL}.get(component, CONTAINER_PORTS.get(name, 0))
            if not cport:
                continue
            check = topology.Check("office", component, cport,
                                   topology.allows("office", component, cport, words))
            where = [(spec.get("clusterIP", ""), sp["port"])]
            where += [(ip, sp["port"]) for ip in spec.get("externalIPs") or []]
            if sp.get("nodePort") and node_ip:
                where.append((node_ip, sp["nodePort"]))
            for ip, port in where:
                if not ip or ip == "None":
                    continue
                if ip == spec.get("clusterIP") and not check.expected:
                    # No office routes to a ClusterIP, and a node's own connections pass
                    # whatever the policies say (docs/verify.md): a blocked office edge is
                    # probed where offices arrive (externalIPs, NodePorts) only.
                    continue
                # As from the podman host: the protocol of the port's name, HTTP(S) to the
                # code service, noVNC over TLS with the site's tls (websockify --ssl-only).
                kind, host = host_kind(name, ip, port, "tls" in words)
                why = (f"edge {check.name}" if check.expected
                       else f"no active edge {check.name}")
                out.append(KProbe(OFFICE, f"{svc['metadata']['name']} {name} {ip}:{port}",
                                  kind, host, port, check.expected, why, check.name))
    return out


def source_for(facts: ClusterFacts, key: str, role: str, pod: str, container: str,
               labels: dict[str, str] | None = None, ip: str = "") -> Source:
    """A source: a real pod (``key`` in ``facts.pods``) or a probe pod (its labels)."""
    if labels is None:
        name, container, ip, labels = facts.pods[key]
        pod = name
    return Source(key, pod, container, role, Endpoint(ip, facts.namespace, labels))


def role_of(labels: dict[str, str]) -> tuple[str, str]:
    """(key, role) of a real MLab pod from its labels: ``homepod-<user>``/homepod, ..."""
    component = labels.get(LABEL_COMPONENT, "")
    if component == "homepod":
        return f"homepod-{labels.get(LABEL_USER, '')}", "homepod"
    return component, component
