"""`mlab stage pip|apt|url|git`, `mlab install pip|apt` and `mlab airlock log|reindex|sftp-server`.

Staging runs on the Airlock (share writable); installing runs in a HomePod (share
read-only, no network). Both take ``--share DIR`` so they also work on any machine with
the share mounted. Progress goes to stderr, summaries and data to stdout.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TransferSpeedColumn,
)

from mlab.airlock import DEFAULT_SHARE
from mlab.cli.options import old_output_path_option, out_path, output_format

SHARE_HELP = f"The Airlock share. Default: {DEFAULT_SHARE} (env MLAB_SHARE)."

stage_app = typer.Typer(help="On the Airlock: stage packages, files and repositories into the share.", no_args_is_help=True)
install_app = typer.Typer(help="In a HomePod: install staged packages offline from the share.", no_args_is_help=True)
airlock_app = typer.Typer(help="The Airlock's audit log and maintenance.", no_args_is_help=True)

_err = Console(stderr=True)


def _share_opt() -> Path:
    return typer.Option(Path(DEFAULT_SHARE), "--share", help=SHARE_HELP, envvar="MLAB_SHARE")  # type: ignore[no-any-return]


@contextmanager
def _spinner(label: str) -> Iterator[Progress]:
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), console=_err, transient=True)
    with progress:
        progress.add_task(label, total=None)
        yield progress


def _describe(progress: Progress, prefix: str):  # type: ignore[no-untyped-def]
    def report(name: str) -> None:
        for task in progress.tasks:
            progress.update(task.id, description=f"{prefix}: {name}")

    return report


@stage_app.command("pip")
def stage_pip(
    specs: list[str] = typer.Argument(None, help="Requirements (PEP 508), e.g. 'requests>=2' numpy."),
    requirement: list[Path] = typer.Option([], "-r", "--requirement", help="A pip requirements file (repeatable)."),
    share: Path = _share_opt(),
    python_version: Optional[str] = typer.Option(
        None, "--python-version", help="Target Python (MAJOR.MINOR). Default: this interpreter (the HomePod's, same image). Only wheels can be staged for another target."
    ),
    platform: list[str] = typer.Option([], "--platform", help="Target platform tag (repeatable), e.g. manylinux_2_36_x86_64. Default: this machine's."),
    abi: Optional[str] = typer.Option(None, "--abi", help="Target ABI tag, e.g. cp311. Default: pip's for the version."),
    index_url: str = typer.Option("https://pypi.org/simple", "--index-url", envvar="MLAB_PIP_INDEX_URL", help="Package index (PEP 503). Default: PyPI (env MLAB_PIP_INDEX_URL)."),
    extra_index_url: list[str] = typer.Option([], "--extra-index-url", help="More indexes (repeatable)."),
    find_links: list[str] = typer.Option([], "--find-links", "-f", help="Local folder or page of packages (repeatable)."),
    no_index: bool = typer.Option(False, "--no-index", help="Use only --find-links. Default: off."),
) -> None:
    """Resolve SPECs for the HomePod, build wheels from sdists, publish them (PEP 503)."""
    from mlab.airlock import pip, pipindex

    target = pip.Target(python_version=python_version, platforms=tuple(platform), abi=abi)
    sources = pip.Sources(index_url, tuple(extra_index_url), tuple(find_links), no_index)
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        console=_err, transient=True)
    with progress:
        task = progress.add_task("resolving", total=None)

        def collecting(name: str) -> None:
            progress.update(task, description=f"collecting {name}")

        def publishing(done: int, total: int) -> None:
            progress.update(task, description="hashing and publishing", completed=done, total=total)

        result = pip.stage(share, specs or [], requirement_files=requirement, target=target, sources=sources,
                           report=collecting, publishing=publishing)
    for w in result.added:
        tag = " (built from sdist)" if w.filename in result.built else ""
        print(f"added {w.filename} {w.size} bytes{tag}")
    for w in result.published.present:
        print(f"present {w.filename}")
    print(f"{len(result.added)} added, {len(result.published.present)} already present, {len(result.built)} built from source, in {pipindex.index_dir(share)}")


@stage_app.command("apt")
def stage_apt(
    packages: list[str] = typer.Argument(..., help="Debian package names, e.g. jq."),
    share: Path = _share_opt(),
    status: Optional[Path] = typer.Option(None, "--status", help="dpkg status file of the HomePod image. Default: /usr/share/mlab/pristine/status."),
    sources: Optional[Path] = typer.Option(None, "--sources", help="sources.list to download from. Default: /usr/share/mlab/pristine/sources.list if present, else this machine's apt sources."),
    recommends: bool = typer.Option(False, "--with-recommends", help="Also stage Recommends. Default: off."),
) -> None:
    """Stage Debian packages with their dependency closure against the HomePod's pristine state."""
    from mlab.airlock import apt

    with _spinner("resolving apt packages") as progress:
        result = apt.stage(share, packages, status=status, sources=sources, recommends=recommends, report=_describe(progress, "apt"))
    for deb in result.added:
        print(f"added {deb.name} {deb.size} bytes")
    for name in result.present:
        print(f"present {name}")
    print(f"{len(result.added)} added, {len(result.present)} already present, in {share / 'apt'}")


@stage_app.command("url")
def stage_url(
    url: str = typer.Argument(..., help="http(s) URL to download."),
    sha256: Optional[str] = typer.Option(None, "--sha256", help="Expected SHA-256 (hex); the file is kept only if it matches. Default: no check."),
    out_file: Optional[str] = typer.Option(None, "--out-file", help="Path inside the share. Default: downloads/<last URL segment>."),
    share: Path = _share_opt(),
    old_output: Optional[str] = old_output_path_option(),
) -> None:
    """Download URL into the share (resumable, with progress and checksum)."""
    from mlab.airlock import files

    output = out_path(out_file, old_output, "--out-file")

    progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), console=_err, transient=True)
    with progress:
        task = progress.add_task(url.rsplit("/", 1)[-1][:40], total=None)

        def report(done: int, total: int | None) -> None:
            progress.update(task, completed=done, total=total)

        result = files.stage_url(share, url, sha256=sha256, output=output, report=report)
    print(f"{result.path} {result.size} bytes sha256={result.sha256}")


@stage_app.command("git")
def stage_git(
    url: str = typer.Argument(..., help="Repository URL (https, git, ssh or a local path)."),
    name: Optional[str] = typer.Option(None, "--name", help="Folder name under <share>/git/ (NAME.git). Default: from the URL."),
    share: Path = _share_opt(),
) -> None:
    """Mirror a git repository into <share>/git/NAME.git (again: update it)."""
    from mlab.airlock import files

    with _spinner(f"cloning {url}"):
        result = files.stage_git(share, url, name=name)
    print(f"{result.path} {'updated' if result.updated else 'cloned'}; in a HomePod: git clone {result.path}")


@install_app.command("pip")
def install_pip(
    specs: list[str] = typer.Argument(..., help="Requirements (PEP 508) to install."),
    user: bool = typer.Option(False, "--user", help="Install into ~/.local (the home volume: survives a HomePod restart); not needed (and ignored) in the user's ~/.venv, which is on the home volume. Default: off."),
    python: Optional[str] = typer.Option(None, "--python", help="Interpreter to install for. Default: python3 on PATH (an active venv's)."),
    share: Path = _share_opt(),
) -> None:
    """Install from the share's pip index, offline; names the Airlock command if something is missing."""
    from mlab.homepod import install

    install.install_pip(share, specs, user=user, python=python)


@install_app.command("apt")
def install_apt(
    packages: list[str] = typer.Argument(..., help="Debian package names."),
    share: Path = _share_opt(),
) -> None:
    """apt-get install from the share's repository, offline (with sudo when not root)."""
    from mlab.homepod import install

    install.install_apt(share, packages)


@airlock_app.command("log")
def airlock_log(
    output: str = typer.Option("table", "-o", "--output", help="table or json (one object per line). Default: table."),
    share: Path = _share_opt(),
) -> None:
    """Show the audit log (who staged, downloaded or uploaded what)."""
    from mlab.airlock import audit

    output_format(output)
    records = list(audit.read(share))
    if output == "json":
        for r in records:
            sys.stdout.write(json.dumps(r, sort_keys=True) + "\n")
        return
    print(format_table(records))


def format_table(records: list) -> str:  # type: ignore[type-arg]
    """The audit records as an aligned text table (pure)."""
    head = ("TIME", "USER", "ACTION", "SIZE", "SHA256", "ITEM")
    rows = [head] + [
        (r["time"], r["user"], r["action"], "" if r["size"] is None else str(r["size"]), (r["sha256"] or "")[:12], r["item"])
        for r in records
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row[:-1], widths)) + "  " + row[-1] for row in rows)


@airlock_app.command("reindex")
def airlock_reindex(share: Path = _share_opt()) -> None:
    """Rebuild the pip index pages from the wheels in <share>/pip-index/files (after manual changes)."""
    from mlab.airlock import pipindex

    count = pipindex.rebuild(share)
    print(f"{count} wheels indexed in {pipindex.simple_dir(share)}")


@airlock_app.command("migrate")
def airlock_migrate(share: Path = _share_opt()) -> None:
    """Move a share's pip index left in pip/ by MLab 0.1 to pip-index/ (the Airlock runs this at start)."""
    from mlab.airlock import pipindex

    moved = pipindex.migrate(share)
    print("\n".join(moved) if moved else f"{share}: nothing to migrate")


@airlock_app.command("sftp-server", hidden=True)
def airlock_sftp_server(
    share: Path = _share_opt(),
    server: str = typer.Option("/usr/lib/openssh/sftp-server", "--server", help="The real sftp-server. Default: /usr/lib/openssh/sftp-server."),
) -> None:
    """sshd subsystem: run sftp-server and audit each uploaded file (see docs/airlock.md)."""
    from mlab.airlock import sftp

    raise typer.Exit(sftp.serve(share, server))


@airlock_app.command("sftp-audit")
def airlock_sftp_audit(
    sshd_config: Path = typer.Option(Path("/etc/ssh/sshd_config"), "--sshd-config", help="Default: /etc/ssh/sshd_config."),
) -> None:
    """As root on the Airlock: make sshd's sftp subsystem audit uploads (then restart sshd)."""
    from mlab.airlock import sftp

    changed = sftp.enable_audit(sshd_config)
    print(f"{sshd_config}: {'now uses' if changed else 'already uses'} {sftp.SUBSYSTEM_LINE!r}")


@airlock_app.command("sftp-account")
def airlock_sftp_account(
    name: str = typer.Argument(..., help="Login name of the SFTP-only account."),
    password_file: Path = typer.Option(..., "--password-file", help="File whose first line is the password (at least 8 characters)."),
    share: Path = _share_opt(),
    quarantine: Path = typer.Option(
        None, "--quarantine", help="Chroot the account to this directory outside the share "
        "(e.g. /var/lib/mlab/quarantine): its uploads reach HomePods only through "
        "`mlab airlock release`. Default: chrooted to the share (uploads visible at once)."),
) -> None:
    """As root on the Airlock: add an SFTP-only account chrooted to the share (uploads go to upload/)."""
    from mlab.airlock import sftp

    for change in sftp.add_chroot_account(name, password_file, share, quarantine=quarantine):
        print(change)


@airlock_app.command("release")
def airlock_release(
    quarantine: Path = typer.Option(Path("/var/lib/mlab/quarantine"), "--quarantine",
                                    help="The quarantine directory. Default: "
                                    "/var/lib/mlab/quarantine."),
    share: Path = _share_opt(),
    max_size: int = typer.Option(20 * 1024**3, "--max-size", min=1, help="Largest file "
                                 "released, in bytes. Default: 21474836480 (20 GiB)."),
    allow_executables: bool = typer.Option(False, "--allow-executables", help="Also release "
                                           "ELF, PE, Mach-O and #! files. Default: refuse "
                                           "them."),
    settle: float = typer.Option(10, "--settle", min=0, help="Seconds a file must be "
                                 "unchanged before it is checked. Default: 10."),
) -> None:
    """As root on the Airlock: check quarantined uploads (size, type; sha256 audited) and
    release them to <share>/upload/ or refuse them (docs/airlock.md)."""
    from mlab.airlock.quarantine import Policy, release
    from mlab.errors import MlabError

    if os.geteuid() != 0:
        raise MlabError("releasing from quarantine needs root", hint="run it with sudo on "
                        "the Airlock")
    for out in release(quarantine, share, Policy(max_size, allow_executables), settle):
        print(f"{out.action} {out.path}: {out.detail}")


def register(app: typer.Typer) -> None:
    """Add ``stage``, ``install`` and ``airlock`` to ``app``."""
    app.add_typer(stage_app, name="stage")
    app.add_typer(install_app, name="install")
    app.add_typer(airlock_app, name="airlock")
