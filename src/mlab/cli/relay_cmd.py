"""``mlab relay init|start|finish``: the office-PC git relay (see :mod:`mlab.relay`)."""

from __future__ import annotations

from pathlib import Path

import typer

from mlab.cli.options import site_option

DIR_OPT = typer.Option(Path("."), "-C", "--dir",
                       help="The office clone (made by `mlab relay init`). Default: .")


def register(app: typer.Typer) -> None:
    """Add the ``relay`` group to ``app``."""
    relay = typer.Typer(help="Relay branches between GitHub and the code service "
                        "(office PC).", no_args_is_help=True)
    app.add_typer(relay, name="relay")

    @relay.command("init")
    def init(
        fork_url: str = typer.Argument(..., help="Your fork, e.g. https://github.com/me/repo."),
        upstream: str = typer.Option(..., "--upstream", help="The project on GitHub."),
        mlab: str = typer.Option(..., "--mlab", help="The code service mirror, e.g. "
                                 "http://code.mlab.local/org/repo."),
        directory: Path = typer.Argument(None, help="Where to clone. Default: the fork's "
                                         "repository name."),
    ) -> None:
        """Clone FORK_URL, add remotes upstream and mlab, and check all three.
        Credentials for mlab: MLAB_USER and MLAB_PASSWORD, else git asks."""
        from mlab import relay as r

        target = directory or Path(fork_url.rstrip("/").split("/")[-1].removesuffix(".git"))
        r.init(fork_url, upstream, mlab, target)
        print(f"ready: {target} (remotes origin, upstream, mlab)")

    @relay.command("start")
    def start(branch: str = typer.Argument(..., help="New branch, e.g. feature_1."),
              directory: Path = DIR_OPT,
              code_host: str | None = typer.Option(
                  None, "--code-host", envvar="MLAB_CODE_HOST",
                  help="codeService.host, for the clone command printed for HomePods. "
                  "Default: from --site, else code.mlab.local."),
              site: Path = site_option(
                  Path("examples/local.yaml"),
                  "Site file giving codeService.host (used when it exists). "
                  "Default: examples/local.yaml."),
              ) -> None:
        """Fetch upstream, rebase the default branch onto it, create BRANCH, push it to mlab;
        print the command that clones it in a HomePod."""
        from mlab import relay as r
        from mlab.site import CodeService

        host, tls = code_host, False
        if site.is_file():
            from mlab.site import load_site

            loaded = load_site(site)
            host, tls = host or loaded.code_service.host, loaded.tls.enabled
        host = host or str(CodeService.model_fields["host"].default)
        rel = r.Relay(directory)
        base = r.start(rel, branch)
        url = r.homepod_url(rel.git("remote", "get-url", "mlab").strip(), host, tls)
        repo = url.split("/", 3)[3]
        print(f"{branch} (from upstream/{base}) is on the code service. In a HomePod:\n"
              f"  git clone {url} && git checkout {branch}\n"
              "Sites with reviewed user branches (egress.userBranches) show your HomePod "
              "commits here only after review; when they are pushed, in the HomePod:\n"
              f"  mlab request branch {repo} {branch} --reason TEXT")

    @relay.command("finish")
    def finish(branch: str = typer.Argument(..., help="The branch to bring back."),
               directory: Path = DIR_OPT,
               max_file_size: int = typer.Option(
                   100 * 1024 * 1024, "--max-file-size",
                   help="Refuse files larger than this many bytes. Default: 104857600 "
                   "(GitHub's 100 MiB limit)."),
               ) -> None:
        """Fetch mlab, rebase onto mlab/BRANCH (--no-fork-point), check, push to origin."""
        from mlab import relay as r

        print(r.finish(r.Relay(directory), branch, max_file_size))
