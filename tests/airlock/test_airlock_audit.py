"""The audit log: append-only JSON lines, safe under concurrent writers, shown by `mlab airlock log`."""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import os
import subprocess
import sys
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
