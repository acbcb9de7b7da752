"""Rendering: a validated site in, plain Kubernetes objects out. Pure: no I/O, no processes.

Invariant: the same site and passwords always give byte-identical files; no password ever
appears in ``Rendered.files`` (generated passwords only in ``Rendered.secrets``); inputs are
never mutated. ``mlab render`` writes the files, ``mlab apply`` applies them, and the podman
engine (``mlab up``) plays the same objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlab.render import airlock, code_service, homepod, network, portal
from mlab.render.common import site_ca_secret, tls_secret
from mlab.render.dump import dump_document, dump_yaml
from mlab.site import API_VERSION, PUBLISHER_ACCOUNT, Site

if TYPE_CHECKING:
    from mlab.tls import SiteTls

__all__ = ["FILES", "Rendered", "dump_document", "dump_yaml", "render_site", "render_texts",
           "SECRETS_FILE"]

FILES = ("homepod.yaml", "airlock.yaml", "network.yaml", "code-service.yaml", "portal.yaml")
"""The manifest files, in the order ``mlab apply`` applies them (network first there);
portal.yaml only when the site enables the portal."""
SECRETS_FILE = "secrets.yaml"
"""Generated password Secrets, written only by ``mlab render --out-dir DIR`` (mode 0600)."""

Obj = dict[str, Any]


@dataclass(frozen=True)
class Rendered:
    """The rendered site.

    Attributes:
        files: file name (each of :data:`FILES`) to its objects, secret-free.
        secrets: the Secrets holding generated passwords (users without an existing
            ``passwordSecret``, the Airlock unless it names one, and the code-service
            admin); empty when ``render_site`` got no passwords.
    """

    files: dict[str, list[Obj]]
    secrets: list[Obj] = field(default_factory=list)

    def objects(self) -> list[Obj]:
        """Every object in apply order: policies, secrets, then the files' objects."""
        return [
            *self.files["network.yaml"],
            *self.secrets,
            *self.files["code-service.yaml"],
            *self.files["airlock.yaml"],
            *self.files["homepod.yaml"],
            *self.files.get("portal.yaml", []),
        ]

    def texts(self, with_secrets: bool = False) -> dict[str, str]:
        """File name to YAML text; ``secrets.yaml`` only when asked and there are some."""
        out = {name: dump_yaml(objs, header=_header(name)) for name, objs in self.files.items()}
        if with_secrets and self.secrets:
            out[SECRETS_FILE] = dump_yaml(self.secrets, header=_header(SECRETS_FILE))
        return out


_HEADERS = {
    "homepod.yaml": "HomePods: per user a home PVC, a Deployment and a Service.",
    "airlock.yaml": "Airlock: share and outbox claims, Deployment and Service.",
    "network.yaml": "NetworkPolicies: default deny, then one policy per allowed edge.\n"
    "Apply this file first (mlab apply does) so no pod runs unprotected.",
    "code-service.yaml": "Code service: site ConfigMap, data PVC, Deployment, Service.",
    "portal.yaml": "Portal: Deployment and Service of the web front door (sign-in, desktops).",
    SECRETS_FILE: "Generated passwords. Keep this file private (mode 0600); never commit it.",
}


def site_yaml(site: Site) -> str:
    """The site as the YAML the code service reads (ConfigMap ``mlab-site``).

    Only values that differ from the defaults are written (a 1,000-user site must stay far
    below a ConfigMap's 1 MiB limit); loading it gives back an equal :class:`Site`.
    """
    data = site.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    return dump_document({"apiVersion": API_VERSION, **data})


def _header(name: str) -> str:
    return f"Rendered by mlab; do not edit, change the site file.\n{_HEADERS[name]}"


def render_site(site: Site, passwords: Mapping[str, str] | None = None,
                tls: SiteTls | None = None) -> Rendered:
    """Render a site into the four manifest files and the password Secrets.

    Args:
        site: a validated site.
        passwords: ``mlab.secrets.load_or_create_passwords`` output: user name, ``airlock``,
            ``admin`` and ``mlab-publisher`` to password. None: render no Secrets (manifests only, e.g. for
            golden files); the manifests are the same either way.
        tls: ``mlab.tls.load_or_create`` output (``tls.mode`` not off): the site CA's
            certificates become kubernetes.io/tls Secrets among ``secrets``. None: none.

    Returns:
        The rendered objects.

    Raises:
        KeyError: ``passwords`` lacks a password that must be generated.
    """
    users: list[Obj] = []
    for user in site.users:
        users += homepod.render_user(site, user)
    return Rendered(files=_files(site, users), secrets=_secrets(site, passwords, tls))


def render_texts(site: Site, passwords: Mapping[str, str] | None = None,
                 with_secrets: bool = False, tls: SiteTls | None = None) -> dict[str, str]:
    """``render_site(site, passwords, tls).texts(with_secrets)``, written one user at a time.

    Each user's objects are written as soon as they are built and then dropped, instead of
    every object of every user first: on a 10,000-user site 140 MiB less memory and about
    0.2 s less CPU for ``mlab render`` (issue 18). The bytes are the same
    (tests/unit/test_golden.py compares both on every example site).

    Raises:
        KeyError: ``passwords`` lacks a password that must be generated.
    """
    homepods = (obj for user in site.users for obj in homepod.render_user(site, user))
    homepod_text = dump_yaml(homepods, header=_header("homepod.yaml"))
    rest = Rendered(files=_files(site, []), secrets=_secrets(site, passwords, tls))
    return rest.texts(with_secrets=with_secrets) | {"homepod.yaml": homepod_text}


def _files(site: Site, users: list[Obj]) -> dict[str, list[Obj]]:
    """The manifest files, ``users`` (the HomePod objects) as homepod.yaml."""
    text = site_yaml(site)
    files = {
        "homepod.yaml": users,
        "airlock.yaml": airlock.render_airlock(site),
        "network.yaml": network.render_network(site) + portal.render_policies(site),
        "code-service.yaml": code_service.render_code_service(site, text),
    }
    if site.portal.enabled:
        files["portal.yaml"] = portal.render_portal(site)
    return files


def _secrets(site: Site, passwords: Mapping[str, str] | None,
             tls: SiteTls | None = None) -> list[Obj]:
    """The Secrets of generated passwords (none without ``passwords``) and of the site CA's
    certificates (none without ``tls``)."""
    secrets: list[Obj] = []
    if passwords is not None:
        secrets = [
            homepod.password_secret(site, user, passwords[user.name])
            for user in site.users
            if not user.password_secret
        ]
        if site.airlock.enabled and not site.airlock.password_secret:
            secrets.append(airlock.password_secret(site, passwords["airlock"]))
        if site.airlock.enabled:
            secrets.append(airlock.publisher_secret(site, passwords[PUBLISHER_ACCOUNT]))
        secrets.append(code_service.admin_secret(site, passwords["admin"]))
    if tls is not None:
        for user in site.users:
            got = tls.issued[f"homepod-{user.name}"]
            secrets.append(tls_secret(site, homepod.tls_secret_name(user), "homepod",
                                      got.cert, got.key, tls.ca, user.name))
        if site.portal.enabled:
            secrets.append(site_ca_secret(site, tls.ca))
        if site.airlock.enabled:
            got = tls.issued["airlock"]
            secrets.append(tls_secret(site, airlock.TLS_SECRET, "airlock", got.cert, got.key,
                                      tls.ca))
        if site.tls.mode == "site-ca":
            got = tls.issued["code-service"]
            secrets.append(tls_secret(site, code_service.TLS_SECRET, "code-service",
                                      got.cert, got.key, tls.ca))
    return secrets
