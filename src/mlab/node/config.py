"""Pure rendering of the node's configuration: kubeconfigs, component command lines,
the kubelet and containerd configuration, the CNI chain.

Invariant: no I/O here; each function returns text or an argv from a
:class:`~mlab.node.layout.NodeLayout` and the binaries' folder. Facts measured on these
machines (docs/node.md, /work/shared/ENVIRONMENT.md) are named next to the setting they
force: ``restrict_oom_score_adj`` (no CAP_SYS_RESOURCE), ``cgroupDriver: cgroupfs`` (cgroup
v1, no systemd), ``failSwapOn: false``, a local ``sandbox_image`` (nothing can be pulled).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from mlab.errors import UsageError
from mlab.node import layout
from mlab.node.layout import NodeLayout


def kubeconfig(lay: NodeLayout, identity: str, user: str) -> str:
    """A kubeconfig for ``identity`` (a file stem under ``pki/``) reaching the API server.

    Args:
        identity: certificate file stem (``admin``, ``kubelet``...).
        user: the user name shown in the kubeconfig (cosmetic; RBAC reads the certificate).
    """
    pki = lay.pki
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "mlab-node", "cluster": {
            "server": f"https://{layout.NODE_IP}:{layout.APISERVER_PORT}",
            "certificate-authority": str(pki / "ca.crt"),
        }}],
        "users": [{"name": user, "user": {
            "client-certificate": str(pki / f"{identity}.crt"),
            "client-key": str(pki / f"{identity}.key"),
        }}],
        "contexts": [{"name": "mlab-node", "context": {"cluster": "mlab-node", "user": user}}],
        "current-context": "mlab-node",
    }
    return yaml.safe_dump(doc, sort_keys=False)


def containerd_config(lay: NodeLayout) -> str:
    """containerd 1.6 configuration (version 2) for the CRI plugin.

    Source: containerd docs/cri/config.md (1.6). ``restrict_oom_score_adj = true``: the
    kubelet asks for oom_score_adj -998 and these machines drop CAP_SYS_RESOURCE even for
    root, so without it every sandbox fails with "can't get final child's PID from pipe".
    """
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{lay.data / 'containerd'}"
state = "{layout.RUN_DIR / 'containerd'}"

[grpc]
  address = "{lay.containerd_socket}"

[{cri}]
  sandbox_image = "{layout.PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  enable_selinux = false

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false

[{cri}.cni]
  bin_dir = "{lay.cni_bin}"
  conf_dir = "{lay.cni_conf}"

[{cri}.registry]
  config_path = "{lay.registry_hosts}"
"""


def registry_host(repository: str) -> str:
    """The registry part of an image repository, ``HOST[:PORT]`` (pure).

    Source: the reference grammar of the distribution project (``docker/reference``): the
    first path component is a registry when it holds a ``.`` or a ``:`` or is ``localhost``.

    Raises:
        UsageError: the repository names no registry (``mlab/homepod``, ``localhost/...``
            is the local build name, which no node can pull).
    """
    first, _, rest = repository.partition("/")
    if not rest or first == "localhost" or not ("." in first or ":" in first):
        raise UsageError(f"image.repository: {repository!r} names no registry",
                         hint="set it to REGISTRY/PATH, e.g. registry.example.com:5000/mlab/homepod")
    return first


@dataclass(frozen=True)
class RegistryTrust:
    """How the node's containerd reaches one site's registry (the site's ``image`` section).

    Attributes:
        repository: ``image.repository`` (``HOST[:PORT]/PATH``).
        plain_http: ``image.plainHttp``.
        ca_file: ``image.caFile``, the registry's CA on this machine (PEM), or None.
    """

    repository: str
    plain_http: bool = False
    ca_file: str | None = None


def hosts_toml(host: str, plain_http: bool, ca: str | None = None) -> str:
    """containerd's ``hosts.toml`` for one registry (``certs.d/HOST[:PORT]/hosts.toml``) (pure).

    Source: containerd docs/hosts.md (1.6, read on every pull; ``config_path`` set in the
    CRI plugin). Plain HTTP is written only when the site declares it (``image.plainHttp``);
    otherwise the registry is reached over TLS, verified against ``ca`` when given (the
    site's ``image.caFile``, trusted for this registry only) and else against the host's
    trust store.

    Args:
        host: ``HOST[:PORT]`` as written in ``image.repository``.
        plain_http: the registry speaks HTTP, not TLS.
        ca: absolute path of the CA certificate (PEM) containerd reads, or None.
    """
    scheme = "http" if plain_http else "https"
    how = ("plain HTTP, as the site declares (image.plainHttp)" if plain_http
           else "TLS, verified with the site's CA (image.caFile)" if ca else "TLS")
    text = (f"# Written by `mlab node up --site`: {how}\n"
            f'server = "{scheme}://{host}"\n\n'
            f'[host."{scheme}://{host}"]\n'
            '  capabilities = ["pull", "resolve"]\n')
    if ca and not plain_http:
        text += f"  ca = {json.dumps(ca)}\n"
    return text


def cni_conflist() -> str:
    """The pods' network: bridge + host-local, then tuning (no IPv6), anti-spoofing, portmap.

    - ``tuning`` sets ``net.ipv6.conf.{all,default}.disable_ipv6=1`` in each pod's network
      namespace: kube-router programs IPv4 only, so an IPv6 link-local path would walk
      around every NetworkPolicy (issue 20). ``/proc/sys`` is read-only in a pod, so root
      inside cannot turn it back on.
    - ``mlab-antispoof`` (:mod:`mlab.node.antispoof_cni`) lets each pod's veth send only
      from the pod's own IPv4 address (issue 20: a forged Airlock source would inherit the
      Airlock's internet egress).
    Source: containernetworking/plugins 1.1.1 (Debian), CNI spec 1.0.0.
    """
    doc = {
        "cniVersion": "1.0.0",
        "name": "mlab-node",
        "plugins": [
            {
                "type": "bridge",
                "bridge": layout.BRIDGE,
                "isGateway": True,
                "ipMasq": True,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": layout.POD_CIDR, "gateway": layout.POD_GATEWAY}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {
                "type": "tuning",
                "sysctl": {
                    "net.ipv6.conf.all.disable_ipv6": "1",
                    "net.ipv6.conf.default.disable_ipv6": "1",
                },
            },
            {"type": "mlab-antispoof", "bridge": layout.BRIDGE, "chain": layout.ANTISPOOF_CHAIN},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    return json.dumps(doc, indent=2) + "\n"


def kubelet_config(lay: NodeLayout) -> str:
    """KubeletConfiguration (kubelet.config.k8s.io/v1beta1).

    Image garbage collection is off (``imageGCHighThresholdPercent: 100``): every image
    here was imported by hand and cannot be pulled back.
    """
    pki = lay.pki
    doc = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "cgroupDriver": "cgroupfs",
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{lay.containerd_socket}",
        "address": layout.NODE_IP,
        "port": layout.KUBELET_PORT,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": layout.KUBELET_HEALTHZ_PORT,
        "tlsCertFile": str(pki / "kubelet-serving.crt"),
        "tlsPrivateKeyFile": str(pki / "kubelet-serving.key"),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "clusterDNS": [layout.DNS_SERVICE_IP],
        "clusterDomain": layout.CLUSTER_DOMAIN,
        "resolvConf": "/etc/resolv.conf",
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                         "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
        "serializeImagePulls": False,
        "maxPods": 60,
    }
    return yaml.safe_dump(doc, sort_keys=False)


@dataclass(frozen=True)
class Component:
    """One process the node runs: its name (logs, pid file) and full argv."""

    name: str
    argv: list[str]


def components(lay: NodeLayout, bins: dict[str, Path]) -> list[Component]:
    """Every process of the node, in start order (each waits for the previous to answer).

    Boolean flags are written ``--flag=value``: Kubernetes' flag parser reads ``--flag value``
    as a bare ``--flag`` and a stray argument.

    Args:
        bins: program name -> path (``kube-apiserver``... ``kube-router``, ``etcd``,
            ``containerd``).
    """
    pki, cfg = lay.pki, lay.config
    node_ip = layout.NODE_IP

    def kc(name: str) -> str:
        return str(cfg / f"{name}.kubeconfig")

    return [
        Component("etcd", [
            str(bins["etcd"]), "--name", layout.NODE_NAME, "--data-dir", str(lay.data / "etcd"),
            "--listen-client-urls", f"http://127.0.0.1:{layout.ETCD_CLIENT_PORT}",
            "--advertise-client-urls", f"http://127.0.0.1:{layout.ETCD_CLIENT_PORT}",
            "--listen-peer-urls", f"http://127.0.0.1:{layout.ETCD_PEER_PORT}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{layout.ETCD_PEER_PORT}",
            "--initial-cluster", f"{layout.NODE_NAME}=http://127.0.0.1:{layout.ETCD_PEER_PORT}",
            "--quota-backend-bytes", str(2 * 1024**3),
        ]),
        Component("kube-apiserver", [
            str(bins["kube-apiserver"]),
            "--etcd-servers", f"http://127.0.0.1:{layout.ETCD_CLIENT_PORT}",
            "--bind-address", node_ip, "--advertise-address", node_ip,
            "--secure-port", str(layout.APISERVER_PORT),
            "--service-cluster-ip-range", layout.SERVICE_CIDR,
            "--client-ca-file", str(pki / "ca.crt"),
            "--tls-cert-file", str(pki / "apiserver.crt"),
            "--tls-private-key-file", str(pki / "apiserver.key"),
            "--kubelet-client-certificate", str(pki / "apiserver-kubelet-client.crt"),
            "--kubelet-client-key", str(pki / "apiserver-kubelet-client.key"),
            "--kubelet-certificate-authority", str(pki / "ca.crt"),
            "--kubelet-preferred-address-types", "InternalIP",
            "--service-account-issuer", f"https://kubernetes.default.svc.{layout.CLUSTER_DOMAIN}",
            "--service-account-key-file", str(pki / "sa.pub"),
            "--service-account-signing-key-file", str(pki / "sa.key"),
            "--authorization-mode", "Node,RBAC",
            "--enable-admission-plugins", "NodeRestriction",
            "--allow-privileged=true",
            "--profiling=false",
        ]),
        Component("kube-controller-manager", [
            str(bins["kube-controller-manager"]),
            "--kubeconfig", kc("controller-manager"),
            "--authentication-kubeconfig", kc("controller-manager"),
            "--authorization-kubeconfig", kc("controller-manager"),
            "--bind-address", "127.0.0.1", "--secure-port", str(layout.CONTROLLER_MANAGER_PORT),
            "--root-ca-file", str(pki / "ca.crt"),
            "--service-account-private-key-file", str(pki / "sa.key"),
            "--use-service-account-credentials=true",
            "--service-cluster-ip-range", layout.SERVICE_CIDR,
            # One-node storage: the in-tree host-path provisioner (docs/node.md).
            "--enable-hostpath-provisioner=true",
            "--leader-elect=false",
            "--profiling=false",
        ]),
        Component("kube-scheduler", [
            str(bins["kube-scheduler"]),
            "--kubeconfig", kc("scheduler"),
            "--authentication-kubeconfig", kc("scheduler"),
            "--authorization-kubeconfig", kc("scheduler"),
            "--bind-address", "127.0.0.1", "--secure-port", str(layout.SCHEDULER_PORT),
            "--leader-elect=false",
            "--profiling=false",
        ]),
        Component("containerd", [
            str(bins["containerd"]), "--config", str(cfg / "containerd.toml"),
        ]),
        Component("kubelet", [
            str(bins["kubelet"]),
            "--config", str(cfg / "kubelet.yaml"),
            "--kubeconfig", kc("kubelet"),
            "--hostname-override", layout.NODE_NAME,
            "--node-ip", node_ip,
            "--root-dir", str(lay.data / "kubelet"),
        ]),
        Component("kube-proxy", [
            str(bins["kube-proxy"]),
            "--kubeconfig", kc("kube-proxy"),
            "--hostname-override", layout.NODE_NAME,
            "--proxy-mode", "iptables",
            "--cluster-cidr", layout.POD_CIDR,
            "--healthz-bind-address", f"127.0.0.1:{layout.KUBE_PROXY_HEALTHZ_PORT}",
            "--metrics-bind-address", f"127.0.0.1:{layout.KUBE_PROXY_METRICS_PORT}",
            "--nodeport-addresses", f"{node_ip}/32",
            # Leave the machine's conntrack sysctls alone (not writable in every sandbox).
            "--conntrack-max-per-core", "0",
        ]),
        Component("kube-router", [
            str(bins["kube-router"]),
            "--kubeconfig", kc("kube-router"),
            "--hostname-override", layout.NODE_NAME,
            "--run-firewall=true", "--run-router=false", "--run-service-proxy=false",
            "--enable-cni=false", "--enable-ipv4=true", "--enable-ipv6=false",
            "--health-port", str(layout.KUBE_ROUTER_HEALTH_PORT),
            "--metrics-port", "0",
            "--iptables-sync-period", "30s",
        ]),
    ]


def kubeconfigs(lay: NodeLayout) -> dict[str, str]:
    """File name under ``config/`` -> kubeconfig text, one per component identity."""
    return {
        "controller-manager.kubeconfig": kubeconfig(lay, "controller-manager", "controller-manager"),
        "scheduler.kubeconfig": kubeconfig(lay, "scheduler", "scheduler"),
        "kubelet.kubeconfig": kubeconfig(lay, "kubelet", "kubelet"),
        "kube-proxy.kubeconfig": kubeconfig(lay, "kube-proxy", "kube-proxy"),
        "kube-router.kubeconfig": kubeconfig(lay, "kube-router", "kube-router"),
    }
