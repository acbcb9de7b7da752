"""`mlab install pip|apt`: install staged packages in a HomePod, offline, from the share.

Nothing installs by globbing the share: pip resolves through the share's PEP 503 index and
apt through the share's flat repository, exactly as the image configures them
(``/etc/pip.conf``, ``/etc/apt/sources.list``); the explicit options here make the same
commands work on any machine with the share mounted (``--share``), without touching that
machine's own pip or apt configuration (apt gets private lists; the dpkg database is the
real one, since that is what is being installed into).

When something is not staged, the error names the exact Airlock command to run.

What survives a HomePod restart: only what is under the home volume. ``--user`` (pip's
``~/.local``) and virtualenvs in the home directory persist; a system-wide pip install and
everything apt installs live in the container's file system and are gone after a restart
(install them again from the share in seconds, or ask for them in the image).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Sequence
from pathlib import Path

from mlab.airlock.apt import check_names
from mlab.airlock.pipindex import index_dir, simple_dir
from mlab.errors import MlabError, ToolMissingError, UsageError

_PIP_MISSING = re.compile(r"(?:No matching distribution found for|Could not find a version that satisfies the requirement) (\S+)")
_APT_MISSING = re.compile(r"Unable to locate package (\S+)|^\s*\S+ : (?:Pre)?Depends: (\S+)", re.M)


def pip_command(python: str, share: Path, specs: Sequence[str], *, user: bool) -> list[str]:
    """The pip argv for an offline install from the share (pure).

    ``--isolated`` ignores other pip configuration (extra indexes, find-links) so only the
    share is used; ``--break-system-packages`` is added for a system interpreter marked
    externally managed (PEP 668), which is what a HomePod's ``/etc/pip.conf`` does too.
    """
    argv = [python, "-m", "pip", "--isolated", "--disable-pip-version-check", "install",
            "--index-url", simple_dir(share).as_uri()]
    in_venv, managed = _python_facts(python)
    # pip refuses --user in a virtualenv; the HomePod user's ~/.venv is on the home volume.
    if user and not in_venv:
        argv.append("--user")
    if managed:
        argv.append("--break-system-packages")
    return [*argv, *specs]


def _externally_managed(python: str) -> bool:
    return _python_facts(python)[1]


def _python_facts(python: str) -> tuple[bool, bool]:
    """(runs in a virtualenv, is externally managed per PEP 668) for interpreter ``python``."""
    if Path(python).resolve() == Path(sys.executable).resolve():
        in_venv = sys.prefix != sys.base_prefix
        stdlib = sysconfig.get_path("stdlib")
    else:
        probe = subprocess.run(
            [python, "-c", "import sys,sysconfig;print(sys.prefix!=sys.base_prefix);print(sysconfig.get_path('stdlib'))"],
            capture_output=True, text=True, check=False,
        )
        if probe.returncode != 0:
            raise UsageError(f"--python {python} does not run", hint="pass a Python interpreter")
        first, stdlib = probe.stdout.splitlines()[:2]
        in_venv = first == "True"
    return in_venv, not in_venv and (Path(stdlib) / "EXTERNALLY-MANAGED").exists()


def stage_hint(kind: str, names: Sequence[str]) -> str:
    """The Airlock command that stages ``names`` (pure), e.g. ``mlab stage pip 'x>=1'``."""
    return f"on the Airlock run: mlab stage {kind} " + " ".join(shlex.quote(n) for n in names)


def install_pip(share: Path, specs: Sequence[str], *, user: bool = False, python: str | None = None) -> None:
    """``pip install SPECS`` from the share's index, offline; pip's output is shown.

    Args:
        share: the share root.
        specs: requirements (PEP 508).
        user: install into ``~/.local`` (survives a HomePod restart); ignored when
            ``python`` runs in a virtualenv (the user's ``~/.venv`` is on the home volume).
        python: interpreter; None: ``python3`` on PATH (an active virtualenv's).

    Raises:
        UsageError: no index in the share, or the interpreter does not run.
        MlabError: something is not staged (the message names it and the Airlock command),
            or pip failed otherwise.
    """
    if not simple_dir(share).is_dir():
        raise UsageError(f"no pip index in {share}", hint=stage_hint("pip", specs) + " (or pass --share)")
    python = python or shutil.which("python3") or sys.executable
    argv = pip_command(python, share, specs, user=user)
    proc = subprocess.run(argv, stdout=sys.stdout, stderr=subprocess.PIPE, text=True, check=False)
    sys.stderr.write(proc.stderr)
    if proc.returncode != 0:
        missing = _PIP_MISSING.findall(proc.stderr)
        if missing:
            raise MlabError(
                f"pip package {missing[-1]} is not staged in {index_dir(share)}",
                hint=stage_hint("pip", specs),
            )
        raise MlabError(f"pip install failed (exit {proc.returncode})")


def install_apt_options(work: Path, sources: Path) -> list[str]:
    """apt ``-o`` options for installing from ``sources`` with private lists (pure).

    The dpkg status, extended states and locks stay the real ones (this installs into this
    system); apt's sandbox user is root because the private directories are not readable
    by ``_apt``.
    """
    opts = {
        "Dir::State::Lists": str(work / "lists"),
        "Dir::Cache": str(work / "cache"),
        "Dir::Cache::pkgcache": "",
        "Dir::Cache::srcpkgcache": "",
        "Dir::Etc::SourceList": str(sources),
        "Dir::Etc::SourceParts": str(work / "sources.list.d"),
        "APT::Sandbox::User": "root",
    }
    return [a for k, v in opts.items() for a in ("-o", f"{k}={v}")]


def install_apt(share: Path, packages: Sequence[str]) -> None:
    """``apt-get install PACKAGES`` with the share's repository as the only source.

    Private lists and a private sources.list keep this machine's apt configuration
    untouched; runs through ``sudo`` when not root.

    Raises:
        UsageError: a bad package name, or no apt repository in the share.
        MlabError: a package or dependency is not staged (named, with the Airlock command).
    """
    check_names(packages)
    repo = Path(share) / "apt"
    if not (repo / "Packages").is_file():
        raise UsageError(f"no apt repository in {share}", hint=stage_hint("apt", packages) + " (or pass --share)")
    if not shutil.which("apt-get"):
        raise ToolMissingError("apt-get is not installed", hint="mlab install apt runs on Debian/Ubuntu")
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    work = Path(tempfile.mkdtemp(prefix="mlab-install-apt-"))
    try:
        for sub in ("state", "cache/archives/partial", "sources.list.d", "lists/partial"):
            (work / sub).mkdir(parents=True)
        sources = work / "sources.list"
        sources.write_text(f"deb [trusted=yes] file:{repo.resolve()} ./\n")
        opts = install_apt_options(work, sources)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        # update, then a simulated install (takes no dpkg lock; names what is missing),
        # then the install itself
        for step in (["update"], ["--simulate", "install", *packages], ["install", "-y", *packages]):
            simulate = step[0] == "--simulate"
            proc = subprocess.run([*sudo, "apt-get", "-q", *opts, *step], stdout=subprocess.PIPE if simulate else sys.stdout,
                                  stderr=subprocess.PIPE, text=True, env=env, check=False)
            if not simulate:
                sys.stderr.write(proc.stderr)
            if proc.returncode != 0:
                text = (proc.stdout or "") + "\n" + proc.stderr
                found = _APT_MISSING.search(text)
                if found:
                    name = found.group(1) or found.group(2)
                    raise MlabError(f"apt package {name} is not staged in {repo}", hint=stage_hint("apt", packages))
                errors = [ln for ln in text.splitlines() if ln.startswith("E:")] or [f"exit {proc.returncode}"]
                raise MlabError(f"apt-get {'install' if simulate else step[0]} failed: {errors[-1][:300]}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
