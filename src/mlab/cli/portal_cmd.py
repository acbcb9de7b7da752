"""``mlab portal serve``: the web portal (sign-in, each user's desktop in the browser)."""

from __future__ import annotations

import logging
import sqlite3
import sys
from pathlib import Path

import typer

from mlab.cli.options import site_option
from mlab.cli.serving import listen, run_servers
from mlab.errors import UsageError


def register(app: typer.Typer) -> None:
    """Add ``portal`` to ``app``."""
    portal = typer.Typer(help="Run the web portal.", no_args_is_help=True)
    app.add_typer(portal, name="portal")

    @portal.command("serve")
    def serve(
        site: Path = site_option(..., "The site file (its `portal` section). Required."),
        host: str = typer.Option("0.0.0.0", "--host", help="Address to listen on. "
                                 "Default: 0.0.0.0."),
        port: int = typer.Option(8443, "--port", help="TCP port; 0 picks a free one "
                                 "(printed). Default: 8443."),
        users_dir: Path = typer.Option(Path("/etc/mlab/users"), "--users-dir",
                                       help="Directory of <user>/password files (VNC and, "
                                       "without a provider, sign-in). Default: /etc/mlab/users."),
        client_secret_file: Path = typer.Option(
            None, "--client-secret-file", envvar="MLAB_PORTAL_CLIENT_SECRET_FILE",
            help="File holding the OpenID Connect client secret. Default: none (a public "
            "client, PKCE only)."),
        backend: list[str] = typer.Option(
            [], "--backend", help="USER=HOST:PORT of a user's VNC server, repeatable. "
            "Default: homepod-<user>.<namespace>.svc and the VNC Service port."),
        audit_log: Path = typer.Option(None, "--audit-log", help="JSON-lines audit file "
                                       "(created 0600). Default: log only."),
        novnc_dir: Path = typer.Option(Path("/usr/share/novnc"), "--novnc-dir",
                                       help="noVNC's files. Default: /usr/share/novnc."),
        code_url: str = typer.Option(
            None, "--code-url", help="Code service base URL for the requests API (the "
            "user's requests, the review queue). Default: none shown."),
        tls_cert: Path = typer.Option(None, "--tls-cert", help="PEM certificate chain: "
                                      "serve HTTPS. Default: plain HTTP."),
        tls_key: Path = typer.Option(None, "--tls-key", help="PEM key for --tls-cert."),
        wake: str = typer.Option(
            "none", "--wake", help="Who starts a stopped (culled) HomePod when its user "
            "opens the desktop: podman (the pods of `mlab up` on this host), kubernetes "
            "(kubectl, the mlab-culler Role), host (ask the host's `mlab cull` through "
            "--wake-dir: the portal pod of `mlab up`), in-cluster (the rendered portal's own "
            "ServiceAccount, portal.wake), or none. Same audit as `mlab wake`. Default: none."),
        wake_dir: Path = typer.Option(
            None, "--wake-dir", help="With --wake host: the wake spool (requests/ writable, "
            "host/ written by `mlab cull`). Default: none."),
        idp_ca_file: Path = typer.Option(
            None, "--idp-ca-file", help="PEM CA certificates trusted, besides the system's, "
            "for the identity provider's https:// (portal.oidc.caBundleSecret). "
            "Default: system CAs only."),
        session_db: Path = typer.Option(
            None, "--session-db", help="SQLite file for sessions, so that they survive a "
            "restart (one portal replica). Default: in memory (a restart signs everyone out)."),
        share: Path = typer.Option(
            None, "--share", help="The Airlock's share, read-only: the user's page lists what "
            "is staged. Default: not shown."),
        vnc_ca: Path = typer.Option(
            None, "--vnc-ca", help="The site CA (PEM): desktops speak VeNCrypt X509Vnc, and "
            "their certificates must chain to it (the site's tls). Default: VncAuth."),
        code_ca: Path = typer.Option(
            None, "--code-ca", help="The code service's CA (PEM) an https:// --code-url is "
            "checked against (the site's tls). Default: SSL_CERT_FILE or the system's CAs."),
    ) -> None:
        """Serve the portal on PORT for the users of SITE."""
        import uvicorn

        from mlab.portal.app import build_app
        from mlab.portal.config import PortalConfig, parse_backends
        from mlab.portal.wake import make_waker
        from mlab.portal.wsrelay import RelayWebSocketProtocol
        from mlab.site import load_site

        the_site = load_site(site)
        secret = _client_secret(client_secret_file)
        if not novnc_dir.is_dir():
            raise UsageError(f"--novnc-dir {novnc_dir}: not a directory (install Debian's "
                             "novnc package)")
        if (tls_cert is None) != (tls_key is None):
            raise UsageError("--tls-cert and --tls-key go together")
        if vnc_ca is not None and not vnc_ca.is_file():
            raise UsageError(f"--vnc-ca {vnc_ca}: not a readable file (the site CA)")
        if code_ca is not None and not code_ca.is_file():
            raise UsageError(f"--code-ca {code_ca}: not a readable file (the code service's CA)")
        config = PortalConfig(site=the_site, users_dir=users_dir,
                              backends=parse_backends(backend, the_site),
                              client_secret=secret, audit_log=audit_log, novnc_dir=novnc_dir,
                              code_url=code_url.rstrip("/") if code_url else None,
                              waker=make_waker(wake, the_site, wake_dir, audit_log),
                              session_db=session_db, share=share, idp_ca_file=idp_ca_file,
                              vnc_ca=vnc_ca, code_ca=code_ca)
        if session_db is not None and not session_db.parent.is_dir():
            raise UsageError(f"--session-db {session_db}: directory {session_db.parent} "
                             "does not exist")
        logging.getLogger("mlab").setLevel(logging.INFO)
        from mlab.portal.malloc_tuning import keep_freed_heap

        keep_freed_heap()  # the relay's per-read buffers without page faults (see module)
        sock = listen("mlab portal", host, port, tls=bool(tls_cert))
        try:
            app = build_app(config)
        except sqlite3.Error as exc:
            raise UsageError(f"--session-db {session_db}: not a usable SQLite file: {exc}") from None
        server = uvicorn.Server(uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="on",
            log_config=None, ws=RelayWebSocketProtocol, ws_max_size=16 * 1024 * 1024,
            # Browsers always offer permessage-deflate; VNC frames are already encoded by
            # the VNC server, and deflating them again cost the portal 5x websockify's CPU
            # per byte (benchmarks/bench_portal.py). websockify does not compress either.
            ws_per_message_deflate=False,
            ssl_certfile=str(tls_cert) if tls_cert else None,
            ssl_keyfile=str(tls_key) if tls_key else None,
        ))
        run_servers((server, sock))

    @portal.command("keycloak-realm")
    def keycloak_realm(
        site: Path = site_option(..., "The site file (its `portal` section). Required."),
        client_secret_file: Path = typer.Option(
            None, "--client-secret-file", help="File holding the client secret to put in "
            "the realm. Default: a public client (PKCE only)."),
    ) -> None:
        """Print a Keycloak realm (JSON, for `kc.sh import --file`) with the portal's client
        and brute-force detection on; the realm name is the issuer's last path part."""
        import json

        from mlab.portal.keycloak import realm
        from mlab.site import load_site

        the_site = load_site(site)
        oidc = the_site.portal.oidc
        if not the_site.portal.enabled or oidc is None:
            raise UsageError(f"{site}: portal.oidc is not set (the portal signs in with MLab "
                             "passwords; no realm needed)")
        name = oidc.issuer.rstrip("/").rsplit("/realms/", 1)[-1]
        if "/" in name or name == oidc.issuer.rstrip("/"):
            raise UsageError(f"portal.oidc.issuer {oidc.issuer!r}: not a Keycloak issuer "
                             "(https://HOST/realms/NAME)")
        secret = _client_secret(client_secret_file)
        groups = sorted({g for g in (oidc.reviewer_group, oidc.admin_group) if g})
        sys.stdout.write(json.dumps(realm(name, the_site.portal.url, secret,
                                          client_id=oidc.client_id, groups=groups),
                                    indent=2) + "\n")


def _client_secret(path: Path | None) -> str | None:
    """The ``--client-secret-file`` contents, or None without the option.

    Raises:
        UsageError: the file cannot be read (names the option and the reason).
    """
    if path is None:
        return None
    from mlab.portal.config import read_secret

    try:
        return read_secret(path)
    except OSError as exc:
        raise UsageError(f"--client-secret-file {path}: cannot read it: {exc.strerror}") from None
