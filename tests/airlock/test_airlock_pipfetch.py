"""Parallel fetch of pip's choices: the report, hash checks, fallbacks, and the same set as `pip download`."""

from __future__ import annotations

import hashlib
import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from mlab.airlock import pip, pipfetch, pipindex


def _item(url: str, archive: dict | None, name: str = "a", version: str = "1.0") -> dict:
    info: dict = {"url": url}
    if archive is not None:
        info["archive_info"] = archive
    return {"download_info": info, "metadata": {"name": name, "version": version}}


def test_parse_report_hashes_and_non_archives() -> None:
    doc = {"version": "1", "install": [
        _item("https://h/p/a-1.0-py3-none-any.whl", {"hashes": {"sha256": "ab" * 32}}),
        _item("https://h/p/b%2Bx-2.0.tar.gz", {"hash": "sha256=" + "cd" * 32}, "b", "2.0"),
        _item("https://h/p/c-1.0-py3-none-any.whl", {}, "c"),
    ]}
    got = pipfetch.parse_report(doc)
    assert got is not None
    assert [(c.name, c.filename, c.sha256, c.fetchable) for c in got] == [
        ("a", "a-1.0-py3-none-any.whl", "ab" * 32, True),
        ("b", "b+x-2.0.tar.gz", "cd" * 32, False),  # an sdist: left to pip
        ("c", "c-1.0-py3-none-any.whl", None, False),  # no hash: left to pip
    ]
    vcs = {"version": "1", "install": [{"download_info": {"url": "https://h/r.git", "vcs_info": {"vcs": "git"}},
                                        "metadata": {"name": "r", "version": "1"}}]}
    assert pipfetch.parse_report(vcs) is None
    with pytest.raises(pipfetch.MlabError, match="report has version '2'"):
        pipfetch.parse_report({"version": "2", "install": []})


def test_download_checks_hash_and_leaves_nothing_on_mismatch(tmp_path, wheel_factory) -> None:
    wheel = wheel_factory(tmp_path / "src", "a", "1.0")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    dest = tmp_path / "dest"
    dest.mkdir()
    good = pipfetch.Chosen("a", "1.0", wheel.as_uri(), digest)
    hashes, left = pipfetch.download([good], dest)
    assert hashes == {wheel.name: digest} and left == []
    assert (dest / wheel.name).read_bytes() == wheel.read_bytes()
    (dest / wheel.name).unlink()
    bad = pipfetch.Chosen("a", "1.0", wheel.as_uri(), "0" * 64)
    with pytest.raises(pipfetch.HashMismatch, match=f"{wheel.name} from .* has sha256 {digest}, not 0000"):
        pipfetch.download([bad], dest)
    assert list(dest.iterdir()) == []


@pytest.mark.parametrize(("page", "ctype", "expected"), [
    ('{"files": [{"filename": "a-1.0-py3-none-any.whl", "core-metadata": {"sha256": "00"}}]}',
     "application/vnd.pypi.simple.v1+json", True),
    ('{"files": [{"filename": "a-1.0-py3-none-any.whl", "dist-info-metadata": true}]}',
     "application/vnd.pypi.simple.v1+json", True),
    ('{"files": [{"filename": "a-1.0-py3-none-any.whl"}, {"filename": "a-1.0.tar.gz", "core-metadata": true}]}',
     "application/vnd.pypi.simple.v1+json", False),
    ('<a href="a-1.0-py3-none-any.whl" data-core-metadata="sha256=00">a</a>', "text/html", True),
    ('<a href="a-1.0-py3-none-any.whl">a</a>', "text/html", False),
], ids=["json-pep714", "json-pep658", "json-none", "html-pep714", "html-none"])
def test_serves_metadata(page, ctype, expected) -> None:
    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = page.encode()
            self.send_response(200 if self.path == "/simple/my-proj/" else 404)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {k: os.environ.pop(k) for k in list(os.environ) if k.lower().endswith("_proxy")}
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/simple"
        assert pipfetch.serves_metadata(base, "My_Proj") is expected
        assert pipfetch.serves_metadata(f"http://127.0.0.1:{server.server_address[1]}/other", "my-proj") is False
    finally:
        os.environ.update(env)
        server.shutdown()
        server.server_close()


def test_download_over_http_and_failures_left_to_pip(tmp_path, wheel_factory) -> None:
    served = tmp_path / "served"
    wheel = wheel_factory(served, "a", "1.0")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(served), **kwargs)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        dest = tmp_path / "dest"
        dest.mkdir()
        ok = pipfetch.Chosen("a", "1.0", f"{base}/{wheel.name}", digest)
        missing = pipfetch.Chosen("b", "1.0", f"{base}/b-1.0-py3-none-any.whl", "1" * 64)
        env = {k: os.environ.pop(k) for k in list(os.environ) if k.lower().endswith("_proxy")}
        try:
            hashes, left = pipfetch.download([ok, missing], dest)
        finally:
            os.environ.update(env)
    finally:
        server.shutdown()
        server.server_close()
    assert hashes == {wheel.name: digest}
    assert left == [missing]  # a 404 here: pip gets to try it (and fails clearly)
    assert sorted(p.name for p in dest.iterdir()) == [wheel.name]


def _pip_download(dest: Path, specs: list[str], cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["XDG_CACHE_HOME"] = str(cache)
    subprocess.run([sys.executable, "-m", "pip", "--isolated", "--disable-pip-version-check", "download", "-q",
                    "--dest", str(dest), "--index-url", pip.DEFAULT_INDEX_URL, *specs],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in dest.iterdir()}


def test_staged_set_equals_plain_pip_download_from_pypi(tmp_path, monkeypatch) -> None:
    """Real pip, real PyPI: the same names, versions, files and hashes as `pip download`."""
    monkeypatch.setenv(pipfetch.PARALLEL_ENV, "1")  # the report and parallel path, whatever the index serves
    specs = ["requests", "tqdm", "markupsafe<3.1", "pyyaml"]  # compiled wheels and a closure
    share = tmp_path / "share"
    res = pip.stage(share, specs)
    plain = _pip_download(tmp_path / "plain", specs, tmp_path / "cache")
    staged = {w.filename: w.sha256 for w in res.added}
    assert staged == plain
    files = pipindex.index_dir(share) / "files"
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files.iterdir()} == plain
    assert res.built == []


def test_report_path_leaves_sdists_to_pip_pinned_and_builds_them(tmp_path, wheel_factory, sdist_factory,
                                                                  pip_target, monkeypatch) -> None:
    """The report path with a local folder: the wheel is copied and checked, the sdist pip chose
    is downloaded by pip from the same URL (``NAME @ URL#sha256=``) and built into a wheel."""
    monkeypatch.setenv(pipfetch.PARALLEL_ENV, "1")
    src = tmp_path / "src"
    wheel_factory(src, "app", "1.0", requires=["sdistonly"])
    sdist_factory(src, "sdistonly", "0.3")
    sdist_factory(src, "sdistonly", "0.2")  # not chosen: pip takes the newest
    share = tmp_path / "share"
    # the sdist's build backend (setuptools) comes from PyPI, as on the Airlock
    res = pip.stage(share, ["app"], sources=pip.Sources(find_links=(str(src),)))
    assert sorted(w.filename for w in res.added) == ["app-1.0-py3-none-any.whl", "sdistonly-0.3-py3-none-any.whl"]
    assert res.built == ["sdistonly-0.3-py3-none-any.whl"]
    app = pipindex.load_project(share, "app")[0]
    assert app.sha256 == hashlib.sha256((src / "app-1.0-py3-none-any.whl").read_bytes()).hexdigest()
    proc = pip_target(share / "pip-index" / "simple", tmp_path / "t", "app")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_worth_it_env_and_local_sources(monkeypatch) -> None:
    monkeypatch.delenv(pipfetch.PARALLEL_ENV, raising=False)
    assert pipfetch.worth_it(None, "app") is False  # --no-index or local folders only
    assert pipfetch.worth_it("https://pypi.org/simple", None) is False  # only -r files: no page to probe
    monkeypatch.setenv(pipfetch.PARALLEL_ENV, "1")
    assert pipfetch.worth_it(None, None) is True
    monkeypatch.setenv(pipfetch.PARALLEL_ENV, "0")
    assert pipfetch.worth_it("https://pypi.org/simple", "app") is False


class _Answer:
    """A probe that has already answered (the network side of :class:`pipfetch.Probe`)."""

    def __init__(self, value: bool) -> None:
        self.value = value

    def answer(self, timeout: float | None = None) -> bool:
        return self.value


def test_download_probed_stops_pip_only_when_the_index_serves_metadata(tmp_path, wheel_factory) -> None:
    src = tmp_path / "src"
    wheel_factory(src, "app", "1.0", requires=["lib"])
    wheel_factory(src, "lib", "1.0")
    args = ["download", "--dest", "DEST", "--progress-bar", "off", "--no-index", "--find-links", str(src), "app"]
    saved: list[str] = []
    kept = tmp_path / "kept"
    kept.mkdir()
    assert pip._download_probed([a.replace("DEST", str(kept)) for a in args], kept, None, _Answer(False),
                                saved.append) is False
    assert sorted(p.name for p in kept.iterdir()) == ["app-1.0-py3-none-any.whl", "lib-1.0-py3-none-any.whl"]
    assert sum(line.strip().startswith("Saved ") for line in saved) == 2  # what the inspector starts on
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    assert pip._download_probed([a.replace("DEST", str(stopped)) for a in args], stopped, None, _Answer(True),
                                saved.append) is True


def test_stage_from_an_http_index_probes_it_while_pip_downloads(tmp_path, wheel_factory, monkeypatch) -> None:
    """An index over HTTP without PEP 658 metadata (a staged share served by a static server):
    the probe answers no, the pip download started meanwhile is the one that stages."""
    import functools

    monkeypatch.delenv(pipfetch.PARALLEL_ENV, raising=False)
    src = tmp_path / "src"
    wheel_factory(src, "app", "1.0", requires=["lib"])
    wheel_factory(src, "lib", "1.0")
    upstream = tmp_path / "upstream"
    pip.stage(upstream, ["app"], sources=pip.Sources(find_links=(str(src),), no_index=True))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(upstream / "pip-index"))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for key in [k for k in os.environ if k.lower().endswith("_proxy")]:
            monkeypatch.delenv(key)
        index = f"http://127.0.0.1:{server.server_address[1]}/simple"
        probe = pipfetch.Probe(index, "app")
        assert probe.answer(30) is False
        share = tmp_path / "share"
        res = pip.stage(share, ["app"], sources=pip.Sources(index_url=index))
    finally:
        server.shutdown()
        server.server_close()
    assert sorted(w.filename for w in res.added) == ["app-1.0-py3-none-any.whl", "lib-1.0-py3-none-any.whl"]
    assert {w.filename: w.sha256 for w in res.added} == \
        {w.filename: w.sha256 for p in ("app", "lib") for w in pipindex.load_project(upstream, p)}
