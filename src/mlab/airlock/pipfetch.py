"""Exactly pip's choices, fetched in parallel: ``pip install --dry-run --report``, then the files.

pip resolves (it reads only metadata: PEP 658 ``.metadata`` files where the index serves
them, so the resolution downloads little) and writes an installation report
(https://pip.pypa.io/en/stable/reference/installation-report/) naming, for every chosen
distribution, the URL of the file and its sha256. The files are then fetched several at
once (pip downloads one after the other), each into a temporary name beside its final one,
hashed while it arrives, compared with pip's hash and only then renamed: a file that does
not match is an error naming it, never a staged wheel.

This pays only where the index serves wheel metadata apart (PEP 658/714): otherwise pip's
resolve downloads every wheel whole, one after the other, and a second download only adds.
:func:`serves_metadata` probes the index; ``MLAB_STAGE_PARALLEL`` (:data:`PARALLEL_ENV`)
forces the choice.

What the report cannot serve this way is left to pip, pinned to pip's choice: a wheel
whose download fails here (an index that needs pip's credentials) is fetched with
``pip download --no-deps NAME @ URL``; a report without a URL and a hash for some item (a
VCS link, a local directory) makes the caller fall back to plain ``pip download``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from mlab.errors import MlabError

FETCH_THREADS = 6
"""Files downloaded at once (PyPI's CDN serves each connection at a fraction of the link)."""

CHUNK = 1 << 20
"""Bytes read and hashed at a time."""

TIMEOUT = 60.0
"""Seconds without progress before a download fails (then pip tries it)."""


@dataclass(frozen=True)
class Chosen:
    """One distribution pip chose (an ``install`` item of its report).

    Attributes:
        name: the project name as its metadata spells it.
        version: the version from its metadata.
        url: where pip found the file (``https://`` or ``file://``).
        sha256: hex digest pip knows the file by, or None.
    """

    name: str
    version: str
    url: str
    sha256: str | None

    @property
    def filename(self) -> str:
        """The file's name: the last component of the URL's path, unquoted."""
        return unquote(urlsplit(self.url).path.rsplit("/", 1)[-1])

    @property
    def fetchable(self) -> bool:
        """True for a wheel with a hash at an ``https``/``http``/``file`` URL."""
        return bool(self.sha256) and self.filename.endswith(".whl") and \
            urlsplit(self.url).scheme in ("https", "http", "file")


def parse_report(doc: dict) -> list[Chosen] | None:
    """The distributions of a pip installation report (version 1), in report order (pure).

    Returns:
        One :class:`Chosen` per ``install`` item; None when an item is not an archive
        (a VCS checkout or a local directory: no single file to fetch).

    Raises:
        MlabError: the document is not a version 1 report.
    """
    if str(doc.get("version")) != "1" or not isinstance(doc.get("install"), list):
        raise MlabError(f"pip's installation report has version {doc.get('version')!r}, expected 1",
                        hint="use pip >= 23.0 in the Airlock's environment")
    out: list[Chosen] = []
    for item in doc["install"]:
        info = item.get("download_info") or {}
        archive = info.get("archive_info")
        if not info.get("url") or archive is None:
            return None
        sha = (archive.get("hashes") or {}).get("sha256")
        if sha is None and str(archive.get("hash", "")).startswith("sha256="):
            sha = archive["hash"].split("=", 1)[1]
        meta = item.get("metadata") or {}
        out.append(Chosen(meta.get("name", ""), meta.get("version", ""), info["url"], sha))
    return out


def resolve(run_pip: Callable[[list[str]], object], args: Sequence[str]) -> list[Chosen] | None:
    """Let pip choose: ``pip install --dry-run --ignore-installed --report FILE ARGS``.

    ``--ignore-installed`` makes pip choose as ``pip download`` does (as if nothing were
    installed); ``ARGS`` carry the sources, the target options and the requirements.

    Args:
        run_pip: runs ``pip ARGV`` (raising :class:`MlabError` on failure), e.g.
            :func:`mlab.airlock.pip._run_pip` with its progress report bound.
        args: pip options and requirements.

    Returns:
        pip's choices (:func:`parse_report`), or None when some are not single files.

    Raises:
        MlabError: pip failed (from ``run_pip``), or wrote no readable report.
    """
    with tempfile.TemporaryDirectory(prefix="mlab-pip-report-") as tmp:
        path = Path(tmp) / "report.json"
        run_pip(["install", "--dry-run", "--ignore-installed", "--root-user-action", "ignore",
                 "--report", str(path), *args])
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise MlabError(f"pip wrote no readable installation report: {exc}") from None
    return parse_report(doc)


class HashMismatch(MlabError):
    """A fetched file's sha256 is not the one pip chose it by."""


def download(chosen: Sequence[Chosen], dest: Path, threads: int = FETCH_THREADS,
             started: Callable[[str], None] | None = None) -> tuple[dict[str, str], list[Chosen]]:
    """Fetch ``chosen`` (each :attr:`Chosen.fetchable`) into ``dest``, several at once.

    Each file goes to a dot-named temporary file in ``dest``, hashed as it arrives, and is
    renamed to its name only when the hash is pip's. HTTP(S) goes through httpx (proxies
    from the environment, as pip's own downloads); ``file://`` URLs are copied.

    Args:
        chosen: the files to fetch.
        dest: an existing folder.
        threads: downloads at once.
        started: called with each project name when its download starts (progress).

    Returns:
        (file name -> verified sha256 of every file now in ``dest``, the items that could
        not be fetched here (network or HTTP errors), to be left to pip).

    Raises:
        HashMismatch: a file arrived with another hash (nothing of it is left in ``dest``).
    """
    if not chosen:
        return {}, []
    client = None
    if any(urlsplit(c.url).scheme != "file" for c in chosen):
        import httpx  # only when something is remote (its import costs about 0.1 s)

        client = httpx.Client(follow_redirects=True, timeout=TIMEOUT, trust_env=True)

    def one(item: Chosen) -> tuple[Chosen, str | None]:
        if started:
            started(item.name)
        fd, tmp = tempfile.mkstemp(prefix=f".{item.filename}.", suffix=".part", dir=dest)
        try:
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as out, _source(item.url, client) as chunks:
                for chunk in chunks:
                    digest.update(chunk)
                    out.write(chunk)
            got = digest.hexdigest()
            if got != item.sha256:
                raise HashMismatch(
                    f"{item.filename} from {item.url} has sha256 {got}, not {item.sha256} as pip chose it",
                    hint="the index or a proxy served other content than it lists; nothing was staged",
                )
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest / item.filename)
            return item, got
        except HashMismatch:
            raise
        except Exception:  # noqa: BLE001 (network, HTTP, file errors: pip tries this one)
            return item, None
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    from concurrent.futures import ThreadPoolExecutor

    try:
        with ThreadPoolExecutor(max(1, min(threads, len(chosen)))) as pool:
            results = list(pool.map(one, chosen))
    finally:
        if client is not None:
            client.close()
    hashes = {item.filename: got for item, got in results if got is not None}
    return hashes, [item for item, got in results if got is None]


@contextmanager
def _source(url: str, client: Any) -> Iterator[Iterator[bytes]]:
    """The bytes at ``url`` in chunks of :data:`CHUNK`: a ``file://`` URL read from disk,
    anything else streamed through ``client`` (an ``httpx.Client``; HTTP errors raise)."""
    if urlsplit(url).scheme == "file":
        with open(unquote(urlsplit(url).path), "rb") as src:
            yield iter(lambda: src.read(CHUNK), b"")
    else:
        with client.stream("GET", url) as resp:
            resp.raise_for_status()
            yield resp.iter_bytes(CHUNK)


PARALLEL_ENV = "MLAB_STAGE_PARALLEL"
"""Environment variable forcing the choice: ``1`` always resolve with the report and fetch in
parallel, ``0`` always plain ``pip download``; unset: :func:`serves_metadata` decides."""


def forced() -> bool | None:
    """The choice :data:`PARALLEL_ENV` forces (``1`` True, ``0`` False), or None when unset."""
    value = os.environ.get(PARALLEL_ENV)
    return value == "1" if value in ("0", "1") else None


def worth_it(index_url: str | None, project: str | None) -> bool:
    """Whether to resolve with the report and fetch in parallel rather than ``pip download``.

    :data:`PARALLEL_ENV` (``1``/``0``) decides when set. Otherwise only for an index over
    HTTP(S) that serves wheel metadata apart (:func:`serves_metadata`, probed on the first
    requirement's page): from local folders only pip's resolve with the report's hashes
    alone took more CPU (1.17 s) than its whole ``pip download`` (0.98 s), and without PEP
    658 the resolve downloads every wheel whole, so a second download only adds (issue 18).

    Args:
        index_url: the first index reached over HTTP(S); None with ``--no-index`` or only
            local indexes.
        project: the first requirement's name; None when there is none on the command line.
    """
    if (choice := forced()) is not None:
        return choice
    if index_url is None or project is None:
        return False
    return serves_metadata(index_url, project)


class Probe:
    """:func:`serves_metadata` asked in a thread, so that ``pip download`` starts meanwhile.

    The probe took 0.25-0.7 s before pip could start (issue 18); now the caller starts
    ``pip download`` at once and stops it only if the index turns out to serve metadata
    (:meth:`answer` True), which this machine's PyPI never does.
    """

    def __init__(self, index_url: str, project: str) -> None:
        import threading

        self._answer: bool = False
        self._thread = threading.Thread(target=self._run, args=(index_url, project), daemon=True,
                                        name="mlab-index-probe")
        self._thread.start()

    def _run(self, index_url: str, project: str) -> None:
        try:
            self._answer = serves_metadata(index_url, project)
        except Exception:  # noqa: BLE001 (any failure means: no metadata, plain pip download)
            self._answer = False

    def answer(self, timeout: float | None = None) -> bool:
        """True when the index serves wheel metadata apart; False too when still unknown
        after ``timeout`` seconds."""
        self._thread.join(timeout)
        return self._answer and not self._thread.is_alive()


def serves_metadata(index_url: str, project: str) -> bool:
    """True when the index serves wheel metadata apart (PEP 658/714) for ``project``.

    Without it pip's resolve downloads every wheel whole (also with ``--dry-run``), so
    fetching the chosen files again in parallel costs more than plain ``pip download``
    (issue 18: the PyPI this machine reaches serves no ``core-metadata``; the resolve alone
    took 5.9 s where ``pip download`` took 3.8 s). One request for the project's simple
    page (PEP 691 JSON where the index offers it); any failure means False.

    Args:
        index_url: the simple index root, e.g. ``https://pypi.org/simple``.
        project: a project name (normalized here).
    """
    import httpx
    from packaging.utils import canonicalize_name

    url = f"{index_url.rstrip('/')}/{canonicalize_name(project)}/"
    try:
        resp = httpx.get(url, follow_redirects=True, timeout=10.0, headers={
            "Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"})
        resp.raise_for_status()
    except httpx.HTTPError:
        return False
    if "json" in resp.headers.get("content-type", ""):
        try:
            files = resp.json().get("files", [])
        except ValueError:
            return False
        return files_have_metadata(files)
    return "data-core-metadata=" in resp.text or "data-dist-info-metadata=" in resp.text


def files_have_metadata(files: Iterable[dict]) -> bool:
    """True when a PEP 691 page's ``files`` offer some wheel's metadata apart (PEP 658/714
    ``core-metadata``, or its older name ``dist-info-metadata``) (pure)."""
    return any(str(f.get("filename", "")).endswith(".whl")
               and bool(f.get("core-metadata") or f.get("dist-info-metadata")) for f in files)
