"""The narrowed index: pip, through it, saves the same files as from the index itself."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from mlab.airlock import pip, pipnarrow

JSON = pipnarrow.JSON_TYPE


@pytest.fixture
def no_proxy(monkeypatch):
    for key in [k for k in os.environ if k.lower().endswith("_proxy")]:
        monkeypatch.delenv(key)


def _pip_download(dest: Path, index_url: str, specs: list[str], cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["XDG_CACHE_HOME"] = str(cache)
    subprocess.run([sys.executable, "-m", "pip", "--isolated", "--disable-pip-version-check", "download", "-q",
                    "--dest", str(dest), "--index-url", index_url, *specs],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in dest.iterdir()}


def test_wheel_fits_and_narrow_page() -> None:
    tags = pipnarrow.supported_tags()
    assert "py3-none-any" in tags
    assert pipnarrow.wheel_fits("a-1.0-py3-none-any.whl", tags)
    assert pipnarrow.wheel_fits("a-1.0-py2.py3-none-any.whl", tags)  # one tag of a set is enough
    assert not pipnarrow.wheel_fits("a-1.0-cp27-cp27m-win32.whl", tags)
    assert not pipnarrow.wheel_fits("a-1.0-py3-none-macosx_11_0_arm64.whl", tags)
    assert pipnarrow.wheel_fits("a-1.0.tar.gz", tags)  # sdists always stay
    assert pipnarrow.wheel_fits("odd-name.whl", tags)  # not a wheel name this code reads: pip decides
    doc = {"meta": {"api-version": "1.0"}, "name": "a", "files": [
        {"filename": "a-1.0-py3-none-any.whl", "url": "../../f/a-1.0-py3-none-any.whl",
         "hashes": {"sha256": "ab"}, "requires-python": ">=3", "yanked": False},
        {"filename": "a-1.0-cp27-cp27m-win32.whl", "url": "https://h/f/a-1.0-cp27-cp27m-win32.whl", "hashes": {}},
        {"filename": "a-1.0.tar.gz", "url": "https://h/f/a-1.0.tar.gz", "hashes": {"sha256": "cd"}},
    ]}
    got = pipnarrow.narrow_page(doc, "https://h/simple/a/", tags)
    assert got["files"] == [
        {"filename": "a-1.0-py3-none-any.whl", "url": "https://h/f/a-1.0-py3-none-any.whl",
         "hashes": {"sha256": "ab"}, "requires-python": ">=3", "yanked": False},
        {"filename": "a-1.0.tar.gz", "url": "https://h/f/a-1.0.tar.gz", "hashes": {"sha256": "cd"}},
    ]
    assert got["meta"] == doc["meta"] and got["name"] == "a"


def test_usable(monkeypatch) -> None:
    monkeypatch.delenv(pipnarrow.NARROW_ENV, raising=False)
    assert pipnarrow.usable("https://pypi.org/simple", (), False)
    monkeypatch.setenv(pipnarrow.NARROW_ENV, "0")
    assert not pipnarrow.usable("https://pypi.org/simple", (), False)
    monkeypatch.delenv(pipnarrow.NARROW_ENV)
    assert not pipnarrow.usable("https://pypi.org/simple", ("https://other/simple",), False)
    assert not pipnarrow.usable("https://pypi.org/simple", (), True)
    assert not pipnarrow.usable("https://user:secret@private/simple", (), False)
    assert not pipnarrow.usable("/srv/wheels", (), False)


class _JsonIndex:
    """A PEP 691 index over HTTP on loopback: ``app`` 1.0 as a wheel for any interpreter,
    2.0 only for Windows on Python 2.7 (never served: pip must not want it), 0.5 as sdist;
    relative file URLs. Records each request's path and User-Agent."""

    def __init__(self, files: Path) -> None:
        self.files = files
        self.requests: list[tuple[str, str]] = []
        wheel = next(files.glob("app-1.0-*.whl"))
        sdist = next(files.glob("app-0.5*.tar.gz"))
        self.page = {"meta": {"api-version": "1.0"}, "name": "app", "files": [
            {"filename": sdist.name, "url": f"../../files/{sdist.name}",
             "hashes": {"sha256": hashlib.sha256(sdist.read_bytes()).hexdigest()}},
            {"filename": wheel.name, "url": f"../../files/{wheel.name}",
             "hashes": {"sha256": hashlib.sha256(wheel.read_bytes()).hexdigest()}},
            {"filename": "app-2.0-cp27-cp27m-win32.whl", "url": "../../files/app-2.0-cp27-cp27m-win32.whl",
             "hashes": {"sha256": "0" * 64}},
        ]}
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests.append((self.path, self.headers.get("User-Agent", "")))
                if self.path == "/simple/app/":
                    body, ctype = json.dumps(owner.page).encode(), JSON
                elif self.path.startswith("/files/") and (owner.files / self.path[7:]).is_file():
                    body, ctype = (owner.files / self.path[7:]).read_bytes(), "application/octet-stream"
                else:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/simple/"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_local_json_index_same_choice_and_narrowed_page(tmp_path, wheel_factory, sdist_factory, no_proxy) -> None:
    files = tmp_path / "files"
    wheel_factory(files, "app", "1.0")
    sdist_factory(files, "app", "0.5")
    upstream = _JsonIndex(files)
    try:
        plain = _pip_download(tmp_path / "plain", upstream.url, ["app"], tmp_path / "c1")
        with pipnarrow.NarrowIndex(upstream.url) as narrow:
            page = httpx.get(narrow.url + "app/", headers={"Accept": JSON}).json()
            narrowed = _pip_download(tmp_path / "narrow", narrow.url, ["app"], tmp_path / "c2")
            html = httpx.get(narrow.url + "app/", headers={"Accept": "text/html"})  # no PEP 691 client
            assert html.status_code == 302 and html.headers["location"] == upstream.url + "app/"
            for bad in ("//evil.example/x", "/simple/../../etc/passwd", "/other/app/"):
                assert httpx.get(f"{narrow.url[:-len('/simple/')]}{bad}").status_code == 404, bad
    finally:
        upstream.close()
    assert plain == narrowed and list(plain) == ["app-1.0-py3-none-any.whl"]
    assert [f["filename"] for f in page["files"]] == ["app-0.5.tar.gz", "app-1.0-py3-none-any.whl"]
    assert page["files"][1]["url"] == upstream.url.replace("/simple/", "/files/") + "app-1.0-py3-none-any.whl"
    # the rejected requests never reached upstream; nothing asked for the Windows wheel
    assert not any("evil" in p or "passwd" in p or "win32" in p for p, _ in upstream.requests)


def test_stage_reads_the_index_through_the_narrowed_server(tmp_path, wheel_factory, sdist_factory, no_proxy) -> None:
    files = tmp_path / "files"
    wheel_factory(files, "app", "1.0")
    sdist_factory(files, "app", "0.5")
    upstream = _JsonIndex(files)
    try:
        res = pip.stage(tmp_path / "share", ["app"], sources=pip.Sources(index_url=upstream.url))
    finally:
        upstream.close()
    assert [w.filename for w in res.added] == ["app-1.0-py3-none-any.whl"]
    # pip itself never read upstream's page (only MLab's httpx: the narrowed server, the probe)
    pages = [agent for path, agent in upstream.requests if path == "/simple/app/"]
    assert pages and not any(agent.startswith("pip/") for agent in pages), upstream.requests
    assert any(agent.startswith("pip/") for path, agent in upstream.requests if path.startswith("/files/"))


def test_same_files_as_plain_pip_download_from_pypi(tmp_path) -> None:
    """Real pip, real PyPI: through the narrowed index the same files, byte for byte, and
    the pages really are narrower (a compiled project lists wheels for other platforms)."""
    specs = ["requests", "markupsafe<3.1", "pyyaml"]
    plain = _pip_download(tmp_path / "plain", pip.DEFAULT_INDEX_URL, specs, tmp_path / "c1")
    with pipnarrow.NarrowIndex(pip.DEFAULT_INDEX_URL) as narrow:
        narrowed = _pip_download(tmp_path / "narrow", narrow.url, specs, tmp_path / "c2")
        kept = httpx.get(narrow.url + "pyyaml/", headers={"Accept": JSON}, trust_env=False).json()["files"]
    whole = httpx.get(f"{pip.DEFAULT_INDEX_URL}/pyyaml/", headers={"Accept": JSON}, follow_redirects=True).json()["files"]
    assert narrowed == plain and any(n.startswith("PyYAML-") or n.startswith("pyyaml-") for n in plain)
    assert 0 < len(kept) < len(whole) / 2
    assert {f["filename"] for f in kept} <= {f["filename"] for f in whole}


def test_probe_answered_from_the_prefetched_page(tmp_path, wheel_factory, sdist_factory, no_proxy) -> None:
    """The index probe (does the index serve wheel metadata apart?) is answered from the
    page the server prefetched: no, then yes once the page offers PEP 714 core-metadata."""
    files = tmp_path / "files"
    wheel_factory(files, "app", "1.0")
    sdist_factory(files, "app", "0.5")
    upstream = _JsonIndex(files)
    try:
        with pipnarrow.NarrowIndex(upstream.url, ["app"]) as narrow:
            assert narrow.probe("App").answer(30) is False
            assert narrow.probe("other").answer(30) is False  # not prefetched: unknown is no
        upstream.page["files"][1]["core-metadata"] = {"sha256": "00" * 32}
        with pipnarrow.NarrowIndex(upstream.url, ["app"]) as narrow:
            assert narrow.probe("app").answer(30) is True
    finally:
        upstream.close()
    assert sum(p == "/simple/app/" for p, _ in upstream.requests) == 2  # one fetch per server
