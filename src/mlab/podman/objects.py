"""podman objects of a site: queries, subnets, playing and removing pods, the image.

Thin wrappers over :func:`mlab.podman.runner.podman` used by :mod:`mlab.podman.engine`;
each names the object it acts on in its errors. Invariant: a site's objects are found by
name prefix ``mlab-<site>`` and label (``app.kubernetes.io/instance`` on pods,
``mlab.io/site`` on networks and volumes), never by listing everything.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from mlab.atomic import write_atomic
from mlab.errors import DeployError
from mlab.podman.runner import podman
from mlab.podman.translate import (
    LABEL_SITE,
    PodPlan,
    wanted_networks,
)
from mlab.site import Site
from mlab.topology import LABEL_INSTANCE

log = logging.getLogger(__name__)

Say = Callable[[str], None]

SUBNET_POOL = ipaddress.IPv4Network("10.89.128.0/17")
"""Where MLab picks its networks' /24 subnets, from the top down (podman's own automatic
choice counts up from 10.89.0.0, so the two rarely meet); any subnet already used by a podman
network or a host route is skipped."""


def _json(args: list[str]) -> Any:
    """Run a podman listing with JSON output and parse it.

    podman 4.3 fails a whole listing when an object disappears while it is being listed
    ("no such volume", measured with other users' containers coming and going), so such a
    failure is retried a few times.
    """
    for attempt in range(5):
        proc = podman(args, check=False)
        if proc.returncode == 0:
            out = proc.stdout.strip()
            return json.loads(out) if out else []
        if "no such" not in proc.stderr or attempt == 4:
            break
        time.sleep(0.2)
    err = (proc.stderr or "").strip().splitlines()
    raise DeployError(f"podman {' '.join(args[:2])} failed: {err[-1] if err else proc.returncode}")


def site_pods(site_name: str) -> dict[str, dict[str, Any]]:
    """Pods of a site: name -> ``podman pod ps`` JSON record (Status, Labels, ...)."""
    pods = _json(["pod", "ps", "--filter", f"label={LABEL_INSTANCE}={site_name}",
                  "--format", "json"])
    pre = f"mlab-{site_name}-"
    return {p["Name"]: p for p in pods if p["Name"].startswith(pre)}


def site_networks(site_name: str) -> dict[str, dict[str, Any]]:
    """Networks of a site: name -> ``podman network inspect`` JSON."""
    nets = _json(["network", "ls", "--filter", f"label={LABEL_SITE}={site_name}",
                  "--format", "json"])
    return {n["name"]: n for n in nets}


def site_volumes(site_name: str) -> list[str]:
    """Names of a site's volumes."""
    vols = _json(["volume", "ls", "--filter", f"label={LABEL_SITE}={site_name}",
                  "--format", "json"])
    return sorted(v["Name"] for v in vols)


def _used_subnets() -> list[ipaddress.IPv4Network]:
    used: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for net in _json(["network", "ls", "--format", "json"]):
        for sub in net.get("subnets") or []:
            try:
                used.append(ipaddress.ip_network(sub["subnet"]))
            except (KeyError, ValueError):
                continue
    proc = subprocess.run(["ip", "-j", "-4", "route"], capture_output=True, text=True, check=False)
    if proc.returncode == 0:
        for route in json.loads(proc.stdout or "[]"):
            dst = route.get("dst", "")
            if dst and dst != "default":
                try:
                    used.append(ipaddress.ip_network(dst, strict=False))
                except ValueError:
                    continue
    return [u for u in used if isinstance(u, ipaddress.IPv4Network)]


def choose_subnets(site: Site, existing: dict[str, dict[str, Any]]) -> dict[str, str]:
    """A subnet per wanted network: the existing network's, else a free /24 of the pool."""
    out: dict[str, str] = {}
    used = _used_subnets()
    free = (s for s in reversed(list(SUBNET_POOL.subnets(new_prefix=24)))
            if not any(s.overlaps(u) for u in used))
    for name, _internal, _user in wanted_networks(site):
        if name in existing and existing[name].get("subnets"):
            out[name] = existing[name]["subnets"][0]["subnet"]
            continue
        try:
            out[name] = str(next(free))
        except StopIteration:
            raise DeployError(f"no free /24 left in {SUBNET_POOL} for network {name}") from None
    return out


def mac_for(network: str, ip: str) -> str:
    """A fixed, locally administered MAC for an address on a network.

    A replaced pod keeps its IP; with a new random MAC its peers would keep sending to the
    old one until their ARP entry goes stale (measured: HomePods lost the code service for
    about a minute after it was replaced). Same IP, same MAC: no gap.
    """
    digest = hashlib.sha256(f"{network}/{ip}".encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, *digest[:5]))


def _network_args(pod: PodPlan) -> list[str]:
    args = []
    for name, ip in pod.networks:
        args += ["--network", f"{name}:ip={ip},mac={mac_for(name, ip)}"]
    return args


def play(pod: PodPlan) -> None:
    """``podman kube play`` one translated pod on its networks.

    Raises:
        DeployError: kube play failed (its last error line); the half-made pod is removed.
    """
    text = yaml.safe_dump(pod.manifest, sort_keys=False)
    proc = podman(["kube", "play", *_network_args(pod), "-"], input=text, check=False)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or "").splitlines() if ln.strip()]
        log.debug("[mlab/%s] kube play failed:\n%s", pod.name, proc.stderr)
        errors = [ln for ln in lines if "rror" in ln] or lines or [f"exit {proc.returncode}"]
        podman(["pod", "rm", "-f", "-t", "0", "--ignore", pod.name], check=False)
        raise DeployError(f"{pod.name}: podman kube play failed: {errors[0].strip()}",
                          hint="run with --debug for podman's full output")


def remove_pod(name: str, grace: int = 10) -> None:
    """Stop (SIGTERM, then SIGKILL after ``grace`` seconds) and remove a pod; no error when
    absent.

    Raises:
        DeployError: the pod is still there after a second attempt.
    """
    for _attempt in range(2):
        proc = podman(["pod", "rm", "-f", "-t", str(grace), "--ignore", name], check=False,
                      timeout=120)
        if proc.returncode == 0 and podman(["pod", "exists", name], check=False).returncode != 0:
            return
        log.debug("[mlab/%s] pod rm failed: %s", name, proc.stderr.strip())
    err = (proc.stderr or "").strip().splitlines()
    raise DeployError(f"cannot remove pod {name}: {err[-1] if err else 'still present'}")


def remove_pods(names: list[str]) -> None:
    """Remove pods in parallel (each may wait its grace period)."""
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(names)))) as pool:
        list(pool.map(remove_pod, names))


def bridge_of(net: str) -> str:
    """The Linux bridge interface of a podman network (``podman3``)."""
    data = _json(["network", "inspect", net])
    return str(data[0]["network_interface"])


def has_code_service(image: str, cache: Path | None = None) -> bool:
    """True when the image runs ``mlab code-service serve`` (the real code service).

    The answer is cached in ``cache`` (a JSON file of image ID to bool): image IDs are
    content hashes, so an answer never goes stale, and the check costs a container start.
    """
    image_id = podman(["image", "inspect", "--format", "{{.Id}}", image]).stdout.strip()
    known: dict[str, bool] = {}
    if cache is not None:
        try:
            known = json.loads(cache.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            known = {}
        if image_id in known:
            return bool(known[image_id])
    proc = podman(["run", "--rm", "--network", "none", "--entrypoint", "mlab", image,
                   "code-service", "serve", "--help"], check=False, timeout=120)
    answer = proc.returncode == 0
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(cache, json.dumps({image_id: answer}), 0o600)
    return answer
