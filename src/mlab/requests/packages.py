"""Approved package requests as ordered steps of the image build (the hook for ``mlab image build``).

Invariant: steps come in approval order (the order in which each request reached
``approved``), revoked requests are never among them, and the image's label lists exactly
the request ids whose scripts ran, in that order.

How the image builder uses it::

    from mlab.requests.packages import load_steps, write_steps, image_labels
    steps = load_steps(server=URL)            # or load_steps(path="approved.json")
    scripts = write_steps(steps, rootfs / "usr/share/mlab/requests")  # 001-request-7.sh ...
    # run each script, in order, as root inside the rootfs (bash SCRIPT), failing the build
    # on a non-zero exit; then label the image:
    for key, value in image_labels(steps).items(): ...  # podman import --change LABEL=k=v

``mlab request packages --out-file approved.json`` writes the file form, for builds on a machine that
cannot reach the code service.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mlab.atomic import write_atomic
from mlab.errors import UsageError

LABEL_KEY = "mlab.package-requests"
"""Image label: comma-separated ids of the package requests baked in, in run order."""


@dataclass(frozen=True)
class PackageStep:
    """One approved install script.

    Attributes:
        id: the request id.
        script: the bash script text.
        owner: who asked for it.
        reason: why.
        approved_at: ISO 8601 UTC time of the final approval.
    """

    id: int
    script: str
    owner: str
    reason: str
    approved_at: str


def steps_from_json(data: Any, source: str = "packages") -> list[PackageStep]:
    """Parse ``{"packages": [...]}`` (the API's and the file's shape) into ordered steps.

    Raises:
        UsageError: the document does not have that shape.
    """
    items = data.get("packages") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise UsageError(f"{source}: expected an object with a 'packages' list")
    steps = []
    for i, item in enumerate(items):
        try:
            steps.append(PackageStep(int(item["id"]), str(item["script"]), str(item["owner"]),
                                     str(item["reason"]), str(item["approved_at"])))
        except (KeyError, TypeError, ValueError):
            raise UsageError(f"{source}: packages[{i}] lacks id, script, owner, reason or approved_at") from None
    return steps


def load_steps(*, server: str | None = None, path: str | Path | None = None) -> list[PackageStep]:
    """Approved package steps in approval order, from the code service or a file.

    Args:
        server: code service URL (credentials from MLAB_USER / MLAB_PASSWORD[_FILE]; the
            admin or a reviewer).
        path: a file written by ``mlab request packages --out-file FILE``. Wins over ``server``.

    Raises:
        UsageError: neither given, or the file is unreadable or malformed.
        MlabError: the service refused or is unreachable.
    """
    if path is not None:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UsageError(f"{path}: cannot read approved packages: {exc}") from None
        return steps_from_json(data, str(path))
    if server is None:
        raise UsageError("packages: give a code service URL or a file of approved packages")
    from mlab.requests.client import RequestsClient

    return steps_from_json({"packages": RequestsClient.from_env(server).packages()}, server)


def dump_steps(steps: list[PackageStep]) -> str:
    """The file form of ``steps`` (JSON, readable by :func:`load_steps`)."""
    return json.dumps({"packages": [asdict(s) for s in steps]}, indent=2) + "\n"


def write_steps(steps: list[PackageStep], directory: str | Path) -> list[Path]:
    """Write each script as ``NNN-request-<id>.sh`` (mode 0755) plus ``steps.json``.

    Returns:
        The script paths in run order.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, step in enumerate(steps, 1):
        path = directory / f"{n:03d}-request-{step.id}.sh"
        write_atomic(path, step.script if step.script.endswith("\n") else step.script + "\n", 0o755)
        paths.append(path)
    (directory / "steps.json").write_text(dump_steps(steps), encoding="utf-8")
    return paths


def image_labels(steps: list[PackageStep]) -> dict[str, str]:
    """Labels for the built image: ``{LABEL_KEY: "7,9,12"}`` (empty string: none)."""
    return {LABEL_KEY: ",".join(str(s.id) for s in steps)}


def provision_fragment(steps: list[PackageStep], directory: str = "/usr/share/mlab/requests") -> str:
    """A bash fragment that runs the written scripts in order and stops at the first failure.

    Args:
        steps: the steps, as passed to :func:`write_steps`.
        directory: where :func:`write_steps` put them, as seen inside the image.
    """
    lines = ["set -euo pipefail"]
    for n, step in enumerate(steps, 1):
        script = f"{directory}/{n:03d}-request-{step.id}.sh"
        lines.append(f"echo 'mlab: package request {step.id} ({n}/{len(steps)})' >&2")
        lines.append(f"bash {script} || {{ echo 'mlab: package request {step.id} failed' >&2; exit 1; }}")
    return "\n".join(lines) + "\n"
