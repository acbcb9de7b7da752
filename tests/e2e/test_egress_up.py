"""The reviewed posture (issue 17) through `mlab up`, with real clients from an office address.

One site (``t4egr``, its own bind address 127.0.4.9, inside ``officeCIDRs``, and its own
MLAB_STATE_DIR) with the defaults of a new site (``posture: reviewed``): alice (an SSH key of
the test's own, so the OpenSSH clients run unattended) and reviewer bob.

- SSH to alice's HomePod gives an interactive shell (paramiko with a terminal) and nothing
  else: a remote command, OpenSSH ``sftp`` get, ``scp`` in both protocols, ``ssh -L`` and
  ``ssh -R`` all fail.
- The clipboard goes into the desktop only: Xtigervnc runs with ``-SendCutText=0
  -AcceptCutText=1`` and xrdp's sesman has ``RestrictOutboundClipboard=all``.
- An approved export is downloaded by alice with her own password (``mlab request download``
  against the code service's published port) and by nobody else; it is on no share: not on
  the Airlock, not in bob's HomePod.

- A branch alice pushes in her HomePod is neither listed nor fetchable from the office until
  bob approves her branch request (``mlab request branch`` in the HomePod); bob reads the
  patch with ``mlab request show``; then the office fetches exactly that commit.

``mlab down --volumes`` removes the site at the end.
"""

from __future__ import annotations

import hashlib
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest
from cli_runner import Run
from up_lab import UpLab, local_upstream, running, site_doc
from up_lab import exec_in as _exec

from mlab.podman.runner import podman

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

SITE = "t4egr"
BIND = "127.0.4.9"
ALICE_SSH = 12231
PUBLISH_WAIT = 120.0
"""Seconds to wait for the publisher container (it passes every 30 s)."""


def _site_doc(image: str, key: str) -> dict[str, Any]:
    users = []
    for i, name in enumerate(["alice", "bob"]):
        user: dict[str, Any] = {"name": name, "uid": 1001 + i, "home": {"size": "1Gi"},
                                "service": {"ports": {"vnc": 15931 + i, "rdp": 13431 + i,
                                                      "novnc": 17051 + i, "ssh": 12231 + i}}}
        if name == "alice":
            user["sshKeys"] = [key]
        users.append(user)
    return site_doc(
        SITE, image, BIND, users,
        airlock={"service": {"ports": {"vnc": 15930, "novnc": 17050, "ssh": 10132}}},
        codeService={"reviewers": ["bob"], "allowLocalUpstreams": True},
    )


class Lab(UpLab):
    """The running test site."""

    def __init__(self, root: Path, image: str) -> None:
        self.key = root / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)],
                       check=True, timeout=60)
        pub = (root / "id_ed25519.pub").read_text().strip()
        super().__init__(root, SITE, _site_doc(image, pub))
        self.server = ""
        self.alice = self.box("homepod-alice", "homepod")
        self.bob = self.box("homepod-bob", "homepod")
        self.airlock = self.box("airlock", "airlock")
        self.code = self.box("code-service", "code-service")

    def request_as(self, user: str, *args: str, check: bool = True,
                   cwd: Path | None = None) -> Run:
        """``mlab request ARGS`` from this (office) machine as ``user``."""
        return self.mlab("request", *args, "--server", self.server, site=False, check=check,
                         cwd=cwd, env={"MLAB_USER": user, "MLAB_PASSWORD": self.passwords[user]})

    def openssh(self, tool: str, *args: str, timeout: float = 60
                ) -> subprocess.CompletedProcess[str]:
        """Run the OpenSSH client ``tool`` with alice's key, unattended."""
        opts = ["-i", str(self.key), "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "LogLevel=ERROR"]
        return subprocess.run([tool, *opts, *args], capture_output=True, text=True,
                              timeout=timeout, check=False, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def lab(homepod_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with running(Lab(tmp_path_factory.mktemp(SITE), homepod_image)) as s:
        s.server = s.code_server()
        yield s


def test_ssh_gives_an_interactive_shell(lab: Lab) -> None:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # noqa: S507 - test host
    client.connect(BIND, port=ALICE_SSH, username="alice", password=lab.passwords["alice"],
                   timeout=30, allow_agent=False, look_for_keys=False)
    try:
        shell = client.invoke_shell()
        shell.send(b"echo who=$(id -un); exit\n")
        out = b""
        deadline = time.monotonic() + 30
        while not shell.exit_status_ready() and time.monotonic() < deadline:
            if shell.recv_ready():
                out += shell.recv(65536)
            time.sleep(0.1)
        while shell.recv_ready():
            out += shell.recv(65536)
        assert b"who=alice" in out, out[-2000:]
        # A remote command (what `ssh host cat file > here` does) is refused.
        _in, stdout, stderr = client.exec_command("cat /etc/hostname")
        assert stdout.channel.recv_exit_status() == 1
        assert "interactive shell only" in stderr.read().decode()
    finally:
        client.close()


def test_no_file_transfer_over_ssh(lab: Lab, tmp_path: Path) -> None:
    _exec(lab.alice, "echo secret-weights > ~/model.bin", "alice")
    target = f"alice@{BIND}"
    batch = tmp_path / "batch"
    batch.write_text(f"get model.bin {tmp_path / 'sftp.bin'}\n")
    proc = lab.openssh("sftp", "-P", str(ALICE_SSH), "-b", str(batch), target)
    assert proc.returncode != 0 and not (tmp_path / "sftp.bin").exists(), proc
    for mode in ([], ["-O"]):  # scp over SFTP (OpenSSH 9 default) and the legacy protocol
        dest = tmp_path / f"scp{len(mode)}.bin"
        proc = lab.openssh("scp", *mode, "-P", str(ALICE_SSH), f"{target}:model.bin", str(dest))
        assert proc.returncode != 0 and not dest.exists(), (mode, proc)
    proc = lab.openssh("ssh", "-p", str(ALICE_SSH), target, "cat model.bin")
    assert proc.returncode != 0 and "secret-weights" not in proc.stdout, proc
    assert "interactive shell only" in proc.stderr, proc  # the key logged in; the command not
    # Uploads the same way in: none (files come in through the Airlock share).
    (tmp_path / "in.txt").write_text("x")
    proc = lab.openssh("scp", "-P", str(ALICE_SSH), str(tmp_path / "in.txt"), f"{target}:in.txt")
    assert proc.returncode != 0, proc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_no_tunnels(lab: Lab) -> None:
    target = f"alice@{BIND}"
    # -R: the server refuses the remote listener (a route out of the HomePod).
    proc = lab.openssh("ssh", "-p", str(ALICE_SSH), "-N", "-o", "ExitOnForwardFailure=yes",
                       "-R", "0:127.0.0.1:9", target, timeout=60)
    assert proc.returncode != 0 and "forwarding failed" in proc.stderr, proc
    # -L: the client listens here; the server refuses each channel through it.
    port = _free_port()
    ssh = subprocess.Popen(
        ["ssh", "-i", str(lab.key), "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
         "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-p", str(ALICE_SSH), "-N", "-L", f"127.0.0.1:{port}:127.0.0.1:22", target],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except OSError:
                assert time.monotonic() < deadline and ssh.poll() is None, "ssh -L did not listen"
                time.sleep(0.3)
        conn.settimeout(10)
        try:
            banner = conn.recv(100)
        except OSError:
            banner = b""
        conn.close()
        assert not banner.startswith(b"SSH-"), banner  # the HomePod's sshd was not reached
    finally:
        ssh.terminate()
        _, err = ssh.communicate(timeout=30)
    assert "administratively prohibited" in err or "open failed" in err, err


def test_clipboard_only_into_the_desktop(lab: Lab) -> None:
    args = _exec(lab.alice, "ps -eo args | grep -E '[X]tigervnc|[X]vnc'")
    assert "-SendCutText=0" in args and "-AcceptCutText=1" in args, args
    sesman = _exec(lab.alice, "cat /etc/xrdp/sesman.ini")
    assert re.search(r"(?m)^RestrictOutboundClipboard=all$", sesman), sesman
    assert re.search(r"(?m)^RestrictInboundClipboard=none$", sesman), sesman
    xrdp = _exec(lab.alice, "cat /etc/xrdp/xrdp.ini")
    assert re.search(r"(?m)^rdpdr=false$", xrdp)  # no drive or printer redirection


def test_export_downloads_only_for_its_requester(lab: Lab, tmp_path: Path) -> None:
    _exec(lab.alice, "mkdir -p ~/res && head -c 300000 /dev/urandom > ~/res/w.bin"
                     " && echo v3 > ~/notes.txt", "alice")
    sums = dict(reversed(line.split()) for line in _exec(
        lab.alice, "cd ~ && sha256sum notes.txt res/w.bin", "alice").splitlines())
    out = _exec(lab.alice, "cd ~ && mlab request export notes.txt res --reason 'for ACME'",
                "alice")
    rid = int(re.search(r"request (\d+)", out).group(1))  # type: ignore[union-attr]
    lab.request_as("bob", "approve", str(rid), "--comment", "ok")
    deadline = time.monotonic() + PUBLISH_WAIT
    while podman(["exec", lab.code, "test", "-f", f"/var/lib/mlab/exports/{rid}/SHA256SUMS"],
                 check=False).returncode != 0:
        if time.monotonic() > deadline:
            logs = podman(["logs", f"mlab-{SITE}-airlock-publisher"], check=False)
            raise AssertionError(f"request {rid} not delivered:\n{logs.stdout[-3000:]}"
                                 f"{logs.stderr[-3000:]}")
        time.sleep(2)
    # Alice, from the office, with her own password.
    proc = lab.request_as("alice", "download", str(rid), "--out-dir", str(tmp_path / "got"))
    assert "sha256 verified" in proc.stdout
    for rel, digest in sums.items():
        assert hashlib.sha256((tmp_path / "got" / rel).read_bytes()).hexdigest() == digest
    # Not bob (a reviewer, with his own valid password), not the Airlock's login.
    proc = lab.request_as("bob", "download", str(rid), "--out-dir", str(tmp_path / "bob"), check=False)
    assert proc.returncode != 0 and "no such request" in proc.stderr, proc.stderr
    assert not (tmp_path / "bob" / "notes.txt").exists()
    proc = lab.request_as("airlock", "download", str(rid), "--out-dir", str(tmp_path / "air"),
                          check=False)
    assert proc.returncode != 0 and not (tmp_path / "air" / "notes.txt").exists()
    # On no share: not on the Airlock, not in bob's HomePod.
    assert podman(["exec", lab.airlock, "test", "-e", f"/opt/public/airlock/export/{rid}"],
                  check=False).returncode == 1
    assert podman(["exec", lab.bob, "test", "-e", f"/opt/public/airlock/export/{rid}"],
                  check=False).returncode == 1


def test_homepod_branch_reaches_the_office_only_after_review(lab: Lab, tmp_path: Path) -> None:
    import base64

    assert local_upstream(lab, tmp_path / "up", "egress\n")
    lab.mlab("repo", "approve", "file:///srv/mlab/upstreams/up.git", "--as", "demo/up",
             "--server", lab.server, site=False,
             env={"MLAB_USER": "admin", "MLAB_PASSWORD": lab.passwords["admin"]})
    # In alice's HomePod: a branch with data, pushed with the URL users type.
    auth = base64.b64encode(f"alice:{lab.passwords['alice']}".encode()).decode()
    _exec(lab.alice, (
        f"git config --global http.extraHeader 'Authorization: Basic {auth}' && "
        "git config --global user.name A && git config --global user.email a@example.org && "
        "rm -rf /tmp/up && git clone -q http://code.mlab.local/demo/up /tmp/up && cd /tmp/up "
        "&& git checkout -q -b feature_1 && echo secret-weights-77 > w.txt && git add w.txt "
        "&& git commit -q -m 'add weights' && git push -q origin feature_1"), "alice")
    sha = _exec(lab.alice, "git -C /tmp/up rev-parse HEAD", "alice").strip()
    # From the office: not there.
    host, port = lab.server.removeprefix("http://").rsplit(":", 1)
    office = f"http://alice:{lab.passwords['alice']}@{host}:{port}/demo/up"
    listed = subprocess.run(["git", "ls-remote", office], capture_output=True, text=True,
                            check=True, timeout=60).stdout
    assert "refs/heads/main" in listed and "feature_1" not in listed, listed
    probe = tmp_path / "probe"
    subprocess.run(["git", "init", "-q", str(probe)], check=True)
    for what in ("feature_1", sha):
        got = subprocess.run(["git", "-c", "protocol.version=2", "fetch", office, what],
                             cwd=probe, capture_output=True, text=True, timeout=60)
        assert got.returncode != 0, (what, got.stderr)
    # Review: alice asks in the HomePod, bob reads the patch and approves from the office.
    out = _exec(lab.alice, "mlab request branch demo/up feature_1 --reason 'paper code'",
                "alice")
    rid = re.search(r"request (\d+)", out).group(1)  # type: ignore[union-attr]
    shown = lab.request_as("bob", "show", rid).stdout
    assert "+secret-weights-77" in shown and sha in shown, shown
    lab.request_as("bob", "approve", rid, "--comment", "fine")
    listed = subprocess.run(["git", "ls-remote", office], capture_output=True, text=True,
                            check=True, timeout=60).stdout
    assert f"{sha}\trefs/heads/feature_1" in listed, listed
    subprocess.run(["git", "fetch", "-q", office, "feature_1"], cwd=probe, check=True,
                   timeout=60)
    got = subprocess.run(["git", "show", "FETCH_HEAD:w.txt"], cwd=probe, capture_output=True,
                         text=True, check=True).stdout
    assert got == "secret-weights-77\n"
