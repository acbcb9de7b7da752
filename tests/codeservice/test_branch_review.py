"""Reviewed user branches (issue 17) with the real code service, real git and the relay.

Two processes of the code service share one data directory: ``homepod`` takes 127.0.0.1 for
a HomePod address (``MLAB_HOMEPOD_NETS=127.0.0.0/8``), ``office`` takes it for an office PC
(no HomePod networks). The site has no ``posture``, so user branches are reviewed. What the
HomePod pushes is invisible and unfetchable from the office (by name, by commit id, over
protocol v0 and v2, on the web page) until bob approves a branch request for that commit;
alice cannot approve her own, and the site asks for two approvers; the reviewer reads every new commit's patch with
``mlab request show``; a new commit hides the branch again; a revocation hides it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from cli_runner import Run
from cli_runner import mlab as run_mlab
from cs_support import PASSWORDS, Service, git, make_upstream, start_service, stop_service

REPO = "deepvac/deepvac"
AIRLOCK_PASSWORD = "airlock-secret-1"


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, Service]]:
    tmp = tmp_path_factory.mktemp("branchreview")
    with pytest.MonkeyPatch.context() as env:  # for this module's tests only
        env.setenv("MLAB_TEST_HOME", str(tmp))
        # alice reviews too (so self-review is tried), and branches need two approvers.
        (tmp / "site.yaml").write_text(
            "name: test\nusers: [{name: alice}, {name: bob}]\n"
            "codeService:\n  host: code.test\n  allowLocalUpstreams: true\n"
            "  reviewers: [alice, bob]\n  twoPersonApproval: [branch]\n")
        # The Airlock's service account (the last test logs in with it).
        (tmp / "users" / "airlock").mkdir(parents=True)
        (tmp / "users" / "airlock" / "password").write_text(AIRLOCK_PASSWORD + "\n")
        homepod = start_service(tmp, homepod_nets="127.0.0.0/8")
        office = start_service(tmp, homepod_nets="")
        yield homepod, office
        stop_service(office)
        stop_service(homepod)


def _settings(user: str, home: Path) -> dict[str, str]:
    """An office user's shell: their MLab credentials, git identity and home (no other
    GIT_* or MLAB_* variable is inherited)."""
    return {"MLAB_USER": user, "MLAB_PASSWORD": PASSWORDS[user], "GIT_TERMINAL_PROMPT": "0",
            "GIT_AUTHOR_NAME": "Office", "GIT_AUTHOR_EMAIL": "o@example.com",
            "GIT_COMMITTER_NAME": "Office", "GIT_COMMITTER_EMAIL": "o@example.com",
            "HOME": str(home), "COLUMNS": "200"}


def mlab(user: str, *args: str, cwd: Path) -> Run:
    return run_mlab(*args, cwd=cwd, env=_settings(user, cwd), drop=("GIT_", "MLAB_"),
                    timeout=120)


def _commit(work: Path, name: str, text: str) -> str:
    (work / name).write_text(text)
    git("add", ".", cwd=work)
    git("commit", "-q", "-m", f"add {name}", cwd=work)
    return git("rev-parse", "HEAD", cwd=work).stdout.strip()


def _pkt(text: str) -> bytes:
    data = text.encode()
    return f"{len(data) + 4:04x}".encode() + data


def _raw_want(svc: Service, sha: str, v2: bool) -> bytes:
    """A hand-made upload-pack request for ``sha`` (what a client that skips git's own
    checks sends); returns the answer's body."""
    if v2:
        body = (_pkt("command=fetch\n") + _pkt("object-format=sha1\n") + b"0001"
                + _pkt(f"want {sha}\n") + _pkt("done\n") + b"0000")
        headers = {"Git-Protocol": "version=2"}
    else:
        body = _pkt(f"want {sha} multi_ack_detailed side-band-64k ofs-delta\n") + b"0000" \
            + _pkt("done\n")
        headers = {}
    with svc.client("alice") as c:
        r = c.post(f"/{REPO}/git-upload-pack", content=body, headers={
            **headers, "Content-Type": "application/x-git-upload-pack-request"})
    return r.content


def test_homepod_branch_leaves_only_after_review(pair: tuple[Service, Service],
                                                 tmp_path: Path) -> None:
    homepod, office = pair
    upstream = make_upstream(tmp_path, "deepvac", commits=2)
    fork = tmp_path / "fork.git"
    git("clone", "-q", "--bare", str(upstream), str(fork))
    homepod.approve(f"file://{upstream}", REPO)
    office_url = f"http://127.0.0.1:{office.port}/{REPO}"
    desk = tmp_path / "office"
    desk.mkdir()
    done = mlab("alice", "relay", "init", f"file://{fork}", "--upstream", f"file://{upstream}",
                "--mlab", office_url, "deepvac", cwd=desk)
    assert done.returncode == 0, done.stderr
    clone = desk / "deepvac"
    # The office starts the branch: nothing new in it, so the office sees it at once.
    done = mlab("alice", "relay", "start", "feature_1", "-C", str(clone), cwd=desk)
    assert done.returncode == 0, done.stderr
    assert "mlab request branch deepvac/deepvac feature_1 --reason" in done.stdout, done.stdout
    office_auth = f"http://alice:{PASSWORDS['alice']}@127.0.0.1:{office.port}/{REPO}"
    assert "refs/heads/feature_1" in git("ls-remote", office_auth).stdout

    # In the HomePod: a commit with data, pushed.
    home = tmp_path / "homepod"
    git("clone", "-q", homepod.clone_url(REPO), str(home))
    git("checkout", "-q", "feature_1", cwd=home)
    first = _commit(home, "weights.txt", "secret-weights-0123\n")
    git("push", "-q", "origin", "feature_1", cwd=home)

    # From the office: not listed, not fetchable by name or by id, not on the page.
    listed = git("ls-remote", office_auth).stdout
    assert "feature_1" not in listed and "refs/heads/main" in listed, listed
    assert first in git("ls-remote", homepod.clone_url(REPO)).stdout
    probe = tmp_path / "probe"
    git("init", "-q", str(probe))
    for version in ("0", "2"):
        for what in ("feature_1", first):
            got = git("-c", f"protocol.version={version}", "fetch", office_auth, what,
                      cwd=probe, check=False)
            assert got.returncode != 0, (version, what, got.stdout)
    assert git("cat-file", "-e", first, cwd=probe, check=False).returncode != 0
    # A client that sends the want anyway: v0 answers "not our ref"; a v2 request is not
    # understood (only v0 is spoken outside HomePods) and gets no pack either.
    answer = _raw_want(office, first, False)
    assert b"PACK" not in answer and b"not our ref" in answer, answer[:300]
    assert b"PACK" not in _raw_want(office, first, True)
    assert b"PACK" in _raw_want(homepod, first, True)  # the same want from a HomePod
    # A shown branch whose name holds a config comment character must not expose another:
    # `feature_1;x` (upstream's commit, so shown) is not `feature_1`.
    git("push", "-q", "origin", "origin/main:refs/heads/feature_1;x", cwd=home)
    names = {line.split("\t")[1] for line in git("ls-remote", office_auth).stdout.splitlines()}
    assert "refs/heads/feature_1;x" in names and "refs/heads/feature_1" not in names, names
    git("push", "-q", "origin", ":refs/heads/feature_1;x", cwd=home)
    with office.client("alice") as c:
        assert "feature_1" not in c.get(f"/{REPO}").text
    with homepod.client("alice") as c:
        assert "feature_1" in c.get(f"/{REPO}").text
    # The office cannot overwrite the hidden branch either.
    git("checkout", "-q", "feature_1", cwd=clone)
    (clone / "office.txt").write_text("x\n")
    git("add", ".", cwd=clone)
    git("commit", "-q", "-m", "office", cwd=clone)
    pushed = git("push", "-q", "--force", office_auth, "feature_1", cwd=clone, check=False)
    assert pushed.returncode != 0, pushed.stderr
    git("reset", "-q", "--hard", "HEAD~1", cwd=clone)

    # The relay names the review.
    done = mlab("alice", "relay", "finish", "feature_1", "-C", str(clone), cwd=desk)
    assert done.returncode != 0 and "no branch request names it" in done.stderr, done.stderr
    assert "mlab request branch deepvac/deepvac feature_1" in done.stderr

    # alice asks for review from the HomePod; bob reads the patch; alice may not approve.
    done = mlab("alice", "request", "branch", REPO, "feature_1", "--reason", "paper code",
                "--server", homepod.url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rid = done.stdout.split()[3].rstrip(":")
    assert "1 new commit(s)" in done.stdout, done.stdout
    done = mlab("bob", "request", "branch", REPO, "feature_1", "--reason", "x",
                "--server", homepod.url, cwd=tmp_path)
    assert done.returncode != 0 and "only its owner" in done.stderr, done.stderr
    shown = mlab("bob", "request", "show", rid, "--server", office.url, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "+secret-weights-0123" in shown.stdout and "add weights.txt" in shown.stdout
    assert first in shown.stdout
    done = mlab("alice", "relay", "finish", "feature_1", "-C", str(clone), cwd=desk)
    assert done.returncode != 0 and f"request {rid} is submitted" in done.stderr, done.stderr
    done = mlab("alice", "request", "approve", rid, "--comment", "mine",
                "--server", homepod.url, cwd=tmp_path)
    assert done.returncode != 0 and "their own request" in done.stderr, done.stderr
    done = mlab("bob", "request", "approve", rid, "--comment", "code only, no data",
                "--server", homepod.url, cwd=tmp_path)
    assert done.returncode == 0 and "in_review" in done.stdout, done.stderr
    assert "feature_1" not in git("ls-remote", office_auth).stdout  # one of two approvals
    with homepod.client() as admin:
        r = admin.post(f"/api/requests/{rid}/approve", json={"comment": "second look: ok"})
    assert r.status_code == 200 and r.json()["state"] == "approved", r.text

    # Approved: exactly that commit leaves, through the relay, to the fork.
    assert f"{first}\trefs/heads/feature_1" in git("ls-remote", office_auth).stdout
    done = mlab("alice", "relay", "finish", "feature_1", "-C", str(clone), cwd=desk)
    assert done.returncode == 0, done.stderr
    assert git("--git-dir", str(fork), "rev-parse", "feature_1").stdout.strip() == first

    # A new commit in the HomePod hides the branch again until it is reviewed.
    second = _commit(home, "more.txt", "more-data\n")
    git("push", "-q", "origin", "feature_1", cwd=home)
    assert "feature_1" not in git("ls-remote", office_auth).stdout
    answer = _raw_want(office, second, True)
    assert b"PACK" not in answer, answer[:300]
    done = mlab("alice", "relay", "finish", "feature_1", "-C", str(clone), cwd=desk)
    assert done.returncode != 0 and "moved on after request" in done.stderr, done.stderr

    # Revoking the approval takes the exposure back (the branch was reset to it first).
    git("push", "-q", "--force", "origin", f"{first}:refs/heads/feature_1", cwd=home)
    assert "feature_1" in git("ls-remote", office_auth).stdout
    done = mlab("bob", "request", "revoke", rid, "--server", homepod.url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "feature_1" not in git("ls-remote", office_auth).stdout

    audit = (homepod.data / "audit.log").read_text()
    assert '"kind": "branch"' in audit and '"action": "approve"' in audit
    assert f'"sha": "{first}"' in audit


def test_the_patch_is_for_reviewers_and_for_its_owner_in_a_homepod(
        pair: tuple[Service, Service], tmp_path: Path) -> None:
    homepod, office = pair
    with homepod.client("alice") as c:
        items = c.get("/api/requests", params={"kind": "branch"}).json()["requests"]
    assert items, "the first test made a branch request"
    rid = items[0]["id"]
    assert "subjects" not in items[0]  # no commit text in what the owner reads anywhere
    for svc in (homepod, office):
        with httpx.Client(base_url=svc.url, timeout=60, trust_env=False,
                          auth=("bob", PASSWORDS["bob"])) as c:
            assert c.get(f"/api/requests/{rid}/diff").status_code == 200
        with svc.client() as admin:
            assert admin.get(f"/api/requests/{rid}/diff").status_code == 200
    # alice, who asked: in her HomePod yes, from the office no (the patch is the data).
    with homepod.client("alice") as c:
        assert "+secret-weights-0123" in c.get(f"/api/requests/{rid}/diff").text
    with office.client("alice") as c:
        r = c.get(f"/api/requests/{rid}/diff")
    assert r.status_code == 403 and "secret-weights" not in r.text, r.text
    shown = mlab("alice", "request", "show", str(rid), "--server", office.url, cwd=tmp_path)
    assert shown.returncode == 0 and "patch not shown" in shown.stdout, shown.stderr
    assert "secret-weights" not in shown.stdout
    # Unauthenticated: nothing.
    assert httpx.get(f"{homepod.url}/api/requests/{rid}/diff", trust_env=False,
                     timeout=30).status_code == 401


def test_an_address_a_service_account_logs_in_from_is_not_a_homepod(
        pair: tuple[Service, Service]) -> None:
    """On Kubernetes the HomePod range is the pod range, which holds the Airlock too: a user
    there with their own password must not see unreviewed branches. The Airlock's accounts
    log in from it (the publisher every 30 s), and from then on that address is outside,
    also after a restart of the code service. (Runs last: 127.0.0.1 stays outside.)"""
    homepod, _office = pair
    url = homepod.clone_url(REPO)
    listed = git("ls-remote", url).stdout
    assert "refs/heads/feature_1" in listed, listed  # from a HomePod address: every branch
    with httpx.Client(base_url=homepod.url, timeout=60, trust_env=False,
                      auth=("airlock", AIRLOCK_PASSWORD)) as c:
        assert c.get("/api/requests").status_code == 200
    assert "refs/heads/feature_1" not in git("ls-remote", url).stdout  # alice, same address
    stop_service(homepod)
    again = start_service(homepod.data.parent, homepod_nets="127.0.0.0/8")
    try:
        again_url = f"http://alice:{quote(PASSWORDS['alice'], safe='')}@127.0.0.1:{again.port}/{REPO}"
        assert "refs/heads/feature_1" not in git("ls-remote", again_url).stdout
    finally:
        stop_service(again)
