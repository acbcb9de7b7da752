"""Cluster commands: ``mlab apply`` and ``mlab delete`` (kubectl, server-side apply).

Progress goes to stderr (rich); nothing here prints a password.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from mlab.cli.site_cmd import SITE_OPTION
from mlab.deploy.kubernetes import (
    Kubectl,
    apply_objects,
    delete_site,
    deployment_names,
    hold_deployments,
    prune,
    restart_in_place,
    site_selector,
    stale_objects,
    wait_for_rollout,
)
from mlab.site import load_site
from mlab.stored_render import render_with_passwords

CONTEXT_OPTION = typer.Option(
    None, "--context", help="kubeconfig context to use. Default: the current context."
)


def apply(
    site: Path = SITE_OPTION,
    dry_run: bool = typer.Option(
        False, "--dry-run",
        help="Send everything with --dry-run=server (the API server validates, nothing "
        "changes) and list what would be pruned; no waiting. Default: off.",
    ),
    timeout: float = typer.Option(
        600.0, "--timeout", min=0, help="Seconds to wait for rollouts. 0: do not wait. "
        "Default: 600.",
    ),
    interval: float = typer.Option(
        2.0, "--interval", min=0.01, help="Seconds between rollout polls. Default: 2."
    ),
    delete_data: bool = typer.Option(
        False, "--delete-data",
        help="Also prune the PersistentVolumeClaims (homes) of removed users. Default: "
        "keep them and name them.",
    ),
    restart_user: list[str] = typer.Option(
        [], "--restart-user", help="Move this user's running HomePod to the site's image "
        "now (repeatable). Default: running HomePods keep their image (docs/image.md).",
    ),
    context: str | None = CONTEXT_OPTION,
) -> None:
    """Apply the site to a cluster: server-side apply, prune removed objects, wait."""
    from mlab.cull.kube import keep_culled

    loaded = load_site(site)
    rendered = render_with_passwords(loaded)
    kubectl = Kubectl(context=context)
    err = Console(stderr=True)
    live = kubectl.get_json(["deployments.apps", "-n", loaded.namespace, "-l",
                             f"{site_selector(loaded)},app.kubernetes.io/component=homepod"])
    held = hold_deployments(rendered.files["homepod.yaml"], live.get("items", []),
                            loaded.image.ref, restart_user)
    for name, image in held.items():
        err.print(f"kept {name} on {image} for its user (--restart-user USER moves it)",
                  soft_wrap=True, highlight=False)
    for name in keep_culled(rendered.files["homepod.yaml"], live.get("items", [])):
        err.print(f"left {name} at 0 replicas (culled or stopped; mlab wake "
                  f"{name.removeprefix('homepod-')} --kubernetes starts it)",
                  soft_wrap=True, highlight=False)
    count = apply_objects(kubectl, loaded, rendered, dry_run)
    for name in restart_in_place(live.get("items", []), loaded.image.ref, restart_user):
        if not dry_run:
            kubectl.run(["rollout", "restart", "-n", loaded.namespace, f"deployment/{name}"])
        err.print(f"{'would restart' if dry_run else 'restarted'} {name} on {loaded.image.ref} "
                  "(the same reference; its new pod takes the image behind it now)",
                  soft_wrap=True, highlight=False)
    err.print(f"{'checked' if dry_run else 'applied'} {count} objects in namespace {loaded.namespace}")
    stale, kept = stale_objects(kubectl, loaded, rendered, delete_data)
    prune(kubectl, loaded, stale, dry_run, timeout=timeout or 300.0)
    for ref in stale:
        err.print(f"{'would prune' if dry_run else 'pruned'} {ref}")
    for ref in kept:
        err.print(f"kept {ref} (user data; --delete-data removes it)")
    if dry_run or timeout == 0:
        return
    names = deployment_names(rendered)
    with Progress(
        TextColumn("rollout"), BarColumn(), TextColumn("{task.completed}/{task.total} ready"),
        TimeElapsedColumn(), console=err, transient=False,
    ) as bar:
        task = bar.add_task("rollout", total=len(names))
        wait_for_rollout(
            kubectl, loaded, names, timeout=timeout, interval=interval,
            progress=lambda ready, total: bar.update(task, completed=ready, total=total),
        )
    err.print(f"all {len(names)} deployments ready")


def delete(
    site: Path = SITE_OPTION,
    delete_data: bool = typer.Option(
        False, "--delete-data",
        help="Also delete the PersistentVolumeClaims (homes, share, outbox, code service "
        "data). Default: keep them.",
    ),
    timeout: float = typer.Option(
        300.0, "--timeout", min=1, help="Seconds to wait for pods to go. Default: 300."
    ),
    context: str | None = CONTEXT_OPTION,
) -> None:
    """Delete the site's objects from the cluster (by label; the namespace stays)."""
    loaded = load_site(site)
    delete_site(Kubectl(context=context), loaded, delete_data, timeout)
    Console(stderr=True).print(
        f"deleted site {loaded.name} from namespace {loaded.namespace}"
        + ("" if delete_data else " (claims kept)")
    )


def register(app: typer.Typer) -> None:
    """Add ``apply`` and ``delete`` to ``app``."""
    app.command("apply")(apply)
    app.command("delete")(delete)
