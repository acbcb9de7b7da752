"""Rolling HomePods onto a new image without pulling a desktop from under its user.

Invariant: ``mlab up`` never restarts a running HomePod only because the site's image
changed; such a HomePod is *held* on its image until its user's restart is asked for
(``mlab restart --user NAME``; later the portal's button or the idle rule). Any other change
to its spec (resources, volumes, ports, ...) still replaces it, as before. The Airlock and
the code service have no desktop session and move at once.

A restart loses what was installed outside the home volume: ``sudo apt-get install`` and
``sudo dpkg -i`` packages and ``pip install`` outside ``~`` (the seed's "temporary installs",
临时安装), and anything else written outside ``/home/<user>``. ``mlab status`` says so for each
held HomePod.

The podman engine's side (pods, labels) is read through :mod:`mlab.podman.objects`;
the decision itself is :func:`held_pods` (pure). On Kubernetes (``mlab apply``) the same rule
is :func:`mlab.deploy.kubernetes.hold_deployments`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from typing import Any

from mlab.podman.runner import podman
from mlab.podman.translate import LABEL_SPEC, Plan, PodPlan

RESTART_LOSES = ("packages installed with sudo apt-get / dpkg -i and pip outside the home "
                 "(temporary installs); files outside /home")
"""What a HomePod restart loses, shown by ``mlab status`` (the home volume stays)."""


def running_images(site_name: str) -> dict[str, str]:
    """Pod name -> image reference its main container runs, for a site's running pods."""
    # --pod fills PodName (podman 4.3 leaves it empty otherwise)
    proc = podman(["ps", "--pod", "--filter", f"label=app.kubernetes.io/instance={site_name}",
                   "--format", "json"], check=False)
    out: dict[str, str] = {}
    for c in json.loads(proc.stdout or "[]") if proc.returncode == 0 else []:
        pod = c.get("PodName") or ""
        if pod and not c.get("IsInfra") and pod not in out:
            out[pod] = c.get("Image", "")
    return out


def held_pods(
    to_play: list[PodPlan],
    current: Mapping[str, Mapping[str, Any]],
    running: Mapping[str, str],
    image: str,
    plan_for: Callable[[str], Plan],
    restart_users: Collection[str] = (),
) -> dict[str, str]:
    """HomePods to keep on their running image: pod name -> that image.

    A HomePod is held when it is running, runs an image other than ``image``, is not in
    ``restart_users``, and its running spec equals what the site would give it on its own
    image (the spec-hash label matches ``plan_for(old image)``): the image is the only change.

    Args:
        to_play: pods ``mlab up`` would (re)start.
        current: pod name -> ``podman pod ps`` record (``Status``, ``Labels``).
        running: pod name -> image its container runs (:func:`running_images`).
        image: the image of the site now.
        plan_for: builds the site's plan for another image (called once per old image).
        restart_users: users whose HomePods move now (``mlab restart --user``).
    """
    held: dict[str, str] = {}
    plans: dict[str, dict[str, str]] = {}
    for pod in to_play:
        record = current.get(pod.name)
        old = running.get(pod.name, "")
        if (pod.component != "homepod" or record is None or record.get("Status") != "Running"
                or not old or old == image or pod.user in restart_users):
            continue
        if old not in plans:
            plans[old] = {p.name: p.spec_hash for p in plan_for(old).pods}
        if plans[old].get(pod.name) == record.get("Labels", {}).get(LABEL_SPEC):
            held[pod.name] = old
    return held


def annotate(components: list[dict[str, Any]], plan_image: str,
             running: Mapping[str, str]) -> list[dict[str, Any]]:
    """Add ``image`` (what runs) and, for a HomePod on another image than ``plan_image``,
    ``older_image`` (the image the site wants) and ``restart_loses`` to ``status`` rows."""
    for comp in components:
        comp["image"] = running.get(comp["pod"], "")
        if comp["kind"] == "homepod" and plan_image and comp["image"] and comp["image"] != plan_image:
            comp["older_image"] = plan_image
            comp["restart_loses"] = RESTART_LOSES
    return components
