"""`mlab stage url` and `mlab stage git`: data sets and code that are not on the code service.

URLs: downloaded to ``<share>/<path>.part`` (hidden, beside the target), resumed with an
HTTP ``Range`` request (RFC 9110 section 14) when a partial file is there, checked against
``--sha256`` and renamed into place only when complete and correct, so a HomePod never
sees a partial or wrong file.

git: the Airlock keeps a mirror clone in ``<share>/.git-mirrors/<name>.git`` (updated by
fetching on later stagings) and publishes ``<share>/git/<name>.bundle`` (all refs, atomic
rename). A bundle is a plain file, so HomePod users (other uids, read-only share) can
``git clone`` and ``git pull`` from it; a repository directory owned by another user would
be refused by git's ``safe.directory`` ownership check (git >= 2.35.2).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import ssl
import stat
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

import httpx

from mlab.airlock import audit
from mlab.airlock.fsutil import CHUNK, check_writable, ensure_dir, open_dir_beneath
from mlab.errors import MlabError, TemporaryError, ToolMissingError, UsageError
from mlab.topology import SHARE_FOLDERS

RESERVED = (*(f for f in SHARE_FOLDERS if f != "downloads"), audit.AUDIT_FILE)
"""Top-level names of the share that ``-o`` may not name (``downloads/`` is the default place)."""

Progress = Callable[[int, "int | None"], None]
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class UrlResult:
    """A staged download: its path in the share, bytes, hex SHA-256."""

    path: Path
    size: int
    sha256: str


@dataclass(frozen=True)
class GitResult:
    """A staged repository: the bundle's path, whether it replaced an older one, HEAD's sha."""

    path: Path
    updated: bool
    head: str


def target_path(share: Path, url: str, output: str | None) -> Path:
    """Where ``url`` goes in the share (pure).

    ``output`` is a path relative to the share (``datasets/mnist.tgz``); None:
    ``downloads/<last segment of the URL path>``.

    Raises:
        UsageError: the URL has no file name and no ``-o`` was given, or ``-o`` leaves the
            share (absolute, ``..``) or names a hidden or reserved place (:data:`RESERVED`).
    """
    if output is None:
        name = unquote(PurePosixPath(urlsplit(url).path).name)
        if not name or not _NAME.match(name):
            raise UsageError(f"cannot take a file name from URL {audit.redact_url(url)}", hint="name it with --out-file PATH")
        rel = PurePosixPath("downloads", name)
    else:
        rel = PurePosixPath(output)
        if rel.is_absolute() or not rel.parts or any(p in ("..", ".", "") for p in rel.parts):
            raise UsageError(f"-o {output!r} must be a relative path inside the share", hint="e.g. -o datasets/mnist.tgz")
        if any(p.startswith(".") for p in rel.parts) or rel.parts[0] in RESERVED:
            raise UsageError(f"-o {output!r} names a hidden or reserved place in the share", hint="e.g. -o datasets/NAME")
    return Path(share) / rel


def _ssl_context() -> ssl.SSLContext:
    # The system CA store (Debian: /etc/ssl/certs), like curl and apt on the Airlock.
    return ssl.create_default_context(cafile=os.environ.get("SSL_CERT_FILE"))


def download(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    report: Progress | None = None,
    client: httpx.Client | None = None,
    root: Path | None = None,
) -> UrlResult:
    """Download ``url`` to ``dest``, resuming ``.<name>.part`` if present; verify; rename.

    Args:
        url: http or https URL.
        dest: final path (its directory is created).
        root: a directory above ``dest`` (the share): no component between it and ``dest``
            may be a symbolic link, and neither may the partial file. None: ``dest``'s
            directory is trusted as it is.
        sha256: expected hex digest; None: no check (the digest is still reported).
        report: called with (bytes so far, total bytes or None).
        client: an httpx client (tests); None: a new one with the system CA store.

    Raises:
        UsageError: not an http(s) URL, or a malformed ``sha256``.
        TemporaryError: network failure (run again to resume).
        MlabError: the server refused, or the checksum does not match (the partial file
            is removed).
    """
    if urlsplit(url).scheme not in ("http", "https"):
        raise UsageError(f"URL {audit.redact_url(url)} is not http(s)", hint="use mlab stage git for repositories")
    if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise UsageError("--sha256 must be 64 hex digits")
    # Issue 13, item 8: every path component below ``root`` is opened without following
    # links (a link planted in the share cannot send the download elsewhere).
    base = Path(root) if root is not None else dest.parent
    parts = dest.parent.relative_to(base).parts if root is not None else ()
    dirfd = open_dir_beneath(base, parts)
    try:
        return _download_into(url, dirfd, dest, sha256, report, client)
    finally:
        os.close(dirfd)


def _download_into(url: str, dirfd: int, dest: Path, sha256: str | None,
                   report: Progress | None, client: httpx.Client | None) -> UrlResult:
    part = f".{dest.name}.part"
    own = client is None
    client = client or httpx.Client(follow_redirects=True, timeout=60, verify=_ssl_context())
    digest = hashlib.sha256()
    nofollow = os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        try:
            st = os.stat(part, dir_fd=dirfd, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):  # a planted link or device: never written through
                os.unlink(part, dir_fd=dirfd)
                have = 0
            else:
                have = st.st_size
        except FileNotFoundError:
            have = 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        with client.stream("GET", url, headers=headers) as resp:
            if resp.status_code == 416 and have:  # the partial file is complete or stale
                os.unlink(part, dir_fd=dirfd)
                return _download_into(url, dirfd, dest, sha256, report, client)
            if resp.status_code >= 400:
                raise MlabError(f"GET {audit.redact_url(url)} answered HTTP {resp.status_code}")
            resuming = resp.status_code == 206 and have > 0
            if resuming:
                with os.fdopen(os.open(part, os.O_RDONLY | nofollow, dir_fd=dirfd), "rb") as fh:
                    while chunk := fh.read(CHUNK):
                        digest.update(chunk)
            else:
                have = 0
            length = resp.headers.get("Content-Length")
            total = have + int(length) if length and length.isdigit() else None
            done = have
            flags = os.O_WRONLY | os.O_CREAT | nofollow | (os.O_APPEND if resuming else os.O_TRUNC)
            with os.fdopen(os.open(part, flags, 0o644, dir_fd=dirfd), "wb") as fh:
                for chunk in resp.iter_bytes(CHUNK):
                    fh.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    if report:
                        report(done, total)
                os.fchmod(fh.fileno(), 0o644)
    except httpx.HTTPError as exc:
        raise TemporaryError(
            f"download of {audit.redact_url(url)} failed: {type(exc).__name__}",
            hint="run the same command again to resume",
        ) from None
    finally:
        if own:
            client.close()
    got = digest.hexdigest()
    if sha256 is not None and got != sha256.lower():
        os.unlink(part, dir_fd=dirfd)
        raise MlabError(f"{dest.name}: sha256 is {got}, expected {sha256.lower()}", hint="check the URL and the checksum")
    # rename(2) replaces a link at ``dest`` itself; it never writes through it.
    os.replace(part, dest.name, src_dir_fd=dirfd, dst_dir_fd=dirfd)
    size = os.stat(dest.name, dir_fd=dirfd, follow_symlinks=False).st_size
    return UrlResult(dest, size, got)


def stage_url(
    share: Path,
    url: str,
    *,
    sha256: str | None = None,
    output: str | None = None,
    report: Progress | None = None,
    client: httpx.Client | None = None,
) -> UrlResult:
    """Download ``url`` into the share (see :func:`download`, :func:`target_path`) and audit it."""
    dest = target_path(check_writable(share, "downloads" if output is None else None), url, output)
    result = download(url, dest, sha256=sha256, report=report, client=client, root=Path(share))
    rel = dest.relative_to(share).as_posix()
    audit.record(Path(share), "stage-url", f"{audit.redact_url(url)} -> {rel}", size=result.size, sha256=result.sha256)
    return result


def repo_name(url: str) -> str:
    """A folder name from a repository URL or path (``.../deepvac.git`` -> ``deepvac``) (pure).

    Raises:
        UsageError: no usable name (pass ``--name``).
    """
    tail = url.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    name = tail[:-4] if tail.endswith(".git") else tail
    if not _NAME.match(name):
        raise UsageError(f"cannot take a name from {audit.redact_url(url)}", hint="pass --name NAME")
    return name


def _git(args: list[str], url: str) -> str:
    if not shutil.which("git"):
        raise ToolMissingError("git is not installed", hint="apt-get install git")
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", LC_ALL="C")
    proc = subprocess.run(["git", *args], capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()] or [f"exit {proc.returncode}"]
        last = lines[-1].replace(url, audit.redact_url(url))
        raise MlabError(f"git {args[0]} of {audit.redact_url(url)} failed: {last}")
    return proc.stdout


def stage_git(share: Path, url: str, *, name: str | None = None) -> GitResult:
    """Mirror ``url`` on the Airlock and publish ``<share>/git/<name>.bundle`` (all refs).

    Raises:
        UsageError: the URL starts with ``-`` or ``name`` is not a plain name.
        MlabError: git failed (message without credentials), or the repository is empty.
    """
    if url.startswith("-"):
        raise UsageError(f"URL {url!r} must not start with '-'")
    name = name or repo_name(url)
    if not _NAME.match(name):
        raise UsageError(f"--name {name!r} must be letters, digits, '.', '_' or '-'")
    share = check_writable(share, ".git-mirrors")
    mirrors = ensure_dir(share / ".git-mirrors")
    mirror = mirrors / f"{name}.git"
    if mirror.exists():
        _git(["--git-dir", str(mirror), "remote", "set-url", "origin", "--", url], url)
        _git(["--git-dir", str(mirror), "fetch", "--prune", "--tags", "origin", "+refs/*:refs/*"], url)
    else:
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=mirrors))
        try:
            _git(["clone", "--quiet", "--mirror", "--", url, str(tmp / "repo")], url)
            os.replace(tmp / "repo", mirror)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if not _git(["--git-dir", str(mirror), "for-each-ref", "--count=1"], url).strip():
        raise MlabError(f"repository {audit.redact_url(url)} has no branches or tags to stage")
    head = _git(["--git-dir", str(mirror), "rev-parse", "HEAD"], url).strip()
    out_dir = ensure_dir(share / "git")
    bundle = out_dir / f"{name}.bundle"
    updated = bundle.exists()
    fd, tmp_bundle = tempfile.mkstemp(prefix=f".{name}.", suffix=".bundle", dir=out_dir)
    os.close(fd)
    try:
        _git(["--git-dir", str(mirror), "bundle", "create", "--quiet", tmp_bundle, "--all"], url)
        os.chmod(tmp_bundle, 0o644)
        os.replace(tmp_bundle, bundle)
    except BaseException:
        Path(tmp_bundle).unlink(missing_ok=True)
        raise
    size = bundle.stat().st_size
    digest = hashlib.sha256(bundle.read_bytes()).hexdigest() if size < (1 << 30) else None
    audit.record(share, "stage-git", f"{audit.redact_url(url)}@{head} -> git/{name}.bundle", size=size, sha256=digest)
    return GitResult(bundle, updated, head)
