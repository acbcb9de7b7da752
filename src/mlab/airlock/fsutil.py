"""Small file-system helpers: atomic writes and hashing.

Invariant: a reader of the share sees either the old or the new content of a file, never
a partial one: content goes to a temporary file in the same directory (same file system),
is flushed, made world-readable (HomePod users read the share with other uids) and then
renamed over the target with ``os.replace`` (atomic on POSIX, rename(2)).
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from mlab.atomic import write_atomic  # noqa: F401  (the share modules import it from here)

CHUNK = 1 << 20
"""Read size for hashing and copying: 1 MiB."""


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sync_filesystem(path: Path) -> None:
    """Make everything written so far on the file system holding ``path`` durable.

    One ``syncfs(2)`` call (Linux) flushes that file system only; where it is missing,
    ``sync(2)`` flushes all of them. One call after many plain writes replaces an
    ``fsync`` per file (issue 18: two fsync'd pages per project made a 10,000-project
    index rebuild take 20 s on a quiet disk and 140 s on a busy one).
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        syncfs = load_syncfs()
        if syncfs is None or syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


@functools.cache
def load_syncfs():  # type: ignore[no-untyped-def]
    """libc's ``syncfs`` through ctypes, or None; loaded on first use (importing ctypes
    cost 25-40 ms of every ``mlab stage`` start, issue 18)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


FSYNC_EACH_UP_TO = 256
"""Files made durable by one :func:`write_many_atomic` call with an ``fsync`` each (in
parallel threads); more are flushed by one :func:`sync_filesystem`."""

FSYNC_THREADS = 16
"""fsync calls in flight at once: the file system commits concurrent ones together."""


def fsync_paths(paths: Sequence[Path | str]) -> None:
    """``fsync`` every file in ``paths``, several at once (threads; fsync releases the GIL).

    Why not one ``syncfs``: that waits for everything dirty on the file system, other
    programs' writes too; on this shared disk it took 0.2-2.3 s where fsyncs of just the
    17 wheels and 35 pages of a staging took 0.05-0.5 s (median of pairs 0.45x; issue 18).
    """
    def one(path: Path | str) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    if len(paths) <= 1:
        for path in paths:
            one(path)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(FSYNC_THREADS, len(paths))) as pool:
        list(pool.map(one, paths))


def write_many_atomic(items: Sequence[tuple[Path, bytes | str]], mode: int = 0o644,
                      durable: Sequence[Path] = ()) -> None:
    """Write several files, each atomically, with one flush to disk for all of them.

    Each content goes to a temporary file beside its target, then made durable, then every
    temporary file is renamed over its target. A crash leaves each target old or new, never
    partial. Durable: up to :data:`FSYNC_EACH_UP_TO` files (with ``durable``) are fsync'd,
    several at once (:func:`fsync_paths`); more are flushed by one :func:`sync_filesystem`,
    whose cost does not grow with the number of files but includes whatever else is
    waiting to be written on that file system.

    Args:
        items: (target path, content) pairs; all on one file system, parents existing.
        mode: permission bits of the written files.
        durable: files already in place (e.g. the wheels the pages link) made durable in
            the same flush, before any target is renamed.
    """
    temps: list[tuple[str, Path]] = []
    try:
        for path, data in items:
            path = Path(path)
            raw = data.encode() if isinstance(data, str) else data
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            temps.append((tmp, path))
            with os.fdopen(fd, "wb") as fh:
                fh.write(raw)
            os.chmod(tmp, mode)
        flush = [tmp for tmp, _ in temps] + [str(p) for p in durable]
        if len(flush) > FSYNC_EACH_UP_TO:
            sync_filesystem(temps[0][1].parent if temps else Path(durable[0]).parent)
        else:
            fsync_paths(flush)
        for tmp, path in temps:
            os.replace(tmp, path)
        temps = []
    finally:
        for tmp, _ in temps:
            Path(tmp).unlink(missing_ok=True)


_RENAME_EXCHANGE = 2
"""``renameat2(2)`` flag: swap two paths atomically (Linux 3.15+)."""


def exchange_dirs(new: Path, current: Path) -> bool:
    """Swap directory ``new`` with ``current`` atomically; afterwards ``new`` holds the old one.

    Uses ``renameat2(RENAME_EXCHANGE)``, so a reader sees the old or the new tree, never
    none. When ``current`` does not exist, ``new`` is simply renamed to it. Where the call
    is missing (not Linux, a file system without it), the old tree is renamed aside first,
    leaving a moment with no tree.

    Returns:
        True when an old tree is now at ``new`` (to delete), False when there was none.
    """
    if not os.path.lexists(current):
        os.rename(new, current)
        return False
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    at_fdcwd = -100
    if renameat2 is not None and renameat2(
        at_fdcwd, os.fsencode(new), at_fdcwd, os.fsencode(current), _RENAME_EXCHANGE
    ) == 0:
        return True
    aside = Path(f"{new}.old")
    os.rename(current, aside)
    os.rename(new, current)
    os.rename(aside, new)
    return True


def install_file(src: Path, dest: Path, mode: int = 0o644) -> None:
    """Move or copy ``src`` to ``dest`` atomically; ``dest`` never exists half-written.

    ``src`` is renamed when it is on the same file system, else copied to a temporary name
    beside ``dest`` first.
    """
    dest = Path(dest)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    try:
        try:
            os.replace(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def ensure_dir(path: Path, mode: int = 0o755) -> Path:
    """Create ``path`` (and parents) readable by everyone; return it."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True, mode=mode)
    return path


def check_writable(share: Path, sub: str | None = None) -> Path:
    """Return ``share`` after making sure staging can write there (the share is created if missing).

    When the folder ``share/sub`` (a top-level folder such as ``pip``) exists it is probed
    instead of the share root, so staging works when the root is root's (an SFTP chroot
    account, docs/airlock.md) while the folder is the Airlock user's. A missing folder is
    not created here (a refused request leaves nothing behind); the root is probed.

    Raises:
        MlabError: the share cannot be created or written (a HomePod mounts it read-only).
    """
    from mlab.errors import MlabError

    share = Path(share)
    target = share / sub if sub and (share / sub).is_dir() else share
    try:
        share.mkdir(parents=True, exist_ok=True)
        probe = target / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise MlabError(
            f"the share {target} is not writable: {exc.strerror}",
            hint="staging runs on the Airlock (in a HomePod the share is read-only); or pass --share DIR",
        ) from None
    return share


def open_dir_beneath(root: Path, parts: tuple[str, ...], mode: int = 0o755) -> int:
    """Open ``root/parts...`` as a directory without following any symbolic link below
    ``root``, creating missing directories; returns the directory's file descriptor.

    Every component is opened relative to its parent's descriptor with ``O_NOFOLLOW``, so
    a link planted anywhere in the (world-writable) share cannot redirect a write outside
    it, and swapping a directory for a link after the check changes nothing (the
    descriptor stays on the directory that was opened). The caller closes the descriptor.

    Raises:
        MlabError: a component is a symbolic link or not a directory.
    """
    from mlab.errors import MlabError

    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts:
            try:
                try:
                    nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                except FileNotFoundError:
                    os.mkdir(part, mode, dir_fd=fd)
                    nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except (NotADirectoryError, OSError) as exc:
                if isinstance(exc, FileNotFoundError):
                    raise
                raise MlabError(
                    f"{part!r} under {root} is a symbolic link or not a directory; refusing "
                    "to write through it", hint="remove it from the share or choose another -o"
                ) from None
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise
