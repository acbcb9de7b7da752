"""Idle culling commands: ``mlab cull`` (podman engine, or ``--kubernetes``), ``mlab wake
USER`` and ``mlab cull-rbac`` (the Role the culler needs on a cluster). docs/culling.md."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import typer

from mlab.cli.local_cmd import OUTPUT_OPTION, SITE_OPTION
from mlab.cli.options import output_format
from mlab.site import duration_seconds, load_site

KUBE_OPTION = typer.Option(
    False, "--kubernetes", help="Act on the cluster (kubectl: exec, scale) instead of podman.",
)


_PRINTING = threading.Lock()
"""The pass and the wake-request thread print rows; one at a time."""


def _print(rows: list[dict], fmt: str) -> None:
    with _PRINTING:
        _print_rows(rows, fmt)


def _print_rows(rows: list[dict], fmt: str) -> None:
    if fmt == "json":
        sys.stdout.write(json.dumps(rows) + "\n")
    else:
        for r in rows:
            if r["action"] == "wake-request":
                print(f"{r['user']:<16} wake-request  {r['reason']}")
                continue
            idle = "-" if r["idle_s"] is None else f"{r['idle_s']:.0f}s"
            print(f"{r['user']:<16} {r['action']:<7} idle {idle:>8}  {r['reason']}")
    sys.stdout.flush()


def cull(
    site: Path = SITE_OPTION,
    once: bool = typer.Option(False, "--once", help="One pass, then exit. Default: every "
                              "culling.interval until interrupted."),
    kubernetes: bool = KUBE_OPTION,
    output: str = OUTPUT_OPTION,
) -> None:
    """Warn, then stop idle HomePods (their homes are kept); `mlab wake USER` restarts one.
    Under podman it also takes the portal's wake requests ("Open desktop" on a culled
    HomePod), every second while it runs."""
    fmt = output_format(output)
    loaded = load_site(site)
    if kubernetes:
        from mlab.cull import kube as engine
    else:
        from mlab.cull import local as engine  # type: ignore[no-redef]
    interval = duration_seconds(loaded.culling.interval) or 60
    server = None if kubernetes else _wake_requests(loaded, fmt, once)
    try:
        while True:
            _print(engine.cull_pass(loaded), fmt)
            if once:
                return
            time.sleep(interval)
    finally:
        if server is not None:
            server.stop()


def _print_requests(rows: list[dict], fmt: str) -> None:
    """Wake requests as rows of the pass's table: action ``wake-request``."""
    _print([{"user": r["user"], "action": "wake-request", "idle_s": None,
             "reason": f"{r['state']}: {r['reason']}"} for r in rows], fmt)


def _wake_requests(loaded, fmt: str, once: bool):  # type: ignore[no-untyped-def]
    """Under the podman engine, take the portal's wake requests (docs/culling.md): once
    before the pass with ``--once``, else every second in a thread until the loop ends."""
    from mlab.cull import wake_requests
    from mlab.podman.engine import state_dir

    step = wake_requests.podman_step(loaded, wake_requests.spool_dir(state_dir(loaded.name)))
    if once:
        rows = step()
        if rows:
            _print_requests(rows, fmt)
        return None
    server = wake_requests.RequestServer(step, lambda rows: _print_requests(rows, fmt))
    server.start()
    return server


def wake(
    user: str = typer.Argument(..., help="The user whose HomePod to start again."),
    site: Path = SITE_OPTION,
    kubernetes: bool = KUBE_OPTION,
) -> None:
    """Start a culled (or stopped) HomePod again; audited."""
    loaded = load_site(site)
    if kubernetes:
        from mlab.cull import kube

        kube.wake(loaded, user)
    else:
        from mlab.cull import local

        local.wake(loaded, user)
    print(f"mlab wake: {user}'s HomePod is starting", file=sys.stderr)


def cull_rbac(site: Path = SITE_OPTION) -> None:
    """Print the ServiceAccount, Role and RoleBinding `mlab cull --kubernetes` runs as:
    get/list pods, exec into them, and get/patch the scale of the site's HomePod
    Deployments only (by name)."""
    from mlab.cull.kube import rbac_yaml

    sys.stdout.write(rbac_yaml(load_site(site)))


def register(app: typer.Typer) -> None:
    """Add ``cull``, ``wake`` and ``cull-rbac`` to ``app``."""
    app.command("cull")(cull)
    app.command("wake")(wake)
    app.command("cull-rbac")(cull_rbac)
