"""The user's page lists what the Airlock staged: pip projects (the Airlock's own PEP 503
pages), apt packages (the flat repository's Packages index), files and git bundles, and what
this user staged (the share's audit log, written by the Airlock's own audit code)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from mlab.airlock import audit as airlock_audit
from mlab.airlock.pipindex_pages import WheelFile, render_project_html
from mlab.portal import staged
from mlab.portal.app import build_app
from mlab.portal.config import Backend, PortalConfig
from mlab.site import parse_site

URL = "https://portal.test"
PACKAGES = """Package: jq
Version: 1.6-2.1
Architecture: amd64
Description: lightweight and flexible command-line JSON processor
 jq is like sed for JSON data

Package: libjq1
Version: 1.6-2.1
Architecture: amd64
"""


@pytest.fixture
def share(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "share"
    page = root / "pip-index" / "simple" / "six" / "index.html"
    page.parent.mkdir(parents=True)
    page.write_text(render_project_html("six", [
        WheelFile("six-1.16.0-py2.py3-none-any.whl", "six", "1.16.0", "0" * 64, 11053)]))
    (root / "apt").mkdir()
    (root / "apt" / "Packages").write_text(PACKAGES)
    (root / "downloads").mkdir()
    (root / "downloads" / "data.tgz").write_bytes(b"x" * 2048)
    (root / "git").mkdir()
    (root / "git" / "deepvac.bundle").write_bytes(b"y" * 10)
    monkeypatch.delenv("SUDO_USER", raising=False)
    monkeypatch.setenv("MLAB_USER", "alice")
    airlock_audit.record(root, "stage-pip", "six==1.16.0", size=11053, sha256="0" * 64)
    monkeypatch.setenv("MLAB_USER", "bob")
    airlock_audit.record(root, "stage-apt", "jq", size=None, sha256=None)
    return root


def test_read_lists_the_share_and_the_users_own_stagings(share: Path) -> None:
    got = staged.read(share, "alice")
    assert got.pip == [("six", ["1.16.0"])]
    assert got.apt == [("jq", "1.6-2.1"), ("libjq1", "1.6-2.1")]
    assert got.files == [("downloads/data.tgz", 2048), ("git/deepvac.bundle", 10)]
    assert [(r["action"], r["item"]) for r in got.mine] == [("stage-pip", "six==1.16.0")]


def test_empty_share_says_so(tmp_path: Path) -> None:
    html = staged.section(staged.read(tmp_path, "alice"))
    assert "id=staged-empty" in html


def test_users_page_shows_what_is_staged(share: Path, tmp_path: Path) -> None:
    users = tmp_path / "users"
    (users / "alice").mkdir(parents=True)
    (users / "alice" / "password").write_text("alice-secret-pw\n")
    (tmp_path / "novnc").mkdir()
    site = parse_site({"name": "t", "users": [{"name": "alice"}],
                       "portal": {"enabled": True, "url": URL}})
    client = TestClient(build_app(PortalConfig(
        site=site, users_dir=users, novnc_dir=tmp_path / "novnc",
        backends={"alice": Backend("127.0.0.1", 1)}, share=share)), base_url=URL)
    csrf = re.search(r'name=csrf value="([^"]+)"', client.get("/").text).group(1)  # type: ignore[union-attr]
    client.post("/auth/password", data={"username": "alice", "password": "alice-secret-pw",
                                         "csrf": csrf})
    page = client.get("/").text
    assert "Staged on the Airlock" in page
    assert "<code>six</code> 1.16.0" in page and "<code>jq</code> 1.6-2.1" in page
    assert "/opt/public/airlock/downloads/data.tgz" in page
    assert "six==1.16.0" in page.split("Staged by you")[1]
    assert "stage-apt" not in page.split("Staged by you")[1]  # bob's, not alice's
