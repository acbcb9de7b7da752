"""Airlock objects: the share and outbox PVCs, the password Secret, Deployment and Service.

Invariant: the Airlock mounts the share read-write and every user's outbox read-only (the
whole outbox claim at /opt/outbox); it never mounts a home or a user's password. The share
and outbox claims are rendered even when the Airlock is disabled, because HomePods mount them.
"""

from __future__ import annotations

from typing import Any

from mlab.render.common import (
    CA_DIR,
    LOGIN_PASSWORD_MODE,
    OUTBOX_PATH,
    PASSWORD_DIR,
    PASSWORD_FILE,
    SESSION_CAPABILITIES,
    SHARE_PATH,
    VolumeSet,
    common_env,
    labels,
    metadata,
    placement_spec,
    pod_security_context,
    pull_secrets,
    pvc,
    resources_spec,
    security_context,
    selector,
    service_ports,
)
from mlab.render.homepod import container_ports, shm_volume
from mlab.site import Site

ACCESS = ["ssh", "novnc", "vnc"]
"""The Airlock Service's ports, in this order (no RDP: the seed published none)."""

AIRLOCK_UID = 1000
"""uid of the Airlock login user (the Airlock has no home of its own)."""


def password_secret_name(site: Site) -> str:
    """``airlock.passwordSecret`` or ``airlock-password``."""
    return site.airlock.password_secret or "airlock-password"


def password_secret(site: Site, password: str) -> dict[str, Any]:
    """The generated Airlock password Secret (key ``password``)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(site, password_secret_name(site), "airlock"),
        "type": "Opaque",
        "stringData": {"password": password},
    }


def share_claim(site: Site) -> str:
    """Name of the airlock share claim."""
    return site.airlock.share.claim or "airlock-share"


def outbox_claim(site: Site) -> str:
    """Name of the outbox claim (one sub-directory per user)."""
    return site.airlock.outbox.claim or "outbox"


def claims(site: Site) -> list[dict[str, Any]]:
    """The share and outbox PVCs MLab creates (ReadWriteMany: mounted on many nodes)."""
    out = []
    share = site.airlock.share
    if not share.claim:
        out.append(
            pvc(site, "airlock-share", "airlock", share.size, share.storage_class, "ReadWriteMany")
        )
    outbox = site.airlock.outbox
    if not outbox.claim:
        out.append(
            pvc(site, "outbox", "airlock", outbox.size, outbox.storage_class, "ReadWriteMany")
        )
    return out


def proxy_env(site: Site) -> list[dict[str, str]]:
    """http(s)_proxy and no_proxy in both spellings (curl reads lower case, others upper)."""
    proxy = site.airlock.proxy
    env: list[dict[str, str]] = []
    for key, value in (("http_proxy", proxy.http), ("https_proxy", proxy.https)):
        if value:
            env += [{"name": key, "value": value}, {"name": key.upper(), "value": value}]
    if proxy.no_proxy:
        joined = ",".join(proxy.no_proxy)
        env += [{"name": "no_proxy", "value": joined}, {"name": "NO_PROXY", "value": joined}]
    return env


def deployment(site: Site) -> dict[str, Any]:
    """The Airlock Deployment (same image, MLAB_MODE=airlock)."""
    air = site.airlock
    vols = VolumeSet()
    vols.mount(vols.add(shm_volume()), "/dev/shm")
    secret = vols.add(
        {
            "name": "password",
            "secret": {
                "secretName": password_secret_name(site),
                "items": [{"key": "password", "path": "password"}],
                "defaultMode": LOGIN_PASSWORD_MODE,
            },
        }
    )
    vols.mount(secret, PASSWORD_DIR, read_only=True)
    vols.mount(vols.claim(share_claim(site)), SHARE_PATH, sub_path=air.share.sub_path)
    vols.mount(
        vols.claim(outbox_claim(site)), OUTBOX_PATH, read_only=True,
        sub_path=air.outbox.sub_path,
    )
    env = [
        {"name": "MLAB_USER", "value": air.user},
        {"name": "MLAB_UID", "value": str(AIRLOCK_UID)},
        {"name": "MLAB_PASSWORD_FILE", "value": PASSWORD_FILE},
        {"name": "MLAB_MODE", "value": "airlock"},
        {"name": "MLAB_CLIPBOARD", "value": site.clipboard},
        {"name": "MLAB_SUDO", "value": "1"},
        {"name": "MLAB_CODE_HOST", "value": site.code_service.host},
        {"name": "MLAB_IMAGE", "value": site.image.ref},
        *common_env(site),
        *proxy_env(site),
    ]
    mount_ca_bundle(site, vols, env)
    container: dict[str, Any] = {
        "name": "airlock",
        "image": site.image.ref,
        "imagePullPolicy": site.image.pull_policy,
        "workingDir": SHARE_PATH,
        "env": env,
        "ports": container_ports(ACCESS),
        "startupProbe": {"tcpSocket": {"port": "ssh"}, "periodSeconds": 5, "failureThreshold": 60},
        "readinessProbe": {"tcpSocket": {"port": "ssh"}, "periodSeconds": 10},
        "livenessProbe": {
            "httpGet": {"path": "/", "port": "novnc"},
            "periodSeconds": 20,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "volumeMounts": vols.volume_mounts(),
        # The Airlock's user has sudo (staging, install tests): escalation stays allowed.
        "securityContext": security_context(SESSION_CAPABILITIES, escalation=True),
    }
    res = resources_spec(air.resources)
    if res:
        container["resources"] = res
    pod_spec: dict[str, Any] = {
        **placement_spec(air.placement),
        **pull_secrets(site),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "hostname": "airlock",
        "securityContext": pod_security_context(),
        "hostAliases": [{"ip": site.code_service_ip, "hostnames": [site.code_service.host]}],
        "containers": [container],
        "volumes": vols.volumes(),
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(site, "airlock", "airlock"),
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": selector(site, "airlock")},
            "template": {"metadata": {"labels": labels(site, "airlock")}, "spec": pod_spec},
        },
    }


def service(site: Site) -> dict[str, Any]:
    """The Airlock Service: SSH/SFTP, noVNC and VNC."""
    exp = site.airlock.service
    ports = {n: exp.ports.get(n, getattr(site.access.ports, n)) for n in ACCESS}  # type: ignore[call-overload]
    spec: dict[str, Any] = {
        "type": exp.type,
        "selector": selector(site, "airlock"),
        "ports": service_ports(ACCESS, ports, {str(k): v for k, v in exp.node_ports.items()}, exp.type != "ClusterIP"),
    }
    if exp.external_ips:
        spec["externalIPs"] = list(exp.external_ips)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(site, "airlock", "airlock"),
        "spec": spec,
    }


def render_airlock(site: Site) -> list[dict[str, Any]]:
    """The secret-free objects of airlock.yaml."""
    out = claims(site)
    if site.airlock.enabled:
        out += [deployment(site), service(site)]
    return out


def mount_ca_bundle(site: Site, vols: VolumeSet, env: list[dict[str, Any]]) -> None:
    """Mount ``airlock.caBundleSecret`` (key ``ca.crt``) at CA_DIR and set MLAB_CA_BUNDLE.

    Used by the Airlock and the code service, the two pods that reach the internet (through
    a site's TLS-intercepting proxy). Mutates ``vols`` and ``env``; no-op without the Secret.
    """
    if not site.airlock.ca_bundle_secret:
        return
    ca = vols.add(
        {
            "name": "ca-bundle",
            "secret": {
                "secretName": site.airlock.ca_bundle_secret,
                "items": [{"key": "ca.crt", "path": "ca.crt"}],
                "defaultMode": 0o444,
            },
        }
    )
    vols.mount(ca, CA_DIR, read_only=True)
    env.append({"name": "MLAB_CA_BUNDLE", "value": f"{CA_DIR}/ca.crt"})
