"""`mlab image build`: build the HomePod image (docs/image.md).

The image reference is the last line of standard output (scripts capture it); progress
goes to standard error.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer
from rich.console import Console

from mlab.cli.progress import QUIET_HELP
from mlab.errors import UsageError


def register(app: typer.Typer) -> None:
    """Add the ``image`` command group to ``app``."""
    image = typer.Typer(help="Build the HomePod image.", no_args_is_help=True)
    app.add_typer(image, name="image")

    @image.command("build")
    def build(
        local: bool = typer.Option(
            False, "--local",
            help="Build on this machine without a registry (mmdebstrap + podman import). "
            "Required: for a production build use image/Containerfile (docs/image.md).",
        ),
        tag: str | None = typer.Option(
            None, "--tag", "-t",
            help="Also tag the image T (localhost/mlab/homepod:T) or a full reference. "
            "Default: only the hash tag and latest.",
        ),
        requests_from: str | None = typer.Option(
            None, "--requests-from", metavar="URL",
            help="Also run the approved package scripts of this code service (approval "
            "order), e.g. http://code.mlab.local; log in as MLAB_USER with MLAB_PASSWORD or "
            "MLAB_PASSWORD_FILE (the admin or a reviewer). Default: none.",
        ),
        steps_file: Path | None = typer.Option(
            None, "--steps", metavar="FILE",
            help="Also run the approved package scripts of FILE (`mlab request packages -o "
            "FILE`). Default: none.",
        ),
        quiet: bool = typer.Option(False, "--quiet", "-q", help=QUIET_HELP),
    ) -> None:
        """Build the HomePod image, or reuse it when the recipe and source are unchanged;
        print its reference (localhost/mlab/homepod:<hash>) as the last line.

        With --requests-from or --steps, the approved package scripts run as one more layer
        (localhost/mlab/homepod:pkg-<hash>, label mlab.package-requests = their ids);
        :latest stays the image without them."""
        if not local:
            raise UsageError(
                "mlab image build needs --local",
                hint="production images: podman build -f src/mlab/image/Containerfile . "
                "(docs/image.md)",
            )
        if requests_from and steps_file:
            raise UsageError("--requests-from and --steps: give one of them, not both")
        from mlab.image.build import ensure_image, normalize_tag

        steps = None
        if requests_from or steps_file:
            from mlab.requests.packages import load_steps

            # Before the long build, so a wrong password or file fails at once.
            steps = load_steps(path=steps_file) if steps_file else load_steps(server=requests_from)
            extra = normalize_tag(tag) if tag else None
            tag = None

        err = Console(stderr=True)
        start = time.monotonic()
        from mlab.cli.progress import Steps, progress_console

        with Steps("image", progress_console(quiet)) as shown:
            ref = ensure_image(tag=tag, progress=shown.say)
        if steps is not None:
            from mlab.requests.imagelayer import build_packages_layer

            ids = ", ".join(str(st.id) for st in steps) or "none"
            err.print(f"approved package requests, in order: {ids}", highlight=False)
            with err.status("running the approved package scripts (podman build)"):
                ref = build_packages_layer(ref, steps, tag=extra)
            if not steps and extra:
                from mlab.podman import podman

                podman(["tag", ref, extra])
        err.print(f"image ready in {time.monotonic() - start:.0f} s", highlight=False)
        sys.stdout.write(ref + "\n")
        sys.stdout.flush()
