"""The probe matrix of ``mlab verify`` on a Kubernetes cluster (pure).

Sources are short-lived probe pods with exactly the labels (and DNS, security context,
image) of the rendered pod templates of a HomePod and of the Airlock, an outsider pod with
none of MLab's labels, and the site's real pods. The expected outcome of every probe is not
written here: :func:`expect` evaluates the rendered NetworkPolicies (network.yaml, via
:mod:`mlab.deploy.policy_eval`) for the probe's source labels and its destination endpoint.
Allowed probes must get the service's own answer (:mod:`mlab.deploy.answers`; HTTP status).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from mlab.deploy import policy_eval
from mlab.deploy.policy_eval import Endpoint
from mlab.deploy.probes import DEBIAN_URL, METADATA_IP
from mlab.render.common import (
    LABEL_COMPONENT,
    LABEL_USER,
    PORT_CODE,
    PORT_NOVNC,
    PORT_SSH,
    PORT_VNC,
)

VERIFY_LABEL = "mlab.io/verify-probe"
"""Label of every probe pod and canary policy (value: the role); cleanup selects on it."""
RUN_LABEL = "mlab.io/verify-run"
"""Label naming one run (so concurrent runs do not delete each other's pods)."""
PROBE_LIFETIME = 900
"""activeDeadlineSeconds of a probe pod: the kubelet kills one a crashed run left behind."""
KUBELET_PORT = 10250
CODE_OTHER_PORTS = (22, 443, 9418)


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
    """One attempt from a source, with its expected outcome and why."""

    source: Source
    target: str
    kind: str
    host: str
    port: int
    expected: bool
    reason: str


@dataclass
class ClusterFacts:
    """What the matrix needs from the cluster (read by :mod:`mlab.deploy.kube_verify`).

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


def matrix(policies: list[dict[str, Any]], facts: ClusterFacts,
           sources: list[Source]) -> list[KProbe]:
    """Every probe from every source, its expectation evaluated from ``policies``.

    Args:
        policies: the rendered NetworkPolicies (network.yaml).
        facts: the cluster's addresses.
        sources: probe pods and real pods (``role``: homepod, airlock, outsider,
            code-service).

    Returns:
        Probes in source order. Each denied class of the issue has a probe from a HomePod
        source; the Airlock's add the HomePods and private addresses.
    """
    out: list[KProbe] = []
    code = _pod_end(facts, "code-service")
    airlock = _pod_end(facts, "airlock")
    homepods = sorted(k for k in facts.pods if k.startswith("homepod-"))
    dns = facts.dns_endpoint
    for src in sources:
        def add(target: str, kind: str, host: str, port: int, dest: Endpoint, dport: int,
                proto: str = "TCP", src: Source = src) -> None:
            ok, why = expect(policies, facts, src, dest, dport, proto)
            out.append(KProbe(src, target, kind, host, port, ok, why))

        if code and src.role != "code-service":  # its own address never meets a policy
            add(f"code service http://{facts.code_host}/", "http",
                f"http://{facts.code_host}/", 0, code, PORT_CODE)
            add(f"code service {code.ip}:{PORT_CODE}", "http",
                f"http://{code.ip}:{PORT_CODE}/", 0, code, PORT_CODE)
            if src.role in ("homepod", "airlock"):
                for port in CODE_OTHER_PORTS:
                    add(f"code service :{port} (other port)", "tcp", code.ip, port, code, port)
        if airlock and src.role in ("homepod", "outsider"):
            add("airlock :22", "ssh", airlock.ip, PORT_SSH, airlock, PORT_SSH)
            add(f"airlock :{PORT_NOVNC}", "novnc", airlock.ip, PORT_NOVNC, airlock, PORT_NOVNC)
        for key in homepods:
            if key == src.name or src.role == "code-service":
                continue
            hp = _pod_end(facts, key)
            assert hp is not None
            add(f"{key} :{PORT_VNC}", "rfb", hp.ip, PORT_VNC, hp, PORT_VNC)
            add(f"{key} :{PORT_SSH}", "ssh", hp.ip, PORT_SSH, hp, PORT_SSH)
        if src.role in ("airlock", "code-service") and facts.mirror_ip:
            # Plain HTTP: any status is the mirror's (or the site proxy's) answer, with no
            # TLS trust store in the way (a TLS-intercepting proxy's CA is not in certifi).
            add(f"Debian mirror over HTTP ({facts.mirror_ip})", "http", DEBIAN_URL, 0,
                Endpoint(facts.mirror_ip), 80)
        if src.role == "outsider":
            continue
        if src.role == "homepod":
            if facts.internet_ip:
                add(f"internet by IP {facts.internet_ip}:443", "tcp", facts.internet_ip, 443,
                    Endpoint(facts.internet_ip), 443)
            add("internet by name (pypi.org)", "dns", "pypi.org", 0, dns, 53, "UDP")
            if facts.outside_resolver:
                add(f"DNS via outside resolver {facts.outside_resolver}", "udp-dns",
                    facts.outside_resolver, 53, Endpoint(facts.outside_resolver), 53, "UDP")
        if facts.dns_service_ip and src.role != "code-service":
            add(f"DNS via kube-dns {facts.dns_service_ip}", "udp-dns", facts.dns_service_ip,
                53, dns, 53, "UDP")
        if dns.ip and src.role != "code-service":
            add(f"DNS via kube-dns pod {dns.ip}", "udp-dns", dns.ip, 53, dns, 53, "UDP")
        if src.role == "code-service":
            continue
        add(f"metadata {METADATA_IP}:80", "tcp", METADATA_IP, 80, Endpoint(METADATA_IP), 80)
        api_ip, api_port = facts.api_endpoint
        if facts.api_service_ip and api_ip:
            add(f"kubernetes.default {facts.api_service_ip}:443", "tcp", facts.api_service_ip,
                443, Endpoint(api_ip), api_port)
        if api_ip:
            add(f"API server endpoint {api_ip}:{api_port}", "tcp", api_ip, api_port,
                Endpoint(api_ip), api_port)
        if facts.node_ip:
            add(f"node {facts.node_ip}:{KUBELET_PORT} (kubelet)", "tcp", facts.node_ip,
                KUBELET_PORT, Endpoint(facts.node_ip), KUBELET_PORT)
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
