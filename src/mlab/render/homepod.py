"""HomePod objects, one set per user: password Secret, home PVC, Deployment, Service.

Invariant: nothing of one user (Secret, home, outbox sub-directory, Service) is referenced
by another user's objects; every object carries ``mlab.io/user``. The Secret with a
generated password is returned separately (it never goes into homepod.yaml).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mlab.render.common import (
    CODE_CA_DIR,
    CONTAINER_PORTS,
    GROUP_LABEL_PREFIX,
    OUTBOX_PATH,
    PASSWORD_FILE,
    SESSION_CAPABILITIES,
    SHARE_PATH,
    TLS_DIR,
    VolumeSet,
    common_env,
    component_deployment,
    labels,
    metadata,
    mount_code_ca,
    mount_login_password,
    mount_tls,
    pvc,
    resources_field,
    security_context,
    selector,
    service_ports,
)
from mlab.render.common import password_secret as common_password_secret
from mlab.site import Site, User
from mlab.topology import (
    CLAIM_OUTBOX,
    CLAIM_SHARE,
    EGRESS_CHECK_ENV,
    HOMEPOD_ACCESS,
    NODE_IP_ENV,
    PORT_KUBELET,
    PORT_VNC,
    SERVER_ENV,
    service_port,
)

ACCESS = list(HOMEPOD_ACCESS)
"""The HomePod Service's ports, in this order."""

NO_DNS_NAMESERVER = "127.0.0.1"
"""Resolver of HomePods with ``dns: none``.

Nothing listens on port 53 inside the pod, so every lookup is refused at once (no time-out,
no packet leaves the pod); names resolve only through /etc/hosts, where hostAliases puts the
code service. An unroutable address (TEST-NET) would instead make every lookup wait for
time-outs, and any real resolver that recurses is a DNS-tunnelling exfiltration path.
"""


def home_claim(user: User) -> str:
    """Name of the user's home claim: ``users[].home.claim`` or ``home-<user>``."""
    return user.home.claim or f"home-{user.name}"


def deployment_name(user: str) -> str:
    """The HomePod Deployment (and Service) of ``user``: ``homepod-<user>``."""
    return f"homepod-{user}"


def password_secret_name(user: User) -> str:
    """Name of the user's password Secret: ``users[].passwordSecret`` or generated."""
    return user.password_secret or f"homepod-{user.name}-password"


def password_secret(site: Site, user: User, password: str) -> dict[str, Any]:
    """The generated password Secret of one user (key ``password``)."""
    return common_password_secret(site, password_secret_name(user), "homepod", password,
                                  user.name)


def home_pvc(site: Site, user: User) -> dict[str, Any] | None:
    """The home PVC MLab creates, or None when the site names an existing claim."""
    if user.home.claim:
        return None
    return pvc(
        site, home_claim(user), "homepod", user.home.size, user.home.storage_class,
        "ReadWriteOnce", user.name,
    )


VNC_LISTENING = [
    "sh", "-c",
    f"grep -sqE ':{PORT_VNC:04X} [0-9A-F]+:0000 0A ' /proc/net/tcp /proc/net/tcp6",
]
"""Readiness: the VNC server listens (a TCP_LISTEN row for its port in the kernel's
socket table), checked without connecting to it. A ``tcpSocket`` probe connects and closes
before authenticating, which TigerVNC counts as a security failure: after five, it
blacklists the probe's source address, which on a node is also the address NodePort and
host connections arrive from (seen on the node: "Connections: blacklisted: 10.244.0.1",
every VNC client from the node refused with "Too many security failures")."""


def tls_secret_name(user: User) -> str:
    """The HomePod's desktop certificate Secret (``tls.mode`` not off): ``homepod-<user>-tls``."""
    return f"homepod-{user.name}-tls"


def _probes(tls: bool = False) -> dict[str, Any]:
    """Startup, readiness and liveness probes.

    startup: noVNC accepts TCP (up to 5 min for a first boot that populates a home);
    readiness: the VNC server listens (:data:`VNC_LISTENING`, no connection to it);
    liveness: the noVNC page answers HTTP (as the seed did), restarting a desktop that
    hangs (over HTTPS when ``tls`` is on: websockify then speaks TLS only). No probe
    connects to the VNC port itself.
    """
    return {
        "startupProbe": {
            "tcpSocket": {"port": "novnc"},
            "periodSeconds": 5,
            "failureThreshold": 60,
        },
        "readinessProbe": {
            "exec": {"command": VNC_LISTENING},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/", "port": "novnc", **({"scheme": "HTTPS"} if tls else {})},
            "periodSeconds": 20,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
    }


def container_ports(names: Sequence[str]) -> list[dict[str, Any]]:
    """Named container ports for the given access names."""
    return [
        {"name": n, "containerPort": CONTAINER_PORTS[n], "protocol": "TCP"} for n in names
    ]


def shm_volume() -> dict[str, Any]:
    """``/dev/shm`` as a memory-backed emptyDir (PyTorch DataLoader workers need more than
    the runtime's 64 MiB default; 2Gi as the seed set)."""
    return {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}}


def deployment(site: Site, user: User) -> dict[str, Any]:
    """The HomePod Deployment of one user (replicas 1, Recreate: a home is ReadWriteOnce)."""
    vols = VolumeSet()
    vols.mount(vols.add(shm_volume()), "/dev/shm")
    vols.mount(vols.claim(home_claim(user)), f"/home/{user.name}", sub_path=user.home.sub_path)
    mount_login_password(vols, password_secret_name(user))
    share = site.airlock.share
    vols.mount(
        vols.claim(share.claim or CLAIM_SHARE), SHARE_PATH, read_only=True,
        sub_path=share.sub_path,
    )
    outbox = site.airlock.outbox
    outbox_sub = f"{outbox.sub_path.rstrip('/')}/{user.name}" if outbox.sub_path else user.name
    vols.mount(vols.claim(outbox.claim or CLAIM_OUTBOX), OUTBOX_PATH, sub_path=outbox_sub)
    for ds in site.datasets:
        vols.mount(vols.claim(ds.claim), ds.path, read_only=ds.read_only, sub_path=ds.sub_path)
    for extra in user.volumes:
        vols.mount(
            vols.claim(extra.claim), extra.mount_path, read_only=extra.read_only,
            sub_path=extra.sub_path,
        )

    env = [
        {"name": "MLAB_USER", "value": user.name},
        {"name": "MLAB_UID", "value": str(user.uid)},
        {"name": "MLAB_PASSWORD_FILE", "value": PASSWORD_FILE},
        {"name": "MLAB_MODE", "value": "homepod"},
        {"name": "MLAB_CLIPBOARD", "value": site.clipboard_mode()},
        {"name": "MLAB_SSH_ACCESS", "value": site.ssh_access()},
        {"name": "MLAB_SUDO", "value": "1" if user.sudo else "0"},
        {"name": "MLAB_CODE_HOST", "value": site.code_service.host},
        {"name": "MLAB_IMAGE", "value": site.image.ref},
        *common_env(site),
        *gate_env(site),
    ]
    if user.groups:
        env.append({"name": "MLAB_GROUPS", "value": ",".join(user.groups)})
    if user.ssh_keys:
        env.append({"name": "MLAB_SSH_KEYS", "value": "\n".join(user.ssh_keys)})
    if site.tls.enabled:
        # The desktop's certificate from the site CA: VeNCrypt, noVNC over HTTPS, RDP TLS.
        mount_tls(vols, tls_secret_name(user))
        env.append({"name": "MLAB_TLS_DIR", "value": TLS_DIR})
        # The code service over HTTPS only (its HomePod edge, mlab.topology.EDGES): its CA
        # joins the system trust store, so git, pip and curl verify it with no option.
        mount_code_ca(site, vols)
        env += [{"name": "MLAB_CA_BUNDLE", "value": f"{CODE_CA_DIR}/ca.crt"},
                {"name": SERVER_ENV, "value": f"https://{site.code_service.host}"}]

    container: dict[str, Any] = {
        "name": "homepod",
        "image": site.image.ref,
        "imagePullPolicy": site.image.pull_policy,
        "workingDir": f"/home/{user.name}",
        "env": env,
        "ports": container_ports(ACCESS),
        **_probes(site.tls.enabled),
        "volumeMounts": vols.volume_mounts(),
        # sudo: true means root inside the pod with SESSION_CAPABILITIES only; without sudo
        # no_new_privs is set as well (docs/security.md).
        "securityContext": security_context(SESSION_CAPABILITIES, escalation=user.sudo),
        **resources_field(user.resources),
    }

    pod_labels = labels(site, "homepod", user.name)
    for group in user.groups:
        pod_labels[GROUP_LABEL_PREFIX + group] = "true"
    return component_deployment(site, deployment_name(user.name), "homepod", [container], vols.volumes(),
                      user=user.name, placement=user.placement, hostname="homepod",
                      pod_fields=dns_spec(site), pod_labels=pod_labels)


def gate_env(site: Site) -> list[dict[str, Any]]:
    """The start gate's forbidden destinations (:mod:`mlab.homepod.startgate`).

    ``MLAB_NODE_IP`` is the pod's node (downward API ``status.hostIP``); ``MLAB_EGRESS_CHECK``
    names the Airlock's SSH port at its fixed clusterIP (when the Airlock is deployed) and the
    kubelet on the node, ``$(MLAB_NODE_IP)`` expanded by the kubelet (a later env value may
    name an earlier one). With the API server, which the kubelet names in every pod, the
    gate sees three edges the HomePod must not have refused before any session starts. The
    podman engine replaces both (mlab.podman.translate).
    """
    checks = []
    if site.airlock.enabled:
        ssh = service_port(site.airlock.service.ports, site.access.ports, "ssh")
        checks.append(f"airlock={site.airlock_ip}:{ssh}")
    checks.append(f"node-kubelet=$({NODE_IP_ENV}):{PORT_KUBELET}")
    return [
        {"name": NODE_IP_ENV, "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
        {"name": EGRESS_CHECK_ENV, "value": ",".join(checks)},
    ]


def dns_spec(site: Site) -> dict[str, Any]:
    """PodSpec DNS fields of a HomePod: hostAliases for the code service, and with
    ``dns: none`` a resolver that answers nothing (see :data:`NO_DNS_NAMESERVER`)."""
    out: dict[str, Any] = {
        "hostAliases": [{"ip": site.code_service_ip, "hostnames": [site.code_service.host]}]
    }
    if site.dns == "none":
        out["dnsPolicy"] = "None"
        out["dnsConfig"] = {
            "nameservers": [NO_DNS_NAMESERVER],
            "options": [{"name": "ndots", "value": "1"}, {"name": "attempts", "value": "1"}],
        }
    else:
        out["dnsPolicy"] = "ClusterFirst"
    return out


def service(site: Site, user: User) -> dict[str, Any]:
    """The HomePod Service of one user: VNC, RDP, noVNC and SSH as configured."""
    exp = user.service
    ports = {n: service_port(exp.ports, site.access.ports, n) for n in ACCESS}
    spec: dict[str, Any] = {
        "type": exp.type,
        "selector": selector(site, "homepod", user.name),
        "ports": service_ports(ACCESS, ports, exp.node_ports, exp.type != "ClusterIP"),
    }
    if exp.external_ips:
        spec["externalIPs"] = list(exp.external_ips)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(site, f"homepod-{user.name}", "homepod", user.name),
        "spec": spec,
    }


def render_user(site: Site, user: User) -> list[dict[str, Any]]:
    """The secret-free objects of one user: [PVC,] Deployment, Service."""
    out = []
    claim = home_pvc(site, user)
    if claim is not None:
        out.append(claim)
    out.append(deployment(site, user))
    out.append(service(site, user))
    return out
