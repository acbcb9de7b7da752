"""git http-backend abuse over real HTTP against the real service (issue 13, item 1 and the
aborted-push audit of item 8): a lying Content-Length, hung requests, the per-user and
total caps, the deadline."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cs_support import PASSWORDS, Service, git, module_service

SITE = """  limits:
    gitTimeout: 10
    gitQueueWait: 1
    maxGitProcessesPerUser: 2
    maxGitProcesses: 3
"""


def git_processes(repos: Path, only: bytes = b"git") -> list[int]:
    """Pids of git processes serving this service's repositories (found by environment);
    ``only``: a part of the command line they must have."""
    marker = f"GIT_PROJECT_ROOT={repos}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if only not in (entry / "cmdline").read_bytes():
                continue
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with module_service(tmp_path_factory, "dos", SITE) as service:
        yield service
    # Never leave a spinning git behind on a shared machine (today's bug did exactly that).
    for pid in git_processes(service.data / "repos"):
        with_suppress_kill(pid)


def with_suppress_kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def _auth(user: str) -> str:
    return base64.b64encode(f"{user}:{PASSWORDS[user]}".encode()).decode()


def _hang(svc: Service, user: str) -> socket.socket:
    """A fetch whose chunked body never ends: its git waits on stdin."""
    sock = socket.create_connection(("127.0.0.1", svc.port))
    sock.sendall(
        f"POST /org/dos/git-upload-pack HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Basic {_auth(user)}\r\n"
        "Content-Type: application/x-git-upload-pack-request\r\n"
        "Transfer-Encoding: chunked\r\n\r\n4\r\n0032\r\n".encode())
    return sock


def _wait_for(predicate, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


def _audit(svc: Service) -> list[dict[str, object]]:
    return [json.loads(x) for x in (svc.data / "audit.log").read_text().splitlines()]


def test_lying_content_length_leaves_no_git_behind(svc: Service) -> None:
    """POST receive-pack with Content-Length 1000, send 0000, close: on main git spun at
    full CPU forever. Now no git process of the service outlives the request."""
    repos = svc.data / "repos"
    for _ in range(3):
        sock = socket.create_connection(("127.0.0.1", svc.port))
        sock.sendall(
            f"POST /org/dos/git-receive-pack HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Basic {_auth('alice')}\r\n"
            "Content-Type: application/x-git-receive-pack-request\r\n"
            "Content-Length: 1000\r\n\r\n0000".encode())
        time.sleep(0.3)
        sock.close()
    assert _wait_for(lambda: not git_processes(repos), 8), \
        f"git processes left running: {git_processes(repos)}"


def test_an_aborted_push_is_audited(svc: Service, tmp_path: Path) -> None:
    """A push whose client leaves in the middle of the pack: no ref changes, git is
    killed, and the audit log says so (on main it said nothing)."""
    repos = svc.data / "repos"
    work = tmp_path / "w"
    git("clone", "-q", svc.clone_url("org/dos"), str(work))
    (work / "big.bin").write_bytes(os.urandom(2 << 20))
    git("add", ".", cwd=work)
    git("commit", "-q", "-m", "big", cwd=work)
    new = git("rev-parse", "HEAD", cwd=work).stdout.strip()
    objects = git("rev-list", "--objects", "HEAD", "--not", "origin/main", cwd=work).stdout
    pack = subprocess.run(["git", "pack-objects", "--stdout"], cwd=work, input=objects.encode(),
                          capture_output=True, check=True).stdout
    zero = "0" * 40
    command = f"{zero} {new} refs/heads/alice/aborted\0report-status\n".encode()
    body = b"%04x" % (len(command) + 4) + command + b"0000" + pack[: len(pack) // 2]
    sock = socket.create_connection(("127.0.0.1", svc.port))
    sock.sendall(
        f"POST /org/dos/git-receive-pack HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Basic {_auth('alice')}\r\n"
        "Content-Type: application/x-git-receive-pack-request\r\n"
        f"Content-Length: {len(body) * 2}\r\n\r\n".encode() + body)
    assert _wait_for(lambda: bool(git_processes(repos, b"receive-pack")), 10)
    sock.close()
    assert _wait_for(lambda: not git_processes(repos), 8)

    def aborted() -> list[dict[str, object]]:
        return [r for r in _audit(svc) if r["event"] == "push" and r.get("aborted")]

    assert _wait_for(lambda: bool(aborted()), 5)
    assert aborted()[-1]["user"] == "alice" and aborted()[-1]["refs"] == []
    refs = (repos / "org" / "dos.git" / "refs" / "heads")
    assert not (refs / "alice" / "aborted").exists()


def test_caps_per_user_and_total_then_the_deadline(svc: Service) -> None:
    repos = svc.data / "repos"
    url = f"{svc.url}/org/dos/info/refs?service=git-upload-pack"
    held = [_hang(svc, "alice"), _hang(svc, "alice")]
    try:
        assert _wait_for(lambda: len(git_processes(repos, b"git-http-backend")) == 2, 10)
        started = time.monotonic()
        r = httpx.get(url, auth=("alice", PASSWORDS["alice"]), timeout=30, trust_env=False)
        assert r.status_code == 429, r.text
        assert "maxGitProcessesPerUser" in r.text and r.headers["retry-after"]
        # bob still gets his own slot, and the third slot is the service's last.
        held.append(_hang(svc, "bob"))
        assert _wait_for(lambda: len(git_processes(repos, b"git-http-backend")) == 3, 10)
        r = httpx.get(url, auth=("bob", PASSWORDS["bob"]), timeout=30, trust_env=False)
        assert r.status_code == 503, r.text
        assert "maxGitProcesses" in r.text
        # The deadline (gitTimeout: 10) kills the hung requests' git processes.
        assert _wait_for(lambda: not git_processes(repos), started + 20 - time.monotonic())
        r = httpx.get(url, auth=("alice", PASSWORDS["alice"]), timeout=30, trust_env=False)
        assert r.status_code == 200
    finally:
        for sock in held:
            sock.close()
    killed = [r for r in _audit(svc) if r.get("aborted") and "gitTimeout" in str(r["aborted"])]
    assert killed, "the deadline kill is audited"


def test_a_client_that_leaves_mid_body_has_its_git_killed(svc: Service) -> None:
    repos = svc.data / "repos"
    sock = _hang(svc, "bob")
    assert _wait_for(lambda: bool(git_processes(repos)), 10)
    sock.close()
    assert _wait_for(lambda: not git_processes(repos), 5)
