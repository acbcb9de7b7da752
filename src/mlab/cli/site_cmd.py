"""Site commands: ``mlab init``, ``mlab site schema``, ``mlab site check``, ``mlab render``.

Bad input exits 2 with one line naming the field path (``SiteError``); ``render --out-dir DIR``
renders everything in memory before writing, so a bad site leaves DIR untouched.
"""

from __future__ import annotations

import gc
import json
import sys
from importlib import resources
from pathlib import Path

import typer

from mlab.atomic import write_atomic
from mlab.cli.main import skip_teardown
from mlab.cli.options import old_output_path_option, out_path, site_option
from mlab.cli.workers import encode_in_workers, run_in_workers
from mlab.deploy import write_rendered
from mlab.errors import UsageError
from mlab.render import FILES, SECRETS_FILE
from mlab.site import load_site, site_schema
from mlab.stored_render import render_encoded_with_passwords, render_texts_with_passwords

SITE_OPTION = site_option(..., "The site file (YAML). Required.")


def example_site_text() -> str:
    """The commented example site written by ``mlab init``."""
    return resources.files("mlab.cli").joinpath("site-init.yaml").read_text(encoding="utf-8")


def init(
    out_file: Path | None = typer.Option(
        None, "--out-file",
        help="Where to write the example site file; '-' prints it. Default: site.yaml.",
    ),
    force: bool = typer.Option(
        False, "--force", help="Overwrite an existing file. Default: refuse."
    ),
    old_output: Path | None = old_output_path_option(),
) -> None:
    """Write a commented example site file to edit."""
    output = out_path(out_file, old_output, "--out-file") or Path("site.yaml")
    text = example_site_text()
    if str(output) == "-":
        sys.stdout.write(text)
        return
    if output.exists() and not force:
        raise UsageError(f"{output}: already exists", hint="pass --force to overwrite it")
    write_text_atomic(output, text)
    typer.echo(f"wrote {output}; edit it, then: mlab site check --site {output}", err=True)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text, 0o644)


def schema() -> None:
    """Print the JSON Schema of the site file."""
    sys.stdout.write(json.dumps(site_schema(), indent=2, sort_keys=True) + "\n")


def check(site: Path = SITE_OPTION) -> None:
    """Validate a site file; exit 2 with the field path of the first problem."""
    loaded = load_site(site)
    typer.echo(
        f"{site}: ok (site {loaded.name}, namespace {loaded.namespace}, "
        f"{len(loaded.users)} user(s))"
    )


def render(
    site: Path = SITE_OPTION,
    out_dir: Path | None = typer.Option(
        None, "--out-dir",
        help="Directory for homepod.yaml, airlock.yaml, network.yaml, code-service.yaml and "
        "secrets.yaml (mode 0600). Default: print the four manifests to stdout.",
    ),
    with_secrets: bool = typer.Option(
        False, "--with-secrets",
        help="When printing, also print the password Secrets. Default: off. With --out-dir the "
        "Secrets always go to secrets.yaml.",
    ),
    old_output: Path | None = old_output_path_option(),
) -> None:
    """Render the site into Kubernetes manifests (deterministic: same input, same bytes)."""
    # Everything built from here on is kept until the command ends, so the garbage
    # collector's passes only cost time: on a 10,000-user site they tripled it (issue 18).
    gc.freeze()
    gc.disable()
    output = out_path(out_dir, old_output, "--out-dir")
    loaded = load_site(site)
    # The per-user parts are made by worker processes, one per CPU (mlab.cli.workers).
    if output is None:
        texts = render_texts_with_passwords(loaded, with_secrets=with_secrets,
                                            run=run_in_workers)
        skip_teardown()
        names = [*FILES, SECRETS_FILE] if with_secrets else list(FILES)
        sys.stdout.write("".join(texts[n] for n in names if n in texts))
        return
    # To files: the parts' UTF-8 bytes go to the files as the workers made them.
    pieces = render_encoded_with_passwords(loaded, encode_in_workers, with_secrets=True)
    # Nothing to clean up: end without freeing every object (mlab.cli.main.skip_teardown).
    skip_teardown()
    paths = write_rendered(pieces, output)
    typer.echo(f"wrote {', '.join(p.name for p in paths)} to {output}/", err=True)


def register(app: typer.Typer) -> None:
    """Add ``init``, ``render`` and the ``site`` group to ``app``."""
    app.command("init")(init)
    app.command("render")(render)
    group = typer.Typer(help="Inspect and validate site files.", no_args_is_help=True)
    group.command("schema")(schema)
    group.command("check")(check)
    app.add_typer(group, name="site")
