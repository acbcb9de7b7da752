"""Evaluate NetworkPolicy objects: may this pod open this connection? (pure)

``mlab verify`` on a cluster takes the expected outcome of every probe from here, applied to
the objects ``mlab render`` writes to network.yaml, so the matrix has no list of its own to
drift from the policies. The rules are those of the Kubernetes API reference
(networking.k8s.io/v1 NetworkPolicy, "Network Policies" concept page):

- a pod is isolated for egress (ingress) when at least one policy in its namespace selects it
  with ``Egress`` (``Ingress``) in ``policyTypes``; a non-isolated direction allows all;
- an isolated direction allows a connection when any rule of any selecting policy matches
  both the peer and the port (an empty ``to``/``from`` matches every peer, an empty
  ``ports`` every port);
- a peer is ``ipBlock`` (``cidr`` minus ``except``, by address), or ``namespaceSelector``
  and/or ``podSelector`` (both in one item: AND; ``podSelector`` alone: the policy's own
  namespace; ``namespaceSelector`` alone: every pod in the matched namespaces);
- a connection needs egress allowed at the source and ingress allowed at the destination
  pod (a destination outside the cluster's pods has no ingress side here).

A connection to a Service is judged at the endpoint it is sent to (policies see the address
after kube-proxy's DNAT), so callers pass the endpoint.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Endpoint:
    """One end of a connection.

    Attributes:
        ip: IPv4 or IPv6 address ('' when unknown: no ipBlock matches it).
        namespace: the pod's namespace; '' when the address is not a pod (a node, the
            internet, a host-network endpoint such as the API server).
        labels: the pod's labels (empty when not a pod).
    """

    ip: str
    namespace: str = ""
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def is_pod(self) -> bool:
        """True when this end is a (non-host-network) pod."""
        return bool(self.namespace)


def match_selector(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A LabelSelector (``matchLabels`` and ``matchExpressions``) against labels.

    An empty selector ({}) matches everything; None matches nothing.
    """
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def _in_block(block: dict[str, Any], ip: str) -> bool:
    if not ip:
        return False
    addr = ipaddress.ip_address(ip)
    net = ipaddress.ip_network(block["cidr"], strict=False)
    if addr.version != net.version or addr not in net:
        return False
    for cidr in block.get("except") or []:
        ex = ipaddress.ip_network(cidr, strict=False)
        if ex.version == addr.version and addr in ex:
            return False
    return True


def _peer_matches(peer: dict[str, Any], policy_ns: str, other: Endpoint,
                  namespaces: dict[str, dict[str, str]]) -> bool:
    if "ipBlock" in peer:
        return _in_block(peer["ipBlock"], other.ip)
    if not other.is_pod:
        return False
    ns_sel = peer.get("namespaceSelector")
    pod_sel = peer.get("podSelector")
    if ns_sel is not None:
        ns_labels = namespaces.get(other.namespace,
                                   {"kubernetes.io/metadata.name": other.namespace})
        if not match_selector(ns_sel, ns_labels):
            return False
    elif other.namespace != policy_ns:
        return False
    return pod_sel is None or match_selector(pod_sel, other.labels)


def _port_matches(rule_ports: list[dict[str, Any]] | None, port: int, protocol: str) -> bool:
    if not rule_ports:
        return True
    for p in rule_ports:
        if p.get("protocol", "TCP") != protocol:
            continue
        start = p.get("port")
        if start is None:
            return True
        if isinstance(start, str):  # a named port: MLab renders none; count as no match
            continue
        if start <= port <= p.get("endPort", start):
            return True
    return False


def _direction_allows(policies: list[dict[str, Any]], pod: Endpoint, other: Endpoint,
                      port: int, protocol: str, direction: str,
                      namespaces: dict[str, dict[str, str]]) -> tuple[bool, str]:
    """(allowed, why) for one direction at ``pod`` (``Egress`` or ``Ingress``)."""
    key, peers_key = ("egress", "to") if direction == "Egress" else ("ingress", "from")
    selecting = [
        p for p in policies
        if p["metadata"].get("namespace", pod.namespace) == pod.namespace
        and direction in p["spec"].get("policyTypes", ["Ingress"])
        and match_selector(p["spec"].get("podSelector", {}), pod.labels)
    ]
    if not selecting:
        return True, f"no {direction.lower()} policy selects it"
    for pol in selecting:
        for rule in pol["spec"].get(key) or []:
            peers = rule.get(peers_key)
            if peers and not any(_peer_matches(peer, pod.namespace, other, namespaces)
                                 for peer in peers):
                continue
            if _port_matches(rule.get("ports"), port, protocol):
                return True, pol["metadata"]["name"]
    names = ", ".join(p["metadata"]["name"] for p in selecting)
    return False, f"{direction.lower()} isolated by {names}; no rule matches"


def allowed(policies: list[dict[str, Any]], source: Endpoint, dest: Endpoint, port: int,
            protocol: str = "TCP",
            namespaces: dict[str, dict[str, str]] | None = None) -> tuple[bool, str]:
    """Whether ``policies`` allow ``source`` to connect to ``dest`` on ``port``.

    Args:
        policies: NetworkPolicy objects (dicts as rendered or read from the API); policies of
            namespaces other than the two ends' are ignored.
        source: the connecting pod (a pod: policies select by its labels and namespace).
        dest: the endpoint after Service DNAT (a pod, or an address outside the pods).
        port: destination port (the endpoint's target port).
        protocol: ``TCP``, ``UDP`` or ``SCTP``.
        namespaces: namespace name -> its labels; missing names get only the
            ``kubernetes.io/metadata.name`` label the API server sets.

    Returns:
        (allowed, reason): the reason names the policy whose rule allowed it, or the
        policies that isolate the side that denies it.
    """
    ns = namespaces or {}
    ok, why = _direction_allows(policies, source, dest, port, protocol, "Egress", ns)
    if not ok:
        return False, f"source {why}"
    if dest.is_pod:
        ok_in, why_in = _direction_allows(policies, dest, source, port, protocol, "Ingress", ns)
        if not ok_in:
            return False, f"destination {why_in}"
        return True, f"egress {why}; ingress {why_in}"
    return True, f"egress {why}"
