"""Render a site with its stored secrets: the passwords and the site CA's certificates.

The render layer (:mod:`mlab.render`) is pure: :func:`mlab.render.render_site` and
:func:`mlab.render.render_texts` take the passwords and the TLS material as arguments. This
module is the one place that loads them from the state directory (creating them on first
use: :func:`mlab.secrets.load_or_create_passwords`, :func:`mlab.tls.load_or_create`) and
hands them to the render entry points; ``mlab render``, ``mlab apply`` and ``mlab up`` (the
podman engine's plan) all come through here.
"""

from __future__ import annotations

from pathlib import Path

from mlab.render import EncodedRunner, PartRunner, Rendered, render_encoded, render_site, render_texts, run_serially
from mlab.secrets import load_or_create_passwords
from mlab.site import Site
from mlab.tls import SiteTls, load_or_create


def stored_secrets(site: Site, state_dir: Path | None = None
                   ) -> tuple[dict[str, str], SiteTls | None]:
    """The site's stored passwords and, with ``tls.mode`` not off, its site CA material.

    Args:
        site: the loaded site.
        state_dir: the state root (None: :func:`mlab.secrets.state_root`).

    Returns:
        (password key -> password, :class:`mlab.tls.SiteTls` or None), each generated and
        stored once if missing.

    Raises:
        MlabError: the state directory cannot be read or written.
    """
    return load_or_create_passwords(site, state_dir), load_or_create(site, state_dir)


def render_with_passwords(site: Site, state_dir: Path | None = None) -> Rendered:
    """Render ``site`` (:func:`mlab.render.render_site`) with its :func:`stored_secrets`."""
    return render_site(site, *stored_secrets(site, state_dir))


def render_texts_with_passwords(site: Site, with_secrets: bool = False,
                                state_dir: Path | None = None,
                                run: PartRunner = run_serially) -> dict[str, str]:
    """File name to YAML text of ``site`` with its :func:`stored_secrets`, written one user
    at a time, its parts made by ``run`` (:func:`mlab.render.render_texts`)."""
    passwords, tls = stored_secrets(site, state_dir)
    return render_texts(site, passwords, with_secrets, tls, run=run)


def render_encoded_with_passwords(site: Site, run: EncodedRunner, with_secrets: bool = False,
                                  state_dir: Path | None = None
                                  ) -> dict[str, list[bytes | memoryview]]:
    """:func:`render_texts_with_passwords` as each file's UTF-8 pieces, its parts made by
    ``run`` (:func:`mlab.render.render_encoded`)."""
    passwords, tls = stored_secrets(site, state_dir)
    return render_encoded(site, run, passwords, with_secrets, tls)
