"""Requests: kinds, states, the state machine and who may do what (pure, no I/O).

Invariant: a request only ever moves along :data:`TRANSITIONS`, and every move is planned by
:func:`plan`, which checks the actor's rights first. The store applies a plan inside one
SQLite transaction, so a request is never seen half-moved.

States (the shape trusted research environments use for airlock requests)::

    submitted --> in_review --> approved --> revoked
        |                  \\-> rejected
        \\-> cancelled

Rules, each enforced here:

- Users see and cancel their own requests; reviewers (``codeService.reviewers`` in the site,
  plus admin) see every request with its history.
- Nobody approves or rejects their own request (no self-review), admins included.
- ``codeService.twoPersonApproval`` lists kinds that need two distinct approvers: the first
  approval is recorded and the request stays ``in_review`` until a second reviewer approves.
- Approve and reject need a comment: a reason is stored for every decision.
- Revoking only withdraws (an export is unpublished, a package leaves the next image build),
  so any reviewer may revoke, including the request's owner when they are a reviewer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from mlab.errors import MlabError, UsageError


class Kind(StrEnum):
    """What a request asks for."""

    PACKAGE = "package"
    """Bake a tested install script into the next HomePod image."""
    EXPORT = "export"
    """Publish files from a HomePod outbox on the Airlock for download."""
    MIRROR = "mirror"
    """Mirror an upstream git repository on the code service (the seed's "ask the admin to
    maintain a GitHub project on HomePods"); approval runs ``mlab repo approve``'s code."""
    BRANCH = "branch"
    """Let a user branch (or tag) of the code service, at exactly one commit, be fetched from
    outside the HomePods (site ``egress.userBranches: reviewed``; the reviewer reads every
    new commit's patch, ``mlab request show``)."""


class State(StrEnum):
    """Where a request is in its review."""

    SUBMITTED = "submitted"
    IN_REVIEW = "in_review"
    APPROVED = "approved"
    REJECTED = "rejected"
    REVOKED = "revoked"
    CANCELLED = "cancelled"


TRANSITIONS: frozenset[tuple[State, State]] = frozenset(
    {
        (State.SUBMITTED, State.IN_REVIEW),
        (State.IN_REVIEW, State.APPROVED),
        (State.IN_REVIEW, State.REJECTED),
        (State.APPROVED, State.REVOKED),
        (State.SUBMITTED, State.CANCELLED),
    }
)
"""Every allowed (from, to) pair; anything else is refused."""

FINAL_STATES = frozenset({State.REJECTED, State.REVOKED, State.CANCELLED})
"""States nothing leaves."""

Action = Literal["review", "approve", "reject", "revoke", "cancel"]
ACTIONS: tuple[Action, ...] = ("review", "approve", "reject", "revoke", "cancel")

COMMENT_MAX = 4000
"""Longest comment or reason kept, in characters."""


class RequestError(MlabError):
    """A request operation was refused; ``status`` is the HTTP status the API answers with."""

    status = 400


class InvalidRequest(RequestError, UsageError):
    """Bad input: a missing reason, a malformed file list (HTTP 400, exit 2)."""

    status = 400


class Forbidden(RequestError):
    """The actor may not do this (HTTP 403)."""

    status = 403


class NotFound(RequestError):
    """No such request, or one the actor may not see (HTTP 404: existence is not leaked)."""

    status = 404


class Conflict(RequestError):
    """The request's state does not allow this action (HTTP 409)."""

    status = 409


@dataclass(frozen=True)
class Actor:
    """Who is acting: a user name and their roles.

    Attributes:
        name: the authenticated user name (``admin`` for the admin).
        is_admin: the code-service admin.
        is_reviewer: listed in ``codeService.reviewers`` (admin always reviews).
    """

    name: str
    is_admin: bool = False
    is_reviewer: bool = False

    @property
    def reviews(self) -> bool:
        """True when this actor may review: a reviewer or the admin."""
        return self.is_admin or self.is_reviewer


def actor_from(principal: object, reviewers: list[str] | tuple[str, ...] = ()) -> Actor:
    """Build an :class:`Actor` from the code service's principal (any object with ``name``).

    Args:
        principal: has ``name`` and optionally ``is_admin`` / ``is_reviewer`` (booleans).
        reviewers: ``codeService.reviewers`` from the site, consulted as well.
    """
    name = str(getattr(principal, "name", principal))
    is_admin = bool(getattr(principal, "is_admin", False))
    is_reviewer = bool(getattr(principal, "is_reviewer", False)) or name in reviewers
    return Actor(name=name, is_admin=is_admin, is_reviewer=is_reviewer)


@dataclass(frozen=True)
class Step:
    """One recorded event of a plan.

    Attributes:
        action: what happened (``submit``, ``review``, ``approve``, ``reject``, ``revoke``,
            ``cancel``).
        from_state: state before the event.
        to_state: state after the event (equal to ``from_state`` for an approval that is not
            yet the last one needed).
        comment: the reason stored with the event.
    """

    action: str
    from_state: State
    to_state: State
    comment: str


def required_approvals(kind: Kind, two_person: list[str] | tuple[str, ...] | frozenset[str]) -> int:
    """Distinct approvers a request of ``kind`` needs: 2 if listed in twoPersonApproval, else 1."""
    return 2 if str(kind) in {str(k) for k in two_person} else 1


def can_see(actor: Actor, owner: str) -> bool:
    """Users see their own requests; reviewers and the admin see all."""
    return actor.reviews or actor.name == owner


def _clean_comment(comment: str | None) -> str:
    text = (comment or "").strip()
    if len(text) > COMMENT_MAX:
        raise InvalidRequest(
            f"comment: {len(text)} characters is too long (at most {COMMENT_MAX})"
        )
    return text


def plan(
    action: str,
    *,
    request_id: int,
    kind: Kind,
    owner: str,
    state: State,
    approvers: list[str] | tuple[str, ...],
    actor: Actor,
    two_person: list[str] | tuple[str, ...] = (),
    comment: str | None = None,
) -> list[Step]:
    """Plan the events that ``actor`` doing ``action`` on a request produces.

    ``approve`` and ``reject`` on a ``submitted`` request first move it to ``in_review``
    (recorded as its own event), so history shows every transition of the state machine.

    Args:
        action: one of :data:`ACTIONS`.
        request_id: used in error messages.
        kind: the request's kind.
        owner: the user who submitted it.
        state: its current state.
        approvers: names who approved it since it entered review, in order.
        actor: who acts.
        two_person: ``codeService.twoPersonApproval`` (kinds needing two approvers).
        comment: the reason; required (non-empty) for approve and reject.

    Returns:
        The events to record, in order; the last one's ``to_state`` is the new state.

    Raises:
        InvalidRequest: unknown action, or a required comment is missing.
        Forbidden: the actor may not do this (not the owner, not a reviewer, self-review,
            approving twice).
        Conflict: the current state does not allow the action.
    """
    if action not in ACTIONS:
        raise InvalidRequest(
            f"action: unknown {action!r}; use one of {', '.join(ACTIONS)}"
        )
    text = _clean_comment(comment)
    rid = f"request {request_id}"
    if action == "cancel":
        if actor.name != owner:
            raise Forbidden(f"{rid}: only its owner {owner!r} may cancel it")
        _need(state, {State.SUBMITTED}, rid, action)
        return [Step("cancel", state, State.CANCELLED, text or "cancelled by its owner")]

    if not actor.reviews:
        raise Forbidden(
            f"{rid}: {actor.name!r} is not a reviewer",
            hint="reviewers are listed in the site's codeService.reviewers",
        )
    if action == "revoke":
        _need(state, {State.APPROVED}, rid, action)
        return [Step("revoke", state, State.REVOKED, text or "revoked")]

    if actor.name == owner:
        raise Forbidden(f"{rid}: nobody reviews their own request; ask another reviewer")
    _need(state, {State.SUBMITTED, State.IN_REVIEW}, rid, action)
    steps: list[Step] = []
    if state == State.SUBMITTED:
        steps.append(Step("review", State.SUBMITTED, State.IN_REVIEW, f"review started by {actor.name}"))
    if action == "review":
        if not steps:
            raise Conflict(f"{rid} is already in review")
        return steps
    if not text:
        raise InvalidRequest(f"comment: {action} needs a comment stating the reason")
    if action == "reject":
        steps.append(Step("reject", State.IN_REVIEW, State.REJECTED, text))
        return steps
    # approve
    if actor.name in approvers:
        raise Forbidden(f"{rid}: {actor.name!r} already approved it; a second reviewer must")
    needed = required_approvals(kind, two_person)
    done = len(set(approvers)) + 1
    to_state = State.APPROVED if done >= needed else State.IN_REVIEW
    if to_state == State.IN_REVIEW:
        text = f"{text} (approval {done} of {needed})"
    steps.append(Step("approve", State.IN_REVIEW, to_state, text))
    return steps


def _need(state: State, allowed: set[State], rid: str, action: str) -> None:
    if state not in allowed:
        names = " or ".join(sorted(str(s) for s in allowed))
        raise Conflict(f"{rid} is {state}; {action} needs it {names}")


def check_transition(from_state: State, to_state: State) -> None:
    """Raise :class:`Conflict` unless ``from_state -> to_state`` is in :data:`TRANSITIONS`.

    A recorded approval that is not yet the last one keeps the state (``in_review`` to
    ``in_review``), which is allowed too.
    """
    if from_state == to_state == State.IN_REVIEW:
        return
    if (from_state, to_state) not in TRANSITIONS:
        raise Conflict(f"transition {from_state} -> {to_state} is not allowed")


# --- submissions -------------------------------------------------------------------------

SHA256 = re.compile(r"^[0-9a-f]{64}$")
OUTBOX_DIR = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_FILES = 100_000
SCRIPT_MAX = 256 * 1024
"""Largest install script accepted, in bytes."""
OUTPUT_MAX = 512 * 1024
"""Largest transcript output kept, in characters (the client keeps head and tail)."""


def check_relpath(path: str, field: str) -> str:
    """Validate a relative POSIX path inside an export directory and return it.

    Rule: no absolute paths, no ``..``, ``.`` or empty components, no NUL or backslash,
    at most 4096 bytes: the publisher joins it under the request's outbox directory, and
    none of these may step outside it.

    Raises:
        InvalidRequest: naming ``field`` and the problem.
    """
    if not isinstance(path, str) or not path:
        raise InvalidRequest(f"{field}: a relative path is required")
    if len(path.encode("utf-8", "surrogateescape")) > 4096 or "\x00" in path or "\\" in path:
        raise InvalidRequest(f"{field}: {path!r} is too long or holds NUL or backslash")
    if path.startswith("/"):
        raise InvalidRequest(f"{field}: {path!r} must be relative to the export directory")
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise InvalidRequest(f"{field}: {path!r} has an empty, '.' or '..' component")
    return path


def validate_submission(body: object) -> dict[str, object]:
    """Check a submission body and return the normalized request fields.

    Shapes::

        {"kind": "package", "reason": str, "script": str,
         "transcript": {"exit_status": int, "duration_s": float, "image": str,
                        "output": str, "started_at": str, "truncated": bool}}
        {"kind": "export", "reason": str, "outbox": str (one path component),
         "files": [{"path": relative path, "size": bytes, "sha256": 64 hex}, ...]}
        {"kind": "mirror", "reason": str, "url": upstream URL, "name": "org/repo" or absent}
        {"kind": "branch", "reason": str, "repo": "org/repo", "ref": "feature_1" or
         "refs/heads/X" or "refs/tags/X"}

    A branch request's commit, base and commits are filled in by the code service from its
    own repository (never from the client) before it is stored.

    A mirror's URL is only checked for shape here; the code service checks it against the
    site's ``codeService.allowedHosts`` (and derives ``name`` when absent) before storing.

    Returns:
        ``{"kind": Kind, "reason": str, "payload": dict}``.

    Raises:
        InvalidRequest: one line naming the field at fault.
    """
    if not isinstance(body, dict):
        raise InvalidRequest("body: a JSON object is required")
    try:
        kind = Kind(str(body.get("kind")))
    except ValueError:
        raise InvalidRequest(
            f"kind: {body.get('kind')!r} is not one of {', '.join(k.value for k in Kind)}"
        ) from None
    reason = body.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidRequest("reason: a non-empty reason is required (--reason TEXT)")
    if len(reason) > COMMENT_MAX:
        raise InvalidRequest(f"reason: too long (at most {COMMENT_MAX} characters)")
    if kind == Kind.PACKAGE:
        payload = _package_payload(body)
    elif kind == Kind.MIRROR:
        payload = _mirror_payload(body)
    elif kind == Kind.BRANCH:
        payload = _branch_payload(body)
    else:
        payload = _export_payload(body)
    return {"kind": kind, "reason": reason.strip(), "payload": payload}


def _package_payload(body: dict[str, object]) -> dict[str, object]:
    script = body.get("script")
    if not isinstance(script, str) or not script.strip():
        raise InvalidRequest("script: the install script text is required")
    if len(script.encode()) > SCRIPT_MAX:
        raise InvalidRequest(f"script: larger than {SCRIPT_MAX} bytes")
    tr = body.get("transcript")
    if not isinstance(tr, dict):
        raise InvalidRequest("transcript: the transcript of the test run is required")
    exit_status = tr.get("exit_status")
    if not isinstance(exit_status, int) or isinstance(exit_status, bool):
        raise InvalidRequest("transcript.exit_status: an integer is required")
    duration = tr.get("duration_s")
    if not isinstance(duration, (int, float)) or isinstance(duration, bool) or duration < 0:
        raise InvalidRequest("transcript.duration_s: a number of seconds >= 0 is required")
    output = tr.get("output", "")
    if not isinstance(output, str) or len(output) > OUTPUT_MAX:
        raise InvalidRequest(f"transcript.output: text of at most {OUTPUT_MAX} characters")
    image = tr.get("image", "")
    started = tr.get("started_at", "")
    if not isinstance(image, str) or not isinstance(started, str):
        raise InvalidRequest("transcript.image and transcript.started_at: strings required")
    transcript = {
        "exit_status": exit_status,
        "duration_s": round(float(duration), 3),
        "image": image[:512],
        "started_at": started[:64],
        "output": output,
        "truncated": bool(tr.get("truncated", False)),
    }
    return {"script": script, "transcript": transcript}


URL_MAX = 2048
"""Longest upstream URL accepted for a mirror request, in characters."""


def _mirror_payload(body: dict[str, object]) -> dict[str, object]:
    url = body.get("url")
    if not isinstance(url, str) or not url.strip():
        raise InvalidRequest("url: the upstream repository URL is required (mlab request mirror URL)")
    url = url.strip()
    if len(url) > URL_MAX or any(c.isspace() or ord(c) < 32 for c in url):
        raise InvalidRequest(f"url: at most {URL_MAX} characters, no spaces or control characters")
    name = body.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise InvalidRequest("name: ORG/REPO text, or leave it out to derive it from the URL")
    out: dict[str, object] = {"url": url}
    if name:
        out["name"] = str(name).strip()
    return out


BRANCH_REF = re.compile(r"^refs/(heads|tags)/[A-Za-z0-9][A-Za-z0-9._/-]{0,250}$")
REPO_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}/[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def full_ref(ref: str) -> str:
    """``feature_1`` -> ``refs/heads/feature_1``; ``refs/heads/X``, ``refs/tags/X`` kept."""
    return ref if ref.startswith(("refs/heads/", "refs/tags/")) else f"refs/heads/{ref}"


def _branch_payload(body: dict[str, object]) -> dict[str, object]:
    repo = body.get("repo")
    if not isinstance(repo, str) or not REPO_NAME.match(repo.strip().removesuffix(".git")):
        raise InvalidRequest(f"repo: {repo!r} must be ORG/REPO as on the code service")
    ref = body.get("ref")
    if not isinstance(ref, str) or not ref.strip():
        raise InvalidRequest("ref: the branch (or refs/tags/TAG) to review is required")
    full = full_ref(ref.strip())
    if full.startswith(("refs/heads/refs/", "refs/heads/heads/", "refs/heads/tags/")) or \
            not BRANCH_REF.match(full) or ".." in full or full.endswith((".lock", "/")):
        raise InvalidRequest(f"ref: {ref!r} is not a plain branch or tag name")
    return {"repo": repo.strip().removesuffix(".git"), "ref": full}


def _export_payload(body: dict[str, object]) -> dict[str, object]:
    outbox = body.get("outbox")
    if not isinstance(outbox, str) or not OUTBOX_DIR.match(outbox) or outbox in (".", ".."):
        raise InvalidRequest(
            f"outbox: {outbox!r} must be one directory name of letters, digits, '.', '_', '-'"
        )
    files = body.get("files")
    if not isinstance(files, list) or not files:
        raise InvalidRequest("files: a non-empty list of {path, size, sha256} is required")
    if len(files) > MAX_FILES:
        raise InvalidRequest(f"files: more than {MAX_FILES} files")
    seen: set[str] = set()
    out: list[dict[str, object]] = []
    total = 0
    for i, entry in enumerate(files):
        where = f"files[{i}]"
        if not isinstance(entry, dict):
            raise InvalidRequest(f"{where}: an object {{path, size, sha256}} is required")
        path = check_relpath(entry.get("path"), f"{where}.path")  # type: ignore[arg-type]
        if path in seen:
            raise InvalidRequest(f"{where}.path: {path!r} is listed twice")
        seen.add(path)
        size = entry.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidRequest(f"{where}.size: a byte count >= 0 is required")
        digest = entry.get("sha256")
        if not isinstance(digest, str) or not SHA256.match(digest):
            raise InvalidRequest(f"{where}.sha256: 64 lower-case hex digits are required")
        total += size
        out.append({"path": path, "size": size, "sha256": digest})
    # A file may not also be a directory of another entry (a/b and a/b/c).
    for path in seen:
        parent = path
        while "/" in parent:
            parent = parent.rsplit("/", 1)[0]
            if parent in seen:
                raise InvalidRequest(f"files: {parent!r} is both a file and a directory")
    return {"outbox": outbox, "files": out, "total_size": total}
