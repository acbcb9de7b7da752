"""Bake approved package scripts into the HomePod image: one layer on top of a built image.

Invariant: the layer runs every approved script, as root, in approval order, and stops at
the first failure (then no tag is made, so no image claims packages it lacks); the result
carries the label ``mlab.package-requests`` listing the request ids that ran, in order.
Its tag is named by a hash of the base image id and the steps, so an unchanged set of
approved scripts reuses the layer instead of reinstalling.

The layer is built with ``podman build`` on podman's default network (scripts download
packages; the build host reaches Debian and PyPI as the Airlock does). At build time the
image still has Debian's sources and no ``/etc/pip.conf`` (the entrypoint sets those up per
mode when a container starts), so scripts see the same package sources as on the Airlock.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

from mlab.errors import DeployError
from mlab.podman.runner import podman
from mlab.requests.packages import (
    LABEL_KEY,
    PackageStep,
    provision_fragment,
    write_steps,
)

REPOSITORY = "localhost/mlab/homepod"
STEPS_DIR = "/usr/share/mlab/requests"
"""Where the scripts stay in the image (a record of what was baked in)."""


def layer_hash(base_id: str, steps: list[PackageStep]) -> str:
    """Hex sha256 of the base image id and each step's id and script (pure)."""
    h = hashlib.sha256(f"mlab-packages-v1\n{base_id}\n".encode())
    for step in steps:
        h.update(f"{step.id}\n{len(step.script)}\n".encode() + step.script.encode())
    return h.hexdigest()


def containerfile(base_ref: str, steps: list[PackageStep]) -> str:
    """The Containerfile of the packages layer (pure)."""
    ids = ",".join(str(s.id) for s in steps)
    return (
        f"FROM {base_ref}\n"
        f"COPY requests/ {STEPS_DIR}/\n"
        "USER root\n"
        f"RUN bash {STEPS_DIR}/run-all.sh\n"
        f"LABEL {LABEL_KEY}={json.dumps(ids)}\n"
    )


def build_packages_layer(base_ref: str, steps: list[PackageStep], *, tag: str | None = None,
                         progress: Callable[[str], None] | None = None,
                         timeout: float = 3600) -> str:
    """Build (or reuse) ``base_ref`` plus the approved scripts; return the new reference.

    Args:
        base_ref: the image to extend (e.g. what ``mlab image build --local`` printed).
        steps: approved package steps in approval order (:func:`mlab.requests.packages.load_steps`).
            Empty: ``base_ref`` is returned unchanged.
        tag: also tag the result with this full reference. None: only the hash tag.
        progress: called with a short description of the current step.
        timeout: seconds the whole build may take.

    Returns:
        ``localhost/mlab/homepod:pkg-<16 hex>`` (or ``base_ref`` when there are no steps).

    Raises:
        DeployError: the base image is missing or a script failed (the request id is in the
            build output; the last lines are in the message).
    """
    say = progress or (lambda _m: None)
    if not steps:
        return base_ref
    inspect = podman(["image", "inspect", "--format", "{{.Id}}", base_ref], check=False)
    if inspect.returncode != 0:
        raise DeployError(f"image {base_ref}: not found", hint="run mlab image build --local first")
    ref = f"{REPOSITORY}:pkg-{layer_hash(inspect.stdout.strip(), steps)[:16]}"
    if podman(["image", "exists", ref], check=False).returncode != 0:
        say(f"running {len(steps)} approved package script(s) (podman build)")
        with tempfile.TemporaryDirectory(prefix="mlab-pkg-") as tmp:
            ctx = Path(tmp)
            write_steps(steps, ctx / "requests")
            (ctx / "requests" / "run-all.sh").write_text(provision_fragment(steps, STEPS_DIR))
            (ctx / "Containerfile").write_text(containerfile(base_ref, steps))
            proc = podman(["build", "--pull=never", "-f", str(ctx / "Containerfile"), "-t", ref,
                           str(ctx)], check=False, timeout=timeout)
            if proc.returncode != 0:
                tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-4:])
                raise DeployError(f"a package script failed while building the image: {tail}")
    if tag:
        podman(["tag", ref, tag])
    return ref
