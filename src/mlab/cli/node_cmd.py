"""``mlab node up|down|status``: the one-node Kubernetes built from pinned Go modules.

Data (the ``export KUBECONFIG=`` line, the status table) goes to stdout; progress to
stderr (a rich status line on a TTY, plain lines otherwise, nothing with ``-q``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console

from mlab.cli.options import output_format
from mlab.errors import DeployError, ToolMissingError
from mlab.node.layout import default_layout

node_app = typer.Typer(help="A real one-node Kubernetes on this machine (see docs/node.md).",
                       no_args_is_help=True)

QUIET = typer.Option(False, "-q", "--quiet", help="No progress on stderr. Default: off.")


def _lifecycle():  # type: ignore[no-untyped-def]
    """:mod:`mlab.node.lifecycle`, imported on use: it needs the ``node`` extra."""
    try:
        from mlab.node import lifecycle
    except ImportError as exc:
        raise ToolMissingError(f"mlab node needs {exc.name}",
                               hint="pip install 'mlab[node]'") from None
    return lifecycle


def _progress(quiet: bool):  # type: ignore[no-untyped-def]
    err = Console(stderr=True)

    def plain(message: str) -> None:
        if not quiet:
            print(f"mlab node: {message}", file=sys.stderr, flush=True)

    if quiet or not err.is_terminal:
        return None, plain
    status = err.status("mlab node")

    def live(message: str) -> None:
        status.update(f"mlab node: {message}")
        err.log(message)

    return status, live


@node_app.command("up")
def up(
    quiet: bool = QUIET,
    homepod_image: bool = typer.Option(
        True, "--homepod-image/--no-homepod-image",
        help="Build (cached) and import the HomePod image into the node. Default: on."),
    site: list[Path] = typer.Option(
        [], "--site", help="Let containerd pull this site's image.repository from its "
        "registry (plain HTTP when the site says image.plainHttp, its CA from image.caFile; "
        "repeatable; docs/image.md). "
        "Default: none (only the images the node imported)."),
) -> None:
    """Build what is missing, start the node, wait until it is Ready; print the
    ``export KUBECONFIG=...`` line."""
    from mlab.node.config import RegistryTrust, registry_host
    from mlab.site import load_site

    registries = []
    for path in site:
        image = load_site(path).image
        registry_host(image.repository)  # one clear line before anything starts
        registries.append(RegistryTrust(image.repository, image.plain_http, image.ca_file))
    status, say = _progress(quiet)
    if status:
        with status:
            result = _lifecycle().up(default_layout(), say, homepod_image=homepod_image,
                                     registries=registries)
    else:
        result = _lifecycle().up(default_layout(), say, homepod_image=homepod_image,
                                 registries=registries)
    say(f"node Ready in {result.timings['total']:.0f}s")
    print(f"export KUBECONFIG={result.kubeconfig}")


@node_app.command("build")
def build_cmd(quiet: bool = QUIET) -> None:
    """Build the node's programs from the pinned Go modules (or find them cached); start
    nothing. Prints the folder of each program."""
    from mlab.node.build import ensure_binaries

    _status, say = _progress(quiet)
    for name, path in sorted(ensure_binaries(default_layout(), say).items()):
        print(f"{name}\t{path}")


@node_app.command("down")
def down(
    purge: bool = typer.Option(
        False, "--purge", help="Also delete the node's data (etcd, volumes, images in "
        "containerd), certificates and configuration; built binaries stay. Default: off."),
    quiet: bool = QUIET,
) -> None:
    """Delete every pod (waiting, so none outlives its policies), stop every process the
    node started and remove its network state."""
    status, say = _progress(quiet)
    if status:
        with status:
            problems = _lifecycle().down(default_layout(), say, purge=purge)
    else:
        problems = _lifecycle().down(default_layout(), say, purge=purge)
    if problems:
        raise DeployError("node down left: " + "; ".join(problems))
    say("node stopped" + (" and purged" if purge else ""))


@node_app.command("status")
def status(
    output: str = typer.Option("table", "-o", "--output", help="table or json. Default: table."),
) -> None:
    """What runs: each component (pid) and whether the node is Ready. Exit 1 if not Ready."""
    output_format(output)
    state = _lifecycle().status(default_layout())
    if output == "json":
        print(json.dumps(state, indent=2))
    else:
        width = max(len(k) for k in state)
        for name, value in state.items():
            print(f"{name:<{width}}  {value}")
    if state.get("node") != "Ready":
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the ``node`` group to ``app``."""
    app.add_typer(node_app, name="node")
