"""The Kubernetes engine: server-side apply, prune by label, bounded rollout wait, delete.

Invariant: every call to the cluster goes through :class:`Kubectl` (one process boundary,
faked in tests by a ``kubectl`` script on PATH); manifests and Secrets travel on kubectl's
stdin, never through files or argv, and kubectl's errors reach the user as one
:class:`~mlab.errors.DeployError` line (stdin, which holds passwords, is never echoed).

Why kubectl and not a client library: it is what admins already have configured
(kubeconfig, contexts, auth plugins), and server-side apply with a field manager gives the
same merge semantics as ``kubectl apply`` by hand.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from mlab.errors import DeployError, TemporaryError, ToolMissingError
from mlab.render import Rendered, dump_yaml
from mlab.render.common import LABEL_COMPONENT, LABEL_INSTANCE, LABEL_MANAGED_BY
from mlab.site import Site

log = logging.getLogger(__name__)

FIELD_MANAGER = "mlab"
PRUNE_KINDS = (
    "deployments.apps",
    "services",
    "secrets",
    "configmaps",
    "networkpolicies.networking.k8s.io",
    "persistentvolumeclaims",
)
"""Kinds MLab renders, listed by label to find objects to prune."""
RBAC_KINDS = (
    "serviceaccounts",
    "roles.rbac.authorization.k8s.io",
    "rolebindings.rbac.authorization.k8s.io",
)
"""The portal's rights (``portal.wake``), listed by the portal's component label only: the
culler's ServiceAccount (``mlab cull-rbac``, applied by the admin) carries the site's labels
too and is not MLab's to prune."""
RBAC_SELECTOR = f"{LABEL_COMPONENT}=portal"
DATA_KINDS = ("PersistentVolumeClaim",)
"""Kinds that hold user data: pruned or deleted only when asked (``--delete-data``)."""


def site_selector(site: Site) -> str:
    """Label selector of every object this site owns."""
    return f"{LABEL_INSTANCE}={site.name},{LABEL_MANAGED_BY}=mlab"


@dataclass
class Kubectl:
    """Runs kubectl.

    Args:
        binary: the kubectl program; None: ``$MLAB_KUBECTL`` or ``kubectl`` on PATH.
        context: kubeconfig context (``--context``); None: the current one.
        request_timeout: seconds per API request (``--request-timeout``).
    """

    binary: str | None = None
    context: str | None = None
    request_timeout: int = 60

    def _program(self) -> str:
        name = self.binary or os.environ.get("MLAB_KUBECTL") or "kubectl"
        path = shutil.which(name)
        if not path:
            raise ToolMissingError(
                f"kubectl: {name!r} not found on PATH",
                hint="install kubectl (https://kubernetes.io/docs/tasks/tools/) or set MLAB_KUBECTL",
            )
        return path

    def run(
        self, args: Sequence[str], stdin: str | None = None, timeout: float | None = None
    ) -> str:
        """Run ``kubectl ARGS``; return stdout.

        Args:
            args: kubectl arguments after the global flags.
            stdin: text for kubectl's stdin (manifests; never logged).
            timeout: seconds before the process is killed; None: 5 request time-outs.

        Raises:
            TemporaryError: kubectl did not finish in time.
            DeployError: kubectl failed (its last stderr line, never stdin).
        """
        argv = [self._program()]
        if self.context:
            argv += ["--context", self.context]
        argv += [f"--request-timeout={self.request_timeout}s", *args]
        log.debug("running %s", " ".join(argv))
        limit = timeout if timeout is not None else self.request_timeout * 5
        try:
            proc = subprocess.run(
                argv, input=stdin, capture_output=True, text=True, check=False, timeout=limit,
            )
        except subprocess.TimeoutExpired:
            raise TemporaryError(f"kubectl {args[0]}: no answer in {limit:g}s") from None
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
            reason = lines[-1] if lines else f"exit status {proc.returncode}"
            raise DeployError(f"kubectl {args[0]} failed: {reason}")
        return proc.stdout

    def get_json(self, args: Sequence[str]) -> dict[str, Any]:
        """Run ``kubectl get ARGS -o json`` and parse it."""
        out = self.run(["get", *args, "-o", "json"])
        try:
            data = json.loads(out or "{}")
        except ValueError:
            raise DeployError(f"kubectl get {args[0]}: output is not JSON") from None
        return data if isinstance(data, dict) else {}


def namespace_object(site: Site) -> dict[str, Any]:
    """The site's Namespace (not labelled with the instance: never pruned or deleted)."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": site.namespace, "labels": {LABEL_MANAGED_BY: "mlab"}},
    }


def apply_objects(kubectl: Kubectl, site: Site, rendered: Rendered, dry_run: bool) -> int:
    """Server-side apply of the namespace, the policies first, then everything else.

    Returns:
        The number of objects sent.
    """
    objs = [namespace_object(site), *rendered.objects()]
    args = [
        "apply", "--server-side", f"--field-manager={FIELD_MANAGER}", "--force-conflicts",
        "-f", "-",
    ]
    if dry_run:
        args.append("--dry-run=server")
    try:
        kubectl.run(args, stdin=dump_yaml(objs))
    except DeployError as exc:
        fixed = _FIXED_IP_CHANGE.search(exc.message)
        if fixed:
            name = fixed.group(1)
            raise DeployError(
                f"Service {site.namespace}/{name} has another clusterIP than the site's fixed "
                "one (a clusterIP never changes once set)",
                hint=f"delete it once: kubectl -n {site.namespace} delete service {name}, "
                "then apply again",
            ) from None
        raise
    return len(objs)


_FIXED_IP_CHANGE = re.compile(r'The Service "([^"]+)" is invalid: spec\.clusterIPs?\b.*'
                              r"(immutable|may not change once set)")
"""kubectl's line when a Service's clusterIP would change (the Airlock's fixed address,
docs/security.md, meets a Service made before it)."""


def stale_objects(
    kubectl: Kubectl, site: Site, rendered: Rendered, delete_data: bool
) -> tuple[list[str], list[str]]:
    """Objects of this site in the cluster that the render no longer has.

    Returns:
        (to delete as ``kind/name``, kept data objects as ``kind/name``).
    """
    wanted = {(o["kind"], o["metadata"]["name"]) for o in rendered.objects()}
    listing = kubectl.get_json(
        ["-n", site.namespace, ",".join(PRUNE_KINDS), "-l", site_selector(site)]
    )
    delete: list[str] = []
    kept: list[str] = []
    rbac = kubectl.get_json(
        ["-n", site.namespace, ",".join(RBAC_KINDS), "-l", f"{site_selector(site)},{RBAC_SELECTOR}"]
    )
    rights = [i for i in rbac.get("items", [])
              if i.get("kind") in ("ServiceAccount", "Role", "RoleBinding")]
    for item in [*listing.get("items", []), *rights]:
        kind = item.get("kind", "")
        name = (item.get("metadata") or {}).get("name", "")
        if not kind or not name or (kind, name) in wanted:
            continue
        ref = f"{kind.lower()}/{name}"
        (kept if kind in DATA_KINDS and not delete_data else delete).append(ref)
    return sorted(delete), sorted(kept)


def prune(kubectl: Kubectl, site: Site, refs: list[str], dry_run: bool,
          timeout: float = 300.0) -> None:
    """Delete ``refs`` (``kind/name``) in the site's namespace; Deployments first, and
    nothing else until their pods are gone (:func:`remove_deployments`), so a removed user's
    HomePod never runs without its NetworkPolicies."""
    if not refs:
        return
    if dry_run:
        kubectl.run(["delete", "-n", site.namespace, "--ignore-not-found",
                     "--dry-run=server", *refs])
        return
    deployments = [r for r in refs if r.startswith("deployment/")]
    rest = [r for r in refs if not r.startswith("deployment/")]
    selectors = []
    for ref in deployments:
        obj = kubectl.get_json(["-n", site.namespace, ref, "--ignore-not-found"])
        match = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        if match:
            selectors.append(",".join(f"{k}={v}" for k, v in sorted(match.items())))
    if deployments:
        remove_deployments(kubectl, site, deployments, selectors, timeout)
    if rest:
        kubectl.run(["delete", "-n", site.namespace, "--ignore-not-found", "--wait=false",
                     *rest])


def remove_deployments(kubectl: Kubectl, site: Site, targets: list[str],
                       pod_selectors: list[str], timeout: float) -> None:
    """Delete Deployments and return only once their pods are gone from the API server.

    ``kubectl delete --wait`` with the default (background) propagation returns when the
    Deployment objects are gone while their pods still run for seconds (seen on the node:
    all four pods Terminating one second after ``mlab delete`` returned, and 23 forbidden
    connections got out once the policies were gone: CVE-2024-7598). So the delete uses
    foreground propagation (the Deployment stays until its ReplicaSets and pods are
    deleted) and then waits on the pods by label: a pod leaves the API only after the
    kubelet has stopped its containers.

    Args:
        targets: ``deployment/NAME`` refs, or ``["-l", SELECTOR]``.
        pod_selectors: label selectors of the pods to wait for.
        timeout: seconds for each wait.

    Raises:
        TemporaryError: pods still there after ``timeout`` (nothing else was deleted).
    """
    kubectl.run([
        "delete", "-n", site.namespace, *targets, "--ignore-not-found",
        "--cascade=foreground", "--wait=true", f"--timeout={int(timeout)}s",
    ], timeout=timeout + 60)
    for sel in pod_selectors:
        try:
            kubectl.run(["wait", "-n", site.namespace, "pods", "-l", sel, "--for=delete",
                         f"--timeout={int(timeout)}s"], timeout=timeout + 60)
        except DeployError as exc:
            raise TemporaryError(
                f"pods ({sel}) still running after {timeout:g}s; their NetworkPolicies "
                f"were kept ({exc.message})",
                hint=f"kubectl -n {site.namespace} get pods -l {sel}; run the command again",
            ) from None


def deployment_state(obj: dict[str, Any]) -> str:
    """``ready``, ``progressing`` or ``failed`` for a Deployment, as ``kubectl rollout
    status`` decides it (apps/v1 DeploymentStatus fields and the Progressing condition)."""
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    meta = obj.get("metadata") or {}
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return "failed"
    if status.get("observedGeneration", 0) < meta.get("generation", 0):
        return "progressing"
    want = spec.get("replicas", 1)
    updated = status.get("updatedReplicas", 0)
    if updated < want or status.get("replicas", 0) > updated:
        return "progressing"
    if status.get("availableReplicas", 0) < updated:
        return "progressing"
    return "ready"


ProgressFn = Callable[[int, int], None]


def wait_for_rollout(
    kubectl: Kubectl,
    site: Site,
    names: list[str],
    timeout: float,
    interval: float = 2.0,
    progress: ProgressFn | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Poll the site's Deployments until every one in ``names`` is ready.

    Args:
        names: Deployment names to wait for.
        timeout: seconds in all; the wait never exceeds it by more than one poll.
        interval: seconds between polls.
        progress: called with (ready, total) after each poll.

    Raises:
        DeployError: a Deployment exceeded its progress deadline.
        TemporaryError: ``timeout`` passed first (names up to five not ready).
    """
    deadline = clock() + timeout
    wanted = set(names)
    while True:
        listing = kubectl.get_json(["deployments", "-n", site.namespace, "-l", site_selector(site)])
        states = {
            (item.get("metadata") or {}).get("name"): deployment_state(item)
            for item in listing.get("items", [])
        }
        failed = sorted(n for n in wanted if states.get(n) == "failed")
        if failed:
            raise DeployError(
                f"rollout of {', '.join(failed[:5])} exceeded its progress deadline",
                hint=f"kubectl -n {site.namespace} describe deployment {failed[0]}",
            )
        pending = sorted(n for n in wanted if states.get(n) != "ready")
        if progress:
            progress(len(wanted) - len(pending), len(wanted))
        if not pending:
            return
        if clock() >= deadline:
            more = f" and {len(pending) - 5} more" if len(pending) > 5 else ""
            raise TemporaryError(
                f"rollout not finished after {timeout:g}s: {', '.join(pending[:5])}{more}",
                hint=f"kubectl -n {site.namespace} get pods; run mlab apply again to keep waiting",
            )
        sleep(max(0.0, min(interval, deadline - clock())))


def delete_site(kubectl: Kubectl, site: Site, delete_data: bool, timeout: float) -> None:
    """Delete the site's objects by label: Deployments first, waiting until their pods are
    gone (:func:`remove_deployments`), so no pod outlives its NetworkPolicies; then the
    rest; PVCs only with ``delete_data``. The namespace is left alone."""
    selector = site_selector(site)
    remove_deployments(kubectl, site, ["deployments.apps", "-l", selector], [selector], timeout)
    kinds = [k for k in PRUNE_KINDS if k != "deployments.apps"]
    if not delete_data:
        kinds.remove("persistentvolumeclaims")
    kubectl.run([
        "delete", "-n", site.namespace, ",".join(kinds), "-l", selector,
        "--ignore-not-found", "--wait=false",
    ])
    kubectl.run([
        "delete", "-n", site.namespace, ",".join(RBAC_KINDS), "-l", f"{selector},{RBAC_SELECTOR}",
        "--ignore-not-found", "--wait=false",
    ])


def deployment_names(rendered: Rendered) -> list[str]:
    """Names of the rendered Deployments."""
    return [o["metadata"]["name"] for o in rendered.objects() if o["kind"] == "Deployment"]


def hold_deployments(homepods: list[dict[str, Any]], live: list[dict[str, Any]], image: str,
                     restart_users: Collection[str] = ()) -> dict[str, str]:
    """Keep running HomePod Deployments on their live image (pure; edits ``homepods``).

    For each rendered HomePod Deployment whose live Deployment has a ready replica and runs
    another image than ``image``, and whose user is not in ``restart_users``, the rendered
    pod template's containers that run ``image`` get the live image back (and their
    ``MLAB_IMAGE`` variable with it), so server-side apply leaves the pod template's image as
    it is and the Deployment does not restart the pod. Other changes to the template still
    roll it out (on the held image); ``--restart-user`` moves it.

    Args:
        homepods: rendered objects of ``homepod.yaml`` (Deployments are edited in place).
        live: the cluster's HomePod Deployments (``kubectl get -o json``'s ``items``).
        image: the site's image reference.
        restart_users: users whose HomePods move to ``image`` now.

    Returns:
        Deployment name -> the image it is held on.
    """
    running: dict[str, str] = {}
    for dep in live:
        ready = int(dep.get("status", {}).get("readyReplicas") or 0)
        containers = dep.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
        if ready and containers:
            running[dep["metadata"]["name"]] = containers[0].get("image", "")
    held: dict[str, str] = {}
    for obj in homepods:
        if obj.get("kind") != "Deployment":
            continue
        name = obj["metadata"]["name"]
        user = obj["metadata"].get("labels", {}).get("mlab.io/user")
        old = running.get(name, "")
        if not old or old == image or user in restart_users:
            continue
        for container in obj["spec"]["template"]["spec"]["containers"]:
            if container.get("image") != image:
                continue
            container["image"] = old
            for env in container.get("env", []):
                if env.get("name") == "MLAB_IMAGE":
                    env["value"] = old
            held[name] = old
    return held


def restart_in_place(live: list[dict[str, Any]], image: str,
                     restart_users: Collection[str]) -> list[str]:
    """HomePod Deployments that ``--restart-user`` must restart with ``kubectl rollout restart``.

    Pure. A user's Deployment whose live pod template already names ``image`` (the same
    reference, e.g. ``localhost/mlab/homepod:latest`` after a rebuild moved that tag) does
    not change under server-side apply, so its pod would keep running the old image; the
    rollout restart annotation (what ``kubectl rollout restart`` sets) gives it a new pod,
    which resolves the reference again. Deployments whose image changes restart by
    themselves and are not listed (one restart, not two).

    Args:
        live: the cluster's HomePod Deployments (``kubectl get -o json``'s ``items``).
        image: the site's image reference.
        restart_users: users named with ``--restart-user``.

    Returns:
        Deployment names, in ``live`` order.
    """
    names = []
    for dep in live:
        user = dep.get("metadata", {}).get("labels", {}).get("mlab.io/user")
        containers = dep.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
        if user in restart_users and containers and containers[0].get("image") == image:
            names.append(dep["metadata"]["name"])
    return names
