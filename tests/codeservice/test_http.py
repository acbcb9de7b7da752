"""Authentication, path validation and the JSON API against the real service."""

from __future__ import annotations

import gzip
import http.client
from pathlib import Path

import httpx
import pytest
from cli_runner import Run, mlab
from cs_support import PASSWORDS, Service, git, make_upstream


@pytest.fixture(scope="module")
def mirror(service: Service, tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("up")
    bare = make_upstream(root, "proj")
    service.approve(f"file://{bare}", "org/proj")
    return "org/proj"


def _raw_get(service: Service, path: str, auth: bool = True) -> int:
    import base64

    conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=10)
    headers = {}
    if auth:
        token = base64.b64encode(f"alice:{PASSWORDS['alice']}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    conn.request("GET", path, headers=headers)
    status = conn.getresponse().status
    conn.close()
    return status


def test_no_credentials_gives_401_with_challenge(service: Service, mirror: str) -> None:
    r = httpx.get(f"{service.url}/{mirror}/info/refs?service=git-upload-pack", trust_env=False)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith('Basic realm="MLab code service"')


def test_wrong_password_gives_401(service: Service, mirror: str) -> None:
    with service.client("alice", "wrong") as c:
        assert c.get(f"/{mirror}/info/refs?service=git-upload-pack").status_code == 401
    with service.client("mallory", "x") as c:
        assert c.get("/").status_code == 401


def test_git_clone_with_wrong_password_fails(service: Service, mirror: str, work: Path) -> None:
    url = service.clone_url(mirror).replace("alice-secret", "nope")
    done = git("clone", url, str(work / "c"), check=False)
    assert done.returncode != 0
    assert "Authentication failed" in done.stderr or "401" in done.stderr


@pytest.mark.parametrize("path", [
    "/org/../org/proj/info/refs?service=git-upload-pack",
    "/org/%2e%2e/org/proj/info/refs?service=git-upload-pack",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/org/proj%2f..%2f..%2finfo/refs?service=git-upload-pack",
    "//etc/passwd",
    "/etc/passwd",
    "//tmp/x/info/refs?service=git-upload-pack",
    "/org/proj/objects/info/packs",
    "/org/proj/HEAD",
    "/org/unapproved/info/refs?service=git-upload-pack",
    "/org/unapproved.git/info/refs?service=git-upload-pack",
], ids=["dotdot", "encoded-dotdot", "encoded-root", "encoded-slash", "double-slash",
        "absolute", "absolute-git", "dumb-protocol", "dumb-head", "unapproved",
        "unapproved-git"])
def test_bad_paths_are_404(service: Service, mirror: str, path: str) -> None:
    assert _raw_get(service, path) == 404


def test_good_paths_and_pages(service: Service, mirror: str) -> None:
    assert _raw_get(service, f"/{mirror}/info/refs?service=git-upload-pack") == 200
    assert _raw_get(service, f"/{mirror}.git/info/refs?service=git-upload-pack") == 200
    with service.client("alice") as c:
        index = c.get("/")
        assert index.status_code == 200 and "http://code.test/org/proj" in index.text
        page = c.get(f"/{mirror}")
        assert page.status_code == 200
        assert "upstream commit 1" in page.text and "main" in page.text
        assert "<script" not in page.text


def test_gzip_request_body(service: Service, mirror: str, tmp_path: Path) -> None:
    head = git("ls-remote", service.clone_url(mirror), "refs/heads/main").stdout.split()[0]
    body = f"0032want {head}\n".encode() + b"00000009done\n"
    with service.client("alice") as c:
        r = c.post(f"/{mirror}/git-upload-pack", content=gzip.compress(body), headers={
            "Content-Type": "application/x-git-upload-pack-request",
            "Content-Encoding": "gzip"})
    assert r.status_code == 200
    assert b"PACK" in r.content


def test_api_admin_only(service: Service, mirror: str) -> None:
    with service.client("alice") as c:
        assert c.get("/api/repos").status_code == 200
        r = c.post("/api/repos", json={"url": "file:///tmp/x.git", "name": "a/b"})
        assert r.status_code == 403 and "admin" in r.json()["error"]
        who = c.get("/api/whoami").json()
        assert who == {"name": "alice", "is_admin": False, "is_reviewer": False}
    with service.client("bob") as c:
        assert c.get("/api/whoami").json()["is_reviewer"] is True


def test_approve_rejects_disallowed_hosts(service: Service) -> None:
    with service.client() as c:
        r = c.post("/api/repos", json={"url": "https://evil.example/x/y"})
        assert r.status_code == 400 and "allowedHosts" in r.json()["error"]
        r = c.post("/api/repos", json={"url": "ext::sh -c touch% /tmp/pwned", "name": "a/b"})
        assert r.status_code == 400
        r = c.post("/api/repos", json={"url": "file:///nonexistent/repo.git", "name": "a/b"})
        # A permanent failure: 4xx, with git's own error lines, not a fragment of its advice.
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert "'/nonexistent/repo.git' does not appear to be a git repository" in error, error
        assert "and the repository exists" not in error
        assert c.get("/api/repos").json() == [] or all(
            x["name"] != "a/b" for x in c.get("/api/repos").json())


def test_approve_twice_is_409_and_revoke_gives_404(service: Service, tmp_path: Path) -> None:
    bare = make_upstream(tmp_path, "gone", commits=1)
    service.approve(f"file://{bare}", "org/gone")
    with service.client() as c:
        assert c.post("/api/repos", json={"url": f"file://{bare}", "name": "org/gone"}
                      ).status_code == 409
        assert c.delete("/api/repos/org/gone").status_code == 200
    assert _raw_get(service, "/org/gone/info/refs?service=git-upload-pack") == 404
    assert list((service.data / "revoked").glob("org__gone-*.git"))


def test_approve_bad_bodies_are_400(service: Service) -> None:
    with service.client() as c:
        assert c.post("/api/repos", content=b"not json",
                      headers={"content-type": "application/json"}).status_code == 400
        assert c.post("/api/repos", json=["x"]).status_code == 400
        r = c.post("/api/repos", json={"url": "file:///x/y.git", "name": "../etc"})
        assert r.status_code == 400 and "ORG/REPO" in r.json()["error"]


def _mlab(service: Service, *args: str, password: str | None = None) -> Run:
    """``mlab ARGS --server URL`` with only the admin's (or ``password``) MLab setting."""
    return mlab(*args, "--server", service.url, drop=("MLAB_",), timeout=120,
                env={"MLAB_PASSWORD": password or service.admin_password})


def test_repo_cli_approve_list_revoke(service: Service, tmp_path: Path) -> None:
    bare = make_upstream(tmp_path, "cli", commits=1)
    done = _mlab(service, "repo", "approve", f"file://{bare}", "--as", "org/cli")
    assert done.returncode == 0 and "approved org/cli" in done.stdout, done.stderr
    listed = _mlab(service, "repo", "list")
    assert listed.returncode == 0 and "org/cli" in listed.stdout
    done = _mlab(service, "repo", "revoke", "org/cli")
    assert done.returncode == 0 and "revoked org/cli" in done.stdout
    again = _mlab(service, "repo", "revoke", "org/cli")
    assert again.returncode == 1 and "no approved repository org/cli" in again.stderr
    bad = _mlab(service, "repo", "list", password="wrong")
    assert bad.returncode == 1 and "wrong user name or password" in bad.stderr
    assert "wrong" not in bad.stderr.replace("wrong user", "")
    usage = _mlab(service, "repo", "revoke", "../x")
    assert usage.returncode == 2 and "ORG/REPO" in usage.stderr


def _open_descriptors(pid: int) -> list[str]:
    fd_dir = Path(f"/proc/{pid}/fd")
    found = []
    for fd in fd_dir.iterdir():
        try:
            found.append(str(fd.readlink()))
        except OSError:  # closed meanwhile
            pass
    return sorted(found)


def test_git_requests_leave_no_descriptors_or_processes_behind(
        service: Service, mirror: str, work: Path) -> None:
    """Each git request's pipes and pidfd are closed and its git is reaped (issue 18: git is
    started with vfork and its pipes are read through the loop; a first version left two
    pipes open a request, and uvloop's pipe transports closed descriptors twice)."""
    clone = work / "fd-check"
    git("clone", "-q", service.clone_url(mirror), str(clone))
    before = _open_descriptors(service.proc.pid)
    for i in range(8):
        git("fetch", "-q", "origin", cwd=clone)
        git("push", "-q", "origin", f"HEAD:refs/heads/alice/fd-{i}", cwd=clone)
    git("ls-remote", "origin", cwd=clone)
    after = _open_descriptors(service.proc.pid)
    # Keep-alive sockets of finished clients may linger a moment; pipes may not.
    pipes_before = [d for d in before if d.startswith(("pipe:", "anon_inode:[pidfd]"))]
    pipes_after = [d for d in after if d.startswith(("pipe:", "anon_inode:[pidfd]"))]
    assert len(pipes_after) <= len(pipes_before), (before, after)
    children = Path(f"/proc/{service.proc.pid}/task/{service.proc.pid}/children").read_text()
    assert children.split() == [], f"git processes left: {children}"
    refs = git("ls-remote", "origin", "refs/heads/alice/*", cwd=clone).stdout
    assert len(refs.splitlines()) == 8
