"""`mlab image build` and `mlab image status`: build the HomePod image, and say how old it
is and which security updates it lacks (docs/image.md).

The image reference is the last line of standard output (scripts capture it); progress
goes to standard error.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer
from rich.console import Console

from mlab.cli.options import output_format, site_option
from mlab.cli.progress import QUIET_HELP
from mlab.errors import UsageError


def register(app: typer.Typer) -> None:
    """Add the ``image`` command group to ``app``."""
    image = typer.Typer(help="Build and push the HomePod image.", no_args_is_help=True)
    app.add_typer(image, name="image")

    @image.command("push")
    def push(
        ref: str = typer.Argument(
            "localhost/mlab/homepod:latest",
            help="Local image to push. Default: localhost/mlab/homepod:latest (pushed under "
            "its content tag, never as latest)."),
        site: Path = site_option(..., "The site file; its image.repository is the "
                                 "destination. Required."),
    ) -> None:
        """Push REF to the site's image.repository under its content-derived tag; print the
        pushed reference as the last line. Pin that tag in the site (image.tag), then
        `mlab apply` / `mlab up` runs it."""
        from mlab.image.push import push_image
        from mlab.site import load_site

        loaded = load_site(site)
        err = Console(stderr=True)
        start = time.monotonic()
        with err.status("pushing the image"):
            dest = push_image(ref, loaded.image, say=lambda m: err.print(m, highlight=False))
        err.print(f"pushed in {time.monotonic() - start:.0f} s; to run it set image.tag: "
                  f"{dest.rsplit(':', 1)[1]} in {site}, then mlab apply (or mlab up)",
                  highlight=False)
        sys.stdout.write(dest + "\n")
        sys.stdout.flush()

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
            help="Also run the approved package scripts of FILE (`mlab request packages --out-file "
            "FILE`). Default: none.",
        ),
        quiet: bool = typer.Option(False, "--quiet", "-q", help=QUIET_HELP),
        refresh: bool = typer.Option(
            False, "--refresh",
            help="Bootstrap the Debian base again even when the recipe is unchanged, so the "
            "image gets the current security updates (`mlab image status` shows what it "
            "lacks); the base is tagged <hash>-r<UTC time> and labelled mlab.refreshed. "
            "Default: reuse the cached base."),
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
            ref = ensure_image(tag=tag, progress=shown.say, refresh=refresh)
        if steps is not None:
            from mlab.requests.imagelayer import build_packages_layer

            ids = ", ".join(str(st.id) for st in steps) or "none"
            err.print(f"approved package requests, in order: {ids}", highlight=False)
            with err.status("running the approved package scripts (podman build)"):
                ref = build_packages_layer(ref, steps, tag=extra)
            if not steps and extra:
                from mlab.podman.runner import podman

                podman(["tag", ref, extra])
        err.print(f"image ready in {time.monotonic() - start:.0f} s", highlight=False)
        sys.stdout.write(ref + "\n")
        sys.stdout.flush()

    @image.command("status")
    def status_cmd(
        ref: str = typer.Option("localhost/mlab/homepod:latest", "--image",
                                help="Image reference. Default: localhost/mlab/homepod:latest."),
        output: str = typer.Option("text", "-o", "--output", help="text or json. Default: text."),
    ) -> None:
        """The image's age and the Debian updates it lacks (security ones counted apart),
        from `apt-get -s upgrade` in a throw-away container of it."""
        import json

        from mlab.image.status import status

        output_format(output, ("text", "json"))
        err = Console(stderr=True)
        with err.status("asking the Debian mirror what the image lacks"):
            info = status(ref)
        if output == "json":
            sys.stdout.write(json.dumps(info, indent=2) + "\n")
            return
        print(f"{info['image']}: built {info['created']} ({info['age_days']} days ago); "
              f"{info['pending']} updates pending, {info['security']} of them security")
        for u in info["updates"]:
            if u["security"]:
                print(f"  {u['package']} {u['installed']} -> {u['candidate']} ({u['suites']})")
        if info["security"]:
            print("rebuild with the updates: mlab image build --local (after a recipe change)")
