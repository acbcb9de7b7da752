"""`mlab image build`: build the HomePod image (docs/image.md).

The image reference is the last line of standard output (scripts capture it); progress
goes to standard error.
"""

from __future__ import annotations

import sys
import time

import typer
from rich.console import Console

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
    ) -> None:
        """Build the HomePod image, or reuse it when the recipe and source are unchanged;
        print its reference (localhost/mlab/homepod:<hash>) as the last line."""
        if not local:
            raise UsageError(
                "mlab image build needs --local",
                hint="production images: podman build -f src/mlab/image/Containerfile . "
                "(docs/image.md)",
            )
        from mlab.image.build import ensure_image

        err = Console(stderr=True)
        start = time.monotonic()
        if err.is_terminal:
            with err.status("building the HomePod image", spinner="dots") as status:
                def progress(msg: str) -> None:
                    status.update(f"[{time.monotonic() - start:4.0f} s] {msg}")

                ref = ensure_image(tag=tag, progress=progress)
        else:
            last: list[str] = [""]

            def progress(msg: str) -> None:
                step = msg.split(":", 1)[0]
                if step != last[0]:
                    err.print(f"[{time.monotonic() - start:4.0f} s] {msg}", highlight=False)
                    last[0] = step

            ref = ensure_image(tag=tag, progress=progress)
        err.print(f"image ready in {time.monotonic() - start:.0f} s", highlight=False)
        sys.stdout.write(ref + "\n")
        sys.stdout.flush()
