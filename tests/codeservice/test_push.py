"""Pushes through the real service: the hook's refusals, a 150 MiB blob, concurrency, and
a service killed in the middle of a push."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cs_support import (
    Service, git, git_env, make_upstream, start_service, stop_service,
)


@pytest.fixture(scope="module")
def repo(service: Service, tmp_path_factory: pytest.TempPathFactory) -> str:
    bare = make_upstream(tmp_path_factory.mktemp("up"), "push", commits=2)
    service.approve(f"file://{bare}", "org/push")
    return "org/push"


def _mirror(service: Service, name: str) -> Path:
    return service.data / "repos" / f"{name}.git"


def _ref(repo: Path, ref: str) -> str:
    return git("--git-dir", str(repo), "rev-parse", "--verify", "-q", ref, check=False
               ).stdout.strip()


def test_push_to_upstream_branch_or_tag_is_refused(service: Service, repo: str,
                                                  work: Path) -> None:
    git("clone", "-q", service.clone_url(repo), str(work / "c"))
    c = work / "c"
    (c / "x.txt").write_text("x\n")
    git("add", ".", cwd=c)
    git("commit", "-q", "-m", "x", cwd=c)
    before = _ref(_mirror(service, repo), "refs/heads/main")
    for args in (["HEAD:main"], ["--delete", "main"], ["-f", "HEAD:refs/tags/v1"],
                 ["HEAD:refs/mlab/upstream/heads/x"], ["HEAD:refs/notes/x"]):
        done = git("push", "origin", *args, cwd=c, check=False)
        assert done.returncode != 0, args
        assert "declined" in done.stderr or "hidden" in done.stderr or "rejected" in done.stderr
    done = git("push", "origin", "HEAD:main", cwd=c, check=False)
    assert "refusing to update refs/heads/main" in done.stderr
    assert "Push a branch of your own" in done.stderr
    assert _ref(_mirror(service, repo), "refs/heads/main") == before
    # A branch of one's own is fine, and the audit log has the push with its refs.
    git("push", "-q", "origin", "HEAD:refs/heads/alice/x", cwd=c)
    records = [json.loads(x) for x in (service.data / "audit.log").read_text().splitlines()]
    pushes = [r for r in records if r["event"] == "push" and r["repo"] == repo]
    assert any(r.get("refused") and r["refs"][0]["ref"] == "refs/heads/main" for r in pushes)
    ok = [r for r in pushes if not r.get("refused") and r["refs"]]
    assert ok[-1]["user"] == "alice" and ok[-1]["refs"][0]["ref"] == "refs/heads/alice/x"
    assert ok[-1]["bytes_in"] > 0
    assert any(r["event"] == "fetch" and r["user"] == "alice" and r["bytes_out"] > 0
               for r in records)


def test_150_mib_blob_is_refused_naming_the_file(service: Service, repo: str,
                                                work: Path) -> None:
    c = work / "big"
    git("clone", "-q", service.clone_url(repo), str(c))
    git("config", "core.compression", "0", cwd=c)
    with open(c / "weights.bin", "wb") as fh:
        for _ in range(150):
            fh.write(os.urandom(1024 * 1024))
    git("add", "weights.bin", cwd=c)
    git("commit", "-q", "-m", "big", cwd=c)
    done = git("push", "origin", "HEAD:refs/heads/alice/big", cwd=c, check=False, timeout=300)
    assert done.returncode != 0
    assert "weights.bin is 157286400 bytes" in done.stderr
    assert _ref(_mirror(service, repo), "refs/heads/alice/big") == ""


def test_concurrent_clones_and_pushes_then_fsck(service: Service, repo: str,
                                               work: Path) -> None:
    url = service.clone_url(repo)
    pushers = []
    for i in range(5):
        d = work / f"p{i}"
        git("clone", "-q", url, str(d))
        (d / f"p{i}.txt").write_text(f"{i}\n" * 1000)
        git("add", ".", cwd=d)
        git("commit", "-q", "-m", f"push {i}", cwd=d)
        pushers.append(d)

    def clone(i: int) -> int:
        return git("clone", "-q", url, str(work / f"c{i}"), check=False).returncode

    def push(i: int) -> int:
        return git("push", "-q", "origin", f"HEAD:refs/heads/bob-{i}", cwd=pushers[i],
                   check=False).returncode

    with ThreadPoolExecutor(max_workers=25) as pool:
        clones = [pool.submit(clone, i) for i in range(20)]
        pushes = [pool.submit(push, i) for i in range(5)]
        assert [f.result() for f in clones] == [0] * 20
        assert [f.result() for f in pushes] == [0] * 5
    mirror = _mirror(service, repo)
    for i in range(5):
        assert _ref(mirror, f"refs/heads/bob-{i}") == git("rev-parse", "HEAD",
                                                           cwd=pushers[i]).stdout.strip()
    assert git("--git-dir", str(mirror), "fsck", "--strict", "--no-progress").returncode == 0


def test_kill_during_push_leaves_repository_consistent(tmp_path: Path) -> None:
    svc = start_service(tmp_path / "svc")
    try:
        bare = make_upstream(tmp_path, "k", commits=1)
        svc.approve(f"file://{bare}", "org/k")
        mirror = svc.data / "repos" / "org" / "k.git"
        c = tmp_path / "c"
        git("clone", "-q", svc.clone_url("org/k"), str(c))
        git("push", "-q", "origin", "HEAD:refs/heads/alice/k", cwd=c)
        old = _ref(mirror, "refs/heads/alice/k")
        git("config", "core.compression", "0", cwd=c)
        with open(c / "data.bin", "wb") as fh:
            for _ in range(60):
                fh.write(os.urandom(1024 * 1024))
        git("add", ".", cwd=c)
        git("commit", "-q", "-m", "data", cwd=c)
        new = git("rev-parse", "HEAD", cwd=c).stdout.strip()
        env = git_env(tmp_path)
        push = subprocess.Popen(["git", "push", "origin", "HEAD:refs/heads/alice/k"], cwd=c,
                                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and push.poll() is None:
            if list((mirror / "objects").glob("incoming-*")) or list(
                    (mirror / "objects" / "pack").glob("tmp_pack_*")):
                break
            time.sleep(0.01)
        os.killpg(svc.proc.pid, signal.SIGKILL)
        svc.proc.wait(timeout=15)
        push.communicate(timeout=60)
        time.sleep(0.5)  # orphaned git children (if any) finish or die
        assert _ref(mirror, "refs/heads/alice/k") in (old, new)
        assert git("--git-dir", str(mirror), "fsck", "--no-progress").returncode == 0
        # The service starts again on the same data and takes the push.
        svc = start_service(tmp_path / "svc")
        git("remote", "set-url", "origin", svc.clone_url("org/k"), cwd=c)
        git("push", "-q", "origin", "HEAD:refs/heads/alice/k", cwd=c, timeout=120)
        assert _ref(mirror, "refs/heads/alice/k") == new
        assert git("--git-dir", str(mirror), "fsck", "--no-progress").returncode == 0
    finally:
        stop_service(svc)


def test_client_killed_during_push(service: Service, repo: str, work: Path) -> None:
    mirror = _mirror(service, repo)
    c = work / "ck"
    git("clone", "-q", service.clone_url(repo), str(c))
    git("config", "core.compression", "0", cwd=c)
    with open(c / "blob.bin", "wb") as fh:
        for _ in range(60):
            fh.write(os.urandom(1024 * 1024))
    git("add", ".", cwd=c)
    git("commit", "-q", "-m", "blob", cwd=c)
    push = subprocess.Popen(["git", "push", "origin", "HEAD:refs/heads/alice/ck"], cwd=c,
                            env=git_env(work), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and push.poll() is None:
        if list((mirror / "objects").glob("incoming-*")):
            break
        time.sleep(0.01)
    if push.poll() is None:
        os.killpg(push.pid, signal.SIGKILL)
    push.wait(timeout=30)
    time.sleep(1)
    assert _ref(mirror, "refs/heads/alice/ck") in ("", git("rev-parse", "HEAD", cwd=c
                                                          ).stdout.strip())
    assert git("--git-dir", str(mirror), "fsck", "--no-progress").returncode == 0
    # The service is fine and takes the same push again.
    git("push", "-q", "origin", "HEAD:refs/heads/alice/ck", cwd=c, timeout=120)
    assert _ref(mirror, "refs/heads/alice/ck") == git("rev-parse", "HEAD", cwd=c).stdout.strip()


def test_pages_escape_user_branch_names(service: Service, repo: str, work: Path) -> None:
    c = work / "esc"
    git("clone", "-q", service.clone_url(repo), str(c))
    git("push", "-q", "origin", "HEAD:refs/heads/x<svg/onload=alert(1)>", cwd=c)
    with service.client("bob") as client:
        page = client.get(f"/{repo}").text
        index = client.get("/").text
    assert "<svg" not in index and "<svg" not in page
    assert "&lt;svg/onload=alert(1)&gt;" in page
