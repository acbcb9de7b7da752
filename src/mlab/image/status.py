"""`mlab image status`: how old an image is and which Debian security updates it lacks.

Invariant: nothing here changes an image. The pending updates are what ``apt-get -s
upgrade`` (a simulation) finds in a throw-away container of the image, against the image's
own pristine sources (``/usr/share/mlab/pristine/sources.list``, written at build time:
bookworm, bookworm-updates and bookworm-security), so the answer is about the image, not
about a running pod's staged repository. Reading the simulation is pure
(:func:`parse_simulated_upgrade`); the container run is the only side effect.

Why it matters (issue 17): an image is cached by its recipe hash, so a rebuild with an
unchanged recipe picks up no security update; this command says how far behind it is.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import asdict, dataclass
from typing import Any

from mlab.errors import DeployError
from mlab.podman.runner import podman

PRISTINE_SOURCES = "/usr/share/mlab/pristine/sources.list"
"""The image's build-time apt sources (docs/CONTRACTS.md)."""

_INST = re.compile(r"^Inst (?P<pkg>\S+) (?:\[(?P<old>[^\]]+)\] )?\((?P<new>\S+) (?P<suites>[^\[)]+)")


@dataclass(frozen=True)
class Update:
    """One package an upgrade would change.

    Attributes:
        package: binary package name.
        installed: the version in the image ('' when apt does not say).
        candidate: the version apt would install.
        suites: where the candidate comes from, e.g. ``Debian-Security:12/stable-security``.
        security: whether a security suite offers it.
    """

    package: str
    installed: str
    candidate: str
    suites: str
    security: bool


def parse_simulated_upgrade(text: str) -> list[Update]:
    """The ``Inst`` lines of ``apt-get -s upgrade`` output, in order.

    A line looks like ``Inst libssl3 [3.0.15-1~deb12u1] (3.0.17-1~deb12u2
    Debian-Security:12/stable-security [amd64])`` (apt-get(8), simulation output).
    """
    out = []
    for line in text.splitlines():
        m = _INST.match(line)
        if not m:
            continue
        suites = m.group("suites").strip()
        out.append(Update(m.group("pkg"), m.group("old") or "", m.group("new"), suites,
                          "security" in suites.lower()))
    return out


def image_created(ref: str) -> dt.datetime:
    """When ``ref`` was created (UTC).

    Raises:
        DeployError: no such image.
    """
    proc = podman(["image", "inspect", "--format", "{{.Created.Unix}}", ref], check=False)
    if proc.returncode != 0:
        raise DeployError(f"image {ref}: not found ({proc.stderr.strip()[-200:]})",
                          hint="build it: mlab image build --local")
    return dt.datetime.fromtimestamp(int(proc.stdout.strip()), dt.timezone.utc)


def pending_updates(ref: str, timeout: float = 600) -> list[Update]:
    """Run ``apt-get update`` and ``apt-get -s upgrade`` in a throw-away container of ``ref``
    (podman's default NAT network, which reaches the Debian mirror).

    Raises:
        DeployError: the container failed (no network to the mirror, no such image).
    """
    script = (
        f"opts='-o Dir::Etc::SourceList={PRISTINE_SOURCES} -o Dir::Etc::SourceParts=/nonexistent';"
        " apt-get $opts -qq update >/dev/null && apt-get $opts -s upgrade"
    )
    proc = podman(["run", "--rm", "--entrypoint", "/bin/bash", "-u", "root", ref, "-c", script],
                  check=False, timeout=timeout)
    if proc.returncode != 0:
        raise DeployError(f"image {ref}: apt-get in a container failed: "
                          f"{(proc.stderr or proc.stdout).strip()[-300:]}",
                          hint="the host must reach the Debian mirror (podman's NAT network)")
    return parse_simulated_upgrade(proc.stdout)


def status(ref: str, now: dt.datetime | None = None) -> dict[str, Any]:
    """``{"image", "created", "age_days", "pending", "security", "updates": [...]}`` for
    ``ref``: created as ISO 8601 UTC, age in whole days, counts of all and of security
    updates, and each update (:class:`Update` fields)."""
    created = image_created(ref)
    updates = pending_updates(ref)
    now = now or dt.datetime.now(dt.timezone.utc)
    return {
        "image": ref,
        "created": created.isoformat(timespec="seconds"),
        "age_days": (now - created).days,
        "pending": len(updates),
        "security": sum(u.security for u in updates),
        "updates": [asdict(u) for u in updates],
    }
