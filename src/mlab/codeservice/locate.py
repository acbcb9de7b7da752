"""The one way every client command (``mlab repo``, ``mlab request``, ``mlab image build
--requests-from``) finds the code service.

First found wins:

1. ``--server URL`` or ``$MLAB_SERVER`` (the only variable; typer reads it for ``--server``);
2. a site file (``--site`` / ``$MLAB_SITE``, where the command has one): the code service that
   ``mlab up`` published for it on this host (``http://<bind>:<port>``, what ``mlab status``
   prints) when that site is up under podman, else ``http://<codeService.host>`` (a cluster;
   ``https://`` when the site has ``tls``);
3. ``http://$MLAB_CODE_HOST`` (set in every HomePod and the Airlock);
4. the code service of ``mlab up``'s default site (``examples/local.yaml``) when it is up.

Otherwise a one-line error names ``--server`` and ``MLAB_SERVER``.
"""

from __future__ import annotations

import os
from pathlib import Path

from mlab.errors import MlabError, UsageError
from mlab.topology import SERVER_ENV, dial_address

ENV = SERVER_ENV
"""The environment variable naming the code service URL, for every client command (set in
HomePods of a site with ``tls``: ``https://<codeService.host>``)."""
LOCAL_SITE = Path("examples/local.yaml")
"""The local commands' default site (``mlab up``)."""


def local_server(site_file: Path | str = LOCAL_SITE) -> str | None:
    """The code service ``mlab up`` published for ``site_file``: ``http://<bind>:<port>``
    (``https://`` with ``tls``: clients then trust the site CA, ``mlab tls ca``) from the
    engine's last plan (what ``mlab status`` prints), or None when that site is not
    up under podman (no site file, an invalid one, or no plan).

    Raises:
        DeployError: the site's plan is of another version or invalid (one line naming the
            file; ``mlab up`` rewrites it).
    """
    site_file = Path(site_file)
    if not site_file.is_file():
        return None
    from mlab.podman import engine as podman_engine
    from mlab.site import load_site

    try:
        name = load_site(site_file).name
    except MlabError:
        return None
    plan = podman_engine.load_plan(name)
    code = plan.first("code-service") if plan else None
    if code is None or not code.ports:
        return None
    port = code.ports[0]
    scheme = "https" if port.name == "https" else "http"
    return f"{scheme}://{dial_address(port.host_ip)}:{port.host_port}"


def find_server(server: str | None = None, site: str | Path | None = None) -> str:
    """The code service base URL (no trailing slash), by the rules of the module docstring.

    Args:
        server: ``--server`` (typer has already read ``$MLAB_SERVER`` into it); also read
            from the environment here for callers outside typer.
        site: a site file path, or None when the command has none.

    Raises:
        UsageError: a URL without ``http://``/``https://``, or no code service found.
    """
    url = server or os.environ.get(ENV)
    if not url and site and Path(site).is_file():
        url = local_server(site)
        if not url:
            from mlab.site import load_site

            loaded = load_site(site)
            # With tls the office reaches the code service on HTTPS only (docs/egress.md).
            scheme = "https" if loaded.tls.enabled else "http"
            url = f"{scheme}://{loaded.code_service.host}"
    if not url and os.environ.get("MLAB_CODE_HOST"):
        url = f"http://{os.environ['MLAB_CODE_HOST']}"
    if not url:
        url = local_server(Path(os.environ.get("MLAB_SITE") or LOCAL_SITE))
    if not url:
        raise UsageError(
            "no code service given, and the local site (examples/local.yaml) is not up",
            hint=f"pass --server URL or set {ENV} (the code-service URL `mlab status` prints, "
                 "e.g. http://127.0.0.1:80)")
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"--server / {ENV}: {url!r} must start with http:// or https://")
    return url.rstrip("/")
