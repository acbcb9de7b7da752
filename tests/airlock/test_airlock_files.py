"""`mlab stage url` (resumable, checksummed) and `mlab stage git` (mirror + bundle)."""

from __future__ import annotations

import hashlib
import http.server
import subprocess
import threading
from pathlib import Path

import pytest

from mlab.airlock import files
from mlab.errors import MlabError, UsageError

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves PAYLOAD at /data.bin with single-range support (RFC 9110 14.2)."""

    ranges: list[str] = []

    def do_GET(self) -> None:  # noqa: N802
        if self.path != "/data.bin":
            self.send_error(404)
            return
        rng = self.headers.get("Range")
        body, status = PAYLOAD, 200
        if rng:
            type(self).ranges.append(rng)
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(PAYLOAD):
                self.send_response(416)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body, status = PAYLOAD[start:], 206
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    RangeHandler.ranges = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


SHA = hashlib.sha256(PAYLOAD).hexdigest()


def test_download_with_checksum_and_audit(tmp_path, server) -> None:
    res = files.stage_url(tmp_path, f"{server}/data.bin", sha256=SHA)
    assert res.path == tmp_path / "downloads" / "data.bin"
    assert res.path.read_bytes() == PAYLOAD and res.sha256 == SHA
    assert oct(res.path.stat().st_mode & 0o777) == "0o644"
    log = (tmp_path / "audit.log").read_text()
    assert '"stage-url"' in log and SHA in log and "downloads/data.bin" in log


def test_resume_from_partial_file(tmp_path, server) -> None:
    dest = tmp_path / "datasets" / "d.bin"
    dest.parent.mkdir()
    (dest.parent / ".d.bin.part").write_bytes(PAYLOAD[:300_000])
    seen = []
    res = files.stage_url(tmp_path, f"{server}/data.bin", sha256=SHA, output="datasets/d.bin",
                          report=lambda done, total: seen.append((done, total)))
    assert RangeHandler.ranges == ["bytes=300000-"]
    assert res.path.read_bytes() == PAYLOAD
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert not (dest.parent / ".d.bin.part").exists()


def test_wrong_checksum_keeps_nothing(tmp_path, server) -> None:
    with pytest.raises(MlabError, match="sha256 is"):
        files.stage_url(tmp_path, f"{server}/data.bin", sha256="0" * 64)
    assert list((tmp_path / "downloads").iterdir()) == []


def test_links_planted_in_the_share_are_never_written_through(tmp_path, server) -> None:
    """Issue 13, item 8: on main `-o` followed a link planted in the share (another Airlock
    user can plant one: the share is world-writable) and wrote outside it."""
    share, outside = tmp_path / "share", tmp_path / "outside"
    share.mkdir()
    outside.mkdir()
    victim = outside / "victim"
    victim.write_text("precious\n")
    # A directory link: refused, nothing written outside.
    (share / "datasets").symlink_to(outside)
    with pytest.raises(MlabError, match="symbolic link"):
        files.stage_url(share, f"{server}/data.bin", output="datasets/victim")
    with pytest.raises(MlabError, match="symbolic link"):
        files.stage_url(share, f"{server}/data.bin", output="datasets/new.bin")
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]
    # A link as the partial file or as the target: replaced, never followed.
    (share / "downloads").mkdir()
    (share / "downloads" / ".data.bin.part").symlink_to(victim)
    res = files.stage_url(share, f"{server}/data.bin", sha256=SHA)
    assert res.path.read_bytes() == PAYLOAD and not res.path.is_symlink()
    (share / "downloads" / "data.bin").unlink()
    (share / "downloads" / "data.bin").symlink_to(victim)
    res = files.stage_url(share, f"{server}/data.bin", sha256=SHA)
    assert not res.path.is_symlink() and res.path.read_bytes() == PAYLOAD
    assert victim.read_text() == "precious\n"


def test_http_error_is_named(tmp_path, server) -> None:
    with pytest.raises(MlabError, match="HTTP 404"):
        files.stage_url(tmp_path, f"{server}/missing.bin")


@pytest.mark.parametrize(
    ("url", "output", "expected"),
    [
        ("https://h/x/y.tgz?x=1", None, "downloads/y.tgz"),
        ("https://h/x/a%20b.tgz", None, None),
        ("https://h/", None, None),
        ("https://h/y", "../etc/passwd", None),
        ("https://h/y", "/etc/passwd", None),
        ("https://h/y", "pip/simple/x", None),
        ("https://h/y", "pip-index/simple/x", None),
        ("https://h/y", ".hidden", None),
        ("https://h/y", "datasets/m.tgz", "datasets/m.tgz"),
    ],
    ids=["default", "space", "no-name", "dotdot", "absolute", "reserved", "reserved-index", "hidden", "explicit"],
)
def test_target_path(tmp_path, url, output, expected) -> None:
    if expected is None:
        with pytest.raises(UsageError):
            files.target_path(tmp_path, url, output)
    else:
        assert files.target_path(tmp_path, url, output) == tmp_path / expected


def test_non_http_url_refused(tmp_path) -> None:
    with pytest.raises(UsageError, match="not http"):
        files.stage_url(tmp_path, "file:///etc/passwd", output="x")


def _commit(repo: Path, msg: str) -> None:
    (repo / "f.txt").write_text(msg)
    subprocess.run(["git", "-C", str(repo), "add", "f.txt"], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org",
                    "commit", "-q", "-m", msg], check=True)


def test_stage_git_bundle_clone_and_update(tmp_path) -> None:
    src = tmp_path / "proj.git-src"
    subprocess.run(["git", "init", "-q", "-b", "main", str(src)], check=True)
    _commit(src, "one")
    share = tmp_path / "share"
    res = files.stage_git(share, str(src), name="proj")
    assert res.path == share / "git" / "proj.bundle" and not res.updated
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(res.path), str(clone)], check=True)
    assert (clone / "f.txt").read_text() == "one"
    _commit(src, "two")
    res2 = files.stage_git(share, str(src), name="proj")
    assert res2.updated and res2.head != res.head
    subprocess.run(["git", "-C", str(clone), "pull", "-q"], check=True)
    assert (clone / "f.txt").read_text() == "two"
    assert (share / "audit.log").read_text().count('"stage-git"') == 2


@pytest.mark.parametrize(("url", "name"), [("https://github.com/DeepVAC/deepvac.git", "deepvac"),
                                           ("git@github.com:o/r", "r"), ("/srv/x/", "x")])
def test_repo_name(url, name) -> None:
    assert files.repo_name(url) == name


def test_stage_git_refuses_option_like_url(tmp_path) -> None:
    with pytest.raises(UsageError):
        files.stage_git(tmp_path, "--upload-pack=touch /tmp/x")
