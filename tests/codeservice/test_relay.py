"""The seed's workflow end to end: office PC (mlab relay), code service, HomePod (git).

Local bare repositories stand in for the GitHub upstream and the user's fork.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlab.relay import check_branch, homepod_url, pull_request_url
from cs_support import PASSWORDS, Service, git, make_upstream


def relay(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update({"MLAB_USER": "alice", "MLAB_PASSWORD": PASSWORDS["alice"],
                "GIT_TERMINAL_PROMPT": "0", "GIT_AUTHOR_NAME": "Office",
                "GIT_AUTHOR_EMAIL": "o@example.com", "GIT_COMMITTER_NAME": "Office",
                "GIT_COMMITTER_EMAIL": "o@example.com", "HOME": str(cwd)})
    return subprocess.run([sys.executable, "-m", "mlab.cli.main", "relay", *args], cwd=cwd,
                          capture_output=True, text=True, env=env, timeout=120,
                          stdin=subprocess.DEVNULL)


def _commit(work: Path, name: str, text: str | None = None) -> None:
    (work / name).write_text(text or name + "\n")
    git("add", ".", cwd=work)
    git("commit", "-q", "-m", name, cwd=work)


@pytest.mark.parametrize("fork,upstream,url", [
    ("https://github.com/me/deepvac", "https://github.com/DeepVAC/deepvac.git",
     "https://github.com/DeepVAC/deepvac/compare/master...me:feature_1?expand=1"),
    ("git@github.com:me/deepvac.git", "https://github.com/DeepVAC/deepvac",
     "https://github.com/DeepVAC/deepvac/compare/master...me:feature_1?expand=1"),
    ("file:///srv/fork.git", "https://github.com/DeepVAC/deepvac", None),
], ids=["https", "ssh-fork", "not-github"])
def test_pull_request_url(fork: str, upstream: str, url: str | None) -> None:
    assert pull_request_url(fork, upstream, "master", "feature_1") == url


@pytest.mark.parametrize("url,host,expected", [
    ("http://127.0.0.1:80/demo/up", "code.mlab.local", "http://code.mlab.local/demo/up"),
    ("http://u:p@10.0.0.5:8080/org/repo", "code.corp", "http://code.corp/org/repo"),
    ("http://code.mlab.local/a/b", "code.mlab.local", "http://code.mlab.local/a/b"),
], ids=["local-host", "credentials-port", "same"])
def test_homepod_url(url: str, host: str, expected: str) -> None:
    assert homepod_url(url, host) == expected


@pytest.mark.parametrize("name", ["../x", "-x", "a..b", "x.lock", "a b", ""])
def test_bad_branch_names(name: str) -> None:
    with pytest.raises(Exception):
        check_branch(name)


def test_seed_workflow_end_to_end(service: Service, tmp_path: Path) -> None:
    upstream = make_upstream(tmp_path, "deepvac", commits=2)
    fork = tmp_path / "fork.git"
    git("clone", "-q", "--bare", str(upstream), str(fork))
    service.approve(f"file://{upstream}", "deepvac/deepvac")
    mlab_url = f"http://127.0.0.1:{service.port}/deepvac/deepvac"
    office = tmp_path / "office"
    office.mkdir()

    # Upstream moves on after the fork was made.
    up_work = tmp_path / "deepvac-work"
    _commit(up_work, "upstream-later")
    git("push", "-q", "origin", "main", cwd=up_work)
    assert service.sync("deepvac/deepvac")["ok"]

    done = relay("init", f"file://{fork}", "--upstream", f"file://{upstream}", "--mlab",
                 mlab_url, "deepvac", cwd=office)
    assert done.returncode == 0, done.stderr
    clone = office / "deepvac"
    assert git("remote", cwd=clone).stdout.split() == ["mlab", "origin", "upstream"]
    assert "PASSWORD" not in (clone / ".git" / "config").read_text().upper()

    done = relay("start", "feature_1", "-C", str(clone), cwd=office)
    assert done.returncode == 0, done.stderr
    assert "git checkout feature_1" in done.stdout
    # The command for a HomePod names the code service as HomePods reach it (issue 10), not
    # the office PC's address of it.
    assert "git clone http://code.mlab.local/deepvac/deepvac && git checkout feature_1" \
        in done.stdout, done.stdout

    # In a HomePod: clone, check out (not create) the branch, commit, push.
    home = tmp_path / "homepod"
    git("clone", "-q", service.clone_url("deepvac/deepvac"), str(home))
    git("checkout", "-q", "feature_1", cwd=home)
    assert (home / "upstream-later").exists()
    _commit(home, "trained.py", "print('gpu work')\n")
    git("push", "-q", cwd=home)

    done = relay("finish", "feature_1", "-C", str(clone), cwd=office)
    assert done.returncode == 0, done.stderr
    assert "pull request" in done.stdout
    log = git("--git-dir", str(fork), "log", "--format=%s", "feature_1").stdout.split("\n")
    assert log[0] == "trained.py" and "upstream-later" in log

    # A second round: more HomePod work arrives on the fork as a fast-forward.
    _commit(home, "more.py")
    git("push", "-q", cwd=home)
    done = relay("finish", "feature_1", "-C", str(clone), cwd=office)
    assert done.returncode == 0, done.stderr
    assert git("--git-dir", str(fork), "log", "-1", "--format=%s", "feature_1"
               ).stdout.strip() == "more.py"

    # The HomePod squashes the pushed commits into one: finish refuses and lists them.
    git("reset", "-q", "--soft", "HEAD~2", cwd=home)
    _commit(home, "squashed.py")
    git("push", "-q", "--force", "origin", "feature_1", cwd=home)
    before = git("rev-parse", "HEAD", cwd=clone).stdout
    done = relay("finish", "feature_1", "-C", str(clone), cwd=office)
    assert done.returncode == 1
    assert "would drop" in done.stderr and "more.py" in done.stderr
    assert git("rev-parse", "HEAD", cwd=clone).stdout == before
    assert git("--git-dir", str(fork), "log", "-1", "--format=%s", "feature_1"
               ).stdout.strip() == "more.py"


def test_finish_refuses_large_files(service: Service, tmp_path: Path) -> None:
    upstream = make_upstream(tmp_path, "lf", commits=1)
    fork = tmp_path / "lf-fork.git"
    git("clone", "-q", "--bare", str(upstream), str(fork))
    service.approve(f"file://{upstream}", "org/lf")
    office = tmp_path / "office"
    office.mkdir()
    assert relay("init", f"file://{fork}", "--upstream", f"file://{upstream}", "--mlab",
                 f"http://127.0.0.1:{service.port}/org/lf", "lf", cwd=office).returncode == 0
    clone = office / "lf"
    assert relay("start", "big", "-C", str(clone), cwd=office).returncode == 0
    home = tmp_path / "home"
    git("clone", "-q", service.clone_url("org/lf"), str(home))
    git("checkout", "-q", "big", cwd=home)
    _commit(home, "model.bin", "x" * 300_000)
    git("push", "-q", cwd=home)
    done = relay("finish", "big", "-C", str(clone), "--max-file-size", "100000", cwd=office)
    assert done.returncode == 1
    assert "model.bin (300000 bytes)" in done.stderr
    assert "big" not in git("--git-dir", str(fork), "branch", "--list", "big").stdout


def test_init_reports_a_dead_remote(service: Service, tmp_path: Path) -> None:
    upstream = make_upstream(tmp_path, "dead", commits=1)
    done = relay("init", f"file://{upstream}", "--upstream", f"file://{upstream}", "--mlab",
                 f"http://127.0.0.1:{service.port}/org/not-approved", "d", cwd=tmp_path)
    assert done.returncode == 1 and "remote mlab does not answer" in done.stderr
