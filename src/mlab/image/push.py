"""Push the HomePod image to the site's registry under its content-derived tag.

Invariant: a pushed tag names what the image holds, never a moving name: the local tag is
the hash of the recipe and source (``<16 hex>``, :mod:`mlab.image.recipe`) or of the base and
the baked package scripts (``pkg-<16 hex>``, :mod:`mlab.requests.imagelayer`). So a site that
pins ``image.tag`` to it runs exactly that image on every node, and a new push never changes
what running HomePods have. ``latest`` is never pushed.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from mlab.errors import DeployError, UsageError
from mlab.podman.runner import podman
from mlab.site import Image

CONTENT_TAG = re.compile(r"^(pkg-)?[0-9a-f]{16}$")
"""Tags that name an image's content (recipe hash, or packages-layer hash)."""

LOCAL_REPOSITORY = "localhost/mlab/homepod"
"""Where local builds live; not a registry."""


def content_tag(ref: str, repo_tags: list[str]) -> str:
    """The content-derived tag of an image (pure).

    Args:
        ref: the reference asked for (``REPO:TAG``).
        repo_tags: every ``REPO:TAG`` of the same image (``podman image inspect``'s RepoTags).

    Returns:
        ``ref``'s own tag when it is content-derived, else the first content-derived tag
        among ``repo_tags``.

    Raises:
        UsageError: no tag of the image names its content (e.g. only ``latest`` of an
            image built elsewhere).
    """
    for candidate in [ref, *repo_tags]:
        tag = candidate.rsplit(":", 1)[1] if ":" in candidate.rsplit("/", 1)[-1] else ""
        if CONTENT_TAG.match(tag):
            return tag
    raise UsageError(
        f"image {ref}: none of its tags names its content ({', '.join(repo_tags) or 'none'})",
        hint="push what `mlab image build --local` or `mlab request bake` printed",
    )


def destination(image: Image, tag: str) -> str:
    """``<image.repository>:<tag>``, the reference the site's pods pull (pure).

    Raises:
        UsageError: ``image.repository`` is the local build name, which is no registry.
    """
    if image.repository == LOCAL_REPOSITORY or "/" not in image.repository:
        raise UsageError(
            f"image.repository: {image.repository!r} names no registry",
            hint="set it to REGISTRY/PATH, e.g. registry.example.com:5000/mlab/homepod",
        )
    return f"{image.repository}:{tag}"


@contextlib.contextmanager
def registry_tls(image: Image) -> Iterator[list[str]]:
    """podman's TLS options for the site's registry, valid inside the ``with``.

    ``image.plainHttp``: ``--tls-verify=false``. ``image.caFile``: ``--cert-dir`` of a
    private temporary folder holding only that CA as ``ca.crt`` (containers/image reads every
    ``*.crt`` there as a CA on top of the system's, and would refuse a stray ``*.key``), so
    the local CA is trusted for this one command and the machine's trust store is left as
    it is. Otherwise: TLS verified against the system's CAs.

    Yields:
        Options for ``podman push`` / ``podman pull``, e.g. ``["--tls-verify=true",
        "--cert-dir", "/tmp/mlab-registry-ca-x1y2"]``.

    Raises:
        UsageError: ``image.caFile`` cannot be read.
    """
    if image.plain_http:
        yield ["--tls-verify=false"]
        return
    if image.ca_file is None:
        yield ["--tls-verify=true"]
        return
    with tempfile.TemporaryDirectory(prefix="mlab-registry-ca-") as folder:
        try:
            shutil.copyfile(image.ca_file, Path(folder) / "ca.crt")
        except OSError as exc:
            raise UsageError(f"image.caFile: cannot read {image.ca_file}: {exc.strerror}",
                             hint="give the path of the registry's CA certificate (PEM)") from None
        yield ["--tls-verify=true", "--cert-dir", folder]


def push_image(ref: str, image: Image, say: Callable[[str], None] | None = None) -> str:
    """Push ``ref`` to the site's registry under its content-derived tag.

    Args:
        ref: a local image (``localhost/mlab/homepod:<tag>``).
        image: the site's ``image`` section (repository; ``plainHttp`` for a registry
            without TLS, declared as such in the site; ``caFile`` for a local CA).
        say: progress callback.

    Returns:
        The pushed reference, ``<repository>:<tag>``.

    Raises:
        UsageError: the image has no content tag or the site names no registry.
        DeployError: the image is missing or the push failed (podman's last error line).
    """
    inspect = podman(["image", "inspect", "--format", "{{json .RepoTags}}", ref], check=False)
    if inspect.returncode != 0:
        raise DeployError(f"image {ref}: not found", hint="build it: mlab image build --local")
    dest = destination(image, content_tag(ref, json.loads(inspect.stdout or "[]") or []))
    (say or (lambda _m: None))(f"pushing {ref} to {dest}")
    with registry_tls(image) as tls:
        proc = podman(["push", *tls, ref, f"docker://{dest}"], check=False, timeout=3600)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()] or [f"exit {proc.returncode}"]
        raise DeployError(f"push of {ref} to {dest} failed: {lines[-1].strip()}",
                          hint="is the registry up, and image.plainHttp or image.caFile right for it?")
    return dest
