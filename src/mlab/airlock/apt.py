"""`mlab stage apt`: the dependency closure against the HomePod's pristine state, as a flat repo.

Why not the seed's ``apt-get download`` (no dependencies) or ``apt-get install
--download-only`` (skips whatever the *Airlock* already has): apt must solve against the
package state of the HomePod image. The image saves that state when it is built
(``/usr/share/mlab/pristine/status`` and ``sources.list``), so apt runs here with
``Dir::State::status`` pointing at it and private lists, cache and state directories:
apt's own solver (``apt-get --simulate install``) names exactly what a fresh HomePod lacks,
``apt-get download`` fetches those versions (also from ``file:`` sources, which
``--download-only`` would not copy), and nothing on this machine's apt state is read or
changed.

The share's ``apt/`` folder is a flat repository (``deb [trusted=yes]
file:/opt/public/airlock/apt ./``): the ``.deb`` files, ``Packages``, ``Packages.gz`` and a
``Release`` with MD5/SHA1/SHA256/SHA512 sums written by ``apt-ftparchive``. Invariants:
publishing holds ``apt/.lock``; ``.deb`` files are placed (temporary name + rename) before
the indexes that name them; indexes are replaced atomically, ``Release`` last; staged
versions accumulate (apt picks the newest). A failed staging publishes nothing.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock, Timeout

from mlab.airlock import audit
from mlab.airlock.fsutil import (
    check_writable,
    ensure_dir,
    install_file,
    sha256_file,
    write_atomic,
)
from mlab.errors import MlabError, TemporaryError, ToolMissingError, UsageError

PRISTINE_STATUS = Path("/usr/share/mlab/pristine/status")
PRISTINE_SOURCES = Path("/usr/share/mlab/pristine/sources.list")
LOCK_TIMEOUT = 600.0

# Debian Policy 5.6.1 (package names), optionally ``:arch`` and ``=version`` / ``/release``.
_PKG = re.compile(r"^[a-z0-9][a-z0-9+.-]+(:[a-z0-9-]+)?([=/][A-Za-z0-9.+~:_-]+)?$")

Report = Callable[[str], None]


@dataclass(frozen=True)
class DebFile:
    """A ``.deb`` placed in the share: file name, bytes, hex SHA-256."""

    name: str
    size: int
    sha256: str


@dataclass
class AptStageResult:
    """What :func:`stage` did.

    Attributes:
        added: ``.deb`` files new in the share.
        present: file names already in the share (kept).
        downloaded: every file name of the closure apt fetched (empty when the image
            already has everything).
    """

    added: list[DebFile] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    downloaded: list[str] = field(default_factory=list)


def check_names(packages: Sequence[str]) -> None:
    """Reject anything that is not a Debian package name (it would reach apt's argv).

    Raises:
        UsageError: names the bad argument.
    """
    if not packages:
        raise UsageError("nothing to stage", hint="name one or more Debian packages, e.g. mlab stage apt jq")
    for pkg in packages:
        if not _PKG.match(pkg):
            raise UsageError(
                f"PKG {pkg!r} is not a Debian package name",
                hint="use lowercase letters, digits and + - . (Debian Policy 5.6.1), optionally =VERSION",
            )


def apt_options(work: Path, status: Path, sources: Path | None, lists: Path) -> list[str]:
    """``-o`` options that make apt solve against ``status`` with private directories (pure).

    Args:
        work: a private directory holding state/, cache/ and an empty sources.list.d.
        status: the dpkg status file to solve against (the HomePod image's).
        sources: a one-line-style ``sources.list`` or a deb822 ``.sources`` file; None:
            this machine's apt sources.
        lists: the lists directory (downloaded indexes).
    """
    opts = {
        "Dir::State": str(work / "state"),
        "Dir::State::status": str(Path(status).resolve()),
        "Dir::State::Lists": str(lists),
        "Dir::Cache": str(work / "cache"),
        "Dir::Cache::pkgcache": "",
        "Dir::Cache::srcpkgcache": "",
        "Debug::NoLocking": "1",
        "APT::Get::List-Cleanup": "1",
    }
    if os.geteuid() == 0:
        # apt would drop to _apt, which cannot write our private root-owned directories
        opts["APT::Sandbox::User"] = "root"
    if sources is not None:
        if Path(sources).name.endswith(".sources"):
            opts["Dir::Etc::SourceList"] = "/dev/null"
        else:
            opts["Dir::Etc::SourceList"] = str(Path(sources).resolve())
        opts["Dir::Etc::SourceParts"] = str(work / "sources.list.d")
    return [a for k, v in opts.items() for a in ("-o", f"{k}={v}")]


def _run(argv: list[str], report: Report | None = None, cwd: Path | None = None) -> str:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", LC_ALL="C")
    lines: list[str] = []
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if report and (m := re.match(r"^Get:\d+ \S+ \S+ (\S+) (\S+) ", line)):
                report(m.group(2) if "/" in m.group(1) else m.group(1))
        code = proc.wait()
    text = "\n".join(lines)
    if code != 0:
        raise _apt_error(argv, text, code)
    return text


def _apt_error(argv: list[str], text: str, code: int) -> MlabError:
    """Turn apt's output into one clear error that names the package (pure)."""
    if (m := re.search(r"Unable to locate package (\S+)", text)) or (
        m := re.search(r"Package '?(\S+?)'? has no installation candidate", text)
    ):
        return MlabError(
            f"apt package {m.group(1)} was not found in the HomePod's sources",
            hint="check the name (apt-cache search) and the --sources file",
        )
    if m := re.search(r"^\s*(\S+) : (?:Pre)?Depends: (\S+)(?: \([^)]*\))? but it is not (?:installable|going to be installed)", text, re.M):
        return MlabError(
            f"dependency {m.group(2)} of {m.group(1)} cannot be found in the HomePod's sources",
            hint="stage from sources that carry it (--sources), or pick another version of the package",
        )
    errors = [ln for ln in text.splitlines() if ln.startswith("E:")] or text.splitlines()[-1:] or [f"exit {code}"]
    return MlabError(f"apt-get {argv[-1] if argv[1:] else ''} failed: {errors[-1][:300]}")


def resolve_download(
    packages: Sequence[str],
    work: Path,
    *,
    status: Path,
    sources: Path | None,
    lists: Path,
    recommends: bool = False,
    report: Report | None = None,
) -> list[Path]:
    """Download the closure of ``packages`` missing from ``status``; return the ``.deb`` paths.

    Raises:
        ToolMissingError: apt-get is missing.
        MlabError: a package or one of its dependencies cannot be found.
    """
    if not shutil.which("apt-get"):
        raise ToolMissingError("apt-get is not installed", hint="stage apt packages on the Airlock (Debian)")
    for sub in ("state", "cache/archives/partial", "sources.list.d"):
        ensure_dir(work / sub)
    ensure_dir(lists / "partial")
    if sources is not None and Path(sources).name.endswith(".sources"):
        shutil.copyfile(sources, work / "sources.list.d" / Path(sources).name)
    if sources is not None and Path(sources).resolve() == PRISTINE_SOURCES.resolve():
        # the image saves deb822 sources beside its one-line sources.list (image/provision.sh)
        for extra in PRISTINE_SOURCES.parent.glob("*.sources"):
            shutil.copyfile(extra, work / "sources.list.d" / extra.name)
    opts = apt_options(work, status, sources, lists)
    _run(["apt-get", "-q", *opts, "update"], report)
    rec = [] if recommends else ["--no-install-recommends"]
    plan = _run(["apt-get", "-q", *opts, *rec, "--simulate", "install", *packages])
    wanted = install_plan(plan)
    if not wanted:
        return []
    dest = ensure_dir(work / "debs")
    _run(["apt-get", "-q", *opts, "download", *wanted], report, cwd=dest)
    return sorted(dest.glob("*.deb"))


_INST = re.compile(r"^Inst (\S+) (?:\[[^\]]*\] )?\((\S+) .*\[(\S+)\]\)", re.M)


def install_plan(simulation: str) -> list[str]:
    """``NAME=VERSION`` of every package apt's simulated install would unpack (pure).

    Parses ``apt-get --simulate install`` lines such as
    ``Inst libjq1 (1.6-2.1+deb12u3 Debian-Security:12/stable-security [amd64])``.
    """
    return [f"{m.group(1)}={m.group(2)}" for m in _INST.finditer(simulation)]


def _ftparchive() -> str:
    path = shutil.which("apt-ftparchive")
    if not path:
        raise ToolMissingError("apt-ftparchive is not installed", hint="apt-get install apt-utils")
    return path


def write_indexes(repo: Path) -> None:
    """Write ``Packages``, ``Packages.gz`` and ``Release`` for the ``.deb`` files in ``repo``.

    ``Release`` is written last, so its checksums always match the indexes next to it
    once it is visible. apt-ftparchive's cache (``.ftparchive.db``) makes a rerun read
    only new ``.deb`` files.
    """
    tool = _ftparchive()
    db = ["--db", str(repo / ".ftparchive.db")]
    packages = subprocess.run([tool, *db, "packages", "."], cwd=repo, capture_output=True, check=False)
    if packages.returncode != 0:
        raise MlabError(f"apt-ftparchive packages failed: {packages.stderr.decode(errors='replace').strip()[-300:]}")
    write_atomic(repo / "Packages.gz", gzip.compress(packages.stdout, mtime=0))
    write_atomic(repo / "Packages", packages.stdout)
    release = subprocess.run(
        [tool, "-o", "APT::FTPArchive::Release::Origin=MLab Airlock", "-o", "APT::FTPArchive::Release::Label=mlab-airlock",
         "release", "."],
        cwd=repo, capture_output=True, check=False,
    )
    if release.returncode != 0:
        raise MlabError(f"apt-ftparchive release failed: {release.stderr.decode(errors='replace').strip()[-300:]}")
    write_atomic(repo / "Release", release.stdout)


def publish(share: Path, debs: Sequence[Path]) -> tuple[list[DebFile], list[str]]:
    """Place ``debs`` in ``<share>/apt/`` and rewrite its indexes, under the lock.

    Returns:
        (added files, names already present).

    Raises:
        TemporaryError: another staging held the lock for :data:`LOCK_TIMEOUT` seconds.
    """
    repo = ensure_dir(Path(share) / "apt")
    added: list[DebFile] = []
    present: list[str] = []
    try:
        with FileLock(str(repo / ".lock"), timeout=LOCK_TIMEOUT):
            for deb in debs:
                dest = repo / deb.name
                if dest.exists():
                    present.append(deb.name)
                    continue
                info = DebFile(deb.name, deb.stat().st_size, sha256_file(deb))
                install_file(deb, dest)
                added.append(info)
            if added or not (repo / "Release").exists():
                write_indexes(repo)
    except Timeout:
        raise TemporaryError(
            f"another staging holds {repo / '.lock'} for more than {LOCK_TIMEOUT:.0f} s",
            hint="wait for it to finish and run the command again",
        ) from None
    return added, present


def default_lists_dir(sources: Path | None) -> Path:
    """A per-user cache of downloaded apt lists (``apt-get update`` then only fetches changes)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mlab" / "apt-lists"
    key = re.sub(r"[^A-Za-z0-9]+", "_", str(Path(sources).resolve()) if sources else "system").strip("_")
    return base / key


def stage(
    share: Path,
    packages: Sequence[str],
    *,
    status: Path | None = None,
    sources: Path | None = None,
    recommends: bool = False,
    lists: Path | None = None,
    report: Report | None = None,
) -> AptStageResult:
    """Stage ``packages`` and the dependencies the HomePod image lacks into ``<share>/apt``.

    Args:
        share: the share root.
        packages: Debian package names (``PKG`` or ``PKG=VERSION``).
        status: dpkg status of the HomePod image; None: :data:`PRISTINE_STATUS`.
        sources: apt sources to download from; None: :data:`PRISTINE_SOURCES` when it
            exists, else this machine's.
        recommends: also stage Recommends (apt installs them by default when present;
            missing ones are skipped without error).
        lists: where apt keeps downloaded indexes; None: :func:`default_lists_dir`.
        report: called with each package name apt fetches (progress display).

    Raises:
        UsageError: a bad package name, or the status file is missing.
        MlabError: a package or a dependency cannot be found (named), or apt failed.
    """
    check_names(packages)
    check_writable(share, "apt")
    status = Path(status) if status else PRISTINE_STATUS
    if not status.is_file():
        raise UsageError(
            f"--status {status}: no such dpkg status file",
            hint="run on the Airlock (same image as the HomePods) or pass the image's status file with --status",
        )
    if sources is None and PRISTINE_SOURCES.is_file():
        sources = PRISTINE_SOURCES
    if sources is not None and not Path(sources).is_file():
        raise UsageError(f"--sources {sources}: no such file")
    lists = Path(lists) if lists else default_lists_dir(sources)
    work = Path(tempfile.mkdtemp(prefix="mlab-apt-"))
    try:
        debs = resolve_download(packages, work, status=status, sources=sources, lists=lists, recommends=recommends, report=report)
        added, present = publish(share, debs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    records = [audit.make_record("stage-apt", d.name, size=d.size, sha256=d.sha256) for d in added]
    if not records:
        records = [audit.make_record("stage-apt", " ".join(packages))]
    audit.append(share, records)
    return AptStageResult(added=added, present=present, downloaded=[d.name for d in debs])
