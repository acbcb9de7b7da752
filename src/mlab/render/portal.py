"""Portal objects: its Deployment and Service, and the NetworkPolicies of its edges.

Invariant: nothing is rendered unless ``portal.enabled``. The portal runs ``mlab portal
serve`` from the HomePod image (like the code service), reads the site from the
``mlab-site`` ConfigMap and every user's password from their Secret projected at
``/etc/mlab/users/<user>/password`` (it answers each HomePod's VncAuth itself, so the
browser never holds a VNC password). Its edges (each policy annotated ``mlab.io/edge``):

- office --> portal :8443 (the container port; the Service port is ``access.ports.portal``)
- portal --> homepod :5900, and homepod <-- portal :5900 (the desktop proxy)
- portal --> kube-dns :53 (it reaches ``homepod-<user>.<namespace>.svc`` by name)
- portal --> code-service :8080 (the requests API, as the signed-in user); with ``tls``
  :8443 only (``https://code-service``, checked against the code service's CA)
- portal --> the identity provider: ``portal.oidc.cidrs`` or, without them, the internet
  (not private or cluster ranges), on the issuer's port
- portal --> the API server (``cluster.apiServerCIDRs`` on ``cluster.apiServerPort``), only
  with ``portal.wake``: then the portal runs as its own ServiceAccount whose Role may only
  get and scale the site's HomePod Deployments, by name (:func:`rbac_objects`), and
  "Open desktop" wakes a culled HomePod (``--wake in-cluster``, :mod:`mlab.cull.incluster`)

With ``portal.directDesktopPorts: false`` the office edge to HomePods keeps only SSH
(:mod:`mlab.render.network`), so desktops are reached through the portal alone.
"""

from __future__ import annotations

from typing import Any

from mlab.render.code_service import SITE_CONFIGMAP, SITE_FILE, USERS_DIR, site_rollout_annotation
from mlab.render.code_service import _password_source as password_source
from mlab.render.common import (
    SITE_CA_SECRET,
    VolumeSet,
    code_tls_secret_name,
    common_env,
    component_deployment,
    metadata,
    security_context,
    selector,
)
from mlab.render.homepod import deployment_name, password_secret_name
from mlab.render.network import edge_policies
from mlab.site import Site
from mlab.topology import CLAIM_SHARE, PORT_PORTAL, SHARE_PATH

NAME = "portal"
CODE_URL = "http://code-service"
"""The code service's Service (port 80) in the portal's namespace: the requests API."""
CODE_TLS_URL = "https://code-service"
"""With ``tls``: the Service's port 443 (its certificate names ``code-service``)."""
SECRET_DIR = "/etc/mlab/portal"
CLIENT_SECRET_KEY = "clientSecret"
"""Key of ``portal.oidc.clientSecretSecret`` that holds the client secret."""
STATE_DIR = "/var/lib/mlab/portal"
"""The portal's emptyDir: ``sessions.db`` (sessions survive a restart of the container;
a new pod starts with none)."""
SERVICE_ACCOUNT = "mlab-portal"
"""The portal's ServiceAccount, Role and RoleBinding (only with ``portal.wake``)."""
IDP_CA_KEY = "ca.crt"
"""Key of ``portal.oidc.caBundleSecret`` holding the provider's CA certificates (PEM)."""


def wake_args(mode: str, wake_dir: str = "") -> list[str]:
    """The wake options of ``mlab portal serve``: ``--wake MODE`` and, with ``wake_dir``,
    ``--wake-dir``. ``in-cluster``: the rendered portal scales HomePods itself (with
    ``portal.wake``); ``host``: the podman engine's portal asks the host through the wake
    spool at ``wake_dir`` (:mod:`mlab.cull.wake_requests`)."""
    return ["--wake", mode, *(["--wake-dir", wake_dir] if wake_dir else [])]


def set_options(command: list[str], options: list[str]) -> list[str]:
    """``command`` with each ``--flag value`` pair of ``options`` set: the value replaced
    where the flag is, the pair appended (in the given order) where it is not.

    Args:
        command: a command line whose options each take one value.
        options: ``[flag, value, flag, value, ...]``.

    Returns:
        A new list; ``command`` is not mutated.
    """
    out = list(command)
    for flag, value in zip(options[::2], options[1::2], strict=True):
        if flag in out:
            out[out.index(flag) + 1] = value
        else:
            out += [flag, value]
    return out


def issuer_port(site: Site) -> int:
    """TCP port of the provider's issuer URL (443 for https://, 80 for http://)."""
    assert site.portal.oidc is not None
    return site.portal.oidc.issuer_port


def rbac_objects(site: Site) -> list[dict[str, Any]]:
    """The portal's ServiceAccount, Role and RoleBinding; empty unless ``portal.wake``.

    The Role (RBAC, https://kubernetes.io/docs/reference/access-authn-authz/rbac/) names
    each HomePod Deployment of the site (``resourceNames``): ``deployments/scale`` get and
    patch (the wake), ``deployments`` get; nothing else, in the site's namespace only. A
    user added to the site is added to the Role by the next ``mlab apply``.
    """
    if not (site.portal.enabled and site.portal.wake):
        return []
    names = [deployment_name(u.name) for u in site.users]
    meta = metadata(site, SERVICE_ACCOUNT, "portal")
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta,
         "automountServiceAccountToken": False},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta,
         "rules": [
             {"apiGroups": ["apps"], "resources": ["deployments/scale"],
              "resourceNames": names, "verbs": ["get", "patch"]},
             {"apiGroups": ["apps"], "resources": ["deployments"],
              "resourceNames": names, "verbs": ["get"]},
         ]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta,
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                     "name": SERVICE_ACCOUNT},
         "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT,
                       "namespace": site.namespace}]},
    ]


def deployment(site: Site, site_yaml: str) -> dict[str, Any]:
    """The portal Deployment (one replica: sessions live in one SQLite file).

    Args:
        site: the site (``portal.enabled``).
        site_yaml: the ``mlab-site`` ConfigMap's text; its hash in the pod template
            (:func:`~mlab.render.code_service.site_rollout_annotation`) rolls the portal when
            the site changes, as it reads the site only at start.
    """
    portal = site.portal
    vols = VolumeSet()
    cm = vols.add({
        "name": "site",
        "configMap": {"name": SITE_CONFIGMAP, "items": [{"key": "site.yaml", "path": "site.yaml"}]},
    })
    vols.mount(cm, SITE_FILE, read_only=True, sub_path="site.yaml")
    sources = [password_source(password_secret_name(u), u.name) for u in site.users]
    if sources:
        users = vols.add({"name": "user-passwords",
                          "projected": {"defaultMode": 0o400, "sources": sources}})
        vols.mount(users, USERS_DIR, read_only=True)
    share = site.airlock.share  # what is staged, listed on the user's page (read-only)
    vols.mount(vols.claim(share.claim or CLAIM_SHARE), SHARE_PATH, read_only=True,
               sub_path=share.sub_path)
    vols.mount(vols.add({"name": "state", "emptyDir": {}}), STATE_DIR)
    command = ["mlab", "portal", "serve", "--site", SITE_FILE, "--port", str(PORT_PORTAL),
               "--users-dir", USERS_DIR, "--audit-log", "/dev/stderr",
               "--code-url", CODE_TLS_URL if site.tls.enabled else CODE_URL,
               "--share", SHARE_PATH,
               "--session-db", f"{STATE_DIR}/sessions.db"]
    secret_sources: list[dict[str, Any]] = []
    if portal.oidc and portal.oidc.client_secret_secret:
        secret_sources.append({"secret": {
            "name": portal.oidc.client_secret_secret,
            "items": [{"key": CLIENT_SECRET_KEY, "path": "client-secret"}]}})
        command += ["--client-secret-file", f"{SECRET_DIR}/client-secret"]
    if portal.oidc and portal.oidc.ca_bundle_secret:
        secret_sources.append({"secret": {
            "name": portal.oidc.ca_bundle_secret,
            "items": [{"key": IDP_CA_KEY, "path": "idp-ca.crt"}]}})
        command += ["--idp-ca-file", f"{SECRET_DIR}/idp-ca.crt"]
    if portal.tls_secret:
        secret_sources.append({"secret": {
            "name": portal.tls_secret,
            "items": [{"key": "tls.crt", "path": "tls.crt"}, {"key": "tls.key", "path": "tls.key"}]}})
        command += ["--tls-cert", f"{SECRET_DIR}/tls.crt", "--tls-key", f"{SECRET_DIR}/tls.key"]
    if site.tls.enabled:
        # Desktops offer VeNCrypt X509Vnc only; the portal checks their chain to the site CA.
        secret_sources.append({"secret": {
            "name": SITE_CA_SECRET, "items": [{"key": "ca.crt", "path": "site-ca.crt"}]}})
        command += ["--vnc-ca", f"{SECRET_DIR}/site-ca.crt"]
        # The requests API over HTTPS only, checked against the code service's CA (only
        # the ca.crt of its Secret, never its key).
        secret_sources.append({"secret": {
            "name": code_tls_secret_name(site), "items": [{"key": "ca.crt", "path": "code-ca.crt"}]}})
        command += ["--code-ca", f"{SECRET_DIR}/code-ca.crt"]
    if secret_sources:
        secrets = vols.add({"name": "portal-secrets",
                            "projected": {"defaultMode": 0o400, "sources": secret_sources}})
        vols.mount(secrets, SECRET_DIR, read_only=True)
    container = {
        "name": NAME,
        "image": site.image.ref,
        "imagePullPolicy": site.image.pull_policy,
        "command": command,
        "env": common_env(site),
        "ports": [{"name": "portal", "containerPort": PORT_PORTAL, "protocol": "TCP"}],
        "readinessProbe": {"tcpSocket": {"port": "portal"}, "periodSeconds": 10},
        "livenessProbe": {"tcpSocket": {"port": "portal"}, "periodSeconds": 20,
                          "failureThreshold": 3},
        "volumeMounts": vols.volume_mounts(),
        # A web server on an unprivileged port: no capability, no escalation.
        "securityContext": security_context((), escalation=False),
    }
    pod_fields: dict[str, Any] = {}
    if portal.wake:
        command += wake_args("in-cluster")
        # Only this pod mounts a token: its ServiceAccount may scale HomePods, nothing else.
        pod_fields = {"serviceAccountName": SERVICE_ACCOUNT, "automountServiceAccountToken": True}
    dep = component_deployment(site, NAME, "portal", [container], vols.volumes(),
                               annotations=site_rollout_annotation(site_yaml))
    dep["spec"]["template"]["spec"].update(pod_fields)
    return dep


def service(site: Site) -> dict[str, Any]:
    """The portal Service: ``access.ports.portal`` to the container's 8443."""
    exp = site.portal.service
    port: dict[str, Any] = {"name": "portal", "port": site.access.ports.portal,
                            "targetPort": "portal", "protocol": "TCP"}
    if exp.node_port is not None and exp.type != "ClusterIP":
        port["nodePort"] = exp.node_port
    spec: dict[str, Any] = {"type": exp.type, "selector": selector(site, "portal"),
                            "ports": [port]}
    if exp.external_ips:
        spec["externalIPs"] = list(exp.external_ips)
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata(site, NAME, "portal"),
            "spec": spec}


def render_portal(site: Site, site_yaml: str) -> list[dict[str, Any]]:
    """The objects of portal.yaml; empty unless ``portal.enabled``.

    Args:
        site: the site.
        site_yaml: the ``mlab-site`` ConfigMap's text (:func:`mlab.render.site_yaml`).
    """
    if not site.portal.enabled:
        return []
    return [*rbac_objects(site), deployment(site, site_yaml), service(site)]


POLICIES = [
    ("portal-from-office", "office", "portal", "ingress"),
    ("portal-to-homepods", "portal", "homepod", "egress"),
    ("homepod-from-portal", "portal", "homepod", "ingress"),
    ("portal-to-code-service", "portal", "code-service", "egress"),
    ("code-service-from-portal", "portal", "code-service", "ingress"),
    ("portal-to-dns", "portal", "kube-dns", "egress"),
    ("portal-to-identity-provider", "portal", "identity-provider", "egress"),
    ("portal-to-api-server", "portal", "api-server", "egress"),
]
"""The portal's edges (rows of :data:`mlab.topology.EDGES`), one policy per side; a row
whose edge is not active on the site (no ``oidc``, no ``wake``) renders nothing."""


def render_policies(site: Site) -> list[dict[str, Any]]:
    """The portal's NetworkPolicies (appended to network.yaml); empty unless enabled."""
    if not site.portal.enabled:
        return []
    return edge_policies(site, POLICIES)
