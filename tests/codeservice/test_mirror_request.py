"""``mlab request mirror``: a user asks for a repository, reviewers approve, the mirror appears.

The real code service (``mlab code-service serve``) on a free loopback port, real ``mlab
request`` processes and the real ``git``; a local bare repository stands in for GitHub
(``allowLocalUpstreams``). The site asks two approvers for mirrors and allows only
``github.com`` besides loopback, so both rules are exercised.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cli_runner import Run, mlab
from cs_support import PASSWORDS, Service, git, make_upstream, start_service, stop_service


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    tmp = tmp_path_factory.mktemp("mirrorreq")
    with pytest.MonkeyPatch.context() as env:  # for this module's tests only
        env.setenv("MLAB_TEST_HOME", str(tmp))
        service = start_service(tmp, "  twoPersonApproval: [mirror]\n")
        yield service
        stop_service(service)


def run(svc: Service, user: str, *args: str) -> Run:
    """``mlab request ARGS`` as ``user`` of ``svc``, with no other MLAB_* setting."""
    password = svc.admin_password if user == "admin" else PASSWORDS[user]
    return mlab("request", *args, drop=("MLAB_",), timeout=120, env={
        "MLAB_SERVER": svc.url, "MLAB_USER": user, "MLAB_PASSWORD": password, "COLUMNS": "200"})


def ok(proc: Run) -> str:
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def rid(stdout: str) -> int:
    # "submitted mirror request 3: URL as org/repo (submitted)"
    return int(stdout.split("request ")[1].split(":")[0])


def repos(svc: Service) -> list[str]:
    with svc.client() as c:
        return [r["name"] for r in c.get("/api/repos").json()]


def audit(svc: Service) -> list[dict[str, object]]:
    return [json.loads(line) for line in (svc.data / "audit.log").read_text().splitlines()]


def test_mirror_request_two_approvals_then_clone(svc: Service, tmp_path: Path) -> None:
    upstream = make_upstream(tmp_path, "deepvac")
    url = f"file://{upstream}"
    out = ok(run(svc, "alice", "mirror", url, "--why", "train deepvac on the GPUs",
                 "--as", "deepvac/deepvac"))
    assert f"{url} as deepvac/deepvac (submitted)" in out
    request = rid(out)

    listed = ok(run(svc, "alice", "list", "-o", "json"))
    item = next(i for i in json.loads(listed) if i["id"] == request)
    assert (item["kind"], item["url"], item["name"]) == ("mirror", url, "deepvac/deepvac")
    assert "deepvac/deepvac" in ok(run(svc, "alice", "list"))

    # alice is no reviewer; bob's approval is the first of two: no mirror yet.
    refused = run(svc, "alice", "approve", str(request), "--comment", "mine")
    assert refused.returncode == 1 and "not a reviewer" in refused.stderr
    assert "in_review" in ok(run(svc, "bob", "approve", str(request), "--comment", "needed"))
    assert "deepvac/deepvac" not in repos(svc)
    again = run(svc, "bob", "approve", str(request), "--comment", "twice")
    assert again.returncode == 1 and "already approved" in again.stderr

    # The second approver's approval runs `mlab repo approve`'s code: mirror made and synced.
    assert "approved" in ok(run(svc, "admin", "approve", str(request), "--comment", "ok"))
    assert "deepvac/deepvac" in repos(svc)
    clone = tmp_path / "clone"
    git("clone", "-q", svc.clone_url("deepvac/deepvac"), str(clone))
    assert (clone / "file1.txt").read_text() == "content 1\n"

    shown = ok(run(svc, "alice", "show", str(request)))
    assert f"mirror: {url} as deepvac/deepvac" in shown
    events = [e for e in audit(svc) if e.get("id") == request or e.get("request_id") == request]
    assert [(e["event"], e.get("action")) for e in events] == [
        ("request", "submit"), ("request", "review"), ("request", "approve"),
        ("approve", None), ("request", "approve")]
    made = next(e for e in events if e["event"] == "approve")
    assert (made["user"], made["requested_by"], made["repo"]) == ("admin", "alice", "deepvac/deepvac")

    # Asking again for a mirror that exists is refused at once.
    dup = run(svc, "bob", "mirror", url, "--why", "again", "--as", "deepvac/deepvac")
    assert dup.returncode == 1 and "already on the code service" in dup.stderr


def test_mirror_request_rules(svc: Service, tmp_path: Path) -> None:
    # allowedHosts bounds what may be asked for (the site allows github.com and loopback).
    far = run(svc, "alice", "mirror", "https://gitlab.example.org/a/b", "--why", "x")
    assert far.returncode == 2, far.stderr
    assert "not in codeService.allowedHosts" in far.stderr

    # No self-review, even for a reviewer.
    upstream = make_upstream(tmp_path, "tool")
    own = rid(ok(run(svc, "bob", "mirror", f"file://{upstream}", "--why", "mine",
                     "--as", "bob/tool")))
    self_review = run(svc, "bob", "approve", str(own), "--comment", "ok")
    assert self_review.returncode == 1 and "nobody reviews their own" in self_review.stderr

    # A rejection carries the reason; nothing appears.
    asked = rid(ok(run(svc, "alice", "mirror", f"file://{upstream}", "--why", "want it",
                       "--as", "alice/tool")))
    ok(run(svc, "bob", "reject", str(asked), "--comment", "not for product work"))
    item = json.loads(ok(run(svc, "alice", "show", str(asked), "-o", "json")))
    assert item["state"] == "rejected"
    assert item["history"][-1]["comment"] == "not for product work"
    assert "alice/tool" not in repos(svc)

    # If the mirror cannot be made, the approval is not recorded and can be given again.
    gone = make_upstream(tmp_path, "gone")
    late = rid(ok(run(svc, "alice", "mirror", f"file://{gone}", "--why", "soon",
                      "--as", "alice/gone")))
    ok(run(svc, "bob", "approve", str(late), "--comment", "first"))
    shutil.rmtree(gone)
    failed = run(svc, "admin", "approve", str(late), "--comment", "second")
    assert failed.returncode != 0 and "stays in review" in failed.stderr, failed.stderr
    item = json.loads(ok(run(svc, "alice", "show", str(late), "-o", "json")))
    assert item["state"] == "in_review" and item["approvers"] == ["bob"]
    assert "alice/gone" not in repos(svc)
    with httpx.Client(base_url=svc.url, auth=("alice", PASSWORDS["alice"]), trust_env=False) as c:
        assert c.get("/alice/gone/info/refs?service=git-upload-pack").status_code == 404
