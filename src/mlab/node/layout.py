"""Every name, address, port and path of the one-node Kubernetes, in one place.

Invariant: nothing else in :mod:`mlab.node` spells a port, an address range or a path; the
renderers take a :class:`NodeLayout` and the supervisor runs what they render.

The node's own address is ``192.0.2.2`` (TEST-NET-1, RFC 5737) put on ``lo``: it is the
same on every machine, never routed anywhere, and needs no kernel module (these machines
have no ``dummy`` link type). Pods reach it through the bridge gateway like any local
address, so the NetworkPolicies (and the tests) see one fixed node address.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mlab import topology

NODE_NAME = "mlab-node"
NODE_IP = "192.0.2.2"
"""The node's address (on ``lo``): API server, kubelet and NodePorts answer here."""
POD_CIDR = "10.244.0.0/24"
POD_GATEWAY = "10.244.0.1"
SERVICE_CIDR = "10.96.0.0/16"
KUBERNETES_SERVICE_IP = "10.96.0.1"
DNS_SERVICE_IP = "10.96.0.10"
CLUSTER_DOMAIN = topology.CLUSTER_DOMAIN
BRIDGE = "mlabcni0"
"""Linux bridge the CNI ``bridge`` plugin makes; every pod's veth is a port of it."""
ANTISPOOF_CHAIN = "MLAB-ANTISPOOF"
"""iptables ``raw`` chain: each pod's veth may send only from the pod's own address."""

APISERVER_PORT = 6443
ETCD_CLIENT_PORT = 23790
"""Not etcd's 2379: the node must not clash with an etcd the machine already runs."""
ETCD_PEER_PORT = 23800
KUBELET_PORT = 10250
KUBELET_HEALTHZ_PORT = 10248
CONTROLLER_MANAGER_PORT = 10257
SCHEDULER_PORT = 10259
KUBE_PROXY_HEALTHZ_PORT = 10256
KUBE_PROXY_METRICS_PORT = 10249
KUBE_ROUTER_HEALTH_PORT = 20244
KUBE_ROUTER_METRICS_PORT = 20245

PAUSE_IMAGE = "localhost/mlab/pause:3.10"
COREDNS_IMAGE = "localhost/mlab/coredns:v1.15.0"
CONTAINERD_NAMESPACE = "k8s.io"
"""containerd namespace the CRI plugin uses; images are imported into it."""

RUN_DIR = Path("/run/mlab-node")
"""Sockets and runtime state (short paths: a unix socket path has at most 107 bytes)."""
HOSTPATH_PV_DIR = Path("/tmp/hostpath_pv")
"""Where kube-controller-manager's host-path provisioner puts volumes (fixed upstream)."""


def state_root() -> Path:
    """``$MLAB_STATE_DIR/node`` (default ``~/.local/state/mlab/node``)."""
    base = os.environ.get("MLAB_STATE_DIR") or os.path.expanduser("~/.local/state/mlab")
    return Path(base) / "node"


@dataclass(frozen=True)
class NodeLayout:
    """Paths of one node under its state directory.

    Args:
        root: the state directory (``bin/`` survives ``down --purge``; ``data/``,
            ``pki/``, ``config/`` do not).
    """

    root: Path

    @property
    def bin_root(self) -> Path:
        """Built binaries, one folder per build recipe hash (kept by ``--purge``)."""
        return self.root / "bin"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def config(self) -> Path:
        return self.root / "config"

    @property
    def registry_hosts(self) -> Path:
        """containerd's per-registry ``hosts.toml`` folders (CRI ``registry.config_path``)."""
        return self.config / "certs.d"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def pids(self) -> Path:
        return self.root / "run"

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig users export as ``KUBECONFIG``."""
        return self.root / "kubeconfig"

    @property
    def cni_bin(self) -> Path:
        """Debian's CNI plugins (symlinked) plus MLab's anti-spoofing plugin."""
        return self.root / "cni" / "bin"

    @property
    def cni_conf(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def images(self) -> Path:
        """Image archives built for containerd (pause, CoreDNS)."""
        return self.root / "images"

    @property
    def containerd_socket(self) -> Path:
        return RUN_DIR / "containerd.sock"

    def log(self, component: str) -> Path:
        """The log file of one component."""
        return self.logs / f"{component}.log"

    def pid(self, component: str) -> Path:
        """The pid file of one component."""
        return self.pids / f"{component}.pid"


def default_layout() -> NodeLayout:
    """The layout under :func:`state_root`."""
    return NodeLayout(state_root())
