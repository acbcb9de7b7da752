"""Pure: the cluster objects the node adds after its API server answers.

- kube-router's identity (``system:kube-router``, a client certificate) gets only what its
  policy controller reads (the ClusterRole of kube-router's own generic DaemonSet manifest,
  daemonset/generic-kuberouter-only-advertise-routes.yaml at v2.1.0, less what the router
  and service proxy need).
- A default StorageClass for kube-controller-manager's in-tree host-path provisioner, so
  MLab's PersistentVolumeClaims bind on one node without another component or image.
- CoreDNS as a pod labelled ``k8s-app: kube-dns`` in kube-system with the Service the
  kubelet's ``clusterDNS`` names: the rendered ``airlock-to-dns`` policy admits exactly that
  selector, and the Airlock resolves internet names through it (it forwards to the
  machine's resolver). HomePods never reach it (their policies deny DNS).
"""

from __future__ import annotations

from typing import Any

from mlab.node import layout

KUBE_ROUTER_USER = "system:kube-router"
STORAGE_CLASS = "mlab-node-hostpath"
COREDNS_LABELS = {"k8s-app": "kube-dns"}


def kube_router_rbac() -> list[dict[str, Any]]:
    """ClusterRole and binding for kube-router's policy controller."""
    read = ["get", "list", "watch"]
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "mlab-node:kube-router"},
            "rules": [
                {"apiGroups": [""], "resources": ["namespaces", "pods", "services", "nodes",
                                                  "endpoints"], "verbs": read},
                {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"],
                 "verbs": read},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                 "verbs": read},
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                 "verbs": ["get", "create", "update"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "mlab-node:kube-router"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "mlab-node:kube-router"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                          "name": KUBE_ROUTER_USER}],
        },
    ]


def storage_class() -> dict[str, Any]:
    """The default StorageClass (provisioner ``kubernetes.io/host-path``, one node only)."""
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": STORAGE_CLASS,
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
        },
        "provisioner": "kubernetes.io/host-path",
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    }


COREFILE = f""".:53 {{
    errors
    health {{
        lameduck 5s
    }}
    ready
    kubernetes {layout.CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }}
    forward . /etc/resolv.conf
    cache 30
    loop
    reload
}}
"""


def coredns() -> list[dict[str, Any]]:
    """CoreDNS: ServiceAccount, RBAC, Corefile, Deployment and the ``kube-dns`` Service
    (the ClusterRole of CoreDNS's own deployment/kubernetes/coredns.yaml.sed)."""
    ns = "kube-system"
    meta = {"name": "coredns", "namespace": ns}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "mlab-node:coredns"},
            "rules": [
                {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"],
                 "verbs": ["list", "watch"]},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                 "verbs": ["list", "watch"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "mlab-node:coredns"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "mlab-node:coredns"},
            "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": ns}],
        },
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
         "data": {"Corefile": COREFILE}},
        {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {**meta, "labels": COREDNS_LABELS},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": COREDNS_LABELS},
                "template": {
                    "metadata": {"labels": COREDNS_LABELS},
                    "spec": {
                        "serviceAccountName": "coredns",
                        "dnsPolicy": "Default",
                        "priorityClassName": "system-cluster-critical",
                        "containers": [{
                            "name": "coredns",
                            "image": layout.COREDNS_IMAGE,
                            "imagePullPolicy": "Never",
                            "args": ["-conf", "/etc/coredns/Corefile"],
                            "ports": [
                                {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                                {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                            ],
                            "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181},
                                               "periodSeconds": 2},
                            "livenessProbe": {"httpGet": {"path": "/health", "port": 8080},
                                              "initialDelaySeconds": 30},
                            "resources": {"requests": {"cpu": "50m", "memory": "40Mi"},
                                          "limits": {"memory": "170Mi"}},
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
                                "readOnlyRootFilesystem": True,
                            },
                            "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns",
                                              "readOnly": True}],
                        }],
                        "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": ns, "labels": COREDNS_LABELS},
            "spec": {
                "clusterIP": layout.DNS_SERVICE_IP,
                "selector": COREDNS_LABELS,
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                ],
            },
        },
    ]


def objects() -> list[dict[str, Any]]:
    """Every add-on object, in apply order."""
    return [*kube_router_rbac(), storage_class(), *coredns()]
