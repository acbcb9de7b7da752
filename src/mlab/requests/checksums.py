"""Streaming sha256: hash while copying, and stage export files into a HomePod outbox.

Invariant: files are read once, in :data:`CHUNK` pieces, so memory stays flat for files of
any size (exports of several GiB are normal); every copy goes to a temporary name in the
destination directory and is renamed into place only once complete, and a failed staging
removes the whole request directory, so an outbox never holds a half-written export.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mlab.errors import MlabError, UsageError

CHUNK = 1024 * 1024
"""Bytes read per step (1 MiB)."""

Progress = Callable[[int], None]
"""Called with the number of bytes just processed."""


def sha256_stream(read: Callable[[int], bytes], write: Callable[[bytes], object] | None = None,
                  progress: Progress | None = None) -> tuple[int, str]:
    """Hash everything ``read`` yields until EOF, optionally writing each chunk on.

    Returns:
        ``(size in bytes, sha256 as 64 lower-case hex digits)``.
    """
    digest = hashlib.sha256()
    size = 0
    while True:
        chunk = read(CHUNK)
        if not chunk:
            break
        digest.update(chunk)
        if write is not None:
            write(chunk)
        size += len(chunk)
        if progress is not None:
            progress(len(chunk))
    return size, digest.hexdigest()


def sha256_file(path: str | Path, progress: Progress | None = None) -> tuple[int, str]:
    """Size and sha256 of one file, streamed. Raises OSError when unreadable."""
    with open(path, "rb") as fh:
        return sha256_stream(fh.read, progress=progress)


def copy_hashed(src: str | Path, dst: str | Path, progress: Progress | None = None) -> tuple[int, str]:
    """Copy ``src`` to ``dst`` (temp file + rename) and hash it on the way; mode 0644.

    Returns:
        ``(size, sha256)`` of the bytes written, which are exactly the bytes read.
    """
    dst = Path(dst)
    tmp = dst.with_name(f".{dst.name}.part")
    try:
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            result = sha256_stream(fin.read, fout.write, progress)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return result


@dataclass(frozen=True)
class Source:
    """One regular file to export: where it is and its path inside the export."""

    src: Path
    relpath: str
    size: int


def collect_sources(paths: list[str] | list[Path]) -> list[Source]:
    """Expand files and directories given on the command line into files to export.

    A file ``x/a.bin`` becomes ``a.bin``; a directory ``runs/r1`` becomes ``r1/...`` with its
    tree. Symbolic links to files are exported as the file they point to; links to
    directories, sockets, devices and FIFOs are refused (a link loop or a device would never
    end).

    Raises:
        UsageError: a path is missing, special, or two arguments have the same base name.
    """
    if not paths:
        raise UsageError("PATH: give at least one file or directory to export")
    out: list[Source] = []
    seen: dict[str, str] = {}
    for arg in paths:
        path = Path(arg)
        if not path.exists():
            raise UsageError(f"{arg}: no such file or directory")
        name = path.resolve().name if path.name in ("", ".", "..") else path.name
        if name in seen:
            raise UsageError(
                f"{arg}: its name {name!r} is also that of {seen[name]}; rename one of them"
            )
        seen[name] = str(arg)
        if path.is_dir() and not path.is_symlink():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for d in dirs:
                    if os.path.islink(os.path.join(root, d)):
                        raise UsageError(
                            f"{os.path.join(root, d)}: a link to a directory; export its target"
                        )
                for fname in sorted(files):
                    full = Path(root) / fname
                    rel = f"{name}/{full.relative_to(path).as_posix()}"
                    out.append(_source(full, rel))
        else:
            out.append(_source(path, name))
    return out


def _source(path: Path, rel: str) -> Source:
    try:
        st = path.stat()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read it: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{path}: not a regular file or directory; only files are exported")
    return Source(path, rel, st.st_size)


def stage_export(
    sources: list[Source], outbox: Path, name: str, progress: Progress | None = None
) -> list[dict[str, object]]:
    """Copy ``sources`` into ``outbox/name/`` and return the file list for the request.

    Args:
        sources: from :func:`collect_sources`.
        outbox: the user's outbox (``/opt/outbox`` in a HomePod).
        name: the request's directory name (one path component, new).
        progress: called with bytes copied.

    Returns:
        ``[{"path": relpath, "size": bytes, "sha256": hex}, ...]`` in ``sources`` order.

    Raises:
        MlabError: the outbox is missing or not writable, or a copy failed; the request
            directory is removed again.
    """
    if not outbox.is_dir():
        raise MlabError(
            f"{outbox}: the outbox does not exist",
            hint="exports run in a HomePod; set MLAB_OUTBOX to another outbox directory",
        )
    target = outbox / name
    try:
        target.mkdir(mode=0o755)
    except OSError as exc:
        raise MlabError(f"{target}: cannot create the export directory: {exc.strerror}") from None
    files: list[dict[str, object]] = []
    try:
        os.chmod(target, 0o755)
        for source in sources:
            dst = target / source.relpath
            for parent in reversed(dst.relative_to(target).parents[:-1]):
                (target / parent).mkdir(mode=0o755, exist_ok=True)
            size, digest = copy_hashed(source.src, dst, progress)
            files.append({"path": source.relpath, "size": size, "sha256": digest})
    except OSError as exc:
        shutil.rmtree(target, ignore_errors=True)
        raise MlabError(f"{exc.filename or target}: copy into the outbox failed: {exc.strerror}") from None
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return files
