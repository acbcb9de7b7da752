"""Rendering: a validated site in, plain Kubernetes objects out. Pure: no I/O, no processes.

Invariant: the same site and passwords always give byte-identical files; no password ever
appears in ``Rendered.files`` (generated passwords only in ``Rendered.secrets``); inputs are
never mutated. ``mlab render`` writes the files, ``mlab apply`` applies them, and the podman
engine (``mlab up``) plays the same objects.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from mlab.render import airlock, code_service, homepod, network, portal
from mlab.render.common import site_ca_secret, tls_secret
from mlab.render.dump import dump_document, dump_yaml
from mlab.site import API_VERSION, PUBLISHER_ACCOUNT, Site, User

if TYPE_CHECKING:
    from mlab.tls import SiteTls

__all__ = ["FILES", "EncodedRunner", "PartRunner", "Rendered", "TextPart", "dump_document",
           "dump_yaml", "render_encoded", "render_site", "render_texts", "run_serially", "text_parts", "SECRETS_FILE"]

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


@dataclass(frozen=True)
class TextPart:
    """One piece of a rendered file's text, made by a pure call (no I/O, no shared state).

    Attributes:
        file: the file name (:data:`FILES` or :data:`SECRETS_FILE`) the text belongs to.
        cost: a rough weight of ``make`` in users covered (for sharing parts among workers).
        make: returns the text; the parts of a file, in order, concatenate to the file.
    """

    file: str
    cost: int
    make: Callable[[], str]


PartRunner = Callable[[Sequence[TextPart]], list[str]]
"""Runs parts and returns their texts in the parts' order (:func:`run_serially` is the
plain one; ``mlab.cli.workers.run_in_workers`` shares them among worker processes)."""

EncodedRunner = Callable[[Sequence[TextPart]], "list[bytes | memoryview]"]
"""Runs parts and returns their texts as UTF-8 in the parts' order (``mlab render`` passes
``mlab.cli.workers.encode_in_workers``)."""

_T = TypeVar("_T")

CHUNK_USERS = 1000
"""Users per part of homepod.yaml and secrets.yaml: 10 parts each at 10,000 users, enough
for two or four workers to share evenly."""


def run_serially(parts: Sequence[TextPart]) -> list[str]:
    """Each part's text, one after the other, in this process."""
    return [part.make() for part in parts]


def render_texts(site: Site, passwords: Mapping[str, str] | None = None,
                 with_secrets: bool = False, tls: SiteTls | None = None,
                 run: PartRunner = run_serially) -> dict[str, str]:
    """``render_site(site, passwords, tls).texts(with_secrets)``, written one user at a time.

    Each user's objects are written as soon as they are built and then dropped, instead of
    every object of every user first: on a 10,000-user site 140 MiB less memory and about
    0.2 s less CPU for ``mlab render`` (issue 18). The bytes are the same
    (tests/unit/test_golden.py compares both on every example site), whatever ``run`` is.

    Args:
        site, passwords, with_secrets, tls: as for :func:`render_site` and
            :meth:`Rendered.texts`.
        run: makes the texts of :func:`text_parts` (in order); the default, in this process.

    Raises:
        KeyError: ``passwords`` lacks a password that must be generated.
    """
    parts = text_parts(site, passwords, with_secrets, tls)
    return {name: "".join(texts) for name, texts in _by_file(parts, run(parts)).items()}


def _by_file(parts: Sequence[TextPart], made: Sequence[_T]) -> dict[str, list[_T]]:
    """The parts' results (texts or their UTF-8) grouped by file, files and parts in order."""
    out: dict[str, list[_T]] = {}
    for part, data in zip(parts, made, strict=True):
        out.setdefault(part.file, []).append(data)
    return out


def render_encoded(site: Site, run: EncodedRunner, passwords: Mapping[str, str] | None = None,
                   with_secrets: bool = False, tls: SiteTls | None = None
                   ) -> dict[str, list[bytes | memoryview]]:
    """:func:`render_texts` as each file's UTF-8 pieces, in order, never joined: a writer
    writes them one after the other (on a 10,000-user site the 70 MB are neither decoded,
    joined nor encoded again after the workers made them; issue 18).

    Args:
        site, passwords, with_secrets, tls: as for :func:`render_texts`.
        run: makes the texts of :func:`text_parts` as UTF-8, in order.

    Returns:
        File name to its pieces; ``b"".join`` of them is ``render_texts(...)[name]``
        encoded.

    Raises:
        KeyError: ``passwords`` lacks a password that must be generated.
    """
    parts = text_parts(site, passwords, with_secrets, tls)
    return _by_file(parts, run(parts))


def text_parts(site: Site, passwords: Mapping[str, str] | None = None,
               with_secrets: bool = False, tls: SiteTls | None = None) -> list[TextPart]:
    """The texts of :func:`render_texts` as independent parts, files in the order of
    :meth:`Rendered.texts` (homepod.yaml first), each file's parts in order.

    Per-user objects (homepod.yaml, the password and certificate Secrets) come in parts of
    :data:`CHUNK_USERS` users; the site-wide files are one part each.

    Raises:
        KeyError: ``passwords`` lacks a password that must be generated (checked here,
            before any part is made).
    """
    users = site.users
    chunks = [users[i:i + CHUNK_USERS] for i in range(0, len(users), CHUNK_USERS)]

    def homepods(chunk: Sequence[User]) -> Callable[[], str]:
        return lambda: dump_yaml(obj for user in chunk for obj in homepod.render_user(site, user))

    def docs(make: Callable[[], list[Obj]]) -> Callable[[], str]:
        return lambda: dump_yaml(make())

    parts = [TextPart("homepod.yaml", 0, lambda: _header_text("homepod.yaml"))]
    parts += [TextPart("homepod.yaml", len(c), homepods(c)) for c in chunks]
    # The site-wide files: small, except code-service.yaml (the site's YAML, every user).
    for name, make in _site_wide(site).items():
        cost = len(users) * 2 // 5 if name == "code-service.yaml" else 1
        parts.append(TextPart(name, cost, _file_part(name, make)))
    if not with_secrets:
        return parts
    secret_parts = _secret_parts(site, passwords, tls, chunks)
    if secret_parts:
        parts.append(TextPart(SECRETS_FILE, 0, lambda: _header_text(SECRETS_FILE)))
        parts += [TextPart(SECRETS_FILE, cost, docs(make)) for cost, make in secret_parts]
    return parts


def _header_text(name: str) -> str:
    """The comment lines at the top of file ``name`` (as :func:`dump_yaml` writes them)."""
    return dump_yaml([], header=_header(name))


def _file_part(name: str, make: Callable[[], list[Obj]]) -> Callable[[], str]:
    """The whole text of site-wide file ``name`` (with its header) from its objects."""
    return lambda: dump_yaml(make(), header=_header(name))


def _secret_parts(site: Site, passwords: Mapping[str, str] | None, tls: SiteTls | None,
                  chunks: Sequence[Sequence[User]]) -> list[tuple[int, Callable[[], list[Obj]]]]:
    """(cost, make) of each run of :func:`_secrets`, in its order; empty when it is empty.

    Raises:
        KeyError: ``passwords`` lacks a password that must be generated.
    """
    out: list[tuple[int, Callable[[], list[Obj]]]] = []
    if passwords is not None:
        missing = [u.name for u in site.users if not u.password_secret and u.name not in passwords]
        if missing:
            raise KeyError(missing[0])

        def user_passwords(chunk: Sequence[User]) -> Callable[[], list[Obj]]:
            return lambda: [homepod.password_secret(site, user, passwords[user.name])
                            for user in chunk if not user.password_secret]

        out += [(len(c) // 16, user_passwords(c)) for c in chunks
                if any(not u.password_secret for u in c)]
        out.append((1, lambda: _secrets(site, passwords, None, users=False)))
    if tls is not None:
        def user_certs(chunk: Sequence[User]) -> Callable[[], list[Obj]]:
            return lambda: _user_tls_secrets(site, tls, chunk)

        out += [(len(c) // 4, user_certs(c)) for c in chunks]
        if _secrets(site, None, tls, users=False):
            out.append((1, lambda: _secrets(site, None, tls, users=False)))
    return out


def _files(site: Site, users: list[Obj]) -> dict[str, list[Obj]]:
    """The manifest files, ``users`` (the HomePod objects) as homepod.yaml."""
    return {"homepod.yaml": users, **{name: make() for name, make in _site_wide(site).items()}}


def _site_wide(site: Site) -> dict[str, Callable[[], list[Obj]]]:
    """File name to the call that renders it, for the files after homepod.yaml, in order
    (portal.yaml only with ``portal.enabled``): the one table of which renderer makes
    which file."""
    text = functools.cache(lambda: site_yaml(site))  # once per process, for both readers
    files: dict[str, Callable[[], list[Obj]]] = {
        "airlock.yaml": lambda: airlock.render_airlock(site),
        "network.yaml": lambda: network.render_network(site) + portal.render_policies(site),
        "code-service.yaml": lambda: code_service.render_code_service(site, text()),
    }
    if site.portal.enabled:
        files["portal.yaml"] = lambda: portal.render_portal(site, text())
    return files


def _secrets(site: Site, passwords: Mapping[str, str] | None,
             tls: SiteTls | None = None, users: bool = True) -> list[Obj]:
    """The Secrets of generated passwords (none without ``passwords``) and of the site CA's
    certificates (none without ``tls``); ``users`` False leaves out the per-user ones."""
    secrets: list[Obj] = []
    if passwords is not None:
        if users:
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
        if users:
            secrets += _user_tls_secrets(site, tls, site.users)
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


def _user_tls_secrets(site: Site, tls: SiteTls, users: Sequence[User]) -> list[Obj]:
    """The desktop certificate Secret of each of ``users``."""
    out: list[Obj] = []
    for user in users:
        got = tls.issued[f"homepod-{user.name}"]
        out.append(tls_secret(site, homepod.tls_secret_name(user), "homepod",
                              got.cert, got.key, tls.ca, user.name))
    return out
