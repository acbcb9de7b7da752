"""Ingress quarantine (mlab.airlock.quarantine): the policy and a real release on the file
system (the chroot and SFTP: tests/e2e/test_airlock_stage.py)."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from mlab.airlock.quarantine import Policy, check, release


@pytest.mark.parametrize("head,size,policy,refused", [
    (b"a,b\n1,2", 7, Policy(), None),
    (b"\x7fELF\x02\x01", 10, Policy(), "ELF"),
    (b"MZ\x90\x00", 10, Policy(), "PE"),
    (b"#!/bin/sh", 10, Policy(), "#!"),
    (b"\xcf\xfa\xed\xfe", 10, Policy(), "Mach-O"),
    (b"\x7fELF", 10, Policy(allow_executables=True), None),
    (b"x", 101, Policy(max_bytes=100), "over the limit"),
], ids=["csv", "elf", "pe", "script", "macho", "allowed", "too-big"])
def test_policy(head: bytes, size: int, policy: Policy, refused: str | None) -> None:
    why = check(head, size, policy)
    assert (why is None) if refused is None else (refused in (why or "")), why


def _old(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    past = time.time() - 60
    os.utime(path, (past, past))


def test_release_moves_checked_files_and_audits_them(tmp_path: Path) -> None:
    quarantine, share = tmp_path / "q", tmp_path / "share"
    share.mkdir()
    inbox = quarantine / "upload"
    _old(inbox / "data.csv", b"a,b\n1,2\n")
    _old(inbox / "sub" / "notes.txt", b"notes\n")
    _old(inbox / "tool", b"\x7fELF\x02\x01\x01" + b"\0" * 100)
    (inbox / "arriving.bin").write_bytes(b"half")  # just written: left alone
    _old(inbox / "taken.txt", b"new\n")
    (share / "upload").mkdir()
    (share / "upload" / "taken.txt").write_bytes(b"old\n")
    os.symlink("/etc/passwd", inbox / "link")
    got = {o.path: o for o in release(quarantine, share, settle=10)}
    assert {p: o.action for p, o in got.items()} == {
        "data.csv": "released", "sub/notes.txt": "released", "tool": "refused",
        "arriving.bin": "kept", "taken.txt": "kept", "link": "refused"}
    assert (share / "upload" / "data.csv").read_bytes() == b"a,b\n1,2\n"
    assert (share / "upload" / "data.csv").stat().st_mode & 0o777 == 0o644
    assert (share / "upload" / "sub" / "notes.txt").read_bytes() == b"notes\n"
    assert (share / "upload" / "taken.txt").read_bytes() == b"old\n"  # never overwritten
    assert not (share / "upload" / "tool").exists() and (quarantine / "refused" / "tool").exists()
    assert not (inbox / "data.csv").exists() and (inbox / "arriving.bin").exists()
    log = [json.loads(line) for line in (share / "audit.log").read_text().splitlines()]
    released = {r["item"]: r for r in log if r["action"] == "ingress-release"}
    assert released["upload/data.csv"]["sha256"] == hashlib.sha256(b"a,b\n1,2\n").hexdigest()
    refused = [r for r in log if r["action"] == "ingress-refused"]
    assert any(r["item"].startswith("upload/tool (an ELF") and r["sha256"] for r in refused)
    assert any(r["item"].startswith("upload/link (not a regular") for r in refused)
