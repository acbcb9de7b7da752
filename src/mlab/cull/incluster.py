"""Waking a culled HomePod from inside the cluster: the rendered portal's "Open desktop"
(``mlab portal serve --wake in-cluster``, docs/portal.md).

The portal pod runs with its own ServiceAccount (:func:`mlab.render.portal.rbac_objects`:
get and patch ``deployments/scale`` and get ``deployments`` of the site's HomePod
Deployments, by name, nothing else). Its token, CA and namespace are the files Kubernetes
mounts at :data:`SA_DIR`, and the API server is ``KUBERNETES_SERVICE_HOST:PORT`` (the
in-cluster configuration every client uses:
https://kubernetes.io/docs/tasks/run-application/access-api-from-pod/). Two REST calls of
the ``autoscaling/v1`` Scale subresource do the wake, with httpx (already the portal's HTTP
client): no kubectl in the image, and no Kubernetes client library with its dozen
dependencies in every HomePod image for two requests.

The audit line is the culler's ``wake`` record (:func:`mlab.cull.kube.wake`), written to the
portal's audit log (the pod's log when rendered): ``was_culled`` is whether the Deployment
stood at 0 replicas.
"""

from __future__ import annotations

import json
import logging
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from mlab.codeservice.audit import append
from mlab.errors import DeployError, UsageError
from mlab.render.homepod import deployment_name
from mlab.site import Site

log = logging.getLogger(__name__)

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
"""Where Kubernetes mounts a pod's ServiceAccount ``token``, ``ca.crt`` and ``namespace``."""


@dataclass(frozen=True)
class InCluster:
    """The API server as seen from a pod, with the pod's ServiceAccount.

    Attributes:
        server: ``https://HOST:PORT`` of the API server.
        token_file: the ServiceAccount's bound token (re-read per request: it is rotated).
        ca_file: the cluster CA bundle that signs the API server's certificate.
    """

    server: str
    token_file: Path
    ca_file: Path

    @classmethod
    def from_pod(cls, env: Mapping[str, str] | None = None, sa_dir: Path = SA_DIR) -> "InCluster":
        """The in-cluster configuration (``KUBERNETES_SERVICE_HOST``/``_PORT``, else
        ``kubernetes.default.svc:443``).

        Raises:
            UsageError: no ServiceAccount token is mounted (not in a pod, or the pod has
                ``automountServiceAccountToken: false``).
        """
        env = os.environ if env is None else env
        token = sa_dir / "token"
        if not token.is_file():
            raise UsageError(f"--wake in-cluster: no ServiceAccount token at {token} (the "
                             "portal must run in its pod with portal.wake: true)")
        host = env.get("KUBERNETES_SERVICE_HOST", "kubernetes.default.svc")
        port = env.get("KUBERNETES_SERVICE_PORT", "443")
        if ":" in host:  # an IPv6 address
            host = f"[{host}]"
        return cls(f"https://{host}:{port}", token, sa_dir / "ca.crt")

    def _client(self) -> httpx.Client:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        token = self.token_file.read_text(encoding="utf-8").strip()
        return httpx.Client(base_url=self.server, verify=ctx, timeout=15,
                            headers={"Authorization": f"Bearer {token}"})

    def scale_path(self, namespace: str, name: str) -> str:
        """The Scale subresource of Deployment ``namespace/name``."""
        return f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"

    def replicas(self, namespace: str, name: str) -> int:
        """``spec.replicas`` of the Deployment's Scale.

        Raises:
            DeployError: the API server refused or failed (its status and message).
        """
        with self._client() as client:
            resp = client.get(self.scale_path(namespace, name))
        spec = _checked(resp, "get", name).get("spec")
        return int(spec.get("replicas", 0)) if isinstance(spec, dict) else 0

    def scale(self, namespace: str, name: str, replicas: int) -> None:
        """Set the Deployment's replicas (a JSON merge patch of its Scale).

        Raises:
            DeployError: the API server refused or failed (403 without the Role).
        """
        with self._client() as client:
            resp = client.patch(self.scale_path(namespace, name),
                                content=json.dumps({"spec": {"replicas": replicas}}),
                                headers={"Content-Type": "application/merge-patch+json"})
        _checked(resp, "scale", name)


def _checked(resp: httpx.Response, verb: str, name: str) -> dict[str, object]:
    if resp.status_code >= 400:
        try:
            message = resp.json().get("message", resp.text)
        except ValueError:
            message = resp.text
        raise DeployError(f"{verb} deployment {name}: API server answered "
                          f"{resp.status_code}: {message.strip()[:300]}")
    body = resp.json()
    return body if isinstance(body, dict) else {}


def wake(site: Site, user: str, api: InCluster | None = None,
         audit_log: Path | None = None) -> bool:
    """Scale ``user``'s HomePod Deployment to 1 when it stands at 0, and audit it.

    Args:
        site: the site (its namespace and users).
        user: a user of the site.
        api: the API server; None: :meth:`InCluster.from_pod`.
        audit_log: JSON-lines file for the ``wake`` record; None: the log only.

    Returns:
        True when the Deployment was at 0 replicas (culled) and was scaled up.

    Raises:
        UsageError: ``user`` is not a user of the site, or no token is mounted.
        DeployError: the API server refused (the Role does not cover it) or failed.
    """
    try:
        site.user(user)
    except KeyError:
        raise UsageError(f"wake: {user!r} is not a user of site {site.name}") from None
    api = api or InCluster.from_pod()
    name = deployment_name(user)
    was_culled = api.replicas(site.namespace, name) == 0
    if was_culled:
        api.scale(site.namespace, name, 1)
    record = {"user": user, "deployment": name, "engine": "kubernetes",
              "was_culled": was_culled, "by": "portal"}
    log.info("[mlab/portal] wake %s", record)
    if audit_log is not None:
        append(audit_log, "wake", **record)
    return was_culled
