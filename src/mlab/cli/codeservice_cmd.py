"""``mlab code-service serve`` and the admin commands ``mlab repo approve|revoke|list|sync``.

The admin commands talk to a running service over its JSON API (``/api/repos``) with the
client in :mod:`mlab.codeservice.client`; they never touch the data directory.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import typer
from rich.console import Console
from rich.table import Table

from mlab.cli.options import output_format, site_option
from mlab.cli.serving import listen, run_servers
from mlab.errors import MlabError, UsageError
from mlab.topology import PORT_CODE

if TYPE_CHECKING:
    from mlab.codeservice.client import ServiceClient

SERVER_OPT = typer.Option(
    None, "--server", envvar="MLAB_SERVER",
    help="Code service URL. Default: the one `mlab up` published for --site (or "
    "http://<codeService.host>), else http://$MLAB_CODE_HOST, else the local site's.",
)
SITE_OPT = site_option(
    "site.yaml",
    "Site file, used for the default --server. Default: ./site.yaml; if it does not "
         "exist, the code service `mlab up` runs for examples/local.yaml.",
)


def register(app: typer.Typer) -> None:
    """Add ``code-service`` and ``repo`` to ``app``."""
    service = typer.Typer(help="Run the code service.", no_args_is_help=True)
    repo = typer.Typer(help="Approve, revoke, list and sync mirrors (admin; via the service).",
                       no_args_is_help=True)
    app.add_typer(service, name="code-service")
    app.add_typer(repo, name="repo")

    @service.command("serve")
    def serve(
        data: Path = typer.Option(..., "--data", help="Data directory: repositories, "
                                  "database, audit log. Created if missing."),
        site: Path = site_option(..., "The site file. Required."),
        host: str = typer.Option("0.0.0.0", "--host", help="Address to listen on. "
                                 "Default: 0.0.0.0."),
        port: int = typer.Option(PORT_CODE, "--port", help="TCP port; 0 picks a free one (printed). "
                                 f"Default: {PORT_CODE}."),
        users_dir: Path = typer.Option(Path("/etc/mlab/users"), "--users-dir",
                                       help="Directory of <user>/password files. "
                                       "Default: /etc/mlab/users."),
        background_sync: bool = typer.Option(True, "--background-sync/--no-background-sync",
                                             help="Sync mirrors every syncInterval. "
                                             "Default: on."),
        access_log: bool = typer.Option(False, "--access-log", help="Log every HTTP request "
                                        "to stderr. Default: off (the audit log has pushes "
                                        "and fetches)."),
        log_format: str = typer.Option("text", "--log-format", help="text or json (one "
                                       "object a line on stderr). Default: text."),
        tls_cert: Path = typer.Option(
            None, "--tls-cert", help="PEM certificate (chain) to serve HTTPS with; needs "
            "--tls-key. Default: plain HTTP."),
        tls_key: Path = typer.Option(
            None, "--tls-key", help="PEM private key of --tls-cert. Default: none."),
        tls_port: int = typer.Option(
            None, "--tls-port", help="With --tls-cert: serve HTTPS on this port and plain "
            "HTTP on --port (for pods; the office reaches only this one). Default: none "
            "(--port itself is HTTPS when --tls-cert is given)."),
        homepod_net: list[str] = typer.Option(
            [], "--homepod-net", help="CIDR of HomePod addresses (repeat, or "
            "MLAB_HOMEPOD_NETS=A,B). With egress.userBranches reviewed, clients elsewhere "
            "see only upstream and reviewed user branches. Default: none (every client "
            "is outside)."),
    ) -> None:
        """Serve approved mirrors over git smart HTTP on PORT (admin password:
        MLAB_ADMIN_PASSWORD_FILE, or generated into DATA/admin-password and printed once)."""
        import uvicorn

        from mlab.codeservice.accounts import admin_password, load_accounts
        from mlab.codeservice.app import ServiceConfig, create_app, prepare_data_dir
        from mlab.requests.api import request_routes
        from mlab.site import load_site

        output_format(log_format, ("text", "json"), "--log-format")
        if log_format == "json":
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(_JsonFormatter())
            logging.getLogger().handlers = [handler]
        from mlab.codeservice.reviewed import NETS_ENV, parse_nets

        if (tls_cert is None) != (tls_key is None):
            raise UsageError("--tls-cert and --tls-key: give both (HTTPS) or neither (HTTP)")
        if tls_port is not None and tls_cert is None:
            raise UsageError("--tls-port needs --tls-cert and --tls-key")
        for opt, path in (("--tls-cert", tls_cert), ("--tls-key", tls_key)):
            if path is not None and not path.is_file():
                raise UsageError(f"{opt}: {path} is not a readable file")

        try:
            nets = parse_nets([*homepod_net, *os.environ.get(NETS_ENV, "").split(",")])
        except ValueError as exc:
            raise UsageError(f"--homepod-net: {exc}") from None
        the_site = load_site(site)
        # The requests API (/api/requests, /requests) reaches the app through its hook.
        config = ServiceConfig(data_dir=data.resolve(), site=the_site,
                               background_sync=background_sync, homepod_nets=nets,
                               extra_routes=request_routes(the_site, data.resolve()))
        store = prepare_data_dir(config)
        env_file = os.environ.get("MLAB_ADMIN_PASSWORD_FILE")
        password, generated = admin_password(config.data_dir,
                                              Path(env_file) if env_file else None)
        load_accounts(store, the_site, users_dir, password)
        if generated:
            print(f"mlab code service: generated the admin password (kept in "
                  f"{config.data_dir / 'admin-password'}): {password}", file=sys.stderr)
        app = create_app(config, store)
        logging.getLogger("mlab").setLevel(logging.INFO)
        def uv_config(tls: bool, lifespan: Literal["on", "off"]) -> uvicorn.Config:
            return uvicorn.Config(
                app, log_level="info" if access_log else "warning", access_log=access_log,
                timeout_keep_alive=30, lifespan=lifespan, log_config=None,
                ssl_certfile=str(tls_cert) if tls else None,
                ssl_keyfile=str(tls_key) if tls else None,
            )

        # --port is HTTPS itself when --tls-cert comes without --tls-port.
        sock = listen("mlab code service", host, port, tls=bool(tls_cert) and tls_port is None)
        if tls_port is None:
            run_servers((uvicorn.Server(uv_config(tls_cert is not None, "on")), sock))
            return
        tls_sock = listen("mlab code service", host, tls_port, tls=True, option="--tls-port")
        run_servers((uvicorn.Server(uv_config(False, "on")), sock),
                    (uvicorn.Server(uv_config(True, "off")), tls_sock))

    @repo.command("approve")
    def approve(
        url: str = typer.Argument(..., help="Upstream URL, e.g. https://github.com/org/repo."),
        name: str = typer.Option(None, "--as", help="Mirror name ORG/REPO. Default: the "
                                 "URL's last two path parts, lower-cased."),
        server: str = SERVER_OPT, site: str = SITE_OPT,
    ) -> None:
        """Mirror URL (its host must be in codeService.allowedHosts); clones it now."""
        client = _client(server, site)
        with Console(stderr=True).status(f"cloning {url} into the code service..."):
            data = client.request("POST", "/api/repos", json={"url": url, "name": name})
        print(f"approved {data['name']} <- {data['upstream']}")

    @repo.command("revoke")
    def revoke(name: str = typer.Argument(..., help="ORG/REPO."),
               server: str = SERVER_OPT, site: str = SITE_OPT) -> None:
        """Stop serving ORG/REPO (its data is moved aside under DATA/revoked)."""
        from mlab.codeservice.names import validate_name

        repo_name = validate_name(name)
        _client(server, site).request("DELETE", f"/api/repos/{repo_name}")
        print(f"revoked {repo_name}")

    @repo.command("delete-ref")
    def delete_ref(name: str = typer.Argument(..., help="ORG/REPO."),
                   ref: str = typer.Argument(..., help="A user branch or tag: refs/heads/X, "
                                             "refs/tags/X, or X for refs/heads/X."),
                   server: str = SERVER_OPT, site: str = SITE_OPT) -> None:
        """Delete any user's branch or tag (reviewers and admin); its tip is kept as a
        backup ref under refs/mlab/backup/, and the deletion is audited."""
        from urllib.parse import quote

        from mlab.codeservice.names import validate_name

        repo_name = validate_name(name)
        data = _client(server, site).request(
            "DELETE", f"/api/repos/{repo_name}/refs/{quote(ref, safe='/')}")
        owner = f" (owner {data['owner']})" if data.get("owner") else ""
        print(f"deleted {data['ref']}{owner} of {repo_name} at {data['old'][:12]}; "
              f"kept as {data['backup']}")

    @repo.command("list")
    def list_(output: str = typer.Option("table", "-o", "--output",
                                         help="table or json. Default: table."),
              server: str = SERVER_OPT, site: str = SITE_OPT) -> None:
        """List mirrors with their upstream, last sync and its result."""
        output_format(output)
        rows = _client(server, site).request("GET", "/api/repos")
        if output == "json":
            print(json.dumps(rows, indent=2))
            return
        print_table(rows)

    @repo.command("sync")
    def sync(name: str = typer.Argument(None, help="ORG/REPO. Default: every mirror."),
             server: str = SERVER_OPT, site: str = SITE_OPT) -> None:
        """Sync one mirror (or all) with upstream now; exit 1 if a sync failed."""
        from mlab.codeservice.names import validate_name

        client = _client(server, site)
        with Console(stderr=True).status(f"syncing {name or 'every mirror'}..."):
            if name:
                results = [client.request("POST", f"/api/repos/{validate_name(name)}/sync",
                                          json={})]
            else:
                results = client.request("POST", "/api/sync", json={})
        failed = [r for r in results if not r["ok"]]
        for r in results:
            if r["ok"]:
                print(f"{r['name']}: ok, {len(r['changes'])} change(s)")
                for line in r["changes"]:
                    print(f"  {line}")
                for ref in r["conflicts"]:
                    print(f"  conflict: {ref} exists upstream and as a user's branch; "
                          "the user's branch was kept")
                for moved in r.get("moved", []):
                    print(f"  moved aside: {moved['ref']} -> {moved['to']} (upstream has "
                          "that name; its owner is told)")
            else:
                print(f"{r['name']}: FAILED: {r['error']}")
        if failed:
            raise MlabError(f"{len(failed)} sync(s) failed; the last good state is kept")


class _JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC ISO 8601), level, logger, message."""

    def format(self, record: logging.LogRecord) -> str:
        import datetime as dt

        return json.dumps({
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(),
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
        })


def _client(server: str | None, site: str | None) -> ServiceClient:
    """A client for the code service :func:`mlab.codeservice.locate.find_server` finds
    (``--server``/``MLAB_SERVER``, the site file, ``MLAB_CODE_HOST``, the local site)."""
    from mlab.codeservice.client import make_client

    if not server and site and site != "site.yaml" and not Path(site).exists():
        raise UsageError(f"--site {site}: no such file",
                         "pass the site file, or --server URL (`mlab status` prints it)")
    return make_client(server, site, default_user="admin")


def print_table(rows: list[dict[str, Any]]) -> None:
    """Show mirrors as a table on stdout."""
    import datetime as dt

    def when(ts: float | None) -> str:
        return (dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
                if ts else "never")

    table = Table("repository", "upstream", "approved by", "last sync", "result")
    for r in rows:
        result = r["last_result"] or "-"
        if r.get("conflicts"):
            result += f" (conflicts: {', '.join(r['conflicts'])})"
        table.add_row(r["name"], r["upstream"], r["approved_by"], when(r["last_sync"]), result)
    Console(width=200).print(table)
