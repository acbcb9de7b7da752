"""`mlab cull --kubernetes`: the same policy on a cluster, through kubectl (docs/culling.md).

A HomePod is the Deployment ``homepod-<user>`` (:mod:`mlab.render.homepod`); culling scales it
to 0 replicas (the home PersistentVolumeClaim stays), waking scales it back to 1. The
activity reading comes from ``kubectl exec deploy/homepod-<user> -- activity``. The culler's
rights are :func:`rbac_objects`: scale only the site's HomePod Deployments, by name.
State and audit files are the local engine's (``<state>/<site>/cull.json`` and
``cull-audit.jsonl``).
"""

from __future__ import annotations

import json
import time
from typing import Any

from mlab.cull import local
from mlab.cull.policy import decide, limits_for, warn_lead
from mlab.deploy.kubernetes import Kubectl
from mlab.errors import DeployError, UsageError
from mlab.render.common import metadata
from mlab.render.dump import dump_yaml
from mlab.site import Site

CULLER = "mlab-culler"
"""Name of the culler's ServiceAccount, Role and RoleBinding."""


def deployment_name(user: str) -> str:
    """The HomePod Deployment of ``user`` (the name :mod:`mlab.render.homepod` gives it)."""
    return f"homepod-{user}"


def rbac_objects(site: Site) -> list[dict[str, Any]]:
    """ServiceAccount, Role and RoleBinding for the culler in the site's namespace.

    The Role lets it read and scale the site's HomePod Deployments by name
    (``deployments``, ``deployments/scale``: get, patch, update), find their pods
    (``pods``: get, list) and run the sampler in them (``pods/exec``: create). Kubernetes
    cannot limit exec by label, so exec covers every pod of the namespace: run the culler
    in a namespace that holds only MLab (docs/culling.md).
    """
    names = [deployment_name(u.name) for u in site.users]
    meta = metadata(site, CULLER, "homepod")
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta,
         "rules": [
             {"apiGroups": ["apps"], "resources": ["deployments", "deployments/scale"],
              "resourceNames": names, "verbs": ["get", "patch", "update"]},
             {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
             {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]},
         ]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta,
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": CULLER},
         "subjects": [{"kind": "ServiceAccount", "name": CULLER, "namespace": site.namespace}]},
    ]


def keep_culled(homepods: list[dict[str, Any]], live: list[dict[str, Any]]) -> list[str]:
    """Leave culled HomePods down through ``mlab apply`` (pure; edits ``homepods``).

    A rendered HomePod Deployment whose live Deployment has 0 replicas (scaled down by the
    culler, or by an admin) is applied with ``replicas: 0``: server-side apply would
    otherwise take the field back to 1 and wake every culled desktop, unaudited. The user
    wakes it (``mlab wake USER``, the portal's "Open desktop"), which is audited.

    Args:
        homepods: rendered objects of ``homepod.yaml`` (Deployments are edited in place).
        live: the cluster's HomePod Deployments (``kubectl get -o json``'s ``items``).

    Returns:
        Names of the Deployments left at 0 replicas.
    """
    down = {d["metadata"]["name"] for d in live
            if d.get("spec", {}).get("replicas", 1) == 0}
    kept = []
    for obj in homepods:
        if obj.get("kind") == "Deployment" and obj["metadata"]["name"] in down:
            obj["spec"]["replicas"] = 0
            kept.append(obj["metadata"]["name"])
    return kept


def rbac_yaml(site: Site) -> str:
    """:func:`rbac_objects` as YAML documents (``mlab cull-rbac | kubectl apply -f -``)."""
    return dump_yaml(rbac_objects(site), header="The idle culler's rights (mlab cull-rbac).")


def _replicas(k: Kubectl, site: Site, user: str) -> int | None:
    try:
        out = k.run(["-n", site.namespace, "get", "deployment", deployment_name(user),
                     "-o", "jsonpath={.spec.replicas}"])
    except DeployError:
        return None
    return int(out.strip() or 0)


def cull_pass(site: Site, kubectl: Kubectl | None = None) -> list[dict[str, Any]]:
    """One pass over the site's HomePod Deployments (see :func:`mlab.cull.local.cull_pass`)."""
    k = kubectl or Kubectl()
    state = local.load_state(site.name)
    rows: list[dict[str, Any]] = []
    for user in site.users:
        name, ns = deployment_name(user.name), site.namespace
        replicas = _replicas(k, site, user.name)
        if not replicas:
            rows.append({"user": user.name, "action": "stopped",
                         "reason": "missing" if replicas is None else "0 replicas", "idle_s": None})
            continue
        if state["culled"].pop(user.name, None) is not None:
            # Woken by someone else (the rendered portal's ServiceAccount, kubectl): the
            # record goes, so status and the next cull see a running desktop.
            local.audit(site.name, {"event": "wake-seen", "user": user.name, "deployment": name,
                                    "engine": "kubernetes", "replicas": replicas})
        try:
            reading = json.loads(k.run(["-n", ns, "exec", f"deploy/{name}", "--",
                                        local.SAMPLER]).strip().splitlines()[-1])
        except (DeployError, ValueError, IndexError) as exc:
            rows.append({"user": user.name, "action": "error", "reason": str(exc), "idle_s": None})
            continue
        has_gpu = user.resources.gpus > 0 or bool(reading.get("gpu"))
        limits = limits_for(site, user.name, has_gpu)
        d = decide(reading, limits, state["warned"].get(user.name), time.time())
        exec_ = ["-n", ns, "exec", f"deploy/{name}", "--", local.SAMPLER]
        if d.action == "warn":
            k.run([*exec_, "warn", str(warn_lead(limits))])
            state["warned"][user.name] = time.time()
        elif d.action == "unwarn":
            k.run([*exec_, "unwarn"])
            state["warned"].pop(user.name, None)
        elif d.action == "cull":
            k.run(["-n", ns, "scale", f"deployment/{name}", "--replicas=0"])
            record = {"at": time.time(), "reason": d.reason, "gpu": has_gpu,
                      "sessions": reading.get("sessions"), "cpu_percent": reading.get("cpu_percent")}
            state["culled"][user.name] = record
            state["warned"].pop(user.name, None)
            local.audit(site.name, {"event": "cull", "user": user.name, "deployment": name,
                                    "engine": "kubernetes", **record})
        rows.append({"user": user.name, "action": d.action, "reason": d.reason, "idle_s": d.idle_s})
    local.save_state(site.name, state)
    return rows


def wake(site: Site, user: str, kubectl: Kubectl | None = None) -> None:
    """Scale ``user``'s HomePod Deployment back to 1 and audit it.

    Raises:
        UsageError: no such user.
        DeployError: kubectl failed.
    """
    try:
        site.user(user)
    except KeyError:
        raise UsageError(f"wake: {user!r} is not a user of site {site.name}") from None
    k = kubectl or Kubectl()
    k.run(["-n", site.namespace, "scale", f"deployment/{deployment_name(user)}", "--replicas=1"])
    state = local.load_state(site.name)
    was = state["culled"].pop(user, None)
    state["warned"].pop(user, None)
    local.save_state(site.name, state)
    local.audit(site.name, {"event": "wake", "user": user, "deployment": deployment_name(user),
                            "engine": "kubernetes", "was_culled": bool(was)})
