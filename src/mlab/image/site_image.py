"""The image a site runs on this machine: MLab's own, built if missing, or the site's, pulled.

Used by ``mlab up`` and ``mlab restart``, which hand it to the podman engine
(:func:`mlab.podman.engine.up`, argument ``image_of``): the engine runs podman and the image
package builds with it, so the engine takes this rule from its caller instead of importing it.
"""

from __future__ import annotations

from collections.abc import Callable

from mlab.errors import DeployError
from mlab.image import recipe
from mlab.image.build import ensure_image
from mlab.podman.runner import podman
from mlab.site import Site

Say = Callable[[str], None]


def image_ref(site: Site, say: Say) -> str:
    """The image to run: for MLab's own repository at tag ``latest``, the image of the
    current recipe and source, built if missing (``ensure_image``); otherwise (a pinned tag
    or another repository) the site's reference, pulled (``podman pull``, TLS off with
    ``image.plainHttp``) when missing and ``pullPolicy`` is not ``Never``, always with
    ``Always`` (TLS as :func:`mlab.image.push.registry_tls` says: ``image.caFile`` trusted
    for this pull only).

    Raises:
        DeployError: the image is not present and could not be pulled.
    """
    if site.image.repository == recipe.REPOSITORY and site.image.tag == "latest":
        say("image: checking (building if missing)")
        return ensure_image(progress=lambda m: say(f"image: {m}"))
    present = podman(["image", "exists", site.image.ref], check=False).returncode == 0
    if site.image.pull_policy == "Always" or (not present and site.image.pull_policy != "Never"):
        say(f"image: pulling {site.image.ref}")
        from mlab.image.push import registry_tls

        with registry_tls(site.image) as tls:
            proc = podman(["pull", "-q", *tls, site.image.ref], check=False, timeout=3600)
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.splitlines() if ln.strip()] or ["no output"]
            raise DeployError(f"image {site.image.ref}: pull failed: {lines[-1].strip()}",
                              hint="push it first (mlab image push), or check image.plainHttp / image.caFile")
        present = True
    if not present:
        raise DeployError(f"image {site.image.ref} is not present",
                          hint="load it with `podman load`, push it (mlab image push), or "
                          "set image.pullPolicy: IfNotPresent")
    return site.image.ref
