"""The share's pip repository: wheels in ``<share>/pip-index/files/`` and a PEP 503 simple index.

Layout (docs/CONTRACTS.md "Share layout"; the folder's name is
:data:`mlab.topology.PIP_INDEX_DIR`)::

    pip-index/files/<wheel>                the wheels (never overwritten once published)
    pip-index/simple/index.html            PEP 503 root: one link per project
    pip-index/simple/<project>/index.html  PEP 503 project page: one link per file, with
                                           ``#sha256=`` and ``data-requires-python``; it
                                           is also the state read back for incremental
                                           publishing (:func:`load_project`)
    pip-index/.lock                        held while publishing

The seed's own ``pip/`` folder (``pip download`` there, ``pip install *`` in a HomePod) holds
only what users put there: MLab up to 0.1 kept this tree in ``pip/``, and :func:`migrate`
moves such a tree here (``mlab stage pip``, ``mlab airlock reindex`` and the Airlock's start
run it).

Invariants: ``<project>`` is the PEP 503 normalized name; every link on a page points at a
file that exists and has that hash (files are placed before the pages that name them, and
pages are replaced atomically, after the new wheels and pages are made durable together:
fsync'd in parallel, or one syncfs when there are very many);
publishing holds ``pip-index/.lock`` so two stagings at once both
end up on the pages; versions already published stay (a new staging only adds). A wheel
whose name is already published is kept as it was (its hash may be pinned somewhere).
Regeneration is incremental: only the pages of projects that got a file are rewritten, plus
the root page, so its cost does not grow with the number of wheels already present.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from email.parser import HeaderParser
from pathlib import Path

from filelock import FileLock, Timeout
from packaging.utils import (
    InvalidWheelFilename,
    canonicalize_name,
    parse_wheel_filename,
)

from mlab.airlock.fsutil import (
    ensure_dir,
    exchange_dirs,
    install_file,
    sha256_file,
    sync_filesystem,
    write_many_atomic,
)
from mlab.airlock.pipindex_pages import (
    WheelFile,
    parse_project_html,
    render_project_html,
    render_root_html,
)
from mlab.errors import MlabError, TemporaryError
from mlab.topology import PIP_INDEX_DIR

SMALL_WHEEL = 32 << 20
"""Wheels up to this size (bytes) are read once into memory to hash and inspect."""

LOCK_TIMEOUT = 600.0
"""Seconds a publisher waits for another one to finish before giving up."""


@dataclass
class PublishResult:
    """What :func:`publish` did.

    Attributes:
        added: wheels that are new in the share.
        present: wheels whose file name was already published (kept unchanged).
        projects: normalized names of the projects whose pages were rewritten.
    """

    added: list[WheelFile] = field(default_factory=list)
    present: list[WheelFile] = field(default_factory=list)
    projects: list[str] = field(default_factory=list)


LEGACY_DIR = "pip"
"""Where MLab up to 0.1 kept ``files/`` and ``simple/``: the seed's folder (see :func:`migrate`)."""


def index_dir(share: Path) -> Path:
    """``<share>/pip-index`` (:data:`mlab.topology.PIP_INDEX_DIR`)."""
    return Path(share) / PIP_INDEX_DIR


def simple_dir(share: Path) -> Path:
    """``<share>/pip-index/simple``: the PEP 503 root that pip's ``--index-url`` names."""
    return index_dir(share) / "simple"


def read_wheel(path: Path) -> WheelFile:
    """Inspect a wheel: name, version, hash, size and ``Requires-Python``.

    Raises:
        MlabError: the file name is not a valid wheel name, or the archive is unreadable.
    """
    return inspect_wheel(path)[0]


def inspect_wheel(path: Path, sha256: str | None = None) -> tuple[WheelFile, list[str]]:
    """A wheel's :class:`WheelFile` and its ``Requires-Dist`` lines, from one open.

    Args:
        path: the wheel.
        sha256: its hex digest when the caller has just computed it (a download checked
            against it): the file is then not hashed again, only its METADATA read.

    Raises:
        MlabError: the file name is not a valid wheel name, or the archive is unreadable.
    """
    path = Path(path)
    project, version = _wheel_name(path.name)
    try:
        size = path.stat().st_size
        if sha256 is not None:
            with zipfile.ZipFile(path) as zf:
                requires_python, requires_dist = _metadata(zf)
            digest = sha256
        else:
            # One open and one read for a wheel that fits in memory comfortably: hash it
            # and read its METADATA from the same bytes.
            data = path.read_bytes() if size <= SMALL_WHEEL else None
            digest = hashlib.sha256(data).hexdigest() if data is not None else sha256_file(path)
            with zipfile.ZipFile(io.BytesIO(data) if data is not None else path) as zf:
                requires_python, requires_dist = _metadata(zf)
    except (zipfile.BadZipFile, OSError) as exc:
        raise MlabError(f"wheel {path.name} cannot be read: {exc}") from None
    return WheelFile(path.name, project, version, digest, size, requires_python), requires_dist


def _wheel_name(filename: str) -> tuple[str, str]:
    """(normalized project, version) from a wheel file name (PEP 427, PEP 503).

    Raises:
        MlabError: not a valid wheel file name.
    """
    try:
        name, version, _build, _tags = parse_wheel_filename(filename)
    except InvalidWheelFilename as exc:
        raise MlabError(f"{filename} is not a wheel file name: {exc}") from None
    return str(canonicalize_name(name)), str(version)


def _metadata(zf: zipfile.ZipFile) -> tuple[str | None, list[str]]:
    """(``Requires-Python`` stripped or None, ``Requires-Dist`` lines) of an open wheel."""
    meta = [n for n in zf.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
    if not meta:
        return None, []
    text = zf.read(meta[0]).decode("utf-8", "replace")
    # Only the header block: the body (the long description) was most of the parsing time
    # of a 10,000-wheel rebuild (issue 18).
    headers = HeaderParser().parsestr(text.split("\n\n", 1)[0])
    requires_python = headers.get("Requires-Python")
    return requires_python.strip() if requires_python else None, list(headers.get_all("Requires-Dist") or [])


def load_project(share: Path, project: str) -> list[WheelFile]:
    """The files published for ``project``, read back from its ``index.html`` (empty if none).

    Sizes come from the files in ``pip-index/files/`` (0 for a file that is missing).
    """
    page = _read_page(simple_dir(share) / project / "index.html")
    if page is None:
        return []
    files = index_dir(share) / "files"
    out = []
    for w in parse_project_html(project, page.decode("utf-8", "replace")):
        try:
            size = os.stat(files / w.filename).st_size
        except OSError:
            size = 0
        out.append(WheelFile(w.filename, w.project, w.version, w.sha256, size, w.requires_python))
    return out


OLD_JSON_PAGE = "index.json"
"""A project's PEP 691 page as MLab up to session 5 wrote it beside ``index.html``; removed
when its project's page is rewritten and by a rebuild (nothing reads it any more)."""


def _project_pages(simple: Path, project: str, files: Sequence[WheelFile]) -> list[tuple[Path, str]]:
    pdir = ensure_dir(simple / project)
    return [(pdir / "index.html", render_project_html(project, files))]


def _drop_old_json(pdir: Path | str) -> None:
    try:
        os.unlink(os.path.join(pdir, OLD_JSON_PAGE))
    except FileNotFoundError:
        pass


def _root_page(simple: Path, extra: Iterable[str] = ()) -> tuple[Path, str]:
    projects = [e.name for e in os.scandir(simple) if e.is_dir() and not e.name.startswith(".")]
    return simple / "index.html", render_root_html([*projects, *extra])


def _lock(share: Path) -> FileLock:
    return FileLock(str(ensure_dir(index_dir(share)) / ".lock"), timeout=LOCK_TIMEOUT)


def publish(
    share: Path, wheels: Sequence[Path], report: Callable[[int, int], None] | None = None,
    known: Mapping[Path, WheelFile] | None = None,
) -> PublishResult:
    """Add ``wheels`` to the share's repository and update the index, under the lock.

    Each wheel is moved (or copied) to ``pip-index/files/`` under a temporary name and renamed,
    then each touched project's pages are merged with what is already published and
    replaced atomically, then the root page. A file name already published is left as is.

    Args:
        share: the share root.
        wheels: paths of ``.whl`` files to publish (moved when on the same file system).
        report: called with (wheels done, wheels in all) as publishing proceeds.
        known: wheels already inspected (:func:`inspect_wheel`) by path, not read again.

    Returns:
        What was added and what was already there.

    Raises:
        MlabError: a file is not a readable wheel.
        TemporaryError: another publisher held the lock for :data:`LOCK_TIMEOUT` seconds.
    """
    infos = []
    known = known or {}
    for i, w in enumerate(wheels):
        infos.append((Path(w), known.get(Path(w)) or read_wheel(Path(w))))
        if report:
            report(i + 1, len(wheels))
    root = index_dir(share)
    files_dir = root / "files"
    simple = root / "simple"
    result = PublishResult()
    try:
        with _lock(share):
            _migrate_locked(share)
            ensure_dir(files_dir)
            ensure_dir(simple)
            by_project: dict[str, list[WheelFile]] = {}
            for src, info in infos:
                dest = files_dir / info.filename
                listed = {w.filename: w for w in by_project.setdefault(info.project, load_project(share, info.project))}
                if info.filename in listed and dest.exists():
                    result.present.append(listed[info.filename])
                    continue
                if dest.exists():  # a file without a page entry (an interrupted publish)
                    info = read_wheel(dest)
                else:
                    install_file(src, dest)
                by_project[info.project] = [w for w in by_project[info.project] if w.filename != info.filename]
                by_project[info.project].append(info)
                result.added.append(info)
            touched = sorted({w.project for w in result.added})
            pages = [page for p in touched for page in _project_pages(simple, p, by_project[p])]
            if touched or not (simple / "index.html").exists():
                pages.append(_root_page(simple))
            # one flush to disk for the new wheels and every page, then the renames
            write_many_atomic(pages, durable=[files_dir / w.filename for w in result.added])
            for p in touched:
                _drop_old_json(simple / p)
            result.projects = touched
    except Timeout:
        raise TemporaryError(
            f"another staging holds {root / '.lock'} for more than {LOCK_TIMEOUT:.0f} s",
            hint="wait for it to finish and run the command again",
        ) from None
    return result


def rebuild(share: Path) -> int:
    """Regenerate every page from the wheels in ``pip-index/files/`` (hashes everything).

    For recovery after files were added or removed by hand. Every wheel is read and hashed
    again (a page never trusts an old hash); a wheel's METADATA is unzipped only when its
    hash is not the one its old page lists for its name (that page's
    ``data-requires-python`` is reused otherwise: the pages are a cache keyed by content hash).
    Only pages whose content changes are written: each one atomically (temporary file, one flush for all of them, rename),
    project pages before the root page that links them; then the directories of projects
    that have no wheel any more are removed. A rebuild of an index that is already right
    writes nothing. Without an old tree the pages are written as a new tree with plain
    writes, synced once and renamed into place.

    Why not a whole new tree swapped in: creating 30,000 entries and deleting the old
    30,000 on a shared disk took 18-45 s for 10,000 projects (issue 18); every page is
    still atomic, and each one only links files that exist.

    Returns:
        The number of wheels.

    Raises:
        MlabError: a file in ``pip-index/files/`` is not a readable wheel.
        TemporaryError: another publisher held the lock for :data:`LOCK_TIMEOUT` seconds.
    """
    root = index_dir(share)
    try:
        with _lock(share):
            _migrate_locked(share)
            return _rebuild_locked(share)
    except Timeout:
        raise TemporaryError(
            f"another staging holds {root / '.lock'} for more than {LOCK_TIMEOUT:.0f} s",
            hint="wait for it to finish and run the command again",
        ) from None


def _rebuild_locked(share: Path) -> int:
    root = index_dir(share)
    files_dir = ensure_dir(root / "files")
    simple = root / "simple"
    by_project: dict[str, list[str]] = {}
    parsed: dict[str, tuple[str, str]] = {}
    for name in sorted(e.name for e in os.scandir(files_dir)):
        if name.endswith(".whl") and not name.startswith("."):
            parsed[name] = _wheel_name(name)
            by_project.setdefault(parsed[name][0], []).append(name)
    old: dict[str, bytes | None] = {}
    known: dict[str, WheelFile] = {}
    if simple.is_dir():
        for project in by_project:
            old[project] = _read_page(os.path.join(simple, project, "index.html"))
            known.update(_listed(project, old[project]))
    names = [n for ns in by_project.values() for n in ns]
    infos = dict(zip(names, _read_wheels(str(files_dir), names, known, parsed)))
    wheels = {p: [infos[n] for n in ns] for p, ns in by_project.items()}
    if simple.is_dir():
        _update_pages(simple, wheels, old)
    else:
        _new_tree(root, simple, wheels)
    return len(names)


def _listed(project: str, page: bytes | None) -> dict[str, WheelFile]:
    """Filename -> :class:`WheelFile` from a project's old page (empty if none)."""
    if not page:
        return {}
    return {w.filename: w for w in parse_project_html(project, page.decode("utf-8", "replace"))}


THREADED_WHEEL = 1 << 20
"""Wheels from this size (bytes) up are read and hashed in threads during a rebuild (the reads
and sha256 release the GIL); smaller ones in the calling thread, where threads only fought
over the GIL (250,000 futex calls for 10,000 tiny wheels under strace, issue 18)."""

REBUILD_THREADS = 4
"""Threads reading and hashing the big wheels of a rebuild."""


def _read_wheels(files_dir: str, names: Sequence[str], known: Mapping[str, WheelFile],
                 parsed: Mapping[str, tuple[str, str]]) -> list[WheelFile]:
    """Read and hash every wheel in ``names`` (in ``files_dir``), in order.

    ``parsed``: each name's (normalized project, version) (:func:`_wheel_name`).

    A wheel's METADATA is parsed only when its hash is not the one ``known`` (the old
    pages) lists for its name: the pages are the cache of each file's
    ``Requires-Python``, keyed by content hash, so an unchanged wheel is hashed but not
    unzipped (the zip and header parsing were about a third of a rebuild's CPU, issue 18).
    Files are read with plain ``os.open``/``os.read`` (Python's buffered ``open`` adds an
    ``ioctl`` and two ``lseek`` calls per file).

    Raises:
        MlabError: a wheel is unreadable.
    """
    def one(name: str, defer_big: bool = False) -> WheelFile | None:
        path = os.path.join(files_dir, name)
        project, version = parsed[name]
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                size = os.fstat(fd).st_size
                if defer_big and size >= THREADED_WHEEL:
                    return None
                data = _read_fd(fd, size) if size <= SMALL_WHEEL else None
            finally:
                os.close(fd)
            digest = hashlib.sha256(data).hexdigest() if data is not None else sha256_file(Path(path))
            cached = known.get(name)
            if cached is not None and cached.sha256 == digest:
                return WheelFile(name, project, version, digest, size, cached.requires_python)
            with zipfile.ZipFile(io.BytesIO(data) if data is not None else path) as zf:
                requires_python = _metadata(zf)[0]
        except (zipfile.BadZipFile, OSError) as exc:
            raise MlabError(f"wheel {name} cannot be read: {exc}") from None
        return WheelFile(name, project, version, digest, size, requires_python)

    done = {n: one(n, defer_big=True) for n in names}
    big = [n for n, info in done.items() if info is None]
    if len(big) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(REBUILD_THREADS, len(big))) as pool:
            done.update(zip(big, pool.map(one, big)))
    else:
        done.update((n, one(n)) for n in big)
    return [w for w in done.values() if w is not None]


def _read_fd(fd: int, size: int) -> bytes:
    """All ``size`` bytes of an open file (several reads if the kernel returns fewer)."""
    data = os.read(fd, size)
    while len(data) < size:
        more = os.read(fd, size - len(data))
        if not more:
            break
        data += more
    return data


def migrate(share: Path) -> list[str]:
    """Move an index tree left in the seed's ``pip/`` folder (MLab up to 0.1) to ``pip-index/``.

    Idempotent and cheap when there is nothing to move (two ``stat`` calls). The common
    case, a share that has only the old tree, is two renames (``files/`` then ``simple/``,
    whose relative links ``../../files/<wheel>`` stay right), so nothing is hashed again.
    When both places hold a tree (an interrupted move, or an older Airlock staging after
    the move), the old wheels join the new ``files/`` (a name already there is kept as it
    is, its old copy dropped: a published name is never overwritten), the old pages are
    dropped and every page is rebuilt from the wheels. Anything else in ``pip/`` (the
    users' own downloads) is left alone.

    Returns:
        What moved, e.g. ``["pip/files -> pip-index/files", "pip/simple -> pip-index/simple"]``;
        empty when there was nothing to move.

    Raises:
        MlabError: a wheel in the old tree is unreadable (during the rebuild).
        OSError: the share cannot be written (a HomePod's read-only mount).
        TemporaryError: another publisher held the lock for :data:`LOCK_TIMEOUT` seconds.
    """
    if not _legacy_trees(share):
        return []
    try:
        with _lock(share):
            return _migrate_locked(share)
    except Timeout:
        raise TemporaryError(
            f"another staging holds {index_dir(share) / '.lock'} for more than {LOCK_TIMEOUT:.0f} s",
            hint="wait for it to finish and run the command again",
        ) from None


def _legacy_trees(share: Path) -> list[str]:
    old = Path(share) / LEGACY_DIR
    return [n for n in ("files", "simple") if (old / n).is_dir() and not (old / n).is_symlink()]


def _migrate_locked(share: Path) -> list[str]:
    """:func:`migrate`'s work; the caller holds the lock."""
    names = _legacy_trees(share)
    if not names:
        return []
    old, new = Path(share) / LEGACY_DIR, index_dir(share)
    moved, merged = [], False
    for name in names:  # "files" first: pages never link a wheel that is not there
        src, dest = old / name, new / name
        if not os.path.lexists(dest):
            os.rename(src, dest)
        elif name == "files":
            for entry in os.scandir(src):
                if os.path.lexists(dest / entry.name):
                    _remove(Path(entry.path))
                else:
                    os.rename(entry.path, dest / entry.name)
            os.rmdir(src)
            merged = True
        else:
            shutil.rmtree(src)
            merged = True
        moved.append(f"{LEGACY_DIR}/{name} -> {PIP_INDEX_DIR}/{name}")
    if merged or not (new / "simple").is_dir():  # pages for exactly the wheels now there
        _rebuild_locked(share)
    return moved


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _new_tree(root: Path, simple: Path, by_project: Mapping[str, Sequence[WheelFile]]) -> None:
    """Write every page as a new tree (plain writes), sync once, rename it to ``simple``."""
    fresh = Path(tempfile.mkdtemp(prefix=".simple-rebuild-", dir=root))
    try:
        os.chmod(fresh, 0o755)
        base = str(fresh)
        for project, files in by_project.items():
            pdir = os.path.join(base, project)
            os.mkdir(pdir, 0o755)
            _write_new(os.path.join(pdir, "index.html"), render_project_html(project, files))
        _write_new(os.path.join(base, "index.html"), render_root_html(by_project))
        sync_filesystem(fresh)
        if exchange_dirs(fresh, simple):  # a tree appeared meanwhile (not under our lock)
            shutil.rmtree(fresh, ignore_errors=True)
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise


def _write_new(path: str, text: str) -> None:
    """Create ``path`` with ``text`` (UTF-8): three system calls, no buffering layer."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        data = text.encode()
        while data:
            data = data[os.write(fd, data):]
    finally:
        os.close(fd)


def _read_page(path: Path | str) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return _read_fd(fd, os.fstat(fd).st_size)
    except OSError:
        return None
    finally:
        os.close(fd)


def _update_pages(simple: Path, by_project: Mapping[str, Sequence[WheelFile]],
                  old: Mapping[str, bytes | None]) -> None:
    """Rewrite the pages under ``simple`` that differ from ``by_project``; drop stale projects.

    ``old``: each project's current ``index.html`` bytes, None if missing. A project's
    old JSON page (:data:`OLD_JSON_PAGE`) is removed.
    """
    changed: list[tuple[Path, bytes]] = []
    for project, files in by_project.items():
        pdir = simple / project
        data = render_project_html(project, files).encode()
        if old.get(project) != data:
            ensure_dir(pdir)
            changed.append((pdir / "index.html", data))
    root_text = render_root_html(by_project).encode()
    if _read_page(simple / "index.html") != root_text:
        changed.append((simple / "index.html", root_text))
    # project pages first, the root page that links them last (renamed in this order)
    write_many_atomic(changed)
    for entry in os.scandir(simple):
        if not entry.is_dir(follow_symlinks=False) or entry.name.startswith("."):
            continue
        if entry.name not in by_project:
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            _drop_old_json(entry.path)


def published(share: Path) -> dict[str, list[WheelFile]]:
    """Every published file, by normalized project name (from the project pages)."""
    simple = simple_dir(share)
    if not simple.is_dir():
        return {}
    return {
        e.name: load_project(share, e.name)
        for e in os.scandir(simple)
        if e.is_dir() and not e.name.startswith(".")
    }
