"""The office-PC relay: the seed's git workflow between GitHub and the code service.

Three remotes in one clone: ``origin`` (the user's fork), ``upstream`` (the project on
GitHub) and ``mlab`` (the code service mirror). ``start`` puts a fresh branch on the code
service for work in a HomePod; ``finish`` brings the HomePod's commits back and pushes them
to the fork for a pull request. The office clone is never used for development, so both
refuse to run on a dirty working tree.

Safety rules of ``finish``:
- ``git rebase --no-fork-point mlab/BRANCH``: with the default ``--fork-point``, commits
  that once were on mlab/BRANCH (per the reflog) but were rewritten there would be dropped
  silently; ``--no-fork-point`` replays every local commit instead;
- refuse, listing the commits, if a commit already pushed to the fork (``origin/BRANCH``) or
  on the local branch would be lost (no patch-equivalent commit in the result, by
  ``git cherry``); the branch is reset to where it was;
- refuse files over ``GITHUB_MAX_FILE`` (GitHub rejects pushes with files over 100 MiB)
  before pushing, naming path and size.

Credentials for ``mlab``: ``MLAB_USER`` and ``MLAB_PASSWORD`` from the environment are given
to git through an inline credential helper that reads them from the environment (never on
a command line or in ``.git/config``); without them git asks as usual.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

from mlab.errors import MlabError, ToolMissingError, UsageError

GITHUB_MAX_FILE = 100 * 1024 * 1024
"""Bytes; GitHub refuses pushes containing a file larger than 100 MiB."""

_CRED_HELPER = (
    '!f() { test "$1" = get || exit 0; echo "username=$MLAB_USER"; '
    'echo "password=$MLAB_PASSWORD"; }; f'
)
_BRANCH = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,200}$")


class RelayError(MlabError):
    """A relay step refused or failed; the message names the step and the fix."""


def homepod_url(mlab_url: str, code_host: str, tls: bool = False) -> str:
    """The URL a HomePod clones the mirror with (pure): the office PC may reach the code
    service at another address (``http://127.0.0.1:80/demo/up`` on the host of a local site),
    but inside a HomePod it is always ``http://<codeService.host>/<org>/<repo>`` (port 80).

    Args:
        mlab_url: the ``mlab`` remote of the office clone.
        code_host: ``codeService.host`` of the site (``code.mlab.local`` by default).
        tls: the site's ``tls.mode`` is not off: HomePods reach the code service on HTTPS
            only (port 443).

    Returns:
        ``http://<code_host>/<org>/<repo>`` (``https://`` with ``tls``; no credentials,
        query or fragment).
    """
    from urllib.parse import urlsplit

    return f"{'https' if tls else 'http'}://{code_host}{urlsplit(mlab_url).path}"


def check_branch(name: str) -> str:
    """Validate a branch name for start/finish (letters, digits, ``._/-``; no ``..``).

    Raises:
        UsageError: not a plain branch name.
    """
    if not _BRANCH.match(name) or ".." in name or name.endswith((".lock", "/")):
        raise UsageError(f"branch {name!r} is not a plain branch name",
                         "use letters, digits, '.', '_', '-' and '/', e.g. feature_1")
    return name


def pull_request_url(fork: str, upstream: str, base: str, branch: str) -> str | None:
    """The GitHub compare page that opens a pull request, or None for non-GitHub URLs.

    ``https://github.com/ORG/REPO/compare/BASE...ME:BRANCH?expand=1`` (GitHub's documented
    cross-repository compare form).
    """
    def owner_repo(url: str) -> tuple[str, str] | None:
        if url.startswith("git@github.com:"):
            path = url.split(":", 1)[1]
        else:
            parts = urlsplit(url)
            if (parts.hostname or "").lower() != "github.com":
                return None
            path = parts.path
        bits = [p for p in path.split("/") if p]
        return (bits[0], bits[1].removesuffix(".git")) if len(bits) >= 2 else None

    me, up = owner_repo(fork), owner_repo(upstream)
    if not me or not up:
        return None
    return f"https://github.com/{up[0]}/{up[1]}/compare/{base}...{me[0]}:{branch}?expand=1"


class Relay:
    """Runs git in the office clone ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir

    def git(self, *args: str, mlab: bool = False, check: bool = True) -> str:
        """Run git here; ``mlab=True`` adds the environment credential helper.

        Raises:
            RelayError: git failed (its last error line is in the message).
        """
        cfg: list[str] = []
        if mlab and os.environ.get("MLAB_USER") and os.environ.get("MLAB_PASSWORD"):
            cfg = ["-c", "credential.helper=", "-c", f"credential.helper={_CRED_HELPER}"]
        try:
            done = subprocess.run(["git", *cfg, *args], cwd=self.workdir, capture_output=True,
                                  text=True, stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise ToolMissingError("git is not installed", "apt-get install git") from None
        if check and done.returncode != 0:
            lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
            raise RelayError(f"git {args[0]} failed: {lines[-1] if lines else done.returncode}")
        return done.stdout

    def ok(self, *args: str) -> bool:
        """Run git here; True when it exited 0 (for steps whose failure is handled)."""
        return subprocess.run(["git", *args], cwd=self.workdir, capture_output=True,
                              stdin=subprocess.DEVNULL).returncode == 0

    def require_clean(self) -> None:
        """Refuse to work on uncommitted changes (the office clone is not for development)."""
        if self.git("status", "--porcelain", "--untracked-files=no").strip():
            raise RelayError(f"{self.workdir} has uncommitted changes",
                             "commit or stash them; the office clone is not for development")

    def default_branch(self) -> str:
        """upstream's default branch (its HEAD), e.g. ``main`` or ``master``."""
        out = self.git("ls-remote", "--symref", "upstream", "HEAD")
        for line in out.splitlines():
            if line.startswith("ref: refs/heads/") and line.endswith("\tHEAD"):
                return line[len("ref: refs/heads/"):].split("\t")[0]
        raise RelayError("cannot tell upstream's default branch (no HEAD)")

    def exists(self, ref: str) -> bool:
        """Whether ``ref`` resolves."""
        return bool(self.git("rev-parse", "--verify", "-q", ref, check=False).strip())


def init(fork_url: str, upstream_url: str, mlab_url: str, directory: Path) -> Relay:
    """Clone the fork into ``directory``, add ``upstream`` and ``mlab``, and check all three.

    Raises:
        UsageError: ``directory`` exists and is not empty.
        RelayError: a clone or a remote check failed (names the remote).
    """
    if directory.exists() and any(directory.iterdir()):
        raise UsageError(f"{directory} exists and is not empty", "pick another DIR")
    directory.parent.mkdir(parents=True, exist_ok=True)
    Relay(directory.parent).git("clone", "-q", "--origin", "origin", fork_url, str(directory))
    relay = Relay(directory)
    relay.git("remote", "add", "upstream", upstream_url)
    relay.git("remote", "add", "mlab", mlab_url)
    for remote in ("origin", "upstream", "mlab"):
        try:
            relay.git("ls-remote", "--heads", remote, mlab=remote == "mlab")
        except RelayError as exc:
            raise RelayError(f"remote {remote} does not answer: {exc.message}",
                             "check the URL and credentials (MLAB_USER/MLAB_PASSWORD for mlab)"
                             ) from None
    return relay


def start(relay: Relay, branch: str) -> str:
    """Fetch upstream, rebase the default branch onto it, create BRANCH, push it to mlab.

    Returns:
        The default branch name.

    Raises:
        RelayError: dirty tree, BRANCH already exists, a rebase conflict, a failed push.
    """
    check_branch(branch)
    relay.require_clean()
    if relay.exists(f"refs/heads/{branch}"):
        raise RelayError(f"branch {branch} already exists here",
                         f"run `mlab relay finish {branch}` or pick another name")
    relay.git("fetch", "-q", "upstream")
    base = relay.default_branch()
    if relay.exists(f"refs/heads/{base}"):
        relay.git("checkout", "-q", base)
        if not relay.ok("rebase", "-q", f"upstream/{base}"):
            relay.ok("rebase", "--abort")
            raise RelayError(f"rebasing {base} onto upstream/{base} conflicts",
                             f"resolve it by hand: git rebase upstream/{base}")
    else:
        relay.git("checkout", "-q", "-b", base, f"upstream/{base}")
    relay.git("checkout", "-q", "-b", branch)
    relay.git("push", "-q", "-u", "mlab", branch, mlab=True)
    return base


def review_status(relay: Relay, branch: str) -> tuple[str, str]:
    """Why the code service shows the office no ``branch``, and what to do: ``(message,
    hint)``.

    On a site with reviewed user branches (``egress.userBranches``) a branch pushed from a
    HomePod is fetchable here only once a reviewer approved its current commit; the
    requests API (``kind: branch``) says where its review stands. Without credentials or an
    answer, the message names both causes.
    """
    url = relay.git("remote", "get-url", "mlab").strip()
    parts = urlsplit(url)
    repo = parts.path.strip("/").removesuffix(".git")
    generic = (f"the code service shows no branch {branch} here: it does not exist, or it "
               "waits for review (sites with reviewed user branches show a HomePod's branch "
               "outside only once approved)",
               f"in the HomePod: mlab request branch {repo} {branch} --reason TEXT; or run "
               f"`mlab relay start {branch}` if it does not exist yet")
    user, password = os.environ.get("MLAB_USER"), os.environ.get("MLAB_PASSWORD")
    if not (user and password and parts.scheme in ("http", "https")):
        return generic
    from mlab.requests.client import RequestsClient

    server = f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    ref = f"refs/heads/{branch}"
    try:
        mine = [r for r in RequestsClient(server, user, password, timeout=30).list(kind="branch")
                if r.get("repo") == repo and r.get("ref") == ref]
    except MlabError:
        return generic
    if not mine:
        return (f"{branch} waits for review: no branch request names it yet",
                f"in the HomePod: mlab request branch {repo} {branch} --reason TEXT")
    last = mine[0]
    if last["state"] in ("submitted", "in_review"):
        return (f"{branch} waits for review: request {last['id']} is {last['state']}",
                "a reviewer approves it with `mlab request approve "
                f"{last['id']} --comment TEXT`; then run this again")
    if last["state"] == "approved":
        return (f"{branch} moved on after request {last['id']} approved "
                f"{str(last.get('sha'))[:12]}: its new commits wait for review",
                f"in the HomePod: mlab request branch {repo} {branch} --reason TEXT")
    return (f"{branch}: request {last['id']} is {last['state']}; the branch is not shown "
            "outside the HomePods", f"mlab request show {last['id']}")


def _lost_commits(relay: Relay, result: str, source: str) -> list[str]:
    """Commits of ``source`` with no patch-equivalent in ``result`` (``git cherry``)."""
    out = relay.git("cherry", "-v", result, source)
    return [line[2:] for line in out.splitlines() if line.startswith("+ ")]


def large_files(relay: Relay, tip: str, limit: int) -> list[tuple[str, int]]:
    """Files bigger than ``limit`` bytes in commits of ``tip`` not yet on origin/upstream."""
    objects = relay.git("rev-list", "--objects", tip, "--not", "--remotes=origin",
                        "--remotes=upstream")
    if not objects.strip():
        return []
    done = subprocess.run(
        ["git", "cat-file", "--batch-check=%(objecttype) %(objectsize) %(rest)"],
        cwd=relay.workdir, input=objects, capture_output=True, text=True, check=True)
    found = []
    for line in done.stdout.splitlines():
        kind, size, *rest = line.split(" ", 2)
        if kind == "blob" and int(size) > limit:
            found.append((rest[0] if rest else "?", int(size)))
    return found


def finish(relay: Relay, branch: str, max_file: int = GITHUB_MAX_FILE) -> str:
    """Bring BRANCH back from mlab, check it, push it to origin.

    Returns:
        What to do next: the pull-request URL (GitHub) or a one-line instruction.

    Raises:
        RelayError: dirty tree, missing branch, rebase conflict, commits that would be lost
            (listed), files over ``max_file`` bytes (listed), a failed push.
    """
    check_branch(branch)
    relay.require_clean()
    # --prune: a branch the code service stopped showing (new commits waiting for review)
    # must not be taken from a stale mlab/BRANCH of an earlier fetch or push.
    relay.git("fetch", "-q", "--prune", "mlab", mlab=True)
    relay.git("fetch", "-q", "origin")
    if not relay.exists(f"refs/remotes/mlab/{branch}"):
        raise RelayError(*review_status(relay, branch))
    if relay.exists(f"refs/heads/{branch}"):
        relay.git("checkout", "-q", branch)
    else:
        relay.git("checkout", "-q", "-b", branch, f"mlab/{branch}")
    before = relay.git("rev-parse", "HEAD").strip()
    if not relay.ok("rebase", "-q", "--no-fork-point", f"mlab/{branch}"):
        relay.ok("rebase", "--abort")
        raise RelayError(f"rebasing {branch} onto mlab/{branch} conflicts",
                         f"resolve it by hand: git rebase --no-fork-point mlab/{branch}")
    lost = _lost_commits(relay, "HEAD", before)
    if relay.exists(f"refs/remotes/origin/{branch}"):
        lost += [c for c in _lost_commits(relay, "HEAD", f"origin/{branch}") if c not in lost]
    if lost:
        relay.git("reset", "-q", "--hard", before)
        listing = "; ".join(lost[:20])
        raise RelayError(
            f"refusing: the rebase onto mlab/{branch} would drop {len(lost)} commit(s) "
            f"already pushed: {listing}",
            f"someone rewrote {branch} on the code service; recover the commits there or "
            "rebase by hand",
        )
    big = large_files(relay, "HEAD", max_file)
    if big:
        listing = "; ".join(f"{path} ({size} bytes)" for path, size in big[:20])
        raise RelayError(
            f"refusing to push: file(s) over {max_file} bytes (GitHub's limit): {listing}",
            "remove them from the branch's history",
        )
    push = ["push", "-q", "origin", f"HEAD:refs/heads/{branch}"]
    if relay.exists(f"refs/remotes/origin/{branch}"):
        lease = relay.git("rev-parse", f"refs/remotes/origin/{branch}").strip()
        push.insert(2, f"--force-with-lease=refs/heads/{branch}:{lease}")
    relay.git(*push)
    base = relay.default_branch()
    fork = relay.git("remote", "get-url", "origin").strip()
    upstream = relay.git("remote", "get-url", "upstream").strip()
    url = pull_request_url(fork, upstream, base, branch)
    if url:
        return f"open the pull request: {url}"
    return f"open a pull request from {fork} {branch} into {upstream} {base}"
