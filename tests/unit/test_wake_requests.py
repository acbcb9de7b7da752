"""The portal's wake requests and the host side that takes them (mlab.cull.wake_requests):
real files in a real spool directory, the portal's HostWaker in a real thread against the
host's serve_pending in another. The HomePods and the wake itself are the injection points
(podman is the process boundary; the real ones run in tests/e2e/test_portal_wake_up.py)."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from mlab.cull import wake_requests as wr


class Host:
    """The host side with a fake podman: HomePods by user and the culled records."""

    def __init__(self, spool: Path, pods: dict[str, str], culled: set[str],
                 fail: bool = False) -> None:
        self.spool = spool
        self.pods = {u: SimpleNamespace(status=s) for u, s in pods.items()}
        self.culled = set(culled)
        self.woken: list[str] = []
        self.audit: list[dict[str, Any]] = []
        self.fail = fail

    def wake(self, user: str) -> None:
        if self.fail:
            raise wr.WakeRefused("podman pod start failed: no space left on device")
        self.woken.append(user)
        self.pods[user].status = "Running"
        self.culled.discard(user)

    def step(self, now: float | None = None) -> list[dict[str, Any]]:
        return wr.serve_pending(self.spool, {"alice", "bob"}, self.wake, lambda: self.pods,
                                lambda: {u: {} for u in self.culled}, self.audit.append,
                                now=(lambda: now) if now is not None else time.time)


def _request(spool: Path, name: str, rid: str = "r1") -> None:
    wr.prepare(spool)
    (spool / wr.REQUESTS / name).write_text(json.dumps({"user": name, "id": rid}))


@pytest.mark.parametrize(("name", "pods", "culled", "state", "reason"), [
    ("alice", {"alice": "Exited"}, {"alice"}, "woken", "culled; started"),
    ("alice", {"alice": "Running"}, set(), "running", "already running"),
    ("alice", {"alice": "Exited"}, set(), "refused", "stopped by an admin, not culled"),
    ("alice", {}, set(), "refused", "there is no HomePod for alice"),
    ("mallory", {"alice": "Exited"}, {"alice"}, "refused", "not a user of the site"),
], ids=["culled-woken", "running", "admin-stopped", "no-homepod", "not-a-user"])
def test_a_request_is_checked_replied_and_audited(tmp_path: Path, name: str, pods: dict,
                                                  culled: set, state: str, reason: str) -> None:
    host = Host(tmp_path, pods, culled)
    _request(tmp_path, name)
    rows = host.step()
    assert [(r["user"], r["state"]) for r in rows] == [(name, state)]
    assert reason in rows[0]["reason"]
    assert host.woken == (["alice"] if state == "woken" else [])
    assert not list((tmp_path / wr.REQUESTS).iterdir()), "the request was not taken"
    assert host.audit == [{"event": "wake-request", "user": name, "via": "portal",
                           "state": state, "reason": rows[0]["reason"]}]
    reply = wr.read_reply(tmp_path, name)
    if name == "mallory":  # no file is written for a name that is not a user
        assert reply is None
    else:
        assert reply is not None and reply["id"] == "r1" and reply["state"] == state


def test_one_wake_per_user_per_interval(tmp_path: Path) -> None:
    host = Host(tmp_path, {"alice": "Exited"}, {"alice"})
    _request(tmp_path, "alice", "r1")
    assert host.step(now=1000.0)[0]["state"] == "woken"
    host.pods["alice"].status = "Exited"  # culled again at once (or a stuck start)
    host.culled.add("alice")
    _request(tmp_path, "alice", "r2")
    row = host.step(now=1010.0)[0]
    assert row["state"] == "refused" and "try again in 20 s" in row["reason"]
    _request(tmp_path, "alice", "r3")  # a refusal neither ends nor restarts the interval
    assert "try again in 15 s" in host.step(now=1015.0)[0]["reason"]
    _request(tmp_path, "alice", "r4")
    assert host.step(now=1000.0 + wr.MIN_INTERVAL_S + 1)[0]["state"] == "woken"
    assert host.woken == ["alice", "alice"]


def test_links_and_odd_files_are_not_followed(tmp_path: Path) -> None:
    host = Host(tmp_path, {"alice": "Exited", "bob": "Exited"}, {"alice", "bob"})
    wr.prepare(tmp_path)
    secret = tmp_path / "secret"
    secret.write_text('{"id": "stolen"}')
    os.symlink(secret, tmp_path / wr.REQUESTS / "bob")
    rows = host.step()
    assert [(r["user"], r["state"]) for r in rows] == [("bob", "woken")]
    assert wr.read_reply(tmp_path, "bob")["id"] is None  # the link's target was not read
    assert secret.exists() and not (tmp_path / wr.REQUESTS / "bob").exists()
    (tmp_path / wr.REQUESTS / "alice" / "x").mkdir(parents=True)  # not a file: taken once
    assert [r["user"] for r in host.step()] == ["alice"]
    assert host.step() == [] and not list((tmp_path / wr.REQUESTS).iterdir())


def test_a_request_renamed_into_place_during_the_scan_is_no_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The portal writes ``.alice.X.tmp`` and renames it to ``alice``: a scan that saw the
    temporary name must not fail when it is gone (it did, once, under load, and the host
    stopped answering in that poll)."""
    host = Host(tmp_path, {"alice": "Exited"}, {"alice"})
    wr.prepare(tmp_path)
    tmp = tmp_path / wr.REQUESTS / ".alice.0000.tmp"
    tmp.write_text(json.dumps({"user": "alice", "id": "r1"}))
    seen = list(os.scandir(tmp_path / wr.REQUESTS))
    tmp.rename(tmp_path / wr.REQUESTS / "alice")
    real = os.scandir
    monkeypatch.setattr(wr.os, "scandir",
                        lambda path: iter(seen) if Path(path) == tmp_path / wr.REQUESTS
                        else real(path))
    assert host.step() == []  # nothing taken from the stale scan, and no exception
    monkeypatch.setattr(wr.os, "scandir", real)
    assert [(r["user"], r["state"]) for r in host.step()] == [("alice", "woken")]


def test_a_failed_wake_is_replied_as_an_error(tmp_path: Path) -> None:
    host = Host(tmp_path, {"alice": "Exited"}, {"alice"}, fail=True)
    _request(tmp_path, "alice")
    row = host.step()[0]
    assert row["state"] == "error" and "no space left" in row["reason"]


def test_portal_waker_gets_the_hosts_answer(tmp_path: Path) -> None:
    host = Host(tmp_path, {"alice": "Exited", "bob": "Exited"}, {"alice"})
    host.step()  # the heartbeat
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            host.step()
            stop.wait(0.05)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        waker = wr.HostWaker(tmp_path, timeout_s=10, poll_s=0.02)
        assert waker("alice") == "woken"
        assert waker("alice") == "running"
        with pytest.raises(wr.WakeRefused, match="stopped by an admin, not culled"):
            waker("bob")
    finally:
        stop.set()
        thread.join()
    assert host.woken == ["alice"]


def test_portal_waker_says_in_one_line_when_the_host_side_is_not_running(tmp_path: Path) -> None:
    wr.prepare(tmp_path)
    waker = wr.HostWaker(tmp_path, timeout_s=5, poll_s=0.02)
    with pytest.raises(wr.WakeRefused) as exc:
        waker("alice")
    line = exc.value.one_line()
    assert "\n" not in line and "`mlab cull --site SITE.yaml` is not running" in line
    assert "mlab wake alice" in line
    assert not list((tmp_path / wr.REQUESTS).iterdir()), "no request is left for nobody"
    # A heartbeat older than ALIVE_STALE_S is a stopped host side too.
    (tmp_path / wr.HOST / wr.ALIVE).touch()
    old = time.time() - wr.ALIVE_STALE_S - 1
    os.utime(tmp_path / wr.HOST / wr.ALIVE, (old, old))
    with pytest.raises(wr.WakeRefused, match="not running"):
        waker("alice")


def test_portal_waker_gives_up_when_the_host_does_not_answer(tmp_path: Path) -> None:
    wr.prepare(tmp_path)
    (tmp_path / wr.HOST / wr.ALIVE).touch()  # alive, but never takes the request
    with pytest.raises(wr.WakeRefused, match="did not answer the wake request in 1 s"):
        wr.HostWaker(tmp_path, timeout_s=1, poll_s=0.05)("alice")


def test_the_portals_host_engine_needs_its_spool(tmp_path: Path) -> None:
    from mlab.errors import UsageError
    from mlab.portal.wake import make_waker
    from mlab.site import parse_site

    site = parse_site({"name": "t", "users": [{"name": "alice"}]})
    with pytest.raises(UsageError, match="--wake host needs --wake-dir"):
        make_waker("host", site)
    waker = make_waker("host", site, tmp_path)
    assert isinstance(waker, wr.HostWaker) and waker.spool == tmp_path
