"""Issue 17: approved exports download only by their requester, with their own credentials;
who may request exports is a site setting.

The real code service (with ``MLAB_EXPORTS_DIR`` set, as the rendered code-service pod has
it) on a loopback port, the real publisher (``mlab request publish`` as ``mlab-publisher``)
writing into that directory, and ``mlab request download`` processes.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import httpx
from cli_runner import Run, mlab


def _pw(service: Any, user: str) -> str:
    return service.env(user)["MLAB_PASSWORD"]


def _request(service: Any, user: str, *args: str, cwd: Path | None = None,
          check: bool = True) -> Run:
    """``mlab request ARGS`` as ``user`` of ``service``, with no other MLAB_* setting."""
    return mlab("request", *args, env=service.env(user), drop=("MLAB_",), cwd=cwd, timeout=120,
                check=check)


def test_only_the_requester_downloads(delivering, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    service, exports = delivering
    home = tmp_path / "home"
    (home / "run").mkdir(parents=True)
    (home / "run" / "weights.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 5))
    (home / "notes.txt").write_text("v3\n")
    outboxes = tmp_path / "outbox"
    (outboxes / "alice").mkdir(parents=True)
    out = _request(service, "alice", "export", str(home / "notes.txt"), str(home / "run"),
                "--outbox", str(outboxes / "alice"), "--reason", "for ACME").stdout
    rid = int(out.split("request ")[1].split()[0].rstrip(":"))
    url = f"{service.url}/api/requests/{rid}/files/notes.txt"
    # Submitted, not approved: nothing downloads, not even for the owner.
    assert httpx.get(url, auth=("alice", _pw(service, "alice"))).status_code == 409
    _request(service, "bob", "approve", str(rid), "--comment", "ok")
    # Approved but the publisher has not passed yet: a clear 409.
    proc = _request(service, "alice", "download", str(rid), "--out-dir", str(tmp_path / "early"),
                 check=False)
    assert proc.returncode == 1 and "not delivered yet" in proc.stderr, proc.stderr
    _request(service, "mlab-publisher", "publish", "--outbox-root", str(outboxes),
          "--export-root", str(exports), check=False)
    assert (exports / str(rid) / "run" / "weights.bin").is_file()

    proc = _request(service, "alice", "download", str(rid), "--out-dir", str(tmp_path / "got"))
    assert "sha256 verified" in proc.stdout
    for rel in ("notes.txt", "run/weights.bin"):
        assert (hashlib.sha256((tmp_path / "got" / rel).read_bytes()).hexdigest()
                == hashlib.sha256((home / rel).read_bytes()).hexdigest())
    # Nobody else: not a reviewer, not the admin, not the Airlock's login or the publisher.
    for user in ("carol", "bob", "admin", "airlock", "mlab-publisher"):
        resp = httpx.get(url, auth=(user, _pw(service, user)))
        assert resp.status_code == 404, (user, resp.status_code, resp.text)
        assert b"v3" not in resp.content
    proc = _request(service, "bob", "download", str(rid), "--out-dir", str(tmp_path / "bob"), check=False)
    assert proc.returncode == 1 and not (tmp_path / "bob" / "notes.txt").exists()
    assert httpx.get(url).status_code == 401
    # Only files of the request; no way out of the export's directory.
    for bad in ("other.txt", "..%2F1%2Fnotes.txt", "run%2F..%2Fnotes.txt"):  # raw, not normalised
        resp = httpx.get(f"{service.url}/api/requests/{rid}/files/{bad}",
                         auth=("alice", _pw(service, "alice")))
        assert resp.status_code == 404, (bad, resp.status_code)
    audit = (service.data / "audit.log").read_text()
    assert f'"event": "export-download", "user": "alice", "request": {rid}' in audit
    # Revoked: refused at once, before the publisher removes the copy.
    _request(service, "bob", "revoke", str(rid), "--comment", "contract ended")
    assert httpx.get(url, auth=("alice", _pw(service, "alice"))).status_code == 409


def test_export_requesters(delivering, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    service, _ = delivering
    (tmp_path / "f.txt").write_text("x")
    for box in "cad":
        (tmp_path / box).mkdir()
    args = ["export", str(tmp_path / "f.txt"), "--reason", "r"]
    proc = _request(service, "carol", *args, "--outbox", str(tmp_path / "c"), check=False)
    assert proc.returncode == 1 and "may not request exports" in proc.stderr, proc.stderr
    assert list((tmp_path / "c").iterdir()) == []  # the copy is removed again
    _request(service, "alice", *args, "--outbox", str(tmp_path / "a"))  # group:ml
    _request(service, "dave", *args, "--outbox", str(tmp_path / "d"))   # by name
    # Package requests are not limited by it.
    resp = httpx.post(f"{service.url}/api/requests", auth=("carol", _pw(service, "carol")),
                      json={"kind": "package", "reason": "tree", "script": "true\n",
                            "transcript": {"output": "", "exit_status": 0, "duration_s": 0.1,
                                           "started_at": "2026-12-05T00:00:00Z",
                                           "image": "x"}})
    assert resp.status_code == 201, resp.text
    # A branch review lets data out as well: bounded the same way (before any lookup).
    resp = httpx.post(f"{service.url}/api/requests", auth=("carol", _pw(service, "carol")),
                      json={"kind": "branch", "reason": "paper", "repo": "org/repo",
                            "ref": "feature_1"})
    assert resp.status_code == 403 and "may not request exports" in resp.text, resp.text
