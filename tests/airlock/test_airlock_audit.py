"""The audit log: append-only JSON lines, safe under concurrent writers, shown by `mlab airlock log`."""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from mlab.airlock import audit
from mlab.cli.stage_cmd import format_table


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://u:tok@example.org/x?a=1", "https://example.org/x?a=1"),
        ("https://example.org:8443/x", "https://example.org:8443/x"),
        ("https://tok@example.org:8443/x", "https://example.org:8443/x"),
    ],
    ids=["user-password", "plain", "token-port"],
)
def test_redact_url(url, expected) -> None:
    assert audit.redact_url(url) == expected


def test_make_record_shape() -> None:
    rec = audit.make_record("stage-url", "x", size=3, sha256="ab", user="alice",
                            now=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc))
    assert rec == {"time": "2026-01-02T03:04:05Z", "user": "alice", "action": "stage-url",
                   "item": "x", "size": 3, "sha256": "ab"}


def _writer(share: str, n: int, tag: str) -> None:
    from pathlib import Path

    for i in range(n):
        audit.record(Path(share), "stage-pip", f"{tag}-{i}-" + "x" * 3000, size=i, user=tag)


def test_concurrent_writers_never_interleave(tmp_path) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), 200, f"w{k}")) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    lines = (tmp_path / "audit.log").read_text().splitlines()
    assert len(lines) == 600
    assert all(json.loads(line)["action"] == "stage-pip" for line in lines)
    assert len(list(audit.read(tmp_path))) == 600
    assert oct((tmp_path / "audit.log").stat().st_mode & 0o777) == "0o644"


def test_log_command_json_and_table(tmp_path) -> None:
    audit.record(tmp_path, "stage-url", "https://example.org/d.bin", size=10, sha256="f" * 64, user="bob")
    proc = subprocess.run([sys.executable, "-m", "mlab.cli.main", "airlock", "log", "-o", "json", "--share", str(tmp_path)],
                          capture_output=True, text=True, check=True)
    rec = json.loads(proc.stdout.splitlines()[0])
    assert rec["user"] == "bob" and rec["size"] == 10
    table = format_table(list(audit.read(tmp_path)))
    assert "stage-url" in table and "ffffffffffff" in table and "https://example.org/d.bin" in table
    bad = subprocess.run([sys.executable, "-m", "mlab.cli.main", "airlock", "log", "-o", "xml", "--share", str(tmp_path)],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "-o" in bad.stderr


def test_unwritable_share_is_a_clear_error(tmp_path) -> None:
    from mlab.errors import MlabError

    with pytest.raises(MlabError, match="cannot write the audit log"):
        audit.record(tmp_path / "missing" / "dir", "stage-pip", "x")


@pytest.mark.parametrize("kind", ["pip", "apt", "url", "git"])
def test_read_only_share_is_a_clear_error(tmp_path, kind) -> None:
    if os.geteuid() == 0:
        ro = Path("/proc/mlab-not-writable")  # root can write anywhere else
    else:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
    args = {"pip": ["six"], "apt": ["jq"], "url": ["https://mirror.invalid/x.bin"], "git": ["https://mirror.invalid/r.git"]}[kind]
    proc = subprocess.run([sys.executable, "-m", "mlab.cli.main", "stage", kind, "--share", str(ro), *args],
                          capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    assert "is not writable" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"SUDO_USER": "alice", "MLAB_USER": "bob"}, "alice"),
        ({"SUDO_USER": "root", "MLAB_USER": "bob"}, "bob"),
        ({"MLAB_USER": "bob"}, "bob"),
    ],
    ids=["sudo-names-the-person", "sudo-from-root", "mlab-user"],
)
def test_current_user_names_the_person(monkeypatch, env, expected) -> None:
    monkeypatch.delenv("SUDO_USER", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert audit.current_user() == expected


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to own files as another uid")
def test_root_creates_the_log_for_the_share_owner_who_can_append() -> None:
    # pytest's tmp_path is under a 0700 folder of root's: uid 1000 needs a reachable one
    with tempfile.TemporaryDirectory(prefix="mlabtest-audit-") as top:
        share = Path(top) / "share"
        share.mkdir(mode=0o755)
        Path(top).chmod(0o755)
        _root_and_user_append(share)


def _root_and_user_append(share: Path) -> None:
    os.chown(share, 1000, 1000)
    audit.record(share, "stage-url", "by-root", user="alice")
    log = share / "audit.log"
    assert (log.stat().st_uid, log.stat().st_gid) == (1000, 1000)
    pid = os.fork()
    if pid == 0:  # the child appends as uid 1000 (the Airlock user), then exits at once
        status = 1
        try:
            os.setgid(1000)
            os.setuid(1000)
            audit.record(share, "stage-url", "by-user", user="alice")
            status = 0
        finally:
            os._exit(status)
    assert os.waitpid(pid, 0)[1] == 0
    audit.record(share, "stage-url", "root-again", user="alice")
    assert [r["item"] for r in audit.read(share)] == ["by-root", "by-user", "root-again"]
    assert log.stat().st_uid == 1000


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to own files as another uid")
def test_staging_probes_its_folder_under_a_root_owned_chroot_share() -> None:
    from mlab.airlock.fsutil import check_writable
    from mlab.errors import MlabError

    with tempfile.TemporaryDirectory(prefix="mlabtest-audit-") as top:
        share = Path(top) / "share"
        (share / "pip").mkdir(parents=True)
        os.chown(share / "pip", 1000, 1000)
        Path(top).chmod(0o755)
        share.chmod(0o755)
        pid = os.fork()
        if pid == 0:  # as uid 1000: the folder passes, the root-owned share root does not
            status = 1
            try:
                os.setgid(1000)
                os.setuid(1000)
                check_writable(share, "pip")
                try:
                    check_writable(share)
                except MlabError:
                    status = 0
            finally:
                os._exit(status)
        assert os.waitpid(pid, 0)[1] == 0
