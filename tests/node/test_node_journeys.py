"""User journeys on the node, through the Services as examples/local.yaml exposes them.

From the node itself, the office PC's side (kube-router admits node-local traffic, as a
cluster admits its own nodes), at each Service's address and port: alice's desktop over
VNC (a screenshot with her password), RDP (xfreerdp) and noVNC (Chromium); SFTP to the
Airlock and the uploaded file read-only in alice's HomePod; a pip and an apt package staged
on the Airlock (from PyPI and Debian) and installed in alice's HomePod, which reaches
neither; a mirror cloned in alice's HomePod and her branch pushed through the code
service; an export request from her HomePod approved by bob and downloaded by alice; SSH,
and her home surviving the deletion of her pod (the Deployment brings it back on the same
claim). The site is in the reviewed posture, so SSH is an interactive shell: commands are
typed into one (:func:`access_clients.shell_session`).

The clients are the podman end-to-end tests' own (tests/access_clients.py). The Airlock
trusts the machine's CA bundle (these machines reach PyPI through a TLS-intercepting
proxy): ``nodekit.apply_with_machine_ca``.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pytest
from access_clients import looks_like_desktop, novnc_screenshot, rdp_session, shell_session, vnc_capture
from nodekit import NAMESPACE, Node, apply_with_machine_ca, passwords

pytestmark = [pytest.mark.e2e, pytest.mark.node]

PUBLISH_WAIT = 150.0
"""Seconds for the export publisher (it passes every 30 s) to deliver an approved request."""


@dataclass
class Lab:
    """The applied site: the node, the generated passwords and the Services' addresses."""

    node: Node
    pw: dict[str, str]
    site: Path

    def service(self, name: str) -> tuple[str, dict[str, int]]:
        """(clusterIP, port name -> Service port) of Service ``name``."""
        svc = self.node.json("-n", NAMESPACE, "get", "service", name)
        return svc["spec"]["clusterIP"], {p["name"]: p["port"] for p in svc["spec"]["ports"]}

    def shell(self, service: str, user: str, command: str, timeout: float = 60) -> str:
        ip, ports = self.service(service)
        return shell_session(ip, ports["ssh"], user, self.pw[user], command, timeout=timeout)

    @property
    def code_server(self) -> str:
        ip, ports = self.service("code-service")
        return f"http://{ip}:{ports['http']}"

    def mlab_as(self, user: str, *args: str, check: bool = True
                ) -> subprocess.CompletedProcess[str]:
        """``mlab ARGS --server <code service>`` from the office side, logged in as ``user``."""
        env = {**self.node.env, "MLAB_USER": user, "MLAB_PASSWORD": self.pw[user]}
        for var in ("MLAB_SERVER", "MLAB_CODE_URL", "MLAB_PASSWORD_FILE"):
            env.pop(var, None)
        proc = subprocess.run([sys.executable, "-m", "mlab.cli.main", *args,
                               "--server", self.code_server], capture_output=True, text=True,
                              env=env, timeout=300, check=False)
        if check:
            assert proc.returncode == 0, (args, proc.stdout[-2000:], proc.stderr[-2000:])
        return proc


@pytest.fixture(scope="module")
def lab(node: Node, tmp_path_factory: pytest.TempPathFactory) -> Lab:
    site = apply_with_machine_ca(node, tmp_path_factory.mktemp("journeys"))
    return Lab(node, passwords(), site)


def test_vnc_rdp_and_novnc_show_alices_desktop(lab: Lab, tmp_path: Path) -> None:
    ip, ports = lab.service("homepod-alice")
    pw = lab.pw["alice"]
    shot = tmp_path / "vnc.png"
    deadline = time.monotonic() + 60  # the desktop may still be starting after the rollout
    while True:
        proc = vnc_capture(ip, ports["vnc"], pw, shot)
        if proc.returncode == 0 and looks_like_desktop(shot):
            break
        assert "Authentication failure" not in proc.stderr, proc.stderr
        assert time.monotonic() < deadline, f"no desktop over VNC: {proc.stderr[-500:]}"
        time.sleep(3)
    seen, rdp = rdp_session(ip, ports["rdp"], "alice", pw, tmp_path)
    assert seen, f"no desktop over RDP (last screen {rdp})"
    url = (f"http://{ip}:{ports['novnc']}/vnc.html?autoconnect=1&resize=scale"
           f"&password={urllib.parse.quote(pw, safe='')}")
    browser = tmp_path / "novnc.png"
    assert novnc_screenshot(url, browser, tmp_path), "noVNC did not connect in Chromium"
    assert looks_like_desktop(browser)


def test_sftp_upload_to_the_airlock_is_read_only_in_a_homepod(lab: Lab) -> None:
    ip, ports = lab.service("airlock")
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # noqa: S507 - test pod
    client.connect(ip, port=ports["ssh"], username="airlock", password=lab.pw["airlock"],
                   timeout=30, allow_agent=False, look_for_keys=False)
    try:
        with client.open_sftp() as sftp:
            with sftp.open("/opt/public/airlock/node-upload.txt", "w") as fh:
                fh.write(b"dataset v1\n")
    finally:
        client.close()
    out = lab.shell("homepod-alice", "alice",
                    "cat /opt/public/airlock/node-upload.txt; "
                    "echo x >> /opt/public/airlock/node-upload.txt || echo WRITE-REFUSED; "
                    "sudo -n touch /opt/public/airlock/root-write || echo ROOT-REFUSED")
    assert "dataset v1" in out.splitlines(), out
    assert "Read-only file system" in out and "WRITE-REFUSED" in out, out
    assert "ROOT-REFUSED" in out, out


def _airlock_lists_ready(node: Node, seconds: float = 240) -> None:
    """The Airlock refreshes Debian's package lists at start (supervisord ``apt-lists``)."""
    deadline = time.monotonic() + seconds
    while True:
        logs = node.kubectl("-n", NAMESPACE, "logs", "deploy/airlock", "-c", "airlock").stdout
        if "apt package lists refreshed" in logs:
            return
        assert "could not refresh the apt package lists" not in logs, logs[-2000:]
        assert time.monotonic() < deadline, "the Airlock did not refresh its apt lists"
        time.sleep(3)


def test_pip_and_apt_staged_on_the_airlock_install_offline_in_a_homepod(lab: Lab) -> None:
    _airlock_lists_ready(lab.node)
    staged = lab.shell("airlock", "airlock",
                       "mlab stage pip tomli-w && mlab stage apt jq && echo STAGED", timeout=300)
    assert "STAGED" in staged.splitlines(), staged[-3000:]
    assert "libjq1" in staged and "libonig5" in staged, staged[-3000:]
    # alice's HomePod reaches neither PyPI nor Debian: only the share serves them.
    out = lab.shell(
        "homepod-alice", "alice",
        "pip install tomli-w >/dev/null 2>&1 && "
        "python3 -c 'import tomli_w; print(\"TOMLIW\", tomli_w.__file__)'; "
        "sudo -n apt-get update >/dev/null 2>&1; "
        "sudo -n DEBIAN_FRONTEND=noninteractive apt-get install -y jq >/dev/null 2>&1; "
        "echo '{\"a\": 7}' | jq .a", timeout=300)
    # tomli-w is not in the image: the user's own environment got it from the share.
    where = next((ln.split()[-1] for ln in out.splitlines() if ln.startswith("TOMLIW ")), "")
    assert where.startswith("/home/alice/"), out[-3000:]
    assert out.splitlines()[-1] == "7", out[-3000:]


def test_git_clone_and_push_through_the_code_service(lab: Lab) -> None:
    # The admin's side: a repository where the code service can see it (allowLocalUpstreams),
    # approved as a mirror through the code service's API.
    name = f"node-{secrets.token_hex(3)}"
    upstream = f"/var/lib/mlab/code/upstream-{name}"
    lab.node.kubectl("-n", NAMESPACE, "exec", "deploy/code-service", "--", "sh", "-c",
                     f"git init -q -b main {upstream} && cd {upstream} && "
                     "git -c user.name=T -c user.email=t@example.org commit -q --allow-empty "
                     "-m 'node first'")
    lab.mlab_as("admin", "repo", "approve", f"file://{upstream}", "--as", f"demo/{name}")
    # alice logs in with her own password, read from her Secret's file by a credential helper.
    out = lab.shell(
        "homepod-alice", "alice",
        "rm -rf /tmp/nodeclone; git config --global credential.helper "
        "'!f() { echo username=alice; echo password=\"$(cat $MLAB_PASSWORD_FILE)\"; }; f'; "
        f"git clone -q http://code.mlab.local/demo/{name} /tmp/nodeclone && cd /tmp/nodeclone && "
        "git --no-pager log --format=%s && echo work > alice.txt && git add alice.txt && "
        "git -c user.name=alice -c user.email=alice@example.org commit -q -m 'alice work' && "
        "git push -q origin HEAD:refs/heads/alice/node-topic 2>&1; echo PUSHED=$?", timeout=120)
    assert "node first" in out.splitlines(), out
    assert "PUSHED=0" in out.splitlines(), out
    # The pushed branch is on the code service.
    refs = subprocess.run(
        ["git", "-c", f"http.extraHeader=Authorization: Basic {_basic('bob', lab.pw['bob'])}",
         "ls-remote", f"{lab.code_server}/demo/{name}"],
        capture_output=True, text=True, timeout=60, check=True).stdout
    assert "refs/heads/alice/node-topic" in refs, refs


def _basic(user: str, password: str) -> str:
    import base64

    return base64.b64encode(f"{user}:{password}".encode()).decode()


def test_export_request_approved_and_downloaded(lab: Lab, tmp_path: Path) -> None:
    out = lab.shell("homepod-alice", "alice",
                    "mkdir -p ~/res && head -c 100000 /dev/urandom > ~/res/w.bin && "
                    "echo v3 > ~/notes.txt && cd ~ && sha256sum notes.txt res/w.bin && "
                    "mlab request export notes.txt res --reason 'node journey'", timeout=120)
    sums = {ln.split()[1]: ln.split()[0] for ln in out.splitlines()
            if re.fullmatch(r"[0-9a-f]{64}  \S+", ln)}
    assert set(sums) == {"notes.txt", "res/w.bin"}, out
    match = re.search(r"request (\d+)", out)
    assert match, out
    rid = match.group(1)
    lab.mlab_as("bob", "request", "approve", rid, "--comment", "ok")
    deadline = time.monotonic() + PUBLISH_WAIT
    while True:
        shown = json.loads(lab.mlab_as("alice", "request", "show", rid, "-o", "json").stdout)
        if "published" in [h["action"] for h in shown["history"]]:
            break
        assert time.monotonic() < deadline, f"request {rid} not published: {shown}"
        time.sleep(5)
    got = lab.mlab_as("alice", "request", "download", rid, "--out-dir", str(tmp_path / "got"))
    assert "sha256 verified" in got.stdout, got.stdout
    for rel, digest in sums.items():
        assert hashlib.sha256((tmp_path / "got" / rel).read_bytes()).hexdigest() == digest
    other = lab.mlab_as("bob", "request", "download", rid, "--out-dir", str(tmp_path / "bob"),
                        check=False)
    assert other.returncode != 0 and not (tmp_path / "bob" / "notes.txt").exists()


def test_ssh_and_home_survives_pod_deletion(lab: Lab) -> None:
    node = lab.node
    assert lab.shell("homepod-alice", "alice", "id -un; echo kept > ~/journey.txt; "
                     "cat ~/journey.txt").split() == ["alice", "kept"]
    old = node.json("-n", NAMESPACE, "get", "pods", "-l", "mlab.io/user=alice")["items"]
    node.kubectl("-n", NAMESPACE, "delete", "pod", old[0]["metadata"]["name"], "--wait=true")
    node.kubectl("-n", NAMESPACE, "rollout", "status", "deployment/homepod-alice",
                 "--timeout=300s", timeout=330)
    new = node.json("-n", NAMESPACE, "get", "pods", "-l", "mlab.io/user=alice")["items"]
    assert [p["metadata"]["uid"] for p in new] != [p["metadata"]["uid"] for p in old]
    assert lab.shell("homepod-alice", "alice", "cat ~/journey.txt").strip() == "kept"
