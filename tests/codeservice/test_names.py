"""Pure validation: repository paths, names and upstream URLs (table-driven)."""

from __future__ import annotations

import pytest

from mlab.codeservice.auth import parse_basic
from mlab.codeservice.hook import check_refs
from mlab.codeservice.names import check_upstream, default_name, parse_repo_path, validate_name
from mlab.errors import UsageError


@pytest.mark.parametrize("path,raw,expected", [
    ("/org/repo", None, ("org/repo", "")),
    ("/org/repo.git/info/refs", None, ("org/repo", "/info/refs")),
    ("/org/repo/git-upload-pack", None, ("org/repo", "/git-upload-pack")),
    ("/org/repo.git/git-receive-pack", None, ("org/repo", "/git-receive-pack")),
    ("/Org-1/re_po.x", None, ("Org-1/re_po.x", "")),
    ("/org/../etc/info/refs", None, None),
    ("/org/repo/info/refs", b"/org/%2e%2e/info/refs", None),
    ("/org/repo", b"/org%2frepo", None),
    ("//etc/passwd", None, None),
    ("/etc/passwd/x", None, None),
    ("/org/.hidden", None, None),
    ("/org/repo/objects/info/packs", None, None),
    ("/org", None, None),
    ("/org/repo\\x", None, None),
    ("/org/re..po", None, None),
], ids=["page", "info-refs", "upload", "receive", "chars", "dotdot", "encoded-dot",
        "encoded-slash", "double-slash", "three-parts", "hidden", "dumb", "one-part",
        "backslash", "inner-dotdot"])
def test_parse_repo_path(path: str, raw: bytes | None, expected) -> None:  # type: ignore[no-untyped-def]
    parsed = parse_repo_path(path, raw)
    if expected is None:
        assert parsed is None
    else:
        assert parsed is not None and (parsed.repo, parsed.rest) == expected


@pytest.mark.parametrize("url,hosts,local,ok", [
    ("https://github.com/a/b", ["github.com"], False, True),
    ("https://GitHub.com/a/b", ["github.com"], False, True),
    ("https://evil.com/a/b", ["github.com"], False, False),
    ("https://github.com.evil.com/a/b", ["github.com"], False, False),
    ("https://git.corp.example/a/b", ["*.corp.example"], False, True),
    ("https://user:pw@github.com/a/b", ["github.com"], False, False),
    ("ssh://git@github.com/a/b", ["github.com"], False, False),
    ("ext::sh -c id", ["github.com"], False, False),
    ("file:///srv/a.git", ["github.com"], False, False),
    ("file:///srv/a.git", [], True, True),
    ("file:///srv/../etc", [], True, False),
    ("http://127.0.0.1:9/a/b", [], True, True),
    ("http://127.0.0.1:9/a/b", [], False, False),
], ids=["allowed", "case", "other-host", "suffix-trick", "wildcard", "credentials", "ssh",
        "ext", "file-off", "file-on", "file-dotdot", "loopback-on", "loopback-off"])
def test_check_upstream(url: str, hosts: list[str], local: bool, ok: bool) -> None:
    if ok:
        check_upstream(url, hosts, local)
    else:
        with pytest.raises(UsageError):
            check_upstream(url, hosts, local)


def test_names() -> None:
    assert default_name("https://github.com/DeepVAC/deepvac.git") == "deepvac/deepvac"
    assert validate_name("a/b.git") == "a/b"
    for bad in ("a", "a/b/c", "../b", "a/..", "/a/b", "a/.b"):
        with pytest.raises(UsageError):
            validate_name(bad)


@pytest.mark.parametrize("header,expected", [
    ("Basic YWxpY2U6cHc6eA==", ("alice", "pw:x")),
    ("basic YWxpY2U6", ("alice", "")),
    ("Bearer xyz", None),
    ("Basic !!!", None),
    ("Basic Ym9i", None),
    (None, None),
], ids=["colon-in-password", "empty-password", "bearer", "bad-base64", "no-colon", "none"])
def test_parse_basic(header: str | None, expected) -> None:  # type: ignore[no-untyped-def]
    assert parse_basic(header) == expected


def test_check_refs() -> None:
    z = "0" * 40
    assert check_refs([(z, "a" * 40, "refs/heads/me/x")], {"refs/heads/main"}) is None
    msg = check_refs([(z, "a" * 40, "refs/heads/main")], {"refs/heads/main"})
    assert msg and "refs/heads/main" in msg and "branch of your own" in msg
    assert check_refs([(z, "a" * 40, "refs/notes/x")], set())
