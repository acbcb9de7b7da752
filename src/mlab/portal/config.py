"""What a running portal needs, derived from the site and the files mounted into its pod.

Pure apart from :func:`read_secret`. The rules for where a user's desktop is reached live
here only: on Kubernetes the VNC port of the Service ``homepod-<user>`` in the site's
namespace (cluster DNS); the podman engine and tests pass explicit ``backends`` instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from mlab.errors import UsageError
from mlab.site import Site

NOVNC_DIR = Path("/usr/share/novnc")
"""Debian's ``novnc`` package (in the HomePod image, and on hosts that run the tests)."""
USERS_DIR = Path("/etc/mlab/users")
"""``<user>/password`` files (docs/CONTRACTS.md), as in the code service."""
CLIENT_SECRET_FILE = Path("/etc/mlab/portal/client-secret")
CALLBACK_PATH = "/auth/callback"


@dataclass(frozen=True)
class Backend:
    """Where one user's VNC server answers (RFB 3.8 with VncAuth)."""

    host: str
    port: int


@dataclass(frozen=True)
class PortalConfig:
    """A portal's settings.

    Attributes:
        site: the validated site (users, ``portal``, ``access.ports``).
        users_dir: directory of ``<user>/password`` files: the VNC password the portal
            answers VncAuth with, and (without an identity provider) the sign-in password.
        backends: user name to the address of their VNC server.
        client_secret: the OIDC client secret, or None for a public client (PKCE only).
        audit_log: JSON-lines file for sign-ins and desktop openings; None: log only.
        novnc_dir: noVNC's static files, served under ``/novnc/``.
        code_url: the code service's base URL for the requests API, or None to show no
            requests.
        share: the Airlock's share, mounted read-only (what is staged); None: not shown.
        session_db: SQLite file for sessions (they survive a restart); None: in memory.
        waker: starts a stopped (culled) HomePod, given the user name
            (:func:`mlab.portal.wake.make_waker`); None: the portal never starts one.
        idp_ca_file: PEM CA certificates trusted for the provider's https:// besides the
            system's (``portal.oidc.caBundleSecret``); None: system CAs only.
        vnc_ca: the site CA (``tls``): desktops offer VeNCrypt X509Vnc only, and their
            certificates must chain to it. None: VncAuth in the clear (``tls`` off).
        code_ca: the code service's CA (``tls``: ``code_url`` is https://, checked against
            it alone). None: the default trust (``$SSL_CERT_FILE`` or the system's).
    """

    site: Site
    users_dir: Path = USERS_DIR
    backends: dict[str, Backend] = field(default_factory=dict)
    client_secret: str | None = None
    audit_log: Path | None = None
    novnc_dir: Path = NOVNC_DIR
    code_url: str | None = None
    waker: Callable[[str], object] | None = None
    session_db: Path | None = None
    share: Path | None = None
    idp_ca_file: Path | None = None
    vnc_ca: Path | None = None
    code_ca: Path | None = None

    @property
    def url(self) -> str:
        """The portal's public URL (``portal.url``), without a trailing slash."""
        return self.site.portal.url

    @property
    def origin(self) -> str:
        """``scheme://host[:port]`` of :attr:`url`: the only Origin accepted on WebSockets
        and form posts (RFC 6454)."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def redirect_uri(self) -> str:
        """Where the provider sends the browser back (register it at the provider)."""
        return self.url + CALLBACK_PATH

    def password_file(self, user: str) -> Path:
        """``<users_dir>/<user>/password``."""
        return self.users_dir / user / "password"

    def vnc_password(self, user: str) -> str:
        """The user's VNC password, read at each desktop opening (a rotated Secret works
        without a restart).

        Raises:
            OSError: the file is missing or unreadable.
        """
        return read_secret(self.password_file(user))


def read_secret(path: Path) -> str:
    """A secret file's content without its trailing newline.

    Raises:
        OSError: missing or unreadable.
    """
    return path.read_text(encoding="utf-8").rstrip("\r\n")


def vnc_port(site: Site, user: str) -> int:
    """The Service port of ``user``'s VNC: ``users[].service.ports.vnc`` or
    ``access.ports.vnc``."""
    return site.user(user).service.ports.get("vnc", site.access.ports.vnc)


def cluster_backends(site: Site) -> dict[str, Backend]:
    """Every user's VNC Service on Kubernetes: ``homepod-<user>.<namespace>.svc``."""
    return {
        u.name: Backend(f"homepod-{u.name}.{site.namespace}.svc", vnc_port(site, u.name))
        for u in site.users
    }


def parse_backends(items: list[str], site: Site) -> dict[str, Backend]:
    """``USER=HOST:PORT`` options (the podman engine, tests) over :func:`cluster_backends`.

    Raises:
        UsageError: a malformed item or an unknown user (one line naming it).
    """
    out = cluster_backends(site)
    names = {u.name for u in site.users}
    for item in items:
        user, sep, address = item.partition("=")
        host, colon, port = address.rpartition(":")
        if not sep or not colon or not host or not port.isdigit():
            raise UsageError(f"--backend {item!r}: expected USER=HOST:PORT, e.g. alice=10.0.0.5:5900")
        if user not in names:
            raise UsageError(f"--backend {item!r}: {user!r} is not a user of the site")
        out[user] = Backend(host, int(port))
    return out
