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

# One module per command group; each owns its commands. The names are the top-level
# commands each registers (tests/unit/test_cli_groups.py checks them against the modules):
# a command line imports only the module of its command, so `mlab render` does not pay
# for importing podman, httpx or the code service (issue 18); help imports them all.
GROUPS = {
    "mlab.cli.site_cmd": ("init", "render", "site"),
    "mlab.cli.cluster_cmd": ("apply", "delete"),  # kubectl
    "mlab.cli.image_cmd": ("image",),
    "mlab.cli.local_cmd": ("up", "down", "status", "verify", "passwords", "restart", "ca"),  # podman
    "mlab.cli.codeservice_cmd": ("code-service", "repo"),
    "mlab.cli.relay_cmd": ("relay",),
    "mlab.cli.stage_cmd": ("stage", "install", "airlock"),
    "mlab.cli.request_cmd": ("request",),
    "mlab.cli.node_cmd": ("node",),  # one-node Kubernetes
    "mlab.cli.portal_cmd": ("portal",),
    "mlab.cli.cull_cmd": ("cull", "wake", "cull-rbac"),
}


def _modules_for(argv: list[str] | None) -> list[str]:
    """The command-group modules a command line needs: its command's, or all of them."""
    for arg in argv or ():
        if arg.startswith("-"):
            continue  # a root option such as --debug
        for module, commands in GROUPS.items():
            if arg in commands:
                return [module]
        break
    return list(GROUPS)


def build_app(argv: list[str] | None = None) -> typer.Typer:
    """Create the typer application with the command groups ``argv`` needs.

    Args:
        argv: the command line without the program name; None registers every group
            (for help, completion and tests).
    """
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

    for name in _modules_for(argv) if argv is not None else GROUPS:
        module = importlib.import_module(name)
        module.register(app)
    return app


_teardown_free = False


def skip_teardown() -> None:
    """Let :func:`main` end this process at once after the command succeeds.

    For a command that leaves nothing to clean up (no threads, temp files or children
    still running) and built many objects: freeing them one by one at interpreter exit took
    0.15-0.2 s of CPU after ``mlab render`` of 10,000 users (issue 18). Only when ``main``
    runs as the program (``argv`` None); stdout and stderr are flushed first.
    """
    global _teardown_free
    _teardown_free = True


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return (and exit with) its status code."""
    args = sys.argv[1:] if argv is None else argv
    app = build_app(args)
    debug = os.environ.get("MLAB_DEBUG") == "1" or "--debug" in (argv or sys.argv[1:])
    try:
        # Standalone mode: click itself reports usage errors (exit 2) and aborts (exit 1).
        app(args=args, standalone_mode=True)
    except SystemExit as exc:
        if argv is None and _teardown_free and exc.code in (0, None):
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        raise
    except MlabError as exc:
        if debug:
            raise
        print(f"mlab: error: {exc.one_line()}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("mlab: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: no traceback reaches a user
        if debug:
            raise
        print(f"mlab: error: {unexpected_one_line(exc)}", file=sys.stderr)
        sys.exit(1)
    return 0


def unexpected_one_line(exc: BaseException) -> str:
    """One line for an exception no command turned into an :class:`MlabError`.

    A failed program names its command, exit code and last line of error output; a file
    error names the file; a bad zip (a wheel that is not one) says so; anything else names
    its type. Every line ends with how to see the traceback (``--debug``, MLAB_DEBUG=1):
    the brief's rule that no traceback reaches a user.
    """
    import subprocess
    import zipfile

    if isinstance(exc, subprocess.CalledProcessError):
        cmd = exc.cmd if isinstance(exc.cmd, str) else " ".join(str(c) for c in exc.cmd)
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        last = err.strip().splitlines()[-1] if err.strip() else ""
        text = f"`{cmd}` exited {exc.returncode}" + (f": {last}" if last else "")
    elif isinstance(exc, subprocess.TimeoutExpired):
        cmd = exc.cmd if isinstance(exc.cmd, str) else " ".join(str(c) for c in exc.cmd)
        text = f"`{cmd}` did not finish in {exc.timeout:g} s"
    elif isinstance(exc, zipfile.BadZipFile):
        text = f"not a valid zip archive (a wheel must be one): {exc}"
    elif isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        text = f"{where}{exc.strerror or exc}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return f"{text} (run again with --debug for the details)"


if __name__ == "__main__":  # pragma: no cover
    # Run the imported module's main, not this __main__ copy's: commands call
    # mlab.cli.main.skip_teardown, which must set the flag that main reads.
    from mlab.cli import main as _cli

    _cli.main()
