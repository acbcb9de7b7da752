"""Reviewed user branches (issue 17): what a client outside the HomePods may fetch.

Invariant (site ``egress.userBranches: reviewed``, the default of ``posture: reviewed``): a
git request that does not come from a HomePod address sees, and may fetch, only

- upstream branches and tags (those with a marker under ``refs/mlab/upstream/``): they came
  from outside already;
- user branches and tags whose tip is already contained in upstream (``mlab relay start``
  pushes such a branch: nothing new in it);
- user branches and tags whose tip is exactly a commit a reviewer approved for that ref
  (a ``branch`` request, :mod:`mlab.requests`), with its ancestry.

Everything else is hidden: the per-request git configuration hides every ref
(``uploadpack.hideRefs = refs``) and re-exposes only the refs above by name (``!refs/...``; the
last matching rule wins, git-config(1)), so a ref created after the check is hidden too
(fail closed). The protocol is forced to v0: a protocol v2 ``upload-pack`` accepts a want of
any object it has (gitprotocol-v2(5): "Wants can be anything"), while v0 over HTTP (stateless
RPC) refuses a want that is not reachable from an advertised ref ("not our ref"), so an
unreviewed commit cannot be fetched by its id either. ``allowTipSHA1InWant``,
``allowReachableSHA1InWant`` and ``allowAnySHA1InWant`` are set false for such requests.
Pushes from outside see the same advertisement: hidden refs' names and ids do not leave
through ``receive-pack`` either, and git refuses to update a hidden ref.

Which addresses are HomePods is the code service's ``--homepod-net`` (``MLAB_HOMEPOD_NETS``):
the cluster's pod range on Kubernetes (the Service keeps office clients' own addresses with
``externalTrafficPolicy: Local``), the HomePod networks under podman.

Approvals live in the service's SQLite file (table ``reviewed_refs``), written by the
requests API when a ``branch`` request is approved and removed when it is revoked.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from mlab.codeservice.mirror import UPSTREAM
from mlab.site import HOMEPOD_NETS_ENV

SCHEMA = """
CREATE TABLE IF NOT EXISTS reviewed_refs (
    request_id INTEGER PRIMARY KEY,
    repo TEXT NOT NULL,
    ref TEXT NOT NULL,
    sha TEXT NOT NULL,
    approved REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS reviewed_refs_repo ON reviewed_refs(repo, ref);
"""
NETS_ENV = HOMEPOD_NETS_ENV
"""Comma-separated CIDRs of HomePod addresses (``mlab code-service serve --homepod-net``)."""
USER_PREFIXES = ("refs/heads/", "refs/tags/")
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
"""git's empty tree (SHA-1): the base of a branch that shares no commit with upstream."""


def create_tables(db_path: Path | str) -> None:
    """Create ``reviewed_refs`` (the service does it once at start)."""
    from mlab.codeservice.owners import use_connection

    with use_connection(db_path) as db:
        db.executescript(SCHEMA)


def approve(db_path: Path | str, request_id: int, repo: str, ref: str, sha: str) -> None:
    """Expose ``ref`` of ``repo`` at exactly ``sha`` to clients outside the HomePods."""
    from mlab.codeservice.owners import use_connection

    with use_connection(db_path) as db:
        with db:
            db.execute("INSERT OR REPLACE INTO reviewed_refs(request_id, repo, ref, sha, "
                       "approved) VALUES (?,?,?,?,?)", (request_id, repo, ref, sha, time.time()))


def revoke(db_path: Path | str, request_id: int) -> None:
    """Withdraw the exposure an approval gave (a revoked request)."""
    from mlab.codeservice.owners import use_connection

    with use_connection(db_path) as db:
        with db:
            db.execute("DELETE FROM reviewed_refs WHERE request_id = ?", (request_id,))


def approved_tips(db_path: Path | str, repo: str) -> dict[str, set[str]]:
    """``{ref: {approved sha, ...}}`` of ``repo``."""
    from mlab.codeservice.owners import use_connection

    found: dict[str, set[str]] = {}
    with use_connection(db_path) as db:
        with_table = db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND "
                                "name='reviewed_refs'").fetchone()
        if not with_table:
            return found
        for ref, sha in db.execute("SELECT ref, sha FROM reviewed_refs WHERE repo = ?",
                                   (repo,)):
            found.setdefault(ref, set()).add(sha)
    return found


def parse_nets(text: str | Iterable[str]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """CIDRs from ``"10.244.0.0/16,10.89.1.0/24"`` or a list of them.

    Raises:
        ValueError: one names the bad entry.
    """
    items = text.split(",") if isinstance(text, str) else list(text)
    nets = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        try:
            nets.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"HomePod network {item!r} is not a CIDR (e.g. 10.244.0.0/16)"
                             ) from None
    return tuple(nets)


def is_inside(address: str | None, nets: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    """Whether a client ``address`` is a HomePod's (pure). Unknown or malformed: outside."""
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in nets)


def visible_refs(refs: dict[str, str], upstream: set[str], approved: dict[str, set[str]],
                 contained: set[str]) -> list[str]:
    """The refs an outside client may see (pure).

    Args:
        refs: ``{full ref name: tip sha}`` under ``refs/heads/`` and ``refs/tags/``.
        upstream: ref names that mirror upstream (a marker exists).
        approved: ``{ref: {sha}}`` approved by review (:func:`approved_tips`).
        contained: user refs whose tip upstream already contains.

    Returns:
        Sorted ref names: upstream refs, contained user refs, and user refs whose current
        tip is an approved sha of that ref.
    """
    shown = []
    for ref, sha in refs.items():
        if ref in upstream or ref in contained or sha in approved.get(ref, ()):
            shown.append(ref)
    return sorted(shown)


def config_text(shown: Sequence[str], hidden: Sequence[str]) -> str:
    """The per-request git config of an outside request (pure).

    Fetches: every ref hidden (``uploadpack.hideRefs = refs``), then ``shown`` exposed by
    name, so a ref created after the check stays hidden. Pushes: the ``hidden`` user refs
    and the service's ``refs/mlab`` are neither advertised nor updatable (git refuses an
    update of a hidden ref), while new names can still be created (``mlab relay start``).

    Args:
        shown: refs an outside client may see (:func:`visible_refs`).
        hidden: the existing user refs that are not shown.
    """
    lines = ["[uploadpack]", "\thideRefs = refs"]
    lines += [f"\thideRefs = {_quoted('!' + ref)}" for ref in shown]
    lines += ["\tallowTipSHA1InWant = false", "\tallowReachableSHA1InWant = false",
              "\tallowAnySHA1InWant = false", "[receive]", "\thideRefs = refs/mlab"]
    lines += [f"\thideRefs = {_quoted(ref)}" for ref in hidden]
    return "\n".join(lines) + "\n"


def _quoted(value: str) -> str:
    """A git-config value in double quotes (git-config(1), "Syntax"): a ref name may hold
    ``;``, ``#`` or ``"`` (git-check-ref-format(1) allows them), which unquoted would start a
    comment or a quote and turn ``!refs/heads/x;y`` into ``!refs/heads/x``."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'



def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          check=True, stdin=subprocess.DEVNULL, timeout=300).stdout


def outside_view(repo_path: Path, db_path: Path | str | None,
                 repo: str) -> tuple[list[str], list[str]]:
    """The refs of ``repo`` an outside client may see now (runs git twice).

    Args:
        repo_path: the bare mirror.
        db_path: the service's database (approvals); None: nothing is approved.
        repo: ``org/repo``.

    Returns:
        ``(shown, hidden)``: full ref names, as :func:`visible_refs`, and the user refs that
        are not shown.
    """
    listing = _git(repo_path, "for-each-ref", "--format=%(objectname) %(refname)",
                   *USER_PREFIXES, UPSTREAM)
    refs: dict[str, str] = {}
    markers: list[str] = []
    for line in listing.splitlines():
        sha, _, ref = line.partition(" ")
        if ref.startswith(UPSTREAM):
            markers.append(ref)
        else:
            refs[ref] = sha
    upstream = {"refs/" + m.removeprefix(UPSTREAM) for m in markers}
    approved = approved_tips(db_path, repo) if db_path is not None else {}
    pending = [r for r, sha in refs.items()
               if r not in upstream and sha not in approved.get(r, ())]
    contained: set[str] = set()
    if pending and markers:
        # A commit is reachable from a set of tips iff it is reachable from one of them:
        # for-each-ref ORs several --merged (git-for-each-ref(1)).
        merged = _git(repo_path, "for-each-ref", "--format=%(refname)",
                      *[f"--merged={m}" for m in markers], *pending)
        contained = set(merged.split())
    shown = visible_refs(refs, upstream, approved, contained)
    return shown, sorted(set(refs) - set(shown))


def write_config(shown: Sequence[str], hidden: Sequence[str], directory: Path) -> str:
    """Write :func:`config_text` to a private temporary file in ``directory``; the caller
    deletes it after the request. Returns its path."""
    fd, path = tempfile.mkstemp(prefix="outside-", suffix=".cfg", dir=directory)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(config_text(shown, hidden))
    return path


def new_commits(repo_path: Path, sha: str) -> list[str]:
    """Commits reachable from ``sha`` that no upstream ref contains, newest first."""
    markers = _git(repo_path, "for-each-ref", "--format=%(refname)", UPSTREAM).split()
    return _git(repo_path, "rev-list", sha, "--not", *markers, "--").split()


def base_of(repo_path: Path, sha: str) -> str:
    """The upstream commit a branch at ``sha`` starts from: the newest boundary commit of
    ``rev-list sha --not <upstream>``, or the empty tree when it shares none."""
    markers = _git(repo_path, "for-each-ref", "--format=%(refname)", UPSTREAM).split()
    if not markers:
        return EMPTY_TREE
    out = _git(repo_path, "rev-list", "--boundary", "--date-order", sha, "--not", *markers,
               "--")
    lines = out.split()
    if not lines:
        return sha  # upstream contains it: nothing new
    bounds = [line[1:] for line in lines if line.startswith("-")]
    return bounds[0] if bounds else EMPTY_TREE


def review_text(repo_path: Path, sha: str, limit: int = 2 * 1024 * 1024) -> tuple[str, bool]:
    """What a reviewer reads before ``sha`` may leave: every commit not in upstream with its
    own patch (``git log -p --stat``; merges against their first parent, so an evil merge
    shows), then the net diff against the upstream base.

    Each commit's patch is shown, not only the net diff: a file added in one commit and
    deleted in the next leaves with the history although the net diff hides it.

    Args:
        repo_path: the bare mirror.
        sha: the commit to review.
        limit: bytes of text kept.

    Returns:
        ``(text, truncated)``.
    """
    markers = _git(repo_path, "for-each-ref", "--format=%(refname)", UPSTREAM).split()
    base = base_of(repo_path, sha)
    log_text = _git(repo_path, "log", "-p", "--stat", "--diff-merges=first-parent",
                    "--no-color", "--no-ext-diff", "--no-textconv",
                    "--format=commit %H%nAuthor: %an <%ae>%nDate:   %aI%n%n%w(0,4,4)%B",
                    sha, "--not", *markers, "--")
    net = _git(repo_path, "diff", "--stat", "--no-color", "--no-ext-diff", base, sha, "--")
    text = (f"new commits (not in upstream), each with its own changes:\n\n{log_text}\n"
            f"net change against the upstream base {base[:12]}:\n{net}")
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text, False
    return data[:limit].decode("utf-8", "ignore") + (
        f"\n[... truncated: {len(data) - limit} more bytes; review in a HomePod clone with "
        f"git log -p {sha} --not --remotes ...]\n"), True


SEEN_TABLE = """
CREATE TABLE IF NOT EXISTS non_homepod_addresses (
    address TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    seen REAL NOT NULL
);
"""
SEEN_FOR = 24 * 3600.0
"""Seconds an address stays outside after a service account last logged in from it."""
_WRITE_EVERY = 300.0


class NonHomepods:
    """Addresses inside the HomePod networks that are not HomePods.

    On Kubernetes ``--homepod-net`` is the whole pod range, which also holds the Airlock
    (where a user with their own password could otherwise fetch unreviewed branches and
    carry them to the internet) and the portal. Both log in as service accounts: the
    Airlock's publisher every 30 s, the Airlock's account for package requests. An address
    such an account logged in from is outside for :data:`SEEN_FOR` seconds after it was
    last seen, across restarts (table ``non_homepod_addresses``).

    Args:
        db_path: the service's database; None: memory only.
        accounts: the service account names (``service_account_names``).
    """

    def __init__(self, db_path: Path | str | None, accounts: Sequence[str]) -> None:
        self.db_path = db_path
        self.accounts = frozenset(accounts)
        self._seen: dict[str, float] = {}
        self._written: dict[str, float] = {}
        if db_path is not None:
            from mlab.codeservice.owners import use_connection

            with use_connection(db_path) as db:
                db.executescript(SEEN_TABLE)
                cutoff = time.time() - SEEN_FOR
                for address, seen in db.execute(
                        "SELECT address, seen FROM non_homepod_addresses WHERE seen > ?",
                        (cutoff,)):
                    self._seen[address] = seen

    def login(self, account: str, address: str, now: float | None = None) -> None:
        """Note a successful login; a service account's address becomes outside."""
        if account not in self.accounts or not address:
            return
        now = time.time() if now is None else now
        self._seen[address] = now
        if self.db_path is None or now - self._written.get(address, 0.0) < _WRITE_EVERY:
            return
        from mlab.codeservice.owners import use_connection

        with use_connection(self.db_path) as db:
            with db:
                db.execute("INSERT OR REPLACE INTO non_homepod_addresses(address, account, "
                           "seen) VALUES (?,?,?)", (address, account, now))
        self._written[address] = now

    def __contains__(self, address: object, now: float | None = None) -> bool:
        seen = self._seen.get(str(address))
        return seen is not None and (time.time() if now is None else now) - seen < SEEN_FOR
