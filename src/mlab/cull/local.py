"""`mlab cull` and `mlab wake` under the local podman engine (docs/culling.md).

Each pass reads every running HomePod's activity (``podman exec CONTAINER
/usr/local/lib/mlab/activity``), applies :func:`mlab.cull.policy.decide`, shows or closes the
warning dialog, and stops an idle HomePod's pod (``podman pod stop``: the home volume stays).
``wake`` starts the pod again. State (warnings shown, HomePods culled and why) lives in
``<state>/<site>/cull.json``; every cull and wake is one JSON line in
``<state>/<site>/cull-audit.jsonl``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from mlab.cull.policy import Decision, decide, limits_for, warn_lead
from mlab.errors import DeployError, UsageError
from mlab.podman.runner import podman
from mlab.site import Site
from mlab.topology import LABEL_COMPONENT, LABEL_INSTANCE, LABEL_USER

SAMPLER = "/usr/local/lib/mlab/activity"


def _site_dir(site_name: str) -> Path:
    from mlab.secrets import state_root

    return state_root() / site_name


def state_path(site_name: str) -> Path:
    """``<state>/<site>/cull.json``: ``{"warned": {user: epoch}, "culled": {user: record}}``."""
    return _site_dir(site_name) / "cull.json"


def audit_path(site_name: str) -> Path:
    """``<state>/<site>/cull-audit.jsonl``: one JSON object a line per cull and wake."""
    return _site_dir(site_name) / "cull-audit.jsonl"


def load_state(site_name: str) -> dict[str, Any]:
    """The culler's state; empty when there is none."""
    try:
        data = json.loads(state_path(site_name).read_text())
    except (OSError, ValueError):
        data = {}
    data.setdefault("warned", {})
    data.setdefault("culled", {})
    return data


@contextmanager
def state_lock(site_name: str) -> Iterator[None]:
    """Hold ``cull.json``'s lock: every read-change-write of the culler's state runs under it
    (the culler's pass, ``mlab wake``, and the wake requests of the portal, which
    ``mlab cull`` takes in a thread of its own)."""
    path = state_path(site_name)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with FileLock(str(path) + ".lock", timeout=300):
        yield


def save_state(site_name: str, data: dict[str, Any]) -> None:
    path = state_path(site_name)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    tmp.replace(path)


def audit(site_name: str, event: dict[str, Any]) -> None:
    """Append one audit line (``time`` in UTC ISO 8601, ``actor`` = the OS user)."""
    path = audit_path(site_name)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    line = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "actor": os.environ.get("SUDO_USER") or os.environ.get("USER") or str(os.getuid()),
            **event}
    with path.open("a") as f:
        f.write(json.dumps(line, sort_keys=True) + "\n")


@dataclass(frozen=True)
class HomePod:
    """One user's HomePod under the podman engine."""

    user: str
    pod: str
    container: str
    status: str


def homepods(site_name: str) -> dict[str, HomePod]:
    """The site's HomePod pods by user (labels ``app.kubernetes.io/instance=<site>``,
    ``component=homepod``, ``mlab.io/user``), running or not."""
    out = podman(["pod", "ps", "--filter", f"label={LABEL_INSTANCE}={site_name}",
                  "--filter", f"label={LABEL_COMPONENT}=homepod", "--format", "json"]).stdout
    found = {}
    for pod in json.loads(out or "[]"):
        user = (pod.get("Labels") or {}).get(LABEL_USER)
        if not user:
            continue
        names = [c["Names"] for c in pod.get("Containers", []) if c["Id"] != pod.get("InfraId")]
        if names:
            found[user] = HomePod(user, pod["Name"], names[0], pod["Status"])
    return found


def sample(hp: HomePod) -> dict[str, Any]:
    """The HomePod's activity reading (the sampler's JSON line).

    Raises:
        DeployError: the sampler failed or printed no JSON.
    """
    proc = podman(["exec", hp.container, SAMPLER], check=False, timeout=60)
    if proc.returncode != 0:
        raise DeployError(f"{hp.container}: activity sampler failed: {proc.stderr.strip()[-300:]}")
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise DeployError(f"{hp.container}: activity sampler printed no JSON: "
                          f"{proc.stdout[-200:]!r}") from None


def _warn(hp: HomePod, seconds: int) -> None:
    podman(["exec", hp.container, SAMPLER, "warn", str(max(1, seconds))], check=False, timeout=60)


def _unwarn(hp: HomePod) -> None:
    podman(["exec", hp.container, SAMPLER, "unwarn"], check=False, timeout=60)


def cull_pass(site: Site, now: Callable[[], float] = time.time) -> list[dict[str, Any]]:
    """One pass over the site's running HomePods: sample, decide, warn, stop.

    Returns:
        One row per HomePod: ``{"user", "action", "reason", "idle_s"}`` (action: keep,
        warn, unwarn, cull, never, error, stopped).
    """
    rows: list[dict[str, Any]] = []
    for user, hp in sorted(homepods(site.name).items()):
        if user not in {u.name for u in site.users}:
            continue
        if hp.status != "Running":
            rows.append({"user": user, "action": "stopped", "reason": hp.status, "idle_s": None})
            continue
        try:
            reading = sample(hp)
        except DeployError as exc:
            rows.append({"user": user, "action": "error", "reason": str(exc), "idle_s": None})
            continue
        has_gpu = site.user(user).resources.gpus > 0 or bool(reading.get("gpu"))
        limits = limits_for(site, user, has_gpu)
        with state_lock(site.name):  # a wake may have changed it since the last HomePod
            state = load_state(site.name)
            warned_at = state["warned"].get(user)
            d: Decision = decide(reading, limits, warned_at, now())
            if d.action == "warn":
                _warn(hp, warn_lead(limits))
                state["warned"][user] = now()
            elif d.action == "unwarn":
                _unwarn(hp)
                state["warned"].pop(user, None)
            elif d.action == "cull":
                stop(site, hp, d.reason, reading, has_gpu, state)
            save_state(site.name, state)
        rows.append({"user": user, "action": d.action, "reason": d.reason, "idle_s": d.idle_s})
    with state_lock(site.name):
        save_state(site.name, load_state(site.name))
    return rows


def stop(site: Site, hp: HomePod, reason: str, reading: dict[str, Any], has_gpu: bool,
         state: dict[str, Any]) -> None:
    """Stop ``hp``'s pod (volumes kept), record it as culled and audit it."""
    _unwarn(hp)
    podman(["pod", "stop", "-t", "10", hp.pod], timeout=120)
    record = {"at": time.time(), "reason": reason, "gpu": has_gpu,
              "sessions": reading.get("sessions"), "cpu_percent": reading.get("cpu_percent")}
    state["culled"][hp.user] = record
    state["warned"].pop(hp.user, None)
    audit(site.name, {"event": "cull", "user": hp.user, "pod": hp.pod, "engine": "podman",
                      **record})


def wake(site: Site, user: str, wait: Callable[[HomePod], None] | None = None,
         via: str = "cli") -> HomePod:
    """Start ``user``'s HomePod pod again and audit it.

    Args:
        site: the validated site.
        user: whose HomePod.
        wait: called with the HomePod after the start (tests: until VNC answers).
        via: who asked, for the audit line: ``cli`` (`mlab wake`), ``portal`` (a wake
            request, :mod:`mlab.cull.wake_requests`).

    Raises:
        UsageError: no such user, or the site has no HomePod pod for them (run `mlab up`).
    """
    try:
        site.user(user)
    except KeyError:
        raise UsageError(f"wake: {user!r} is not a user of site {site.name} "
                         "(see users: in the site file)") from None
    hp = homepods(site.name).get(user)
    if hp is None:
        raise UsageError(f"wake: site {site.name} has no HomePod for {user!r}; run `mlab up`")
    with state_lock(site.name):
        state = load_state(site.name)
        was = state["culled"].pop(user, None)
        if hp.status != "Running":
            podman(["pod", "start", hp.pod], timeout=120)
        state["warned"].pop(user, None)
        save_state(site.name, state)
    if wait:
        wait(hp)
    audit(site.name, {"event": "wake", "user": user, "pod": hp.pod, "engine": "podman",
                      "was_culled": bool(was), "was": hp.status, "via": via})
    return hp


def culled(site_name: str) -> dict[str, dict[str, Any]]:
    """HomePods the culler stopped and not woken since: user -> ``{"at", "reason", ...}``."""
    return load_state(site_name)["culled"]


def annotate_status(components: list[dict[str, Any]],
                    stopped: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """``mlab status`` rows with culled HomePods marked: state ``Exited (culled: REASON;
    `mlab wake USER`)`` and a ``culled`` record (pure; a running HomePod is not marked)."""
    out = []
    for comp in components:
        record = stopped.get(comp.get("user") or "")
        if comp["kind"] == "homepod" and record and not comp["state"].startswith("Running"):
            comp = {**comp, "culled": record,
                    "state": f"{comp['state']} (culled: {record['reason']}; "
                             f"`mlab wake {comp['user']}`)"}
        out.append(comp)
    return out
