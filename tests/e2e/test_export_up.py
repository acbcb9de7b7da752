"""An export through the whole platform of `mlab up`: HomePod --> code service --> Airlock.

One site (``t4exp``, its own bind address 127.0.4.7 and MLAB_STATE_DIR) with alice and
reviewer bob. Alice exports files from her HomePod (``mlab request export`` as alice,
logged in with her own password file); bob approves one export and rejects another with
the CLI from this machine against the code service's published port, and leaves a third
unreviewed. The export publisher, the Airlock pod's second container (the only one that
mounts the outboxes), logged in to the code service as ``mlab-publisher`` with its own
Secret, publishes the approved one into /opt/public/airlock/export/<id>/, and the files
download over SFTP from the Airlock's published SSH port with the recorded sha256.

Issue 13 item 2, as the Airlock's own user over SSH and SFTP, with sudo: the unreviewed and
rejected bytes are nowhere on the Airlock's filesystem (a root ``grep -r`` of ``/``), no
outbox is mounted or reachable through ``/proc``, the publisher's processes are not
visible, and the Airlock's code-service account gets 403 for git. ``mlab down --volumes``
removes the site at the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest
from cli_runner import Run
from up_lab import UpLab, running, site_doc

from mlab.podman.runner import podman

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

SITE = "t4exp"
BIND = "127.0.4.7"
AIRLOCK_SSH = 10122
PUBLISH_WAIT = 120.0
"""Seconds to wait for the supervised publisher (it passes every 30 s)."""


def _site_doc(image: str) -> dict[str, Any]:
    users = [{"name": u, "uid": 1001 + i, "home": {"size": "1Gi"}, "service": {"ports": {
        "vnc": 15911 + i, "rdp": 13399 + i, "novnc": 17041 + i, "ssh": 12211 + i}}}
        for i, u in enumerate(["alice", "bob"])]
    return site_doc(
        SITE, image, BIND, users,
        airlock={"service": {"ports": {"vnc": 15910, "novnc": 17040, "ssh": AIRLOCK_SSH}}},
        codeService={"reviewers": ["bob"]},
        # Exports on the Airlock share (the open posture's delivery): what the Airlock may
        # and may not see. The reviewed default (requester delivery) is test_egress_up.py.
        egress={"exportDelivery": "share"},
    )


class Lab(UpLab):
    """The running test site: its file, state directory, passwords and container names."""

    def __init__(self, root: Path, image: str) -> None:
        super().__init__(root, SITE, _site_doc(image))
        self.server = ""
        self.airlock = self.box("airlock", "airlock")
        self.alice = self.box("homepod-alice", "homepod")
        self.publisher = self.box("airlock", "publisher")

    def request_as(self, user: str, *args: str) -> Run:
        """``mlab request ARGS`` from this machine, logged in as ``user``."""
        return self.mlab("request", *args, "--server", self.server, site=False,
                         env={"MLAB_USER": user, "MLAB_PASSWORD": self.passwords[user]})


def _exec(container: str, script: str, user: str, timeout: float = 120
          ) -> subprocess.CompletedProcess[str]:
    proc = podman(["exec", "-u", user, container, "bash", "-lc", script], check=False,
                  timeout=timeout)
    assert proc.returncode == 0, (
        f"{container} as {user}: {script}\n--- stdout\n{proc.stdout[-3000:]}\n"
        f"--- stderr\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def lab(homepod_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The t4exp site, up; torn down with its volumes at the end."""
    with running(Lab(tmp_path_factory.mktemp(SITE), homepod_image)) as s:
        s.server = s.code_server()
        yield s


def _request_id(out: str) -> int:
    match = re.search(r"request (\d+)", out)
    assert match, out
    return int(match.group(1))


def _sftp(lab: Lab) -> tuple[paramiko.SSHClient, paramiko.SFTPClient]:
    ssh = paramiko.SSHClient()
    ssh.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # noqa: S507 - test host
    ssh.connect(BIND, port=AIRLOCK_SSH, username="airlock", password=lab.passwords["airlock"],
                timeout=30, allow_agent=False, look_for_keys=False)
    return ssh, ssh.open_sftp()


def _published(lab: Lab, rid: int) -> bool:
    proc = podman(["exec", lab.airlock, "test", "-f",
                   f"/opt/public/airlock/export/{rid}/SHA256SUMS"], check=False)
    return proc.returncode == 0


def _wait_published(lab: Lab, rid: int) -> None:
    """Wait for the publisher container (it passes every 30 s)."""
    deadline = time.monotonic() + PUBLISH_WAIT
    while not _published(lab, rid):
        if time.monotonic() > deadline:
            logs = podman(["logs", lab.publisher], check=False)
            raise AssertionError(f"request {rid} not published after {PUBLISH_WAIT} s:\n"
                                 f"{(logs.stdout + logs.stderr)[-3000:]}")
        time.sleep(2)


def _ssh_run(ssh: paramiko.SSHClient, command: str, timeout: float = 300) -> tuple[int, str]:
    """Run ``command`` over the SSH session; (exit status, stdout + stderr)."""
    _, out, err = ssh.exec_command(command, timeout=timeout)
    text = out.read().decode(errors="replace") + err.read().decode(errors="replace")
    return out.channel.recv_exit_status(), text


def test_export_approved_is_published_rejected_is_not(lab: Lab) -> None:
    marker = f"UNREVIEWED-{os.urandom(8).hex()}"
    _exec(lab.alice, "mkdir -p ~/out/run && cd ~/out && echo 'model v3' > notes.txt"
                     " && head -c 200000 /dev/urandom > run/weights.bin"
                     f" && echo {marker} > raw.csv", "alice")
    local = _exec(lab.alice, "cd ~/out && sha256sum notes.txt run/weights.bin", "alice")
    sums = dict(reversed(line.split()) for line in local.stdout.splitlines())
    good = _request_id(_exec(
        lab.alice, "cd ~/out && mlab request export notes.txt run --reason 'model for ACME'",
        "alice").stdout)
    bad = _request_id(_exec(
        lab.alice, "cd ~/out && mlab request export raw.csv --reason 'raw data'",
        "alice").stdout)
    pending = _request_id(_exec(
        lab.alice, "cd ~/out && mlab request export raw.csv --reason 'not reviewed yet'",
        "alice").stdout)
    assert len({good, bad, pending}) == 3
    # Each HomePod sees only its own outbox (a subPath of the outbox volume).
    assert _exec(f"mlab-{SITE}-homepod-bob-homepod", "ls -A /opt/outbox", "bob").stdout == ""
    # Issue 13: only the publisher container mounts the outboxes, never the Airlock.
    assert _exec(lab.publisher, "ls /opt/outbox", "root").stdout.split() == ["alice", "bob"]
    assert podman(["exec", lab.airlock, "test", "-e", "/opt/outbox"], check=False).returncode == 1

    shown = json.loads(lab.request_as("bob", "show", str(good), "-o", "json").stdout)
    assert {f["path"]: f["sha256"] for f in shown["files"]} == sums
    lab.request_as("bob", "reject", str(bad), "--comment", "raw customer data")
    lab.request_as("bob", "approve", str(good), "--comment", "ok for ACME")

    _wait_published(lab, good)
    ssh, sftp = _sftp(lab)
    try:
        base = f"/opt/public/airlock/export/{good}"
        for path, digest in sums.items():
            with sftp.open(f"{base}/{path}", "rb") as fh:
                assert hashlib.sha256(fh.read()).hexdigest() == digest, path
        checks = sftp.open(f"{base}/SHA256SUMS").read().decode()
        assert f"{sums['notes.txt']}  notes.txt" in checks
        for rid in (bad, pending):
            with pytest.raises(FileNotFoundError):
                sftp.stat(f"/opt/public/airlock/export/{rid}")
        assert sorted(sftp.listdir("/opt/public/airlock/export")) == [str(good)]
        # SFTP over the whole filesystem: no outbox anywhere.
        assert "outbox" not in sftp.listdir("/opt")
        with pytest.raises(FileNotFoundError):
            sftp.stat("/opt/outbox/alice")
        # SSH with sudo (root in the Airlock): the unreviewed file is nowhere to be read.
        status, out = _ssh_run(ssh, "sudo -n id -u 2>/dev/null")
        assert (status, out) == (0, "0\n"), out
        # (/usr is the image's own read-only content, no mount point: skipped for time.)
        status, out = _ssh_run(ssh, "sudo -n grep -rlF -D skip --exclude-dir=proc "
                                    "--exclude-dir=sys --exclude-dir=dev --exclude-dir=usr "
                                    f"{marker} / 2>/dev/null; echo done")
        assert out == "done\n", out  # no file on the Airlock holds the unreviewed bytes
        status, out = _ssh_run(ssh, "awk '$2 ~ \"^/usr\"' /proc/mounts")
        assert out == "", out
        status, out = _ssh_run(ssh, "sudo -n grep -c outbox /proc/mounts 2>/dev/null; "
                                    "sudo -n sh -c 'ls -d /proc/[0-9]*/root/opt/outbox' 2>&1; "
                                    "sudo -n ps -eo args")
        assert out.startswith("0\n") and "request publish" not in out, out
        assert "/root/opt/outbox\n" not in out, out
        # Nor can root capture the publisher's code-service login on the shared network.
        status, out = _ssh_run(ssh, "sudo -n python3 -c 'import socket; "
                                    "socket.socket(socket.AF_PACKET, socket.SOCK_RAW)'")
        assert status != 0 and "PermissionError" in out, out
        # The Airlock's code-service account has no git access (user branches included).
        pw = shlex.quote(lab.passwords["airlock"])
        status, out = _ssh_run(ssh, "for p in 80 8080; do curl -s -o /dev/null -w '%{http_code} ' "
                                    f"-u airlock:{pw} http://code.mlab.local:$p/org/repo/info/refs"
                                    "?service=git-upload-pack; done")
        assert "403" in out.split() and "200" not in out.split(), out
    finally:
        sftp.close()
        ssh.close()
    history = json.loads(lab.request_as("alice", "show", str(good), "-o", "json").stdout)
    actions = [h["action"] for h in history["history"]]
    assert "published" in actions, actions
    assert {h["by"] for h in history["history"] if h["action"] == "published"} == {
        "mlab-publisher"}
    states = json.loads(lab.request_as("bob", "show", str(bad), "-o", "json").stdout)
    assert states["state"] == "rejected"
    assert "published" not in [h["action"] for h in states["history"]]
