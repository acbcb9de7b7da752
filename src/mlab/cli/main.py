"""Entry point of the `mlab` command: builds the typer app and maps errors to exit codes.

Each command-group module under ``mlab.cli`` exposes ``register(app: typer.Typer) -> None``;
this is the only place that turns an :class:`mlab.errors.MlabError` into a message and an
exit code (0 ok, 1 failure, 2 usage), so no library exception reaches a user raw.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

import typer

from mlab.errors import MlabError

# One module per command group; each owns its commands.
GROUPS = (
    "mlab.cli.site_cmd",  # init, site schema/check, render
    "mlab.cli.cluster_cmd",  # apply, delete (kubectl)
    "mlab.cli.image_cmd",  # image build
    "mlab.cli.local_cmd",  # up, down, status, verify, passwords (podman)
    "mlab.cli.codeservice_cmd",  # code-service serve, repo ...
    "mlab.cli.relay_cmd",  # relay init/start/finish
    "mlab.cli.stage_cmd",  # stage pip/apt/url/git, install pip/apt, airlock log
    "mlab.cli.request_cmd",  # request package/export/list/show/...
    "mlab.cli.cull_cmd",  # cull, wake, cull-rbac
)


def build_app() -> typer.Typer:
    """Create the typer application with every command group registered."""
    app = typer.Typer(
        name="mlab",
        help="MLab: secure graphical ML development environments (HomePods), the Airlock "
        "and the code service, from one site file.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )

    @app.callback()
    def _root(
        debug: bool = typer.Option(
            False, "--debug", help="Show tracebacks and debug logs. Default: off.",
            envvar="MLAB_DEBUG",
        ),
    ) -> None:
        logging.basicConfig(
            level=logging.DEBUG if debug else logging.WARNING,
            format="%(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )

    for name in GROUPS:
        module = importlib.import_module(name)
        module.register(app)
    return app


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return (and exit with) its status code."""
    app = build_app()
    debug = os.environ.get("MLAB_DEBUG") == "1" or "--debug" in (argv or sys.argv[1:])
    try:
        # Standalone mode: click itself reports usage errors (exit 2) and aborts (exit 1).
        app(args=argv, standalone_mode=True)
    except MlabError as exc:
        if debug:
            raise
        print(f"mlab: error: {exc.one_line()}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("mlab: interrupted", file=sys.stderr)
        sys.exit(130)
    return 0


if __name__ == "__main__":  # pragma: no cover
    main()
