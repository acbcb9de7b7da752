"""A loopback index that shows pip only the files it could choose on this interpreter.

Where pip's time goes (issue 18, session 7: cProfile of ``pip download`` of numpy, pandas,
scikit-learn, requests, tqdm and pillow from PyPI, fresh cache): not the downloads (the
17 wheels, 80 MB, arrive in 0.6 s here, one at a time or six at once) but reading the
project pages: 19,692 links parsed (``Link.from_json``) and evaluated
(``LinkEvaluator.evaluate_link``: each wheel's tags against the ~900 this interpreter
supports), three quarters of pip's run. numpy's page alone lists about 2,000 files, nearly
all for other interpreters and platforms.

So ``mlab stage pip`` points pip at this server (``--index-url http://127.0.0.1:PORT/simple``)
instead of the upstream index: each project page is fetched from upstream as PEP 691 JSON
(https://peps.python.org/pep-0691/) and served with the wheels whose tags are none of the
interpreter's left out. Nothing else changes: every sdist, every file whose name is not a
wheel name this code can read, every wheel with one supported tag stays, with its entry as
upstream wrote it (URL made absolute, hashes, ``requires-python``, ``yanked``, metadata).
A wheel left out is one pip rejects at once ("none of the wheel's tags are compatible"),
so pip's candidates, and its choices, are the same; the tags are the union of pip's own
(``pip._vendor.packaging``, the rule pip applies) and ``packaging``'s, so a disagreement
between the two keeps a file rather than drops it. Files are downloaded by pip from
upstream's URLs, directly. A page upstream serves as HTML (no PEP 691), or an error, is
answered with a redirect to the upstream page: pip then reads it as it would have.

Used only for the local interpreter and one index reached over HTTP(S) without
credentials in its URL (:func:`usable`); ``tests/airlock/test_airlock_pipnarrow.py`` checks
against real PyPI that ``pip download`` through it saves the same files, byte for byte.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urljoin, urlsplit

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
"""PEP 691's content type, version 1."""

_PROJECT_PATH = re.compile(r"^/simple/([a-z0-9][a-z0-9._-]*)/?$", re.IGNORECASE)
"""The only requests answered: a project page (PEP 503 names), mapped onto upstream's."""

PREFETCH_THREADS = 6
"""Pages of the named requirements fetched at once when the server starts."""

POLL_SECONDS = 0.02
"""How often the server loop looks for its stop: leaving takes up to this long (the
default 0.5 s cost 0.33 s at the end of every staging)."""

UPSTREAM_TIMEOUT = 30.0
"""Seconds to wait for an upstream page before letting pip fetch it itself (a redirect)."""


def _canonical(name: str) -> str:
    """PEP 503's normalized name (``packaging.utils.canonicalize_name``)."""
    from packaging.utils import canonicalize_name

    return str(canonicalize_name(name))


NARROW_ENV = "MLAB_STAGE_NARROW"
"""Environment variable: ``0`` makes pip read the index itself (no narrowed server)."""


def usable(index_url: str, extra_index_urls: Iterable[str], no_index: bool) -> bool:
    """Whether pip's index can be narrowed: one index over HTTP(S), no user or password in
    its URL (pip would send them to the file hosts too; httpx would not), not ``--no-index``,
    and :data:`NARROW_ENV` not ``0``.
    """
    if no_index or tuple(extra_index_urls) or os.environ.get(NARROW_ENV) == "0":
        return False
    parts = urlsplit(index_url)
    return parts.scheme in ("http", "https") and not parts.username and not parts.password


def supported_tags() -> frozenset[str]:
    """The interpreter's wheel tags as ``py-abi-plat`` strings: pip's own list (the rule
    ``pip download`` applies, from ``pip._vendor.packaging.tags``) joined with
    ``packaging``'s (they differ by a tag or so between versions)."""
    from packaging import tags

    out = {str(t) for t in tags.sys_tags()}
    try:
        from pip._vendor.packaging import tags as pip_tags

        out |= {str(t) for t in pip_tags.sys_tags()}
    except ImportError:  # pragma: no cover (pip is a dependency of the venv)
        pass
    return frozenset(out)


def wheel_fits(filename: str, supported: frozenset[str]) -> bool:
    """False only for a wheel none of whose tags is in ``supported`` (pure).

    The tags are the last three dash-separated fields of the name (PEP 427), each possibly a
    dot-separated set; a name with fewer fields is kept (pip decides on it). Not
    ``packaging.utils.parse_wheel_filename``: it also parses and validates the name and the
    version, 4.3 us a file against 1.4 us here, and this runs on every file of every page
    (about 20,000 for the six-package set, session 7); a name it would reject is kept here.
    """
    if not filename.endswith(".whl"):
        return True
    fields = filename[:-4].split("-")
    if len(fields) < 5:
        return True
    pys, abis, plats = (f.split(".") for f in fields[-3:])
    return any(f"{py}-{abi}-{plat}" in supported for py in pys for abi in abis for plat in plats)


def narrow_page(doc: dict[str, Any], page_url: str, supported: frozenset[str]) -> dict[str, Any]:
    """A PEP 691 project page without the wheels that cannot install here (pure).

    Args:
        doc: the page as upstream sent it.
        page_url: the URL it came from (relative file URLs are made absolute against it).
        supported: :func:`supported_tags`.

    Returns:
        The same page with ``files`` filtered, each kept entry unchanged but its ``url``.
    """
    files = []
    for entry in doc.get("files", []):
        if not wheel_fits(str(entry.get("filename", "")), supported):
            continue
        if "url" in entry:
            entry = {**entry, "url": urljoin(page_url, entry["url"])}
        files.append(entry)
    return {**doc, "files": files}


class NarrowIndex:
    """The server on ``127.0.0.1`` (a free port), in a thread, with one upstream index.

    Use as a context manager; :attr:`url` is the ``--index-url`` for pip.
    """

    def __init__(self, upstream: str, prefetch: Iterable[str] = ()) -> None:
        """Args:
            upstream: the index root, e.g. ``https://pypi.org/simple``.
            prefetch: projects whose pages to fetch at once, several at a time (the
                requirements on the command line: pip asks for them one after the other
                before anything else).
        """
        self.upstream = upstream.rstrip("/") + "/"
        self._prefetch = list(dict.fromkeys(_canonical(p) for p in prefetch))
        self._early: dict[str, Any] = {}
        self._asked: dict[str, Any] = {}  # the same futures, kept after serving (for probe())
        self._metadata: dict[str, bool] = {}
        self._pool: Any = None
        self._client: Any = None
        self._supported: frozenset[str] = frozenset()
        self._ready = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._saved_env: dict[str, str | None] = {}

    @property
    def url(self) -> str:
        """The index root pip is pointed at."""
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/simple/"

    def probe(self, project: str) -> _PageProbe:
        """What :class:`mlab.airlock.pipfetch.Probe` asks (does the index serve wheel
        metadata apart?), answered from the page this server fetches anyway for a
        requirement given to ``prefetch``: no second request for the same page."""
        return _PageProbe(self, _canonical(project))

    def _prepare(self) -> None:
        """In a thread, while pip starts: import httpx (0.1 s), open the upstream client and
        list the tags; pages wait for it."""
        try:
            import httpx

            self._client = httpx.Client(follow_redirects=True, timeout=UPSTREAM_TIMEOUT, trust_env=True,
                                        limits=httpx.Limits(max_connections=PREFETCH_THREADS + 4))
            self._supported = supported_tags()
            if self._prefetch:  # before pages are answered (they wait for _ready)
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(PREFETCH_THREADS, thread_name_prefix="mlab-narrow-page")
                self._early = {name: self._pool.submit(self._page, name) for name in self._prefetch}
                self._asked = dict(self._early)
        finally:
            self._ready.set()

    def _page(self, project: str) -> bytes | None:
        """The narrowed page of ``project`` (a PEP 503 name) as JSON bytes, or None when
        upstream's answer is not a PEP 691 page (then pip reads upstream's itself)."""
        self._ready.wait(UPSTREAM_TIMEOUT)
        try:
            resp = self._client.get(urljoin(self.upstream, project + "/"),
                                    headers={"Accept": f"{JSON_TYPE}, text/html;q=0.1"})
            if resp.status_code == 200 and resp.headers.get("content-type", "").startswith(JSON_TYPE) \
                    and self._supported:  # no tags known: narrow nothing
                from mlab.airlock.pipfetch import files_have_metadata

                doc = resp.json()
                self._metadata[project] = files_have_metadata(doc.get("files", []))
                page = narrow_page(doc, str(resp.url), self._supported)
                return json.dumps(page, separators=(",", ":")).encode()
        except Exception:  # noqa: BLE001 (any trouble: pip reads the upstream page itself)
            pass
        return None

    def __enter__(self) -> NarrowIndex:
        threading.Thread(target=self._prepare, daemon=True, name="mlab-narrow-prepare").start()
        # pip honours the *_proxy variables; the loopback server must be reached directly
        if any(k.lower() in ("http_proxy", "https_proxy", "all_proxy") for k in os.environ):
            for key in ("no_proxy", "NO_PROXY"):
                self._saved_env[key] = os.environ.get(key)
                os.environ[key] = ",".join(filter(None, [os.environ.get(key), "127.0.0.1"]))
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                owner._answer(self)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(POLL_SECONDS,), daemon=True,
                         name="mlab-narrow-index").start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self._ready.wait()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        if self._client is not None:
            self._client.close()
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    def _answer(self, req: BaseHTTPRequestHandler) -> None:
        m = _PROJECT_PATH.match(urlsplit(req.path).path)
        if m is None:  # only project pages, only on upstream (never another URL)
            req.send_response(404)
            req.send_header("Content-Length", "0")
            req.end_headers()
            return
        project = m.group(1)
        upstream_url = urljoin(self.upstream, project + "/")
        self._ready.wait(UPSTREAM_TIMEOUT)
        early = self._early.pop(_canonical(project), None)  # each prefetched page serves once
        if JSON_TYPE not in req.headers.get("Accept", ""):
            body = None  # a client that reads no PEP 691 JSON (pip < 22.2) reads upstream's page
        else:
            body = early.result() if early is not None else self._page(project)
        if body is None:
            req.send_response(302)
            req.send_header("Location", upstream_url)
            req.send_header("Content-Length", "0")
            req.end_headers()
            return
        req.send_response(200)
        req.send_header("Content-Type", JSON_TYPE)
        req.send_header("Content-Length", str(len(body)))
        req.send_header("Cache-Control", "no-store")
        req.end_headers()
        req.wfile.write(body)


class _PageProbe:
    """:meth:`NarrowIndex.probe`'s answer, with :class:`mlab.airlock.pipfetch.Probe`'s
    :meth:`answer`."""

    def __init__(self, index: NarrowIndex, project: str) -> None:
        self._index = index
        self._project = project

    def answer(self, timeout: float | None = None) -> bool:
        """True when the project's page offered wheel metadata apart; False when it did
        not, was not a PEP 691 page, or is still unknown after ``timeout`` seconds."""
        if not self._index._ready.wait(timeout):
            return False
        future = self._index._asked.get(self._project)
        if future is None:
            return False
        try:
            future.result(timeout)
        except Exception:  # noqa: BLE001 (a timeout or a failed fetch: no)
            return False
        return self._index._metadata.get(self._project, False)
