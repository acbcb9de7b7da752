"""Mirroring rules against the real service and real git: force-pushes, backups, user
branches, conflicts, failed syncs. Also the pure planner, table-driven."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlab.codeservice.mirror import plan_sync
from cs_support import Service, git, make_upstream

A, B, C = "a" * 40, "b" * 40, "c" * 40


def _ancestor(old: str, new: str) -> bool:
    return (old, new) == (A, B)  # B fast-forwards A; anything else is a rewrite


@pytest.mark.parametrize("incoming,owned,current,commands,conflicts", [
    ({"heads/main": A}, {}, {}, [f"create refs/heads/main {A}",
                                 f"create refs/mlab/upstream/heads/main {A}"], []),
    ({"heads/main": B}, {"heads/main": A}, {"heads/main": A},
     [f"update refs/heads/main {B} {A}", f"update refs/mlab/upstream/heads/main {B} {A}"], []),
    ({"heads/main": C}, {"heads/main": A}, {"heads/main": A},
     [f"create refs/mlab/backup/T/heads/main {A}", f"update refs/heads/main {C} {A}",
      f"update refs/mlab/upstream/heads/main {C} {A}"], []),
    ({"heads/feat": B}, {}, {"heads/feat": A},
     [f"create refs/heads/feat {B}", f"create refs/mlab/upstream/heads/feat {B}"], []),
    ({}, {"heads/old": A}, {"heads/old": A, "heads/mine": B},
     [f"create refs/mlab/backup/T/heads/old {A}", f"delete refs/heads/old {A}",
      f"delete refs/mlab/upstream/heads/old {A}"], []),
    ({"heads/main": A}, {"heads/main": A}, {"heads/main": A, "heads/mine": C}, [], []),
], ids=["new-branch", "fast-forward", "force-push-backup", "upstream-wins-its-name",
        "upstream-delete-keeps-user-branch", "nothing-to-do"])
def test_plan_sync(incoming, owned, current, commands, conflicts) -> None:  # type: ignore[no-untyped-def]
    plan = plan_sync(incoming, owned, current, _ancestor, "T")
    assert plan.commands == commands
    assert plan.conflicts == conflicts
    assert not any("heads/mine" in c for c in plan.commands)


def test_plan_sync_moves_clashing_user_refs_aside_first() -> None:
    """A user ref with upstream's name, or one that blocks it as file or directory, is
    moved aside in a first transaction; one equal to upstream's is adopted."""
    plan = plan_sync({"heads/feat": B, "heads/hotfix": A, "heads/x/y": A, "tags/v2": A},
                     {}, {"heads/feat": A, "heads/hotfix/x": B, "heads/x": C,
                          "tags/v2": A, "heads/mine": C}, _ancestor, "T")
    assert plan.moves == [
        ("refs/heads/feat", "refs/heads/moved-by-mlab/T/feat", A),
        ("refs/heads/hotfix/x", "refs/heads/moved-by-mlab/T/hotfix/x", B),
        ("refs/heads/x", "refs/heads/moved-by-mlab/T/x", C),
    ]
    assert plan.move_commands[:2] == [f"create refs/heads/moved-by-mlab/T/feat {A}",
                                      f"delete refs/heads/feat {A}"]
    assert plan.adopted == ["refs/tags/v2"]
    assert f"create refs/heads/hotfix {A}" in plan.commands
    assert f"create refs/heads/x/y {A}" in plan.commands
    assert f"create refs/mlab/upstream/tags/v2 {A}" in plan.commands
    assert not any("heads/mine" in c for c in plan.commands + plan.move_commands)


def _refs(repo: Path) -> dict[str, str]:
    out = git("--git-dir", str(repo), "for-each-ref", "--format=%(refname) %(objectname)").stdout
    return dict(line.split(" ") for line in out.splitlines())


def _commit(work: Path, name: str) -> str:
    (work / name).write_text(name + "\n")
    git("add", ".", cwd=work)
    git("commit", "-q", "-m", name, cwd=work)
    return git("rev-parse", "HEAD", cwd=work).stdout.strip()


def test_force_push_sync_keeps_backup_and_user_branches(service: Service, tmp_path: Path) -> None:
    bare = make_upstream(tmp_path, "fp", commits=3)
    service.approve(f"file://{bare}", "org/fp")
    mirror = service.data / "repos" / "org" / "fp.git"
    # A HomePod user pushes a branch of their own.
    home = tmp_path / "home"
    git("clone", "-q", service.clone_url("org/fp"), str(home))
    git("checkout", "-q", "-b", "alice/feat", cwd=home)
    user_tip = _commit(home, "alice-work")
    git("push", "-q", "origin", "alice/feat", cwd=home)
    old_main = _refs(mirror)["refs/heads/main"]

    # Upstream rewrites main (force-push) and moves tag v1.
    up = tmp_path / "fp-work"
    git("reset", "-q", "--hard", "HEAD~2", cwd=up)
    new_main = _commit(up, "rewritten")
    git("push", "-q", "--force", "origin", "main", cwd=up)
    git("tag", "-f", "v1", cwd=up)
    git("push", "-q", "--force", "origin", "v1", cwd=up)

    result = service.sync("org/fp")
    assert result["ok"] is True
    assert any("forced update" in line for line in result["changes"]), result
    refs = _refs(mirror)
    assert refs["refs/heads/main"] == new_main
    assert refs["refs/tags/v1"] == new_main
    backups = {k: v for k, v in refs.items() if k.startswith("refs/mlab/backup/")}
    assert any(k.endswith("/heads/main") and v == old_main for k, v in backups.items())
    assert any(k.endswith("/tags/v1") for k in backups)
    assert refs["refs/heads/alice/feat"] == user_tip
    audit = [json.loads(x) for x in (service.data / "audit.log").read_text().splitlines()]
    assert any(a["event"] == "sync" and a["repo"] == "org/fp" and
               any(old_main[:12] in c and new_main[:12] in c for c in a["changes"])
               for a in audit)

    # Upstream now creates a branch with the user's name: upstream wins its name, the
    # user's branch is moved aside (kept), its owner told, the move audited.
    git("checkout", "-q", "-b", "alice/feat", cwd=up)
    upstream_feat = _commit(up, "upstream-same-name")
    git("push", "-q", "origin", "alice/feat", cwd=up)
    result = service.sync("org/fp")
    assert result["ok"] is True and result["conflicts"] == []
    [moved] = result["moved"]
    assert moved["ref"] == "refs/heads/alice/feat"
    assert moved["to"].startswith("refs/heads/moved-by-mlab/")
    refs = _refs(mirror)
    assert refs["refs/heads/alice/feat"] == upstream_feat
    assert refs[moved["to"]] == user_tip
    assert service.sync("org/fp")["moved"] == []
    with service.client("alice") as c:
        notes = c.get("/api/notices").json()
    assert any(moved["to"] in n["text"] for n in notes)
    audit = [json.loads(x) for x in (service.data / "audit.log").read_text().splitlines()]
    assert any(a["event"] == "ref-moved" and a["owner"] == "alice" and a["to"] == moved["to"]
               for a in audit)

    # Upstream deletes that branch again: it goes (with a backup), the moved one stays.
    git("push", "-q", "origin", "--delete", "alice/feat", cwd=up)
    result = service.sync("org/fp")
    assert result["ok"] is True and result["conflicts"] == []
    refs = _refs(mirror)
    assert "refs/heads/alice/feat" not in refs and refs[moved["to"]] == user_tip
    assert git("--git-dir", str(mirror), "fsck", "--no-progress").returncode == 0


def test_failed_sync_keeps_last_good_state(service: Service, tmp_path: Path) -> None:
    bare = make_upstream(tmp_path, "fl", commits=1)
    service.approve(f"file://{bare}", "org/fl")
    mirror = service.data / "repos" / "org" / "fl.git"
    before = _refs(mirror)
    moved = tmp_path / "moved.git"
    shutil.move(str(bare), moved)
    result = service.sync("org/fl")
    assert result["ok"] is False and "fetch from upstream failed" in result["error"]
    assert _refs(mirror) == before
    env = {**os.environ, "MLAB_USER": "admin", "MLAB_PASSWORD": service.admin_password}
    listed = subprocess.run(
        [sys.executable, "-m", "mlab.cli.main", "repo", "list", "-o", "json", "--server",
         service.url], capture_output=True, text=True, env=env, timeout=60)
    assert listed.returncode == 0, listed.stderr
    row = next(r for r in json.loads(listed.stdout) if r["name"] == "org/fl")
    assert "fetch from upstream failed" in row["last_result"] and row["last_ok"]
    failed = subprocess.run(
        [sys.executable, "-m", "mlab.cli.main", "repo", "sync", "org/fl", "--server",
         service.url], capture_output=True, text=True, env=env, timeout=60)
    assert failed.returncode == 1 and "FAILED" in failed.stdout
    shutil.move(str(moved), bare)
    assert service.sync("org/fl")["ok"] is True


GIT_NOT_A_REPO = """fatal: '/tmp/nu/up' does not appear to be a git repository
fatal: Could not read from remote repository.

Please make sure you have the correct access rights
and the repository exists.
"""


def test_fetch_errors_show_gits_lines_and_tell_permanent_from_temporary() -> None:
    from mlab.codeservice.mirror import SyncError, UpstreamError, fetch_error, git_error

    assert git_error(GIT_NOT_A_REPO) == (
        "fatal: '/tmp/nu/up' does not appear to be a git repository; "
        "fatal: Could not read from remote repository.")
    assert git_error("") == "(no message)"
    permanent = fetch_error(GIT_NOT_A_REPO)
    assert isinstance(permanent, UpstreamError) and not permanent.retryable
    assert permanent.http_status == 422
    assert "does not appear to be a git repository" in permanent.one_line()
    gone = fetch_error("remote: Repository not found.\nfatal: repository "
                       "'https://github.com/a/b/' not found\n")
    assert isinstance(gone, UpstreamError)
    down = fetch_error("fatal: unable to access 'https://github.com/a/b/': "
                       "Could not resolve host: github.com\n")
    assert isinstance(down, SyncError) and down.retryable
    assert "Could not resolve host: github.com" in down.one_line()


@pytest.mark.parametrize("stderr,expected", [
    ("fatal: prepare: cannot lock ref 'refs/heads/main': is at aaaa but expected bbbb",
     "a push changed this ref during the sync"),
    ("fatal: prepare: cannot lock ref 'refs/heads/hotfix': 'refs/heads/hotfix/x' exists; "
     "cannot create 'refs/heads/hotfix'", "clash as file and directory"),
], ids=["race", "file-directory"])
def test_sync_errors_name_the_real_cause(stderr: str, expected: str) -> None:
    """Main called every ref failure "a push raced with the sync"."""
    from mlab.codeservice.mirror import ref_error

    message = ref_error(stderr)
    assert expected in message and stderr.removeprefix("fatal: ") in message
    assert "raced" not in ref_error("fatal: something else")
