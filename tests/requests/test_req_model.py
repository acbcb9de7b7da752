"""The request state machine and permissions, table-driven (pure; no I/O)."""

from __future__ import annotations

import itertools

import pytest

from mlab.requests.model import (
    ACTIONS,
    TRANSITIONS,
    Actor,
    Conflict,
    Forbidden,
    InvalidRequest,
    Kind,
    State,
    check_transition,
    plan,
    validate_submission,
)

OWNER = Actor("alice")
OTHER = Actor("carol")
REVIEWER = Actor("bob", is_reviewer=True)
REVIEWER2 = Actor("dave", is_reviewer=True)
ADMIN = Actor("admin", is_admin=True)
OWNER_REVIEWER = Actor("alice", is_reviewer=True)


def _plan(action: str, state: State, actor: Actor, *, approvers=(), two=(), comment="ok",
          kind=Kind.EXPORT):
    return plan(action, request_id=1, kind=kind, owner="alice", state=state,
                approvers=list(approvers), actor=actor, two_person=list(two), comment=comment)


# (action, from state, actor) -> resulting state, or the error type.
CASES = [
    ("cancel", State.SUBMITTED, OWNER, State.CANCELLED),
    ("cancel", State.IN_REVIEW, OWNER, Conflict),
    ("cancel", State.APPROVED, OWNER, Conflict),
    ("cancel", State.SUBMITTED, REVIEWER, Forbidden),
    ("cancel", State.SUBMITTED, ADMIN, Forbidden),
    ("review", State.SUBMITTED, REVIEWER, State.IN_REVIEW),
    ("review", State.IN_REVIEW, REVIEWER, Conflict),
    ("review", State.SUBMITTED, OWNER, Forbidden),
    ("approve", State.SUBMITTED, REVIEWER, State.APPROVED),
    ("approve", State.IN_REVIEW, REVIEWER, State.APPROVED),
    ("approve", State.IN_REVIEW, ADMIN, State.APPROVED),
    ("approve", State.APPROVED, REVIEWER, Conflict),
    ("approve", State.REJECTED, REVIEWER, Conflict),
    ("approve", State.CANCELLED, REVIEWER, Conflict),
    ("approve", State.REVOKED, REVIEWER, Conflict),
    ("approve", State.SUBMITTED, OTHER, Forbidden),
    ("approve", State.SUBMITTED, OWNER, Forbidden),
    ("approve", State.SUBMITTED, OWNER_REVIEWER, Forbidden),
    ("reject", State.SUBMITTED, REVIEWER, State.REJECTED),
    ("reject", State.IN_REVIEW, REVIEWER, State.REJECTED),
    ("reject", State.APPROVED, REVIEWER, Conflict),
    ("reject", State.IN_REVIEW, OWNER_REVIEWER, Forbidden),
    ("reject", State.IN_REVIEW, OTHER, Forbidden),
    ("revoke", State.APPROVED, REVIEWER, State.REVOKED),
    ("revoke", State.APPROVED, OWNER_REVIEWER, State.REVOKED),
    ("revoke", State.APPROVED, OWNER, Forbidden),
    ("revoke", State.IN_REVIEW, REVIEWER, Conflict),
    ("revoke", State.REVOKED, REVIEWER, Conflict),
]


@pytest.mark.parametrize(
    "action,state,actor,expected", CASES,
    ids=[f"{a}-{s}-{u.name}{'-rev' if u.reviews else ''}" for a, s, u, _ in CASES],
)
def test_plan(action: str, state: State, actor: Actor, expected: object) -> None:
    if isinstance(expected, type):
        with pytest.raises(expected):
            _plan(action, state, actor)
    else:
        steps = _plan(action, state, actor)
        assert steps[-1].to_state == expected
        for step in steps:
            check_transition(step.from_state, step.to_state)


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("state", list(State))
def test_every_planned_step_is_an_allowed_transition(action: str, state: State) -> None:
    for actor in (OWNER, OTHER, REVIEWER, ADMIN, OWNER_REVIEWER):
        try:
            steps = _plan(action, state, actor)
        except (Forbidden, Conflict):
            continue
        for step in steps:
            check_transition(step.from_state, step.to_state)


@pytest.mark.parametrize("pair", list(itertools.product(State, State)), ids=str)
def test_check_transition_table(pair: tuple[State, State]) -> None:
    allowed = pair in TRANSITIONS or pair == (State.IN_REVIEW, State.IN_REVIEW)
    if allowed:
        check_transition(*pair)
    else:
        with pytest.raises(Conflict):
            check_transition(*pair)


def test_final_states_have_no_exit() -> None:
    assert {src for src, _dst in TRANSITIONS} >= {State.SUBMITTED}
    for (src, _dst) in TRANSITIONS:
        assert src not in (State.REJECTED, State.REVOKED, State.CANCELLED)


def test_approve_from_submitted_records_review_first() -> None:
    steps = _plan("approve", State.SUBMITTED, REVIEWER)
    assert [(s.action, s.from_state, s.to_state) for s in steps] == [
        ("review", State.SUBMITTED, State.IN_REVIEW),
        ("approve", State.IN_REVIEW, State.APPROVED),
    ]


def test_two_person_rule() -> None:
    first = _plan("approve", State.SUBMITTED, REVIEWER, two=["export"])
    assert first[-1].to_state == State.IN_REVIEW
    assert "approval 1 of 2" in first[-1].comment
    with pytest.raises(Forbidden, match="already approved"):
        _plan("approve", State.IN_REVIEW, REVIEWER, approvers=["bob"], two=["export"])
    second = _plan("approve", State.IN_REVIEW, ADMIN, approvers=["bob"], two=["export"])
    assert second[-1].to_state == State.APPROVED
    # Only the listed kind needs two.
    assert _plan("approve", State.SUBMITTED, REVIEWER, two=["export"],
                 kind=Kind.PACKAGE)[-1].to_state == State.APPROVED
    # A rejection by the second reviewer still ends it.
    assert _plan("reject", State.IN_REVIEW, ADMIN, approvers=["bob"],
                 two=["export"])[-1].to_state == State.REJECTED


@pytest.mark.parametrize("action", ["approve", "reject"])
def test_decisions_need_a_comment(action: str) -> None:
    with pytest.raises(InvalidRequest, match="comment"):
        _plan(action, State.IN_REVIEW, REVIEWER, comment="  ")


def test_unknown_action() -> None:
    with pytest.raises(InvalidRequest, match="action"):
        _plan("publish", State.APPROVED, ADMIN)


GOOD_EXPORT = {"kind": "export", "reason": "for the customer", "outbox": "export-1",
               "files": [{"path": "a.bin", "size": 3, "sha256": "0" * 64},
                         {"path": "dir/b.txt", "size": 0, "sha256": "f" * 64}]}
GOOD_PACKAGE = {"kind": "package", "reason": "need jq", "script": "apt-get install -y jq\n",
                "transcript": {"exit_status": 0, "duration_s": 1.5, "image": "x:1",
                               "output": "ok", "started_at": "2026-01-01T00:00:00Z"}}


def test_valid_submissions() -> None:
    export = validate_submission(GOOD_EXPORT)
    assert export["kind"] == Kind.EXPORT and export["payload"]["total_size"] == 3  # type: ignore[index]
    package = validate_submission(GOOD_PACKAGE)
    assert package["payload"]["transcript"]["exit_status"] == 0  # type: ignore[index]


def _with(base: dict, **changes: object) -> dict:
    out = dict(base)
    out.update(changes)
    return out


def _file(**changes: object) -> dict:
    entry: dict[str, object] = {"path": "a", "size": 1, "sha256": "a" * 64}
    entry.update(changes)
    return _with(GOOD_EXPORT, files=[entry])


BAD = [
    ("not-object", [], "body"),
    ("kind", _with(GOOD_EXPORT, kind="data"), "kind"),
    ("no-reason", _with(GOOD_EXPORT, reason=" "), "reason"),
    ("outbox-slash", _with(GOOD_EXPORT, outbox="a/b"), "outbox"),
    ("outbox-dotdot", _with(GOOD_EXPORT, outbox=".."), "outbox"),
    ("no-files", _with(GOOD_EXPORT, files=[]), "files"),
    ("abs-path", _file(path="/etc/passwd"), "files\\[0\\].path"),
    ("dotdot-path", _file(path="a/../../b"), "files\\[0\\].path"),
    ("empty-part", _file(path="a//b"), "files\\[0\\].path"),
    ("neg-size", _file(size=-1), "files\\[0\\].size"),
    ("bool-size", _file(size=True), "files\\[0\\].size"),
    ("bad-sha", _file(sha256="XYZ"), "files\\[0\\].sha256"),
    ("dup", _with(GOOD_EXPORT, files=[GOOD_EXPORT["files"][0]] * 2), "twice"),
    ("file-and-dir", _with(GOOD_EXPORT, files=[
        {"path": "d", "size": 1, "sha256": "a" * 64},
        {"path": "d/x", "size": 1, "sha256": "a" * 64}]), "both a file and a directory"),
    ("no-script", _with(GOOD_PACKAGE, script=""), "script"),
    ("no-transcript", _with(GOOD_PACKAGE, transcript=None), "transcript"),
    ("bad-status", _with(GOOD_PACKAGE, transcript={**GOOD_PACKAGE["transcript"], "exit_status": "0"}),
     "exit_status"),
]


@pytest.mark.parametrize("body,field", [(b, f) for _, b, f in BAD], ids=[i for i, _, _ in BAD])
def test_invalid_submissions(body: object, field: str) -> None:
    with pytest.raises(InvalidRequest, match=field):
        validate_submission(body)
