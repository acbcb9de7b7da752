"""Airlock objects: the share and outbox PVCs, the password Secrets, Deployment and Service.

Invariant: the Airlock's login container mounts the share read-write and never an outbox, a
home or another account's password. Every user's outbox (the whole outbox claim) is mounted,
read-only, only in the pod's second container, the export *publisher*: it runs as no login
user, with its own code-service account (:data:`mlab.site.PUBLISHER_ACCOUNT`, its own
Secret) and sees of the share only ``export/``, where it writes verified copies of approved
exports. Containers of a pod share the network but not their filesystems or processes
(no ``shareProcessNamespace``), so nobody who logs in to the Airlock, root through sudo
included, can read an outbox: the Airlock sees ``export/<id>/`` of approved requests and
nothing else (issue 13). The share and outbox claims are rendered even when the Airlock is
disabled, because HomePods mount them.
"""

from __future__ import annotations

from typing import Any

from mlab.render.common import (
    CA_DIR,
    CODE_CA_DIR,
    OUTBOX_PATH,
    PASSWORD_FILE,
    SESSION_CAPABILITIES,
    SHARE_PATH,
    TLS_DIR,
    VolumeSet,
    common_env,
    component_deployment,
    metadata,
    mount_code_ca,
    mount_login_password,
    mount_password,
    mount_tls,
    pvc,
    resources_field,
    security_context,
    selector,
    service_ports,
)
from mlab.render.common import password_secret as common_password_secret
from mlab.render.homepod import container_ports, shm_volume
from mlab.site import PUBLISHER_ACCOUNT, Site
from mlab.topology import (
    AIRLOCK_ACCESS,
    CLAIM_EXPORTS,
    CLAIM_OUTBOX,
    CLAIM_SHARE,
    EXPORT_DIR,
    SECRET_AIRLOCK_PASSWORD,
    SERVER_ENV,
    service_port,
)

ACCESS = list(AIRLOCK_ACCESS)
"""The Airlock Service's ports, in this order (no RDP: the seed published none)."""

AIRLOCK_UID = 1000
"""uid of the Airlock login user (the Airlock has no home of its own)."""


PUBLISHER_SECRET = "export-publisher-password"
"""Secret (key ``password``) of the publisher's code-service account, generated."""

PUBLISHER_PASSWORD_DIR = "/etc/mlab/publisher"
"""Where the publisher container sees its password file (mode 0400, root's)."""

PUBLISHER_COMMAND = ["/usr/local/lib/mlab/run-publisher"]
"""The publisher container's command (the image's wrapper of ``mlab request publish
--watch 30``, with back-off); it replaces the image entrypoint: no login user, no sshd."""

"""The share's sub-directory of published exports (docs/CONTRACTS.md)."""


def publisher_secret(site: Site, password: str) -> dict[str, Any]:
    """The generated Secret of the publisher's code-service account (key ``password``)."""
    return common_password_secret(site, PUBLISHER_SECRET, "airlock", password)


def password_secret_name(site: Site) -> str:
    """``airlock.passwordSecret`` or ``airlock-password``."""
    return site.airlock.password_secret or SECRET_AIRLOCK_PASSWORD


def password_secret(site: Site, password: str) -> dict[str, Any]:
    """The generated Airlock password Secret (key ``password``)."""
    return common_password_secret(site, password_secret_name(site), "airlock", password)


def share_claim(site: Site) -> str:
    """Name of the airlock share claim."""
    return site.airlock.share.claim or CLAIM_SHARE


def outbox_claim(site: Site) -> str:
    """Name of the outbox claim (one sub-directory per user)."""
    return site.airlock.outbox.claim or CLAIM_OUTBOX


def exports_claim(site: Site) -> str | None:
    """Name of the claim of delivered exports (``airlock.exports``), or None when exports
    go to the share (``egress.exportDelivery: share``) or there is no Airlock."""
    if not site.airlock.enabled or site.export_delivery() != "requester":
        return None
    return site.airlock.exports.claim or CLAIM_EXPORTS


def claims(site: Site) -> list[dict[str, Any]]:
    """The share, outbox and (requester delivery) exports PVCs MLab creates (ReadWriteMany:
    mounted on many nodes)."""
    out = []
    share = site.airlock.share
    if not share.claim:
        out.append(
            pvc(site, CLAIM_SHARE, "airlock", share.size, share.storage_class, "ReadWriteMany")
        )
    outbox = site.airlock.outbox
    if not outbox.claim:
        out.append(
            pvc(site, "outbox", "airlock", outbox.size, outbox.storage_class, "ReadWriteMany")
        )
    exports = site.airlock.exports
    if exports_claim(site) and not exports.claim:
        out.append(
            pvc(site, "exports", "airlock", exports.size, exports.storage_class, "ReadWriteMany")
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


TLS_SECRET = "airlock-tls"
"""The Airlock desktop's certificate Secret from the site CA (``tls.mode`` not off)."""
CODE_CA_FILE = f"{CODE_CA_DIR}/ca.crt"
"""The code service's CA certificate in the Airlock's containers (``tls.mode`` not off)."""


def code_server_env(site: Site) -> dict[str, str]:
    """``MLAB_SERVER=https://<codeService.host>``: with ``tls`` the Airlock's login and its
    publisher reach the code service on HTTPS only (its Service port 443)."""
    return {"name": SERVER_ENV, "value": f"https://{site.code_service.host}"}


def deployment(site: Site) -> dict[str, Any]:
    """The Airlock Deployment (same image, MLAB_MODE=airlock)."""
    air = site.airlock
    vols = VolumeSet()
    vols.mount(vols.add(shm_volume()), "/dev/shm")
    mount_login_password(vols, password_secret_name(site))
    vols.mount(vols.claim(share_claim(site)), SHARE_PATH, sub_path=air.share.sub_path)
    env = [
        {"name": "MLAB_USER", "value": air.user},
        {"name": "MLAB_UID", "value": str(AIRLOCK_UID)},
        {"name": "MLAB_PASSWORD_FILE", "value": PASSWORD_FILE},
        {"name": "MLAB_MODE", "value": "airlock"},
        {"name": "MLAB_CLIPBOARD", "value": site.clipboard_mode()},
        {"name": "MLAB_SUDO", "value": "1"},
        {"name": "MLAB_CODE_HOST", "value": site.code_service.host},
        {"name": "MLAB_IMAGE", "value": site.image.ref},
        *common_env(site),
        *proxy_env(site),
    ]
    mount_ca_bundle(site, vols, env)
    if site.tls.enabled:  # its desktop: VeNCrypt and noVNC over HTTPS (docs/egress.md)
        mount_tls(vols, TLS_SECRET)
        env.append({"name": "MLAB_TLS_DIR", "value": TLS_DIR})
        # The code service over HTTPS only (the Airlock's edge, mlab.topology.EDGES): its CA
        # joins the system trust store, after a proxy's CA (MLAB_CA_BUNDLE lists files).
        mount_code_ca(site, vols)
        env.append(code_server_env(site))
        bundle = next((e for e in env if e["name"] == "MLAB_CA_BUNDLE"), None)
        if bundle:
            bundle["value"] += f":{CODE_CA_FILE}"
        else:
            env.append({"name": "MLAB_CA_BUNDLE", "value": CODE_CA_FILE})
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
            "httpGet": {"path": "/", "port": "novnc",
                        **({"scheme": "HTTPS"} if site.tls.enabled else {})},
            "periodSeconds": 20,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "volumeMounts": vols.volume_mounts(),
        # The Airlock's user has sudo (staging, install tests): escalation stays allowed.
        # drop ALL includes NET_RAW: the publisher shares this pod's network, so root through
        # sudo cannot capture its code-service login.
        "securityContext": security_context(SESSION_CAPABILITIES, escalation=True),
        **resources_field(air.resources),
    }
    vols.mounts = []
    publisher = publisher_container(site, vols)
    aliases = [{"ip": site.code_service_ip, "hostnames": [site.code_service.host]}]
    return component_deployment(site, "airlock", "airlock", [container, publisher], vols.volumes(),
                      placement=air.placement, hostname="airlock",
                      pod_fields={"hostAliases": aliases})


def publisher_container(site: Site, vols: VolumeSet) -> dict[str, Any]:
    """The export publisher: every outbox read-only, the share's ``export/``, its password.

    Runs as root (outboxes hold files of every user id) with only ``DAC_OVERRIDE`` (read
    any outbox file, write into ``export/`` whoever owns it), a read-only root filesystem
    and no privilege escalation. Adds its volumes to ``vols``; uses ``vols.mounts`` only
    for its own mounts (the caller empties it first).
    """
    air = site.airlock
    mount_password(vols, "publisher-password", PUBLISHER_SECRET, PUBLISHER_PASSWORD_DIR)
    tls_env: list[dict[str, str]] = []
    if site.tls.enabled:
        # HTTPS only, checked against the code service's CA alone (the publisher reaches
        # nothing else; mlab.codeservice.client.tls_verify reads SSL_CERT_FILE).
        mount_code_ca(site, vols)
        tls_env = [code_server_env(site), {"name": "SSL_CERT_FILE", "value": CODE_CA_FILE}]
    delivered = exports_claim(site)
    if delivered:
        # Requester delivery: the publication root is the exports claim, which only the
        # code service reads (owner-only downloads); the publisher sees no share at all.
        vols.mount(vols.claim(delivered), f"{SHARE_PATH}/{EXPORT_DIR}",
                   sub_path=air.exports.sub_path)
    else:
        export_sub = "/".join(p for p in (air.share.sub_path, EXPORT_DIR) if p)
        vols.mount(vols.claim(share_claim(site)), f"{SHARE_PATH}/{EXPORT_DIR}",
                   sub_path=export_sub)
    vols.mount(
        vols.claim(outbox_claim(site)), OUTBOX_PATH, read_only=True,
        sub_path=air.outbox.sub_path,
    )
    return {
        "name": "publisher",
        "image": site.image.ref,
        "imagePullPolicy": site.image.pull_policy,
        "command": list(PUBLISHER_COMMAND),
        "env": [
            {"name": "MLAB_USER", "value": PUBLISHER_ACCOUNT},
            {"name": "MLAB_PASSWORD_FILE", "value": f"{PUBLISHER_PASSWORD_DIR}/password"},
            {"name": "MLAB_CODE_HOST", "value": site.code_service.host},
            {"name": "HOME", "value": "/tmp"},
            *tls_env,
            *common_env(site),
        ],
        # Reads every outbox (DAC_OVERRIDE), nothing else; no login, no sudo, no writes
        # outside its publication root.
        "securityContext": {
            **security_context(("DAC_OVERRIDE",), escalation=False),
            "readOnlyRootFilesystem": True,
        },
        "volumeMounts": vols.volume_mounts(),
    }


def service(site: Site) -> dict[str, Any]:
    """The Airlock Service: SSH/SFTP, noVNC and VNC."""
    exp = site.airlock.service
    ports = {n: service_port(exp.ports, site.access.ports, n) for n in ACCESS}
    spec: dict[str, Any] = {
        "type": exp.type,
        # Fixed, so HomePods' start gates can be given it (mlab.render.homepod.gate_env).
        "clusterIP": site.airlock_ip,
        "selector": selector(site, "airlock"),
        "ports": service_ports(ACCESS, ports, exp.node_ports, exp.type != "ClusterIP"),
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
