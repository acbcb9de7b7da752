"""The SQLite request store: history, visibility, approval order, concurrent approvals."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from mlab.requests.model import Actor, Conflict, Forbidden, Kind, NotFound
from mlab.requests.store import RequestStore

ALICE = Actor("alice")
CAROL = Actor("carol")
BOB = Actor("bob", is_reviewer=True)
DAVE = Actor("dave", is_reviewer=True)
ADMIN = Actor("admin", is_admin=True)


def _package(store: RequestStore, owner: str, script: str = "true") -> int:
    item = store.create(kind=Kind.PACKAGE, owner=owner, reason="r",
                        payload={"script": script, "transcript": {"exit_status": 0}})
    return int(item["id"])


def test_history_records_who_when_and_comment(tmp_path: Path) -> None:
    store = RequestStore(tmp_path / "r.sqlite")
    rid = _package(store, "alice")
    item, recorded = store.act(rid, "approve", BOB, "looks fine")
    assert item["state"] == "approved"
    assert [(h["action"], h["from"], h["to"], h["by"]) for h in item["history"]] == [
        ("submit", None, "submitted", "alice"),
        ("review", "submitted", "in_review", "bob"),
        ("approve", "in_review", "approved", "bob"),
    ]
    assert all(h["at"].endswith("Z") and h["comment"] for h in item["history"])
    assert item["history"][-1]["comment"] == "looks fine"
    assert [r["action"] for r in recorded] == ["review", "approve"]
    revoked, _ = store.act(rid, "revoke", ADMIN, "broke the image")
    assert revoked["state"] == "revoked"
    with pytest.raises(Conflict):
        store.act(rid, "approve", DAVE, "again")


def test_visibility(tmp_path: Path) -> None:
    store = RequestStore(tmp_path / "r.sqlite")
    a = _package(store, "alice")
    c = _package(store, "carol")
    assert [i["id"] for i in store.list(ALICE)] == [a]
    with pytest.raises(Forbidden):
        store.list(ALICE, all_users=True)
    assert [i["id"] for i in store.list(BOB, all_users=True)] == [c, a]
    assert store.list(BOB, all_users=True, history=True)[0]["history"][0]["action"] == "submit"
    with pytest.raises(NotFound):
        store.get(c, ALICE)
    with pytest.raises(NotFound):
        store.act(c, "cancel", ALICE)
    with pytest.raises(NotFound):
        store.get(999, ADMIN)
    assert store.get(c, BOB)["owner"] == "carol"


def test_failed_action_changes_nothing(tmp_path: Path) -> None:
    store = RequestStore(tmp_path / "r.sqlite")
    rid = _package(store, "alice")
    with pytest.raises(Forbidden):
        store.act(rid, "approve", Actor("alice", is_reviewer=True), "mine")
    item = store.get(rid, ALICE)
    assert item["state"] == "submitted" and len(item["history"]) == 1


def test_approved_packages_in_approval_order(tmp_path: Path) -> None:
    store = RequestStore(tmp_path / "r.sqlite")
    first, second, third, fourth = (_package(store, "alice", f"echo {n}") for n in range(4))
    store.act(third, "approve", BOB, "ok")
    store.act(first, "approve", BOB, "ok")
    store.act(second, "reject", BOB, "no")
    store.act(fourth, "approve", BOB, "ok")
    store.act(fourth, "revoke", BOB, "bad")
    steps = store.approved_packages()
    assert [s["id"] for s in steps] == [third, first]
    assert steps[0]["script"] == "echo 2" and steps[0]["approvers"] == ["bob"]


def test_two_person_rule_survives_concurrent_approvals(tmp_path: Path) -> None:
    store = RequestStore(tmp_path / "r.sqlite", two_person=["package"])
    rid = _package(store, "alice")
    store.get(rid, ADMIN)  # create the schema before the threads race
    results: list[str] = []

    def approve(actor: Actor) -> None:
        try:
            results.append(store.act(rid, "approve", actor, "ok")[0]["state"])
        except Conflict:
            results.append("conflict")

    threads = [threading.Thread(target=approve, args=(a,)) for a in (BOB, DAVE)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["approved", "in_review"]
    item = store.get(rid, ADMIN)
    assert item["state"] == "approved" and sorted(item["approvers"]) == ["bob", "dave"]


def test_notes_need_a_reviewer(tmp_path: Path) -> None:
    store = RequestStore(tmp_path / "r.sqlite")
    rid = _package(store, "alice")
    with pytest.raises(Forbidden):
        store.note(rid, ALICE, "published", "x")
    event = store.note(rid, ADMIN, "blocked", "sha256 mismatch")
    assert event["from"] == event["to"] == "submitted"
    assert store.get(rid, ALICE)["history"][-1]["action"] == "blocked"
