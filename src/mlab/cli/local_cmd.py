"""Local commands (podman engine): ``mlab up``, ``down``, ``status``, ``verify``, ``passwords``.

Data goes to stdout (tables, or JSON with ``-o json``); progress goes to stderr. Formatting
is pure (``*_rows`` functions); the engine (:mod:`mlab.podman.engine`) does the work.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from mlab.cli.options import output_format, site_option
from mlab.cli.progress import QUIET_HELP, Steps, progress_console
from mlab.errors import MlabError, UsageError
from mlab.site import Site, load_site
from mlab.topology import PORT_CODE, PORT_CODE_SERVICE, PORT_CODE_TLS_SERVICE

DEFAULT_SITE = Path("examples/local.yaml")

SITE_OPTION = site_option(DEFAULT_SITE, "The site file (YAML). Default: examples/local.yaml (two users).")
OUTPUT_OPTION = typer.Option(
    "table", "--output", "-o", help="Output format: table or json. Default: table.",
)
QUIET_OPTION = typer.Option(False, "--quiet", "-q", help=QUIET_HELP)


def _stderr() -> Console:
    return Console(stderr=True)


VNC_NOTE = "password: its first 8 characters (VncAuth)"
"""What a VNC client needs to know: VncAuth uses only the first 8 characters of a password
(RFC 6143 section 7.2.2); the entrypoint stores exactly those."""


def with_site_notes(components: list[dict[str, Any]], code_host: str,
                    tls: bool = False) -> list[dict[str, Any]]:
    """``status`` components with what the engine cannot know (pure, copies): every VNC
    endpoint gets ``note`` :data:`VNC_NOTE`; the code service gets the URL HomePods use,
    ``http://<codeService.host>/<org>/<repo>`` (endpoint ``where: "homepod"``; with ``tls``
    ``https://`` on port 443, the HomePods' only way in)."""
    out = []
    for comp in components:
        endpoints = [dict(e, note=VNC_NOTE) if e["protocol"] == "vnc" else dict(e)
                     for e in comp["endpoints"]]
        if comp["kind"] == "code-service":
            scheme = "https" if tls else "http"
            endpoints.append({"protocol": scheme, "host": code_host,
                              "port": PORT_CODE_TLS_SERVICE if tls else PORT_CODE_SERVICE,
                              "url": f"{scheme}://{code_host}/<org>/<repo>",
                              "where": "homepod"})
        out.append({**comp, "endpoints": endpoints})
    return out


def status_rows(components: list[dict[str, Any]]) -> list[list[str]]:
    """Table rows (component, kind, state, how to connect) for ``mlab status``."""
    rows = []
    for comp in components:
        lines = []
        for e in comp["endpoints"]:
            line = e["url"]
            if e.get("where") == "homepod":
                line = f"in HomePods: git clone {line}"
            if e.get("note"):
                line += f" ({e['note']})"
            lines.append(line)
        state = comp["state"]
        if comp.get("older_image"):
            state += (f"\nolder image; `mlab restart --user {comp['user']}` moves it to "
                      f"{comp['older_image']} and loses {comp['restart_loses']}")
        rows.append([comp["name"], comp["kind"], state, "\n".join(lines) or "-"])
    return rows


def _print_status(components: list[dict[str, Any]], fmt: str) -> None:
    if fmt == "json":
        sys.stdout.write(json.dumps(components, indent=2) + "\n")
        return
    table = Table("component", "kind", "state")
    table.add_column("connect", overflow="fold")
    for row in status_rows(components):
        table.add_row(*row)
    Console().print(table)


def password_rows(site: Site, passwords: dict[str, str]) -> list[dict[str, str]]:
    """``[{"user", "role", "password"}]``: the site's users (role ``homepod``), then the
    Airlock's login (role ``airlock``) and the code-service admin (role ``code-service admin``),
    only keys present in ``passwords``; ``user`` is always the login name."""
    keys = [u.name for u in site.users]
    out = [{"user": k, "role": "homepod", "password": passwords[k]}
           for k in keys if k in passwords]
    if site.airlock.enabled and "airlock" in passwords:
        out.append({"user": site.airlock.user, "role": "airlock",
                    "password": passwords["airlock"]})
    if "admin" in passwords:
        out.append({"user": "admin", "role": "code-service admin",
                    "password": passwords["admin"]})
    return out


def _print_passwords(rows: list[dict[str, str]], fmt: str) -> None:
    if fmt == "json":
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    table = Table("user", "role", "password")
    for row in rows:
        table.add_row(row["user"], row["role"], row["password"])
    Console().print(table)


def _wakes_taken(site_name: str) -> bool:
    """Whether a `mlab cull` of the site takes the portal's wake requests right now."""
    from mlab.cull.wake_requests import host_alive, spool_dir
    from mlab.podman.engine import state_dir

    return host_alive(spool_dir(state_dir(site_name)))


def up(
    site: Path = SITE_OPTION,
    wait: bool = typer.Option(
        True, "--wait/--no-wait", help="Wait until every published port answers. Default: wait.",
    ),
    output: str = OUTPUT_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Run the whole platform on this machine with podman (idempotent: only changes are applied)."""
    from mlab.cull.local import culled
    from mlab.image.site_image import image_ref
    from mlab.podman import engine as podman_engine
    from mlab.secrets import passwords_path

    fmt = output_format(output)
    loaded = load_site(site)
    first = not passwords_path(loaded).exists()
    console = _stderr()
    start = time.monotonic()
    with Steps("mlab up", progress_console(quiet)) as steps:
        result = podman_engine.up(loaded, say=steps.say, wait=wait, asleep=culled(loaded.name),
                                  image_of=image_ref)
    parts = [f"{len(result.created)} started", f"{len(result.replaced)} replaced",
             f"{len(result.removed)} removed", f"{len(result.unchanged)} unchanged"]
    if result.held:
        parts.append(f"{len(result.held)} held on their image (mlab restart --user NAME)")
    if result.culled:
        parts.append(f"{len(result.culled)} culled left stopped (mlab wake NAME)")
    console.print(f"mlab up: site {loaded.name}: {', '.join(parts)} "
                  f"in {time.monotonic() - start:.1f} s")
    if loaded.portal.enabled and not _wakes_taken(loaded.name):
        console.print("mlab up: the portal's Open desktop wakes culled desktops through "
                      f"`mlab cull --site {site}` on this host; it is not running")
    if result.placeholder_code_service:
        console.print("mlab up: the image has no `mlab code-service serve` yet; the code "
                      f"service is a PLACEHOLDER HTTP server on :{PORT_CODE}")
    _print_status(with_site_notes(podman_engine.status(loaded.name),
                                  loaded.code_service.host, loaded.tls.enabled), fmt)
    if loaded.tls.enabled:
        from mlab.tls import trust_hint

        console.print("mlab up: the code service and desktops speak TLS only; trust the "
                      "site CA (`mlab ca` prints its path):", highlight=False)
        console.print(trust_hint(loaded), highlight=False, soft_wrap=True)
    if first and fmt == "table":
        from mlab.secrets import load_or_create_passwords

        console.print("Generated passwords (shown once; `mlab passwords` shows them again):")
        _print_passwords(password_rows(loaded, load_or_create_passwords(loaded)), fmt)


def restart(
    site: Path = SITE_OPTION,
    user: list[str] = typer.Option(..., "--user", "-u", help="User whose HomePod restarts "
                                   "on the site's image (repeatable). Required."),
    output: str = OUTPUT_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Admin: restart a user's HomePod on the site's current image (`mlab up` keeps a running
    HomePod on its image; its home stays, temporary installs outside it are lost)."""
    from mlab.cull.local import culled
    from mlab.image.site_image import image_ref
    from mlab.podman import engine as podman_engine

    fmt = output_format(output)
    loaded = load_site(site)
    known = {u.name for u in loaded.users}
    for name in user:
        if name not in known:
            raise UsageError(f"--user {name}: not a user of site {loaded.name}",
                             hint=f"users: {', '.join(sorted(known)) or 'none'}")
    console = _stderr()
    with Steps("mlab restart", progress_console(quiet)) as steps:
        result = podman_engine.up(loaded, say=steps.say, restart_users=user,
                                  asleep=culled(loaded.name), image_of=image_ref)
    console.print(f"mlab restart: {len(result.replaced)} replaced, {len(result.held)} held")
    _print_status(podman_engine.status(loaded.name), fmt)


def down(
    site: Path = SITE_OPTION,
    volumes: bool = typer.Option(
        False, "--volumes",
        help="Also delete the volumes (homes, share, repositories), the generated passwords "
        "and the engine's state files (the next `mlab up` shows new passwords). Default: keep "
        "them, so the next `mlab up` brings them back.",
    ),
    quiet: bool = QUIET_OPTION,
) -> None:
    """Stop and remove the site's pods, networks and firewall rules."""
    from mlab.podman import engine as podman_engine

    loaded = load_site(site)
    console = _stderr()
    with Steps("mlab down", progress_console(quiet)) as steps:
        removed = podman_engine.down(loaded.name, volumes=volumes, say=steps.say)
    kept = "" if volumes else " (volumes kept; `mlab down --volumes` deletes them)"
    console.print(f"mlab down: site {loaded.name}: removed {len(removed)} object(s){kept}")


def status(site: Path = SITE_OPTION, output: str = OUTPUT_OPTION) -> None:
    """Show each component, its state and how to connect."""
    from mlab.podman import engine as podman_engine

    fmt = output_format(output)
    loaded = load_site(site)
    components = podman_engine.status(loaded.name)
    from mlab.cull.local import annotate_status, culled

    components = annotate_status(components, culled(loaded.name))
    if not components and fmt == "table":
        _stderr().print(f"site {loaded.name} is not up (run `mlab up`)")
        return
    _print_status(with_site_notes(components, loaded.code_service.host, loaded.tls.enabled), fmt)


def verify(site: Path = SITE_OPTION, output: str = OUTPUT_OPTION,
           quiet: bool = QUIET_OPTION,
           cluster: bool = typer.Option(
               False, "--cluster", help="verify the site on the cluster of the current "
               "kubeconfig (probe pods, canary; docs/verify.md) instead of the podman site"),
           junit: Path = typer.Option(None, "--junit", help="--cluster: write a JUnit XML "
                                      "report to this file"),
           context: str = typer.Option(None, "--context", help="--cluster: kubeconfig context"),
           user: str = typer.Option("", "--user", help="--cluster: whose HomePod labels the "
                                    "HomePod probe carries (default: the first user)")) -> None:
    """Run the isolation probe matrix; exit 1 on any mismatch.

    Without --cluster inside the running podman containers; with it on Kubernetes.
    """
    from mlab.podman import engine as podman_engine
    from mlab.probing import podman as probes
    from mlab.probing import podman_link as probes_link
    from mlab.verify import matrix

    fmt = output_format(output)
    loaded = load_site(site)
    if cluster:
        from mlab.cli.verify_kube import verify_cluster

        verify_cluster(loaded, fmt, quiet, junit, context, user)
        return
    plan = podman_engine.load_plan(loaded.name)
    if plan is None:
        raise MlabError(f"site {loaded.name} is not up", hint="run `mlab up` first")
    console = _stderr()
    start = time.monotonic()
    with Steps("mlab verify", progress_console(quiet)) as steps:
        airlock_user = loaded.airlock.user if loaded.airlock.enabled else ""
        results = probes.run(plan, loaded.code_service.host, airlock_user=airlock_user,
                             on_source=lambda src: steps.say(f"probing from {src}"))
        # IPv6 link-local paths, raw sockets and forged sources (issue 20).
        results += probes_link.run(plan, probes.host_facts(0).host_ip)
    bad = [r for r in results if not r.ok]
    if fmt == "json":
        sys.stdout.write(json.dumps(matrix.to_json(results), indent=2) + "\n")
    else:
        table = Table("from", "to", "expected", "observed", "", "detail")
        for r in results:
            table.add_row(
                r.probe.source, r.probe.target,
                "allowed" if r.probe.expected else "blocked",
                "allowed" if r.observed else "blocked",
                "[green]ok[/]" if r.ok else "[red]MISMATCH[/]", r.detail,
            )
        Console(width=200).print(table)
    # One line per mismatch, naming the edge and (for the link probes) the fix.
    for r in bad:
        console.print(f"mlab verify: MISMATCH {r.probe.source} --> {r.probe.target}: "
                      f"{r.detail}", soft_wrap=True, markup=False, highlight=False)
    console.print(f"mlab verify: {len(results) - len(bad)}/{len(results)} probes as expected "
                  f"in {time.monotonic() - start:.1f} s")
    where = loaded.security.where()
    if bad:
        console.print(f"mlab verify: a probe found a leak; report it to {where} (SECURITY.md)",
                      highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    console.print(f"mlab verify: found a hole anyway? report it to {where} (SECURITY.md)",
                  highlight=False, soft_wrap=True)


def passwords(site: Path = SITE_OPTION, output: str = OUTPUT_OPTION) -> None:
    """Show the generated passwords of the local site again."""
    from mlab.secrets import load_or_create_passwords, passwords_path

    fmt = output_format(output)
    loaded = load_site(site)
    path = passwords_path(loaded)
    if not path.exists():
        raise MlabError(f"site {loaded.name} has no passwords yet", hint="run `mlab up` first")
    _print_passwords(password_rows(loaded, load_or_create_passwords(loaded)), fmt)


def ca(site: Path = SITE_OPTION) -> None:
    """Print the path of the site CA (tls.mode site-ca or secret) on stdout, and how to
    trust it (git, pip, curl, mlab, browser, VNC, RDP) on stderr. Makes it on first use."""
    from mlab.tls import ca_path, load_or_create, trust_hint

    loaded = load_site(site)
    if not loaded.tls.enabled:
        raise UsageError(f"site {loaded.name}: tls.mode is off, there is no site CA",
                         hint="set tls: {mode: site-ca} in the site file (docs/egress.md)")
    load_or_create(loaded)
    print(ca_path(loaded))
    _stderr().print(trust_hint(loaded), highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add this group's commands to ``app``."""
    app.command("ca")(ca)
    app.command("up")(up)
    app.command("down")(down)
    app.command("restart")(restart)
    app.command("status")(status)
    app.command("verify")(verify)
    app.command("passwords")(passwords)
