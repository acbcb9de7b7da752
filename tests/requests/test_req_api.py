"""The requests API against the real code service on a free loopback port."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from mlab.requests.model import Conflict, Forbidden, InvalidRequest, NotFound

PACKAGE = {"kind": "package", "reason": "jq for the team", "script": "apt-get install -y jq\n",
           "transcript": {"exit_status": 0, "duration_s": 2.0, "image": "localhost/mlab/homepod:t",
                          "output": "Setting up jq", "started_at": "2026-11-29T10:00:00Z"}}
EXPORT = {"kind": "export", "reason": "model for ACME", "outbox": "export-x",
          "files": [{"path": "model.bin", "size": 4, "sha256": "a" * 64}]}


def test_full_lifecycle_with_history(service) -> None:  # type: ignore[no-untyped-def]
    alice, bob = service.client("alice"), service.client("bob")
    item = alice.submit(PACKAGE)
    assert item["state"] == "submitted" and item["owner"] == "alice"
    approved = bob.act(item["id"], "approve", "fine")
    assert approved["state"] == "approved"
    shown = alice.get(item["id"])
    assert [(h["action"], h["by"], h["to"]) for h in shown["history"]] == [
        ("submit", "alice", "submitted"), ("review", "bob", "in_review"),
        ("approve", "bob", "approved")]
    assert shown["transcript"]["output"] == "Setting up jq"
    revoked = service.client("admin").act(item["id"], "revoke", "pulled")
    assert revoked["state"] == "revoked"


@pytest.mark.parametrize("first,second,expected", [
    ("cancel", "approve", Conflict),
    ("reject", "approve", Conflict),
    ("reject", "revoke", Conflict),
    ("approve", "reject", Conflict),
    ("approve", "cancel", Conflict),
    ("review", "cancel", Conflict),
    ("review", "review", Conflict),
])
def test_forbidden_transitions(service, first: str, second: str, expected: type) -> None:  # type: ignore[no-untyped-def]
    alice, bob = service.client("alice"), service.client("bob")
    rid = alice.submit(EXPORT)["id"]
    (alice if first == "cancel" else bob).act(rid, first, "because")
    with pytest.raises(expected):
        (alice if second == "cancel" else bob).act(rid, second, "again")


def test_permissions(service) -> None:  # type: ignore[no-untyped-def]
    alice, carol, bob = (service.client(u) for u in ("alice", "carol", "bob"))
    rid = alice.submit(EXPORT)["id"]
    with pytest.raises(NotFound):
        carol.get(rid)  # other users' requests are invisible
    with pytest.raises(NotFound):
        carol.act(rid, "cancel")
    with pytest.raises(Forbidden):
        carol.list(all_users=True)
    assert rid not in [i["id"] for i in carol.list()]
    assert all(i["owner"] == "carol" for i in carol.list())
    assert rid in [i["id"] for i in bob.list(all_users=True)]
    with pytest.raises(Forbidden, match="not a reviewer"):
        alice.act(rid, "approve", "self")
    with pytest.raises(Forbidden):
        bob.act(rid, "cancel")
    with pytest.raises(InvalidRequest, match="comment"):
        bob.act(rid, "approve", "")
    # A reviewer cannot approve their own request.
    own = bob.submit(PACKAGE)["id"]
    with pytest.raises(Forbidden, match="own request"):
        bob.act(own, "approve", "mine")
    assert service.client("dave").act(own, "approve", "ok")["state"] == "approved"
    with pytest.raises(Forbidden):
        alice.packages()
    assert own in [p["id"] for p in service.client("admin").packages()]


def test_two_person_rule(service_two_person) -> None:  # type: ignore[no-untyped-def]
    svc = service_two_person
    alice, bob, dave = (svc.client(u) for u in ("alice", "bob", "dave"))
    rid = alice.submit(EXPORT)["id"]
    assert bob.act(rid, "approve", "ok")["state"] == "in_review"
    with pytest.raises(Forbidden, match="already approved"):
        bob.act(rid, "approve", "ok again")
    final = dave.act(rid, "approve", "ok too")
    assert final["state"] == "approved" and final["approvers"] == ["bob", "dave"]
    # Packages are not listed in twoPersonApproval: one approval is enough.
    pid = alice.submit(PACKAGE)["id"]
    assert bob.act(pid, "approve", "ok")["state"] == "approved"


def test_errors_are_one_line_json(service) -> None:  # type: ignore[no-untyped-def]
    auth = ("alice", "alice-pw-1")
    resp = httpx.post(f"{service.url}/api/requests", auth=auth, json={"kind": "export"})
    assert resp.status_code == 400 and "reason" in resp.json()["error"]
    resp = httpx.post(f"{service.url}/api/requests", auth=auth,
                      json={**EXPORT, "files": [{"path": "../x", "size": 1, "sha256": "a" * 64}]})
    assert resp.status_code == 400 and "files[0].path" in resp.json()["error"]
    resp = httpx.post(f"{service.url}/api/requests", auth=auth, content=b"x" * (3 << 20),
                      headers={"content-type": "application/json"})
    assert resp.status_code == 400 and "larger than" in resp.json()["error"]
    assert httpx.get(f"{service.url}/api/requests").status_code == 401
    assert httpx.get(f"{service.url}/api/requests", auth=("alice", "wrong")).status_code == 401


def test_publisher_role(service) -> None:  # type: ignore[no-untyped-def]
    alice, airlock = service.client("alice"), service.client("airlock")
    rid = alice.submit(EXPORT)["id"]
    exports = {r["id"]: r for r in airlock.exports()}
    assert exports[rid]["files"] == EXPORT["files"] and "reason" not in exports[rid]
    with pytest.raises(Forbidden):
        alice.exports()
    with pytest.raises(NotFound):  # the publisher reviews nothing, and sees no request
        airlock.act(rid, "approve", "no")
    # The publisher notes only what it did to approved exports (issue 13, item 8): a fake
    # "published" on an unapproved export, a free-form note, a package request: refused.
    for action in ("published", "blocked", "note"):
        with pytest.raises(Forbidden):
            airlock.note(rid, action, "fake")
    package = alice.submit(PACKAGE)["id"]
    with pytest.raises(Forbidden):
        airlock.note(package, "published", "fake")
    assert [h["action"] for h in alice.get(rid)["history"]] == ["submit"]
    service.client("bob").act(rid, "approve", "fine")
    with pytest.raises(Forbidden):
        airlock.note(rid, "unpublished", "not yet")
    airlock.note(rid, "blocked", "sha256 differs")
    assert alice.get(rid)["history"][-1]["action"] == "blocked"
    service.client("bob").act(rid, "revoke", "pulled")
    airlock.note(rid, "unpublished", "removed")


def test_page_lists_with_history(service) -> None:  # type: ignore[no-untyped-def]
    alice = service.client("alice")
    rid = alice.submit({**EXPORT, "reason": "<script>alert(1)</script>"})["id"]
    service.client("carol").submit({**PACKAGE, "reason": "carol's secret plan"})
    service.client("bob").act(rid, "reject", "not for ACME")
    page = httpx.get(f"{service.url}/requests", auth=("alice", "alice-pw-1")).text
    assert "not for ACME" in page and "carol's secret plan" not in page
    assert "<script>alert" not in page and "&lt;script&gt;" in page
    page = httpx.get(f"{service.url}/requests", auth=("bob", "bob-pw-1")).text
    assert "carol&#x27;s secret plan" in page and "all requests (reviewer)" in page
    # The page says what it cannot vouch for: a transcript is the requester's word.
    assert "<b>Not verified:</b> the test run" in page


def test_notification_per_transition(service) -> None:  # type: ignore[no-untyped-def]
    rid = service.client("alice").submit(PACKAGE)["id"]
    service.client("bob").act(rid, "approve", "ok")
    deadline = time.monotonic() + 10
    events: list[dict] = []
    while time.monotonic() < deadline:
        if service.notify_log.exists():
            events = [e for e in (json.loads(x) for x in
                                  service.notify_log.read_text().splitlines() if x)
                      if e["id"] == rid]
            if len(events) >= 3:
                break
        time.sleep(0.05)
    assert [(e["action"], e["to"], e["by"]) for e in events] == [
        ("submit", "submitted", "alice"), ("review", "in_review", "bob"),
        ("approve", "approved", "bob")]
    assert all(e["event"] == "request.transition" and e["id"] == rid for e in events)


def test_client_falls_back_to_the_container_port(service, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """From MLAB_CODE_HOST alone: port 80 first; when nothing answers there, the next URL."""
    from mlab.requests.client import RequestsClient

    port = service.url.rsplit(":", 1)[1]
    monkeypatch.delenv("MLAB_SERVER", raising=False)
    monkeypatch.setenv("MLAB_CODE_HOST", "127.0.0.1")
    monkeypatch.setenv("MLAB_USER", "alice")
    monkeypatch.setenv("MLAB_PASSWORD", "alice-pw-1")
    client = RequestsClient.from_env()
    assert client.server == "http://127.0.0.1"
    assert client.fallbacks == ("http://127.0.0.1:8080",)
    # Stand-in for the two addresses: a closed port first, then the service.
    client.server, client.fallbacks = "http://127.0.0.1:9", (service.url,)
    rid = client.submit(EXPORT)["id"]
    assert client.server == service.url and client.get(rid)["owner"] == "alice"
    assert port in client.server
