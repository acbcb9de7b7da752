"""``mlab request`` end to end on one machine: real CLI processes, the real service, real files.

The outbox and the share are plain directories here (``--outbox``, ``--outbox-root``,
``--export-root``); the podman tests in tests/e2e use the real mounts.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from cli_runner import Run
from cli_runner import mlab as run_mlab

from mlab.requests.packages import image_labels, load_steps, provision_fragment, write_steps


def mlab(service, user: str, *args: str, check: bool = True) -> Run:  # type: ignore[no-untyped-def]
    """``mlab request ARGS`` as ``user`` of ``service``, with no other MLAB_* setting."""
    return run_mlab("request", *args, env=service.env(user), drop=("MLAB_",), timeout=120,
                    check=check)


def _rid(proc: Run) -> int:
    # "submitted export request 7: ..." / "submitted package request 7 (submitted)"
    return int(proc.stdout.split("request ")[1].split()[0].rstrip(":"))


def test_package_request_tested_then_submitted(service, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    good = tmp_path / "install-ok.sh"
    good.write_text("echo installing demo\nmkdir -p /tmp/never-mind\n")
    proc = mlab(service, "alice", "package", str(good), "--reason", "demo tool")
    assert "installing demo" in proc.stderr
    rid = _rid(proc)
    shown = json.loads(mlab(service, "alice", "show", str(rid), "-o", "json").stdout)
    assert shown["transcript"]["exit_status"] == 0
    assert "installing demo" in shown["transcript"]["output"]
    assert shown["script"] == good.read_text()

    bad = tmp_path / "install-bad.sh"
    bad.write_text("echo broken >&2\nexit 7\n")
    before = len(json.loads(mlab(service, "alice", "list", "-o", "json").stdout))
    proc = mlab(service, "alice", "package", str(bad), "--reason", "x", check=False)
    assert proc.returncode == 1 and "exited 7" in proc.stderr and "--allow-failed" in proc.stderr
    assert len(json.loads(mlab(service, "alice", "list", "-o", "json").stdout)) == before
    proc = mlab(service, "alice", "package", str(bad), "--reason", "x", "--allow-failed")
    failed = _rid(proc)
    text = mlab(service, "bob", "show", str(failed)).stdout
    assert "test run: exit 7" in text and "broken" in text

    # Review through the CLI, then the image-build hook sees the approved script.
    proc = mlab(service, "alice", "approve", str(rid), "--comment", "mine", check=False)
    assert proc.returncode == 1 and "not a reviewer" in proc.stderr
    assert "approved" in mlab(service, "bob", "approve", str(rid), "--comment", "ok").stdout
    mlab(service, "bob", "reject", str(failed), "--comment", "it fails")
    out = tmp_path / "approved.json"
    mlab(service, "admin", "packages", "--out-file", str(out))
    steps = load_steps(path=out)
    assert rid in [s.id for s in steps] and failed not in [s.id for s in steps]
    scripts = write_steps(steps, tmp_path / "steps")
    assert scripts[[s.id for s in steps].index(rid)].read_text() == good.read_text()
    assert str(rid) in image_labels(steps)["mlab.package-requests"].split(",")
    assert f"request-{rid}.sh" in provision_fragment(steps)


def test_list_and_usage_errors(service, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    proc = mlab(service, "carol", "list", "--all", check=False)
    assert proc.returncode == 1 and "not a reviewer" in proc.stderr
    proc = mlab(service, "carol", "show", "999999", check=False)
    assert proc.returncode == 1 and "no such request" in proc.stderr
    proc = mlab(service, "carol", "list", "-o", "yaml", check=False)
    assert proc.returncode == 2 and "--output 'yaml': choose table or json" in proc.stderr, proc.stderr
    proc = mlab(service, "carol", "package", str(tmp_path / "nope.sh"), "--reason", "x",
                check=False)
    assert proc.returncode == 2 and "SCRIPT" in proc.stderr
    proc = mlab(service, "carol", "export", str(tmp_path / "nope"), "--reason", "x",
                "--outbox", str(tmp_path), check=False)
    assert proc.returncode == 2 and "no such file" in proc.stderr
    table = mlab(service, "bob", "list", "--all").stdout
    assert "state" in table and "owner" in table


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_export_review_publish_revoke(service, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    home = tmp_path / "home"
    (home / "run" / "ckpt").mkdir(parents=True)
    (home / "model.bin").write_bytes(os.urandom(5 * 1024 * 1024 + 3))
    (home / "notes.txt").write_text("results\n")
    (home / "run" / "ckpt" / "step1.pt").write_bytes(os.urandom(1000))
    (home / "run" / "metrics.json").write_text("{}")
    outboxes = tmp_path / "outbox"
    (outboxes / "alice").mkdir(parents=True)
    export_root = tmp_path / "share" / "export"

    def publish() -> subprocess.CompletedProcess[str]:
        # Other tests share the service and leave approved exports without an outbox here,
        # so the exit status is 1 (blocked); each assertion looks at this test's ids.
        proc = mlab(service, "mlab-publisher", "publish", "--outbox-root", str(outboxes),
                    "--export-root", str(export_root), check=False)
        assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr, proc.stderr
        return proc

    args = ["export", str(home / "model.bin"), str(home / "notes.txt"), str(home / "run"),
            "--outbox", str(outboxes / "alice")]
    good = _rid(mlab(service, "alice", *args, "--reason", "for ACME"))
    bad = _rid(mlab(service, "alice", *args, "--reason", "leak"))
    item = json.loads(mlab(service, "alice", "show", str(good), "-o", "json").stdout)
    assert sorted(f["path"] for f in item["files"]) == [
        "model.bin", "notes.txt", "run/ckpt/step1.pt", "run/metrics.json"]
    assert {f["path"]: f["sha256"] for f in item["files"]}["model.bin"] == _sha(home / "model.bin")

    publish()
    assert not (export_root / str(good)).exists()  # not approved yet
    mlab(service, "bob", "approve", str(good), "--comment", "ok")
    mlab(service, "bob", "reject", str(bad), "--comment", "no")
    proc = publish()
    assert f"request {good}: published" in proc.stdout
    published = export_root / str(good)
    for f in item["files"]:
        assert _sha(published / f["path"]) == f["sha256"]
    assert not (export_root / str(bad)).exists()
    history = json.loads(mlab(service, "alice", "show", str(good), "-o", "json").stdout)["history"]
    assert history[-1]["action"] == "published" and history[-1]["by"] == "mlab-publisher"

    # Changed after approval: blocked, nothing published, exit 1.
    third = _rid(mlab(service, "alice", *args, "--reason", "again"))
    mlab(service, "dave", "approve", str(third), "--comment", "ok")
    outbox_dir = outboxes / "alice" / json.loads(
        mlab(service, "alice", "show", str(third), "-o", "json").stdout)["outbox"]
    (outbox_dir / "notes.txt").write_text("RESULTS\n")
    proc = publish()
    assert proc.returncode == 1 and f"request {third}: blocked" in proc.stdout
    assert not (export_root / str(third)).exists()

    # Revoking removes the publication.
    mlab(service, "admin", "revoke", str(good), "--comment", "customer gone")
    proc = publish()
    assert f"request {good}: unpublished" in proc.stdout
    assert not published.exists()


def test_export_without_credentials_copies_nothing(service, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "out").mkdir()
    (tmp_path / "f").write_text("x")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLAB_")}
    proc = subprocess.run([sys.executable, "-m", "mlab.cli.main", "request", "export",
                           str(tmp_path / "f"), "--reason", "x", "--outbox", str(tmp_path / "out"),
                           "--server", service.url], capture_output=True, text=True, env=env,
                          check=False)
    assert proc.returncode == 2 and "MLAB_USER" in proc.stderr
    assert list((tmp_path / "out").iterdir()) == []
    proc = mlab(service, "alice", "export", str(tmp_path / "f"), "--reason", "x",
                "--outbox", str(tmp_path / "out"), "--server", "http://127.0.0.1:9",
                check=False)
    assert proc.returncode == 1 and "cannot reach" in proc.stderr
    assert list((tmp_path / "out").iterdir()) == []


def test_publish_needs_the_publisher(service, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    args = ["publish", "--outbox-root", str(tmp_path), "--export-root", str(tmp_path / "e")]
    proc = mlab(service, "alice", *args, check=False)
    assert proc.returncode == 1 and "neither a reviewer nor the publisher" in proc.stderr
    proc = mlab(service, "airlock", *args, check=False)  # issue 13: not the Airlock's login
    assert proc.returncode == 1 and "neither a reviewer nor the publisher" in proc.stderr
    proc = mlab(service, "mlab-publisher", *args, check=False)
    assert "neither" not in proc.stderr
