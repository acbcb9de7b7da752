"""Code-service objects: the site ConfigMap, admin Secret, data PVC, Deployment, Service.

Invariant: the Service has the site's fixed clusterIP (HomePods reach it through a
hostAliases entry, with no DNS); the container runs ``mlab code-service serve`` from the
HomePod image, reading the site from the ``mlab-site`` ConfigMap and users' passwords from
their Secrets projected at /etc/mlab/users/<user>/password (docs/CONTRACTS.md); with the
Airlock enabled its password Secret is projected there too, under ``airlock.user`` (package
requests), and the export publisher's, under ``mlab-publisher``.
"""

from __future__ import annotations

import hashlib
from typing import Any

from mlab.render.airlock import (
    PUBLISHER_SECRET,
    exports_claim,
    mount_ca_bundle,
    proxy_env,
)
from mlab.render.airlock import password_secret_name as airlock_secret_name
from mlab.render.common import (
    CODE_SERVICE_CAPABILITIES,
    CODE_TLS_SECRET,
    PORT_CODE,
    TLS_DIR,
    VolumeSet,
    code_tls_secret_name,
    common_env,
    component_deployment,
    metadata,
    mount_password,
    mount_tls,
    pvc,
    resources_field,
    security_context,
    selector,
)
from mlab.render.common import password_secret as common_password_secret
from mlab.render.homepod import password_secret_name
from mlab.site import HOMEPOD_NETS_ENV, PUBLISHER_ACCOUNT, Site
from mlab.topology import PORT_CODE_TLS, PORT_CODE_TLS_SERVICE

DATA_DIR = "/var/lib/mlab/code"
EXPORTS_DIR = "/var/lib/mlab/exports"
"""Where the code service reads delivered exports (``egress.exportDelivery: requester``)."""
SITE_FILE = "/etc/mlab/site.yaml"
USERS_DIR = "/etc/mlab/users"
ADMIN_DIR = "/etc/mlab/admin"
ADMIN_SECRET = "code-service-admin"
DATA_CLAIM = "code-service-data"
SITE_CONFIGMAP = "mlab-site"
TLS_SECRET = CODE_TLS_SECRET
"""The code service's certificate Secret when the site CA issues it (``tls.mode: site-ca``)."""
tls_secret_name = code_tls_secret_name


def admin_secret(site: Site, password: str) -> dict[str, Any]:
    """The generated admin password Secret (key ``password``)."""
    return common_password_secret(site, ADMIN_SECRET, "code-service", password)


def site_configmap(site: Site, site_yaml: str) -> dict[str, Any]:
    """ConfigMap ``mlab-site`` with key ``site.yaml`` (the validated site, no secrets)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(site, SITE_CONFIGMAP, "code-service"),
        "data": {"site.yaml": site_yaml},
    }


SITE_ANNOTATION = "mlab.io/site-sha256"
"""The pod template annotation that carries the hash of ``mlab-site``."""


def site_rollout_annotation(site_yaml: str) -> dict[str, str]:
    """The pod template annotation of every pod that reads ``mlab-site`` (code service, portal).

    Args:
        site_yaml: the ConfigMap's ``site.yaml`` text (:func:`mlab.render.site_yaml`).

    Returns:
        ``{"mlab.io/site-sha256": <16 hex digits>}``. The ConfigMap is mounted with subPath,
        which Kubernetes never updates in a running pod
        (https://kubernetes.io/docs/concepts/configuration/configmap/#mounted-configmaps-are-updated-automatically),
        so a changed site (a user, a reviewer, the portal's issuer) must change the pod
        template to reach the pod: the Deployment then rolls it.
    """
    return {SITE_ANNOTATION: hashlib.sha256(site_yaml.encode()).hexdigest()[:16]}


def data_claim_name(site: Site) -> str:
    """``codeService.storage.claim`` or ``code-service-data``."""
    return site.code_service.storage.claim or DATA_CLAIM


def _password_source(secret: str, account: str) -> dict[str, Any]:
    """A projected-volume source putting Secret ``secret``'s key ``password`` at
    ``<account>/password`` (core/v1 SecretProjection)."""
    return {
        "secret": {
            "name": secret,
            "items": [{"key": "password", "path": f"{account}/password"}],
        }
    }


def deployment(site: Site, site_yaml: str) -> dict[str, Any]:
    """The code-service Deployment.

    The pod template carries a hash of the site YAML (:func:`site_rollout_annotation`), so a
    changed site (a new user, a new reviewer) rolls the pod.
    """
    cs = site.code_service
    vols = VolumeSet()
    vols.mount(vols.claim(data_claim_name(site)), DATA_DIR, sub_path=cs.storage.sub_path)
    cm = vols.add(
        {
            "name": "site",
            "configMap": {"name": SITE_CONFIGMAP, "items": [{"key": "site.yaml", "path": "site.yaml"}]},
        }
    )
    vols.mount(cm, SITE_FILE, read_only=True, sub_path="site.yaml")
    mount_password(vols, "admin-password", ADMIN_SECRET, ADMIN_DIR)
    sources = [
        _password_source(password_secret_name(user), user.name) for user in site.users
    ]
    if site.airlock.enabled:
        # The Airlock's account (package requests; no git access) and the export
        # publisher's own account (docs/requests.md).
        sources.append(_password_source(airlock_secret_name(site), site.airlock.user))
        sources.append(_password_source(PUBLISHER_SECRET, PUBLISHER_ACCOUNT))
    if sources:
        users = vols.add(
            {"name": "user-passwords", "projected": {"defaultMode": 0o400, "sources": sources}}
        )
        vols.mount(users, USERS_DIR, read_only=True)
    delivered = exports_claim(site)
    if delivered:
        # Approved exports, verified by the publisher, served to their requester only.
        vols.mount(vols.claim(delivered), EXPORTS_DIR, read_only=True,
                   sub_path=site.airlock.exports.sub_path)
    env = [
        {"name": "MLAB_ADMIN_PASSWORD_FILE", "value": f"{ADMIN_DIR}/password"},
        *([{"name": "MLAB_EXPORTS_DIR", "value": EXPORTS_DIR}] if delivered else []),
        {"name": "MLAB_CODE_HOST", "value": cs.host},
        # Clients from these addresses see every user branch; with egress.userBranches
        # reviewed, others only reviewed ones (mlab.codeservice.reviewed).
        {"name": HOMEPOD_NETS_ENV, "value": site.cluster.pod_cidr},
        *common_env(site),
        *proxy_env(site),
    ]
    mount_ca_bundle(site, vols, env)
    command = ["mlab", "code-service", "serve", "--data", DATA_DIR, "--site", SITE_FILE,
               "--port", str(PORT_CODE)]
    ports = [{"name": "http", "containerPort": PORT_CODE, "protocol": "TCP"}]
    if site.tls.enabled:
        # HTTPS on its own port for the office; plain HTTP stays for pods (HomePods' clone
        # URLs, the Airlock, the portal), which the office edge no longer reaches.
        mount_tls(vols, tls_secret_name(site))
        command += ["--tls-port", str(PORT_CODE_TLS), "--tls-cert", f"{TLS_DIR}/tls.crt",
                    "--tls-key", f"{TLS_DIR}/tls.key"]
        ports.append({"name": "https", "containerPort": PORT_CODE_TLS, "protocol": "TCP"})
    container: dict[str, Any] = {
        "name": "code-service",
        "image": site.image.ref,
        "imagePullPolicy": site.image.pull_policy,
        "command": command,
        "env": env,
        "ports": ports,
        "readinessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 10},
        "livenessProbe": {
            "tcpSocket": {"port": "http"},
            "periodSeconds": 20,
            "failureThreshold": 3,
        },
        "volumeMounts": vols.volume_mounts(),
        "securityContext": security_context(CODE_SERVICE_CAPABILITIES, escalation=False),
        **resources_field(cs.resources),
    }
    return component_deployment(site, "code-service", "code-service", [container], vols.volumes(),
                                placement=cs.placement,
                                annotations=site_rollout_annotation(site_yaml))


def service(site: Site) -> dict[str, Any]:
    """The code-service Service: port 80 to 8080 (and, with ``tls``, 443 to 8443) at the
    site's fixed clusterIP."""
    exp = site.code_service.service
    spec: dict[str, Any] = {
        "type": exp.type,
        "clusterIP": site.code_service_ip,
        "selector": selector(site, "code-service"),
        "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
    }
    if site.tls.enabled:
        spec["ports"].append({"name": "https", "port": PORT_CODE_TLS_SERVICE,
                              "targetPort": "https", "protocol": "TCP"})
    if exp.external_ips:
        spec["externalIPs"] = list(exp.external_ips)
    if exp.type in ("NodePort", "LoadBalancer") or exp.external_ips:
        # Office clients keep their own address (no SNAT to a node address inside the pod
        # range): the code service tells HomePods from the rest by address
        # (egress.userBranches, mlab.codeservice.reviewed). Traffic reaches it only through
        # the node that runs it.
        spec["externalTrafficPolicy"] = "Local"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(site, "code-service", "code-service"),
        "spec": spec,
    }


def render_code_service(site: Site, site_yaml: str) -> list[dict[str, Any]]:
    """The secret-free objects of code-service.yaml."""
    out: list[dict[str, Any]] = [site_configmap(site, site_yaml)]
    storage = site.code_service.storage
    if not storage.claim:
        out.append(
            pvc(site, DATA_CLAIM, "code-service", storage.size, storage.storage_class,
                "ReadWriteOnce")
        )
    out += [deployment(site, site_yaml), service(site)]
    return out
