"""Shared pieces of every rendered object: labels, metadata, volume names, pod basics.

Invariant: every object MLab renders carries the four ``app.kubernetes.io`` labels
(name, instance, component, managed-by); HomePod objects also carry ``mlab.io/user``.
Pruning (``mlab apply``) and the podman engine find MLab's objects by these labels only.
Everything here is pure: site in, new dicts out, nothing mutated.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from mlab.site import Placement, Resources, Site
from mlab.topology import (  # noqa: F401  (re-exported: the renderers import them from here)
    ANNOTATION_EDGE,
    CA_DIR,
    CONTAINER_PORTS,
    GROUP_LABEL_PREFIX,
    LABEL_COMPONENT,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    LABEL_USER,
    OUTBOX_PATH,
    PASSWORD_DIR,
    PASSWORD_FILE,
    PORT_CODE,
    PORT_NOVNC,
    PORT_RDP,
    PORT_SSH,
    PORT_VNC,
    SHARE_PATH,
    AccessName,
)

Component = Literal["homepod", "airlock", "code-service", "portal"]

LOGIN_PASSWORD_MODE = 0o444
"""Mode of the password file in a HomePod or the Airlock. The pod's one login user reads it
(``mlab request`` logs in to the code service with MLAB_PASSWORD_FILE); Secret files are
root-owned and, without ``fsGroup`` (which would re-own shared claims), only the "other"
bits let that user read. The pod holds no other person's account."""

MAX_NAME = 63
"""Kubernetes DNS-1123 label limit, which also bounds volume and port names."""


def labels(site: Site, component: Component, user: str | None = None) -> dict[str, str]:
    """The labels of one object.

    Args:
        site: the site (its name is the instance label).
        component: ``homepod``, ``airlock`` or ``code-service``.
        user: the HomePod user, or None for objects that belong to no user.

    Returns:
        A new dict of label key to value.
    """
    out = {
        LABEL_NAME: "mlab",
        LABEL_INSTANCE: site.name,
        LABEL_COMPONENT: component,
        LABEL_MANAGED_BY: "mlab",
    }
    if user is not None:
        out[LABEL_USER] = user
    return out


def selector(site: Site, component: Component, user: str | None = None) -> dict[str, str]:
    """Labels that select one component's pods (the immutable Deployment selector)."""
    out = {LABEL_INSTANCE: site.name, LABEL_COMPONENT: component}
    if user is not None:
        out[LABEL_USER] = user
    return out


def metadata(
    site: Site,
    name: str,
    component: Component,
    user: str | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """ObjectMeta for a namespaced object."""
    meta: dict[str, Any] = {
        "name": name,
        "namespace": site.namespace,
        "labels": labels(site, component, user),
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def component_deployment(
    site: Site,
    name: str,
    component: Component,
    containers: list[dict[str, Any]],
    volumes: list[dict[str, Any]],
    *,
    user: str | None = None,
    placement: Placement | None = None,
    hostname: str | None = None,
    pod_fields: dict[str, Any] | None = None,
    pod_labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The Deployment every MLab component runs as: one replica, ``Recreate``, locked-down pod.

    Args:
        site: the site (labels, pull secrets).
        name: the Deployment's name (``homepod-<user>``, ``airlock``, ...).
        component: its component label.
        containers: the pod's containers.
        volumes: the pod's volumes (``VolumeSet.volumes()``).
        user: the HomePod's user (its labels and selector), else None.
        placement: the component's ``placement`` (nodeName, nodeSelector, tolerations).
        hostname: the pod's hostname, when fixed.
        pod_fields: PodSpec fields placed after ``securityContext`` (hostAliases, DNS).
        pod_labels: the pod template's labels when they add to :func:`labels` (groups).
        annotations: the pod template's annotations (a restart on change), if any.

    Returns:
        An ``apps/v1`` Deployment. ``Recreate``: each pod mounts ReadWriteOnce claims, so a
        rolling update's second pod could not start. The pod mounts no service-account token,
        gets no Service environment variables and runs under :func:`pod_security_context`.
    """
    spec: dict[str, Any] = {
        **(placement_spec(placement) if placement is not None else {}),
        **pull_secrets(site),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        **({"hostname": hostname} if hostname else {}),
        "securityContext": pod_security_context(),
        **(pod_fields or {}),
        "containers": containers,
        "volumes": volumes,
    }
    meta: dict[str, Any] = {"labels": pod_labels or labels(site, component, user)}
    if annotations:
        meta["annotations"] = annotations
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(site, name, component, user),
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": selector(site, component, user)},
            "template": {"metadata": meta, "spec": spec},
        },
    }


def short_name(prefix: str, name: str) -> str:
    """``prefix-name`` cut to 63 characters with a stable hash suffix when too long.

    Kubernetes volume names must be DNS-1123 labels (at most 63 characters); user and
    claim names may each be 63 long, so a prefixed name can overflow.
    """
    full = f"{prefix}-{name}"
    if len(full) <= MAX_NAME:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:8]
    return f"{full[: MAX_NAME - 9].rstrip('-')}-{digest}"


def placement_spec(placement: Placement) -> dict[str, Any]:
    """PodSpec fields nodeName, nodeSelector and tolerations (only those set)."""
    out: dict[str, Any] = {}
    if placement.node_name:
        out["nodeName"] = placement.node_name
    if placement.node_selector:
        out["nodeSelector"] = dict(sorted(placement.node_selector.items()))
    if placement.tolerations:
        out["tolerations"] = [
            t.model_dump(exclude_none=True, by_alias=True) for t in placement.tolerations
        ]
    return out


def resources_spec(resources: Resources) -> dict[str, Any]:
    """core/v1 ResourceRequirements; GPUs become ``nvidia.com/gpu`` in requests and limits.

    Extended resources such as nvidia.com/gpu cannot be overcommitted: Kubernetes requires
    request == limit, so both are set to the same count.
    """
    requests = dict(sorted(resources.requests.items()))
    limits = dict(sorted(resources.limits.items()))
    if resources.gpus:
        requests["nvidia.com/gpu"] = str(resources.gpus)
        limits["nvidia.com/gpu"] = str(resources.gpus)
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def resources_field(resources: Resources) -> dict[str, Any]:
    """``{"resources": ...}`` for a container when :func:`resources_spec` sets anything, else {}."""
    res = resources_spec(resources)
    return {"resources": res} if res else {}


def common_env(site: Site) -> list[dict[str, str]]:
    """Environment every MLab container gets: TZ and LANG."""
    return [{"name": "TZ", "value": site.timezone}, {"name": "LANG", "value": site.locale}]


def pull_secrets(site: Site) -> dict[str, Any]:
    """PodSpec.imagePullSecrets, or nothing."""
    if not site.image.pull_secrets:
        return {}
    return {"imagePullSecrets": [{"name": n} for n in site.image.pull_secrets]}


def pvc(
    site: Site,
    name: str,
    component: Component,
    size: str,
    storage_class: str | None,
    access_mode: str,
    user: str | None = None,
) -> dict[str, Any]:
    """A PersistentVolumeClaim MLab creates."""
    spec: dict[str, Any] = {
        "accessModes": [access_mode],
        "resources": {"requests": {"storage": size}},
    }
    if storage_class:
        spec["storageClassName"] = storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata(site, name, component, user),
        "spec": spec,
    }


def service_ports(
    names: Sequence[AccessName], ports: Mapping[AccessName, int],
    node_ports: Mapping[AccessName, int], with_node_ports: bool,
) -> list[dict[str, Any]]:
    """ServicePorts for access names, targeting the named container ports."""
    out = []
    for name in names:
        item: dict[str, Any] = {
            "name": name,
            "port": ports[name],
            "targetPort": name,
            "protocol": "TCP",
        }
        if with_node_ports and name in node_ports:
            item["nodePort"] = node_ports[name]
        out.append(item)
    return out


class VolumeSet:
    """Pod volumes keyed by source, so one claim used twice is one volume with two mounts.

    The seed mounts the public-dataset claim at /opt/public and its ``airlock`` sub-directory
    at /opt/public/airlock; one volume per claim keeps that legal for every CSI driver.
    """

    def __init__(self) -> None:
        self._volumes: dict[str, dict[str, Any]] = {}
        self._by_claim: dict[str, str] = {}
        self.mounts: list[dict[str, Any]] = []

    def claim(self, claim: str, prefix: str = "pvc") -> str:
        """The volume name for a PersistentVolumeClaim, added on first use."""
        if claim not in self._by_claim:
            name = short_name(prefix, claim)
            self._by_claim[claim] = name
            self._volumes[name] = {"name": name, "persistentVolumeClaim": {"claimName": claim}}
        return self._by_claim[claim]

    def add(self, volume: dict[str, Any]) -> str:
        """Add a non-claim volume (emptyDir, secret, configMap, projected)."""
        self._volumes[volume["name"]] = volume
        return str(volume["name"])

    def mount(
        self, volume: str, path: str, read_only: bool = False, sub_path: str | None = None
    ) -> None:
        """Mount ``volume`` at ``path``."""
        item: dict[str, Any] = {"name": volume, "mountPath": path}
        if sub_path:
            item["subPath"] = sub_path
        if read_only:
            item["readOnly"] = True
        self.mounts.append(item)

    def volume_mounts(self) -> list[dict[str, Any]]:
        """Mounts sorted by path, so a parent (/opt/public) is mounted before its child
        (/opt/public/airlock) on every runtime."""
        return sorted(self.mounts, key=lambda m: (m["mountPath"].rstrip("/").count("/"), m["mountPath"]))

    def volumes(self) -> list[dict[str, Any]]:
        """The pod's volumes, in the order they were first used."""
        return list(self._volumes.values())


# --- Linux capabilities and seccomp (docs/security.md) ------------------------------------
SESSION_CAPABILITIES: tuple[str, ...] = (
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "NET_BIND_SERVICE",
    "SETGID", "SETUID", "SYS_CHROOT",
)
"""The only capabilities a HomePod or the Airlock keeps (every other one is dropped).

Each is needed by a program the image runs as root (docs/security.md names them):
AUDIT_WRITE (sshd writes a login record to the kernel's audit log for a terminal session;
under containerd the write fails with EPERM without it and sshd closes the session, as
measured on the node: "linux_audit_write_entry failed: Operation not permitted"), CHOWN (the entrypoint gives the home, outbox and keys to the user; dpkg unpacks files of
other owners), DAC_OVERRIDE (root, sudo and dpkg read and write files they do not own:
the user's 0700 home, apt's ``_apt`` directories), FOWNER (chmod and utime on files of other
owners: ``install -m``, dpkg), FSETID (dpkg and ``install`` keep set-user/group-ID bits,
e.g. ``/run/xrdp/sockdir`` 3777 root:xrdp), KILL (tini, supervisord and sudo signal
processes of other users), NET_BIND_SERVICE (sshd on port 22), SETGID and SETUID (sudo,
sshd, xrdp-sesman, supervisord ``user=`` and apt's ``_apt`` sandbox change user), SYS_CHROOT
(sshd's privilege separation chroots its pre-auth child to /run/sshd; SFTP chroots).

Never NET_RAW (raw and packet sockets: a forged source address inherits another pod's
NetworkPolicy, and packets of others can be read) nor NET_ADMIN (addresses, routes,
firewall, sysctls). Also left out on purpose: SETFCAP (file capabilities), SETPCAP, MKNOD.
"""
CODE_SERVICE_CAPABILITIES: tuple[str, ...] = ()
"""The code service (``mlab code-service serve`` on :8080, git) needs no capability: it
runs as root only over files it created itself and binds a port above 1024."""


def security_context(capabilities: tuple[str, ...], escalation: bool) -> dict[str, Any]:
    """A container ``securityContext``: seccomp RuntimeDefault, drop ALL, add ``capabilities``.

    Args:
        capabilities: capability names without ``CAP_`` to keep (see
            :data:`SESSION_CAPABILITIES`).
        escalation: ``allowPrivilegeEscalation``; False sets the kernel's ``no_new_privs``,
            so set-user-ID programs (sudo) cannot raise privileges: only where the pod's
            user has no sudo.

    Returns:
        A new core/v1 SecurityContext dict (Kubernetes API reference, SecurityContext).
    """
    caps: dict[str, Any] = {"drop": ["ALL"]}
    if capabilities:
        caps["add"] = list(capabilities)
    return {
        "allowPrivilegeEscalation": escalation,
        "capabilities": caps,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security_context() -> dict[str, Any]:
    """The pod ``securityContext`` of every MLab pod: seccomp RuntimeDefault."""
    return {"seccompProfile": {"type": "RuntimeDefault"}}


def mount_login_password(vols: VolumeSet, secret_name: str) -> None:
    """Mount the login password Secret (key ``password``) read-only at ``PASSWORD_DIR``.

    Mode :data:`LOGIN_PASSWORD_MODE` (the pod's login user reads it); the path is the
    container contract's ``/etc/mlab/secret/password`` (docs/CONTRACTS.md).
    """
    mount_password(vols, "password", secret_name, PASSWORD_DIR, LOGIN_PASSWORD_MODE)


def mount_password(vols: VolumeSet, volume: str, secret_name: str, directory: str,
                   mode: int = 0o400) -> None:
    """Mount a password Secret's key ``password`` read-only as ``<directory>/password``.

    Args:
        vols: the pod's volumes.
        volume: the volume's name in the pod.
        secret_name: the Secret (key ``password``).
        directory: where the file appears.
        mode: the file's mode (0o400: read by root only).
    """
    secret = vols.add(
        {
            "name": volume,
            "secret": {
                "secretName": secret_name,
                "items": [{"key": "password", "path": "password"}],
                "defaultMode": mode,
            },
        }
    )
    vols.mount(secret, directory, read_only=True)


TLS_DIR = "/etc/mlab/tls"
"""Where a TLS Secret (tls.crt, tls.key, ca.crt) is mounted, in the code service and
HomePods alike (``tls.mode`` not off; docs/egress.md)."""


def secret(site: Site, name: str, component: Component, data: dict[str, str],
           user: str | None = None, kind: str = "Opaque") -> dict[str, Any]:
    """A core/v1 Secret of the site: ``data`` as ``stringData``, of type ``kind``.

    Args:
        site: the site (labels, namespace).
        name: the Secret's name.
        component: the component it belongs to (its label).
        data: key -> text.
        user: the user it belongs to (HomePod Secrets), else None.
        kind: the Secret type (``Opaque``, ``kubernetes.io/tls``).
    """
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(site, name, component, user),
        "type": kind,
        "stringData": data,
    }


def password_secret(site: Site, name: str, component: Component, password: str,
                    user: str | None = None) -> dict[str, Any]:
    """A generated password Secret (key ``password``): a user's, the Airlock's, an account's."""
    return secret(site, name, component, {"password": password}, user)


def tls_secret(site: Site, name: str, component: Component, cert: str, key: str, ca: str,
               user: str | None = None) -> dict[str, Any]:
    """A kubernetes.io/tls Secret (core/v1: keys ``tls.crt``, ``tls.key``; ``ca.crt`` as
    cert-manager writes it) issued by the site CA (:mod:`mlab.tls`)."""
    return secret(site, name, component, {"tls.crt": cert, "tls.key": key, "ca.crt": ca},
                  user, "kubernetes.io/tls")


CODE_TLS_SECRET = "code-service-tls"
"""The code service's certificate Secret when the site CA issues it (``tls.mode: site-ca``)."""
CODE_CA_DIR = "/etc/mlab/code-ca"
"""Where HomePods mount the ``ca.crt`` of the code service's TLS Secret (``tls.mode`` not
off): the entrypoint adds it to the system trust store (``MLAB_CA_BUNDLE``), so git, pip,
curl and Python's ssl verify ``https://<codeService.host>`` with no option."""


def code_tls_secret_name(site: Site) -> str:
    """The code service's kubernetes.io/tls Secret: ``tls.secret`` or ``code-service-tls``."""
    return site.tls.secret or CODE_TLS_SECRET


def mount_code_ca(site: Site, vols: VolumeSet) -> None:
    """Mount only the ``ca.crt`` of the code service's TLS Secret (never its key) read-only
    at :data:`CODE_CA_DIR`; the Secret is :func:`code_tls_secret_name`'s."""
    vol = vols.add({"name": "code-ca", "secret": {
        "secretName": code_tls_secret_name(site), "defaultMode": 0o444,
        "items": [{"key": "ca.crt", "path": "ca.crt"}]}})
    vols.mount(vol, CODE_CA_DIR, read_only=True)


SITE_CA_SECRET = "mlab-site-ca"
"""The site CA's certificate alone (key ``ca.crt``): what the portal checks desktops by."""


def site_ca_secret(site: Site, ca: str) -> dict[str, Any]:
    """The Secret :data:`SITE_CA_SECRET` (the CA certificate only, no key)."""
    return secret(site, SITE_CA_SECRET, "portal", {"ca.crt": ca})


def mount_tls(vols: VolumeSet, secret_name: str) -> None:
    """Mount a TLS Secret's tls.crt, tls.key and ca.crt read-only (root only) at
    :data:`TLS_DIR`."""
    vol = vols.add({"name": "tls", "secret": {
        "secretName": secret_name, "defaultMode": 0o400,
        "items": [{"key": k, "path": k} for k in ("tls.crt", "tls.key", "ca.crt")]}})
    vols.mount(vol, TLS_DIR, read_only=True)
