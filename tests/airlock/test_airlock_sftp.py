"""The audited SFTP subsystem, with a real sshd on loopback and paramiko as the client."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import paramiko
import pytest

from mlab.airlock import sftp


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('sftp-server[12]: close "/opt/public/airlock/a b.txt" bytes read 0 written 42', ("/opt/public/airlock/a b.txt", 42)),
        ('close "rel.bin" bytes read 10 written 0', ("rel.bin", 0)),
        ('open "/x" flags WRITE,CREATE,TRUNCATE mode 0644', None),
    ],
    ids=["absolute-with-space", "read-only", "open"],
)
def test_parse_close(line, expected) -> None:
    assert sftp.parse_close(line) == expected


def test_chroot_config_uses_internal_sftp() -> None:
    text = sftp.chroot_config("drop")
    assert "Match User drop" in text and "ChrootDirectory /opt/public/airlock" in text
    assert "ForceCommand internal-sftp" in text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def sshd(tmp_path):
    if os.geteuid() != 0 or not shutil.which("sshd"):
        pytest.skip("needs root and openssh-server (scripts/apt-packages.txt)")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    share = tmp_path / "share"
    share.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "hostkey")], check=True)
    key = paramiko.Ed25519Key.from_private_key_file(str(tmp_path / "hostkey"))  # reuse as the client key
    (tmp_path / "authorized_keys").write_text(f"{key.get_name()} {key.get_base64()}\n")
    port = _free_port()
    config = tmp_path / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {tmp_path / 'hostkey'}\nPidFile none\n"
        f"AuthorizedKeysFile {tmp_path / 'authorized_keys'}\nStrictModes no\nUsePAM no\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
        f"Subsystem sftp {sys.executable} -m mlab.cli.main airlock sftp-server --share {share}\n"
    )
    proc = subprocess.Popen([shutil.which("sshd"), "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("sshd did not start: " + (proc.stderr.read() if proc.stderr else ""))
            time.sleep(0.1)
    yield port, key, share
    proc.terminate()
    proc.wait(10)
    if proc.stderr:
        proc.stderr.close()


def test_sftp_upload_is_audited_and_world_readable(sshd) -> None:
    port, key, share = sshd
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect("127.0.0.1", port=port, username="root", pkey=key, allow_agent=False, look_for_keys=False)
    try:
        with client.open_sftp() as s:
            with s.open(str(share / "upload.txt"), "w") as fh:
                fh.write(b"hello airlock\n")
            s.mkdir(str(share / "data"))
            s.putfo(__import__("io").BytesIO(b"x" * 5000), str(share / "data" / "blob.bin"))
            assert s.open(str(share / "upload.txt")).read() == b"hello airlock\n"
    finally:
        client.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        log = share / "audit.log"
        lines = log.read_text().splitlines() if log.exists() else []
        if len(lines) >= 2:
            break
        time.sleep(0.1)
    records = [json.loads(line) for line in lines]
    assert [r["action"] for r in records] == ["sftp-upload", "sftp-upload"]
    by_item = {r["item"]: r for r in records}
    assert by_item[str(share / "upload.txt")]["size"] == 14
    assert by_item[str(share / "data" / "blob.bin")]["size"] == 5000
    assert oct((share / "upload.txt").stat().st_mode & 0o777) == "0o644"


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ("Port 22\nSubsystem\tsftp\t/usr/lib/openssh/sftp-server\n", f"Port 22\n{sftp.SUBSYSTEM_LINE}\n"),
        ("Port 22\n", f"Port 22\n{sftp.SUBSYSTEM_LINE}\n"),
        ("Port 22\nMatch User x\n  X11Forwarding no\n", f"Port 22\n{sftp.SUBSYSTEM_LINE}\nMatch User x\n  X11Forwarding no\n"),
        (f"{sftp.SUBSYSTEM_LINE}\n", f"{sftp.SUBSYSTEM_LINE}\n"),
    ],
    ids=["debian-default", "none", "before-match", "already"],
)
def test_with_audited_subsystem(config, expected) -> None:
    assert sftp.with_audited_subsystem(config) == expected


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to own files as another uid")
def test_chroot_keeps_log_and_folders_the_users(tmp_path) -> None:
    share = tmp_path / "share"
    share.mkdir()
    (share / "pip").mkdir()
    (share / "pip" / "old.whl").write_text("x")
    os.chown(share / "pip", 1000, 1000)
    (share / "apt").mkdir()  # root's, as from an older image
    changed = sftp._keep_user_paths(share, 1000, 1000)
    assert changed and "audit.log" in changed[0] and "apt/" in changed[0] and "pip/" not in changed[0]
    for name in ("audit.log", *sftp.SHARE_FOLDERS):
        assert (share / name).stat().st_uid == 1000, name
    assert (share / "pip" / "old.whl").stat().st_uid == 0  # content is never re-owned
    assert sftp._keep_user_paths(share, 1000, 1000) == []  # idempotent
    assert sftp._keep_user_paths(share, 0, 0) == []
