"""Ref ownership, upstream names and push quotas with real git over real HTTP (issue 13,
items 4, 5 and 8): bob cannot touch alice's refs; reviewers delete through the API and CLI;
upstream wins its names and a user ref never stops a sync; ambiguous names and quotas."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cs_support import (
    PASSWORDS,
    Service,
    git,
    make_upstream,
    module_service,
    start_service,
    stop_service,
)

SITE = """  limits:
    maxRefsPerDay: 40
    maxPushBytesPerDay: 3000000
"""


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with module_service(tmp_path_factory, "owners", SITE, upstream=False) as service:
        yield service


def _clone(svc: Service, repo: str, user: str, dest: Path) -> Path:
    git("clone", "-q", svc.clone_url(repo, user), str(dest))
    return dest


def _commit(work: Path, name: str) -> str:
    (work / name).write_text(name + "\n")
    git("add", ".", cwd=work)
    git("commit", "-q", "-m", name, cwd=work)
    return git("rev-parse", "HEAD", cwd=work).stdout.strip()


def _refs(svc: Service, repo: str) -> dict[str, str]:
    out = git("--git-dir", str(svc.data / "repos" / f"{repo}.git"), "for-each-ref",
              "--format=%(refname) %(objectname)").stdout
    return dict(line.split(" ") for line in out.splitlines())


def _audit(svc: Service) -> list[dict[str, object]]:
    return [json.loads(x) for x in (svc.data / "audit.log").read_text().splitlines()]


def test_bob_cannot_overwrite_or_delete_alices_refs(svc: Service, tmp_path: Path) -> None:
    bare = make_upstream(tmp_path, "own", commits=1)
    svc.approve(f"file://{bare}", "org/own")
    alice = _clone(svc, "org/own", "alice", tmp_path / "a")
    _commit(alice, "alice-1")
    git("push", "-q", "origin", "HEAD:refs/heads/alice/feat", "HEAD:refs/tags/alice-t1",
        "HEAD:refs/heads/feature_1", cwd=alice)
    mine = _refs(svc, "org/own")
    bob = _clone(svc, "org/own", "bob", tmp_path / "b")
    _commit(bob, "bob-1")
    for args in (["-f", "HEAD:refs/heads/alice/feat"], [":refs/tags/alice-t1"],
                 ["-f", "HEAD:refs/heads/feature_1"], [":refs/heads/feature_1"],
                 ["HEAD:refs/heads/alice/new"]):
        done = git("push", "origin", *args, cwd=bob, check=False)
        assert done.returncode != 0, args
        assert "refusing" in done.stderr, done.stderr
    assert "belongs to alice" in git("push", "-f", "origin", "HEAD:refs/heads/feature_1",
                                     cwd=bob, check=False).stderr
    after = _refs(svc, "org/own")
    for ref in ("refs/heads/alice/feat", "refs/tags/alice-t1", "refs/heads/feature_1"):
        assert after[ref] == mine[ref]
    # The seed's flow: the office PC pushed feature_1 as alice; alice's HomePod updates it.
    _commit(alice, "alice-2")
    git("push", "-q", "origin", "HEAD:refs/heads/feature_1", cwd=alice)
    # bob may create a free name, and then it is his.
    git("push", "-q", "origin", "HEAD:refs/heads/bob-topic", cwd=bob)
    done = git("push", "origin", ":refs/heads/bob-topic", cwd=alice, check=False)
    assert done.returncode != 0 and "belongs to bob" in done.stderr


def test_ambiguous_names_are_refused(svc: Service, tmp_path: Path) -> None:
    bare = make_upstream(tmp_path, "amb", commits=1)
    svc.approve(f"file://{bare}", "org/amb")
    work = _clone(svc, "org/amb", "alice", tmp_path / "w")
    _commit(work, "x")
    for ref in ("refs/heads/HEAD", "refs/tags/HEAD", "refs/heads/refs/heads/x",
                "refs/heads/tags/v9", "refs/heads/deadbeef12", "refs/heads/v1"):
        done = git("push", "origin", f"HEAD:{ref}", cwd=work, check=False)
        assert done.returncode != 0, ref
        assert "refusing" in done.stderr, (ref, done.stderr)
        assert ref not in _refs(svc, "org/amb")


def test_reviewer_deletes_any_user_ref_by_api_and_cli(svc: Service, tmp_path: Path) -> None:
    bare = make_upstream(tmp_path, "del", commits=1)
    svc.approve(f"file://{bare}", "org/del")
    alice = _clone(svc, "org/del", "alice", tmp_path / "a")
    tip = _commit(alice, "a")
    git("push", "-q", "origin", "HEAD:refs/heads/alice/x", "HEAD:refs/heads/squat", cwd=alice)
    with svc.client("alice") as c:  # alice is no reviewer
        assert c.delete("/api/repos/org/del/refs/refs/heads/squat").status_code == 403
    with svc.client("bob") as c:  # bob is (site codeService.reviewers)
        r = c.delete("/api/repos/org/del/refs/refs/heads/squat")
        assert r.status_code == 200, r.text
        assert r.json()["owner"] == "alice" and r.json()["old"] == tip
        assert c.delete("/api/repos/org/del/refs/refs/heads/main").status_code == 400
        assert c.delete("/api/repos/org/del/refs/refs/heads/nothing").status_code == 404
    refs = _refs(svc, "org/del")
    assert "refs/heads/squat" not in refs and refs[r.json()["backup"]] == tip
    env = {**os.environ, "MLAB_USER": "admin", "MLAB_PASSWORD": svc.admin_password}
    done = subprocess.run(
        [sys.executable, "-m", "mlab.cli.main", "repo", "delete-ref", "org/del", "alice/x",
         "--server", svc.url], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "deleted refs/heads/alice/x (owner alice)" in done.stdout
    assert "refs/heads/alice/x" not in _refs(svc, "org/del")
    deletions = [a for a in _audit(svc) if a["event"] == "ref-delete"]
    assert [(a["user"], a["ref"]) for a in deletions[-2:]] == [
        ("bob", "refs/heads/squat"), ("admin", "refs/heads/alice/x")]


def test_upstream_wins_its_names_and_never_stops_syncing(svc: Service, tmp_path: Path) -> None:
    bare = make_upstream(tmp_path, "sq", commits=1)
    svc.approve(f"file://{bare}", "org/sq")
    alice = _clone(svc, "org/sq", "alice", tmp_path / "a")
    squat = _commit(alice, "squat")
    # alice pushes release and hotfix/x before upstream has them.
    git("push", "-q", "origin", "HEAD:refs/heads/release", "HEAD:refs/heads/hotfix/x",
        "HEAD:refs/tags/v2", cwd=alice)
    up = tmp_path / "sq-work"
    git("checkout", "-q", "-b", "release", cwd=up)
    release = _commit(up, "upstream-release")
    git("tag", "v2", cwd=up)
    git("checkout", "-q", "-b", "hotfix", cwd=up)
    hotfix = _commit(up, "upstream-hotfix")
    git("checkout", "-q", "main", cwd=up)
    main = _commit(up, "upstream-main")
    git("push", "-q", "origin", "release", "hotfix", "main", "v2", cwd=up)
    result = svc.sync("org/sq")
    assert result["ok"] is True, result
    refs = _refs(svc, "org/sq")
    assert refs["refs/heads/main"] == main  # upstream kept advancing
    assert refs["refs/heads/release"] == release and refs["refs/heads/hotfix"] == hotfix
    assert refs["refs/tags/v2"] == release
    moved = {m["ref"]: m["to"] for m in result["moved"]}
    assert set(moved) == {"refs/heads/release", "refs/heads/hotfix/x", "refs/tags/v2"}
    assert all(refs[to] == squat for to in moved.values())
    # Every clone sees upstream's commits under upstream's names.
    fresh = _clone(svc, "org/sq", "bob", tmp_path / "fresh")
    assert git("rev-parse", "origin/release", cwd=fresh).stdout.strip() == release
    # alice is told: on her next push, and through the API; the moves are audited.
    done = git("push", "origin", "HEAD:refs/heads/alice/after", cwd=alice)
    assert "moved-by-mlab" in done.stderr and "refs/heads/release" in done.stderr
    with svc.client("alice") as c:
        assert len(c.get("/api/notices").json()) == 3
    events = [a for a in _audit(svc) if a["event"] == "ref-moved" and a["repo"] == "org/sq"]
    assert {a["ref"] for a in events} == set(moved) and {a["owner"] for a in events} == {"alice"}
    # alice still owns her moved refs (she may delete them); upstream's are not hers.
    to = moved["refs/heads/hotfix/x"]
    git("push", "-q", "origin", f":{to}", cwd=alice)
    done = git("push", "origin", ":refs/heads/release", cwd=alice, check=False)
    assert done.returncode != 0 and "mirrors the upstream" in done.stderr


def test_daily_quotas_of_refs_and_bytes(svc: Service, tmp_path: Path) -> None:
    bare = make_upstream(tmp_path, "q", commits=1)
    svc.approve(f"file://{bare}", "org/q")
    bob = _clone(svc, "org/q", "bob", tmp_path / "b")
    _commit(bob, "b")
    specs = [f"HEAD:refs/heads/bob-many/{i}" for i in range(45)]
    done = git("push", "origin", *specs, cwd=bob, check=False)
    assert done.returncode != 0 and "maxRefsPerDay" in done.stderr, done.stderr
    assert not any(r.startswith("refs/heads/bob-many/") for r in _refs(svc, "org/q"))
    # Bytes: about 2 MB pass, the next 2 MB do not (limit 3,000,000 a day).
    git("config", "core.compression", "0", cwd=bob)
    for i in range(2):
        (bob / f"blob{i}.bin").write_bytes(os.urandom(2 << 20))
        git("add", ".", cwd=bob)
        git("commit", "-q", "-m", f"blob {i}", cwd=bob)
        done = git("push", "origin", f"HEAD:refs/heads/bob-bytes-{i}", cwd=bob, check=False)
        if i == 0:
            assert done.returncode == 0, done.stderr
    assert done.returncode != 0
    assert "refs/heads/bob-bytes-1" not in _refs(svc, "org/q")
    done = git("push", "origin", "HEAD:refs/heads/bob-bytes-2", cwd=bob, check=False)
    assert done.returncode != 0 and "maxPushBytesPerDay" in done.stderr, done.stderr
    # alice's quota is her own.
    alice = _clone(svc, "org/q", "alice", tmp_path / "a")
    _commit(alice, "a")
    git("push", "-q", "origin", "HEAD:refs/heads/alice/q", cwd=alice)


def test_namespace_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLAB_TEST_HOME", str(tmp_path))
    service = start_service(tmp_path, "  refPolicy: namespace\n")
    try:
        bare = make_upstream(tmp_path, "ns", commits=1)
        service.approve(f"file://{bare}", "org/ns")
        alice = _clone(service, "org/ns", "alice", tmp_path / "a")
        _commit(alice, "a")
        done = git("push", "origin", "HEAD:refs/heads/feature_1", cwd=alice, check=False)
        assert done.returncode != 0 and "refPolicy: namespace" in done.stderr
        git("push", "-q", "origin", "HEAD:refs/heads/alice/feature_1",
            "HEAD:refs/tags/alice/t1", cwd=alice)
        bob = _clone(service, "org/ns", "bob", tmp_path / "b")
        done = git("push", "origin", ":refs/heads/alice/feature_1", cwd=bob, check=False)
        assert done.returncode != 0
        assert set(PASSWORDS) == {"alice", "bob"}
    finally:
        stop_service(service)
