"""End to end (podman): package and export requests through the real containers.

Three containers of the HomePod image on one test network: the code service
(``mlab code-service serve``, the contract's command), an Airlock (user ``airlock``, uid
2000, every outbox read-only at /opt/outbox/<user>/, the share read-write) and alice's
HomePod (her outbox read-write at /opt/outbox). Reviewer bob and the admin act from this
machine over the code service's published port.

- package: a script installing Debian's ``tree`` is tested on the Airlock and submitted;
  bob approves; ``mlab request bake`` builds the next image from the built one with the
  approved scripts in approval order, labelled with the ids; ``mlab up`` of a one-user site
  on it (its own name, ports and state directory) gives a HomePod where ``tree`` runs.
- export: two files (one of 1 GiB) and a directory are exported from the HomePod; bob
  approves it and rejects a second export; the Airlock publishes; the approved files
  download over SFTP (OpenSSH's ``sftp`` for the 1 GiB file, paramiko for the rest) with
  matching sha256, the rejected export is not there, and revoking removes the approved one.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shlex
import socket
import subprocess
import time
from pathlib import Path

import paramiko
import pytest
from cli_runner import mlab, mlab_site

from mlab.podman.runner import podman
from mlab.requests.client import RequestsClient

pytestmark = pytest.mark.e2e

PREFIX = "mlabtest-req-"
ALICE_UID = 1000
AIRLOCK_UID = 2000
PASSWORDS = {"alice": "alice-" + secrets.token_hex(6), "bob": "bob-" + secrets.token_hex(6),
             "admin": "admin-" + secrets.token_hex(6), "airlock": "air-" + secrets.token_hex(6)}
GIB = 1024 * 1024 * 1024


def _site(tmp: Path) -> Path:
    root = tmp / "etc-mlab"
    (root / "admin").mkdir(parents=True)
    (root / "admin" / "password").write_text(PASSWORDS["admin"] + "\n")
    for user in ("alice", "bob"):
        (root / "users" / user).mkdir(parents=True)
        (root / "users" / user / "password").write_text(PASSWORDS[user] + "\n")
    (root / "site.yaml").write_text(
        "name: reqe2e\nusers:\n  - name: alice\n  - name: bob\n"
        "codeService:\n  reviewers: [bob]\n"
    )
    return root


@pytest.fixture(scope="module")
def lab(homepod_image, tmp_path_factory, e2e):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("req-e2e")
    etc = _site(tmp)
    outboxes = tmp / "outbox"
    (outboxes / "alice").mkdir(parents=True)
    os.chown(outboxes / "alice", ALICE_UID, ALICE_UID)
    share = tmp / "share"
    share.mkdir()
    os.chown(share, AIRLOCK_UID, AIRLOCK_UID)
    net = e2e.unique_name(PREFIX + "net-")
    podman(["network", "create", net])
    started = []
    try:
        code = e2e.run_container(
            homepod_image, PREFIX, ports=[8080],
            env={"MLAB_ADMIN_PASSWORD_FILE": "/etc/mlab/admin/password"},
            volumes=[f"{etc}/site.yaml:/etc/mlab/site.yaml:ro",
                     f"{etc}/users:/etc/mlab/users:ro", f"{etc}/admin:/etc/mlab/admin:ro"],
            extra=["--network", net, "--init"],
            args=["mlab", "code-service", "serve", "--data", "/var/lib/mlab/code", "--site",
                  "/etc/mlab/site.yaml", "--port", "8080", "--no-background-sync"],
        )
        started.append(code)
        code_ip = podman(["inspect", "--format",
                          "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                          code.name]).stdout.strip()
        server_in_pods = f"http://{code_ip}:8080"
        airlock = e2e.run_container(
            homepod_image, PREFIX, ports=[22],
            env={"MLAB_MODE": "airlock", "MLAB_USER": "airlock", "MLAB_UID": str(AIRLOCK_UID),
                 "MLAB_PASSWORD": PASSWORDS["airlock"], "MLAB_SERVER": server_in_pods},
            volumes=[f"{share}:/opt/public/airlock:rw", f"{outboxes}:/opt/outbox:ro"],
            extra=["--network", net],
        )
        started.append(airlock)
        homepod = e2e.run_container(
            homepod_image, PREFIX,
            env={"MLAB_MODE": "homepod", "MLAB_USER": "alice", "MLAB_UID": str(ALICE_UID),
                 "MLAB_PASSWORD": PASSWORDS["alice"], "MLAB_SERVER": server_in_pods},
            volumes=[f"{share}:/opt/public/airlock:ro", f"{outboxes}/alice:/opt/outbox:rw"],
            extra=["--network", net],
        )
        started.append(homepod)
        url = f"http://127.0.0.1:{code.port(8080)}"
        _wait_http(url, code)
        e2e.wait_for_port(airlock.port(22), timeout=60)
        # The Airlock refreshes Debian's lists once at start (program apt-lists); a script's own
        # `apt-get update` meanwhile finds the lists lock held (docs/airlock.md).
        deadline = time.monotonic() + 240
        while not any(m in airlock.logs() for m in ("apt package lists refreshed",
                                                    "could not refresh the apt package lists")):
            assert time.monotonic() < deadline, "the Airlock did not refresh its apt lists"
            time.sleep(2)
        yield {"url": url, "image": homepod_image, "code": code, "airlock": airlock, "homepod": homepod,
               "share": share, "outboxes": outboxes, "tmp": tmp}
    finally:
        for c in started:
            c.remove()
        podman(["network", "rm", "-f", net], check=False)


def _wait_http(url: str, container) -> None:  # type: ignore[no-untyped-def]
    client = RequestsClient(url, "admin", PASSWORDS["admin"], timeout=5)
    deadline = time.monotonic() + 90
    while True:
        try:
            client.list()
            return
        except Exception:  # noqa: BLE001 - not up yet
            if time.monotonic() > deadline:
                raise AssertionError(f"code service did not answer: {container.logs()[-2000:]}")
            time.sleep(0.5)


def sh(container, script: str, user: str, creds: str | None = None, timeout: float = 600):  # type: ignore[no-untyped-def]
    """Run ``script`` with bash as ``user``, logged in to the code service as ``creds``."""
    who = creds or user
    env = f"export MLAB_USER={who} MLAB_PASSWORD={shlex.quote(PASSWORDS[who])}; "
    proc = container.exec("bash", "-lc", env + script, user=user, check=False, timeout=timeout)
    assert proc.returncode == 0, (
        f"{script}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}")
    return proc


def client(lab, user: str) -> RequestsClient:  # type: ignore[no-untyped-def]
    return RequestsClient(lab["url"], user, PASSWORDS[user])


def _rid(text: str) -> int:
    return int(text.split("request ")[1].split()[0].rstrip(":"))


INSTALL_TREE = """set -euo pipefail
[ "$(id -u)" = 0 ] || exec sudo bash "$0" "$@"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends tree
tree --version
"""


def test_package_request_baked_into_the_image(lab) -> None:  # type: ignore[no-untyped-def]
    from mlab.requests.packages import load_steps

    airlock = lab["airlock"]
    sh(airlock, f"cat > ~/install-tree.sh <<'EOF'\n{INSTALL_TREE}EOF", "airlock")
    # The Airlock user submits as alice here (the site's users own requests; the Airlock
    # account has no code-service login in this test).
    proc = sh(airlock, "cd ~ && mlab request package install-tree.sh --reason 'tree for the team'",
              "airlock", creds="alice")
    assert "tree v" in proc.stderr
    rid = _rid(proc.stdout)
    item = client(lab, "alice").get(rid)
    assert item["transcript"]["exit_status"] == 0 and "tree v" in item["transcript"]["output"]
    assert client(lab, "bob").act(rid, "approve", "tested on the airlock")["state"] == "approved"

    out = lab["tmp"] / "approved.json"
    out.write_text(json.dumps({"packages": client(lab, "admin").packages()}))
    assert [s.id for s in load_steps(path=out)] == [rid]
    # The next image: the built image plus the approved scripts, in approval order.
    proc = mlab("request", "bake", "--base", lab["image"], "--from", str(out), timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ref = proc.stdout.strip().splitlines()[-1]
    try:
        label = podman(["image", "inspect", "--format",
                        '{{index .Labels "mlab.package-requests"}}', ref]).stdout.strip()
        assert label == str(rid)
        _homepod_of_mlab_up_has_tree(ref, lab["tmp"])
    finally:
        podman(["rmi", ref], check=False)


def _free_ports(n: int) -> list[int]:
    socks = [socket.create_server(("127.0.0.1", 0)) for _ in range(n)]
    try:
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _homepod_of_mlab_up_has_tree(ref: str, tmp: Path) -> None:
    """`mlab up` a one-user site on the baked image; `tree` runs in the HomePod."""
    name = f"{PREFIX}{secrets.token_hex(3)}"
    vnc, rdp, novnc, ssh = _free_ports(4)
    repository, tag = ref.rsplit(":", 1)
    site = tmp / "up-site.yaml"
    site.write_text(
        f"name: {name}\nimage: {{repository: {repository}, tag: {tag}, pullPolicy: Never}}\n"
        "access: {bindAddress: 127.0.0.1, officeCIDRs: [127.0.0.0/8]}\n"
        "users:\n  - name: alice\n    uid: 1001\n    home: {size: 1Gi}\n"
        f"    service: {{ports: {{vnc: {vnc}, rdp: {rdp}, novnc: {novnc}, ssh: {ssh}}}}}\n"
        "airlock: {enabled: false}\n"
    )
    env = {"MLAB_STATE_DIR": str(tmp / "up-state")}
    try:
        mlab_site(site, "up", env=env, timeout=600)
        pods = podman(["ps", "--format", "{{.Names}}", "--filter",
                       f"label=app.kubernetes.io/instance={name}", "--filter",
                       "label=mlab.io/user=alice"]).stdout.split()
        homepod = [p for p in pods if p.endswith("-homepod")] or pods
        assert homepod, f"no HomePod container of {name}: {pods}"
        proc = podman(["exec", "-u", "alice", homepod[0], "tree", "--version"], check=False)
        assert proc.returncode == 0 and "tree v" in proc.stdout, proc.stderr
    finally:
        mlab_site(site, "down", "--volumes", env=env, timeout=600, check=False)


def _sftp(lab) -> paramiko.SFTPClient:  # type: ignore[no-untyped-def]
    ssh = paramiko.SSHClient()
    ssh.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # noqa: S507 - test container
    ssh.connect("127.0.0.1", port=lab["airlock"].port(22), username="airlock",
                password=PASSWORDS["airlock"], look_for_keys=False, allow_agent=False)
    return ssh.open_sftp()


def _download_sha256(sftp: paramiko.SFTPClient, path: str) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with sftp.open(path, "rb") as fh:
        fh.prefetch()
        while True:
            chunk = fh.read(1024 * 1024)
            if not chunk:
                break
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _sha256_path(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def _openssh_sftp_get(lab, remote: str) -> Path:  # type: ignore[no-untyped-def]
    """Download ``remote`` with OpenSSH's ``sftp`` (key login as airlock); return the file."""
    tmp = lab["tmp"]
    key = tmp / "id_ed25519"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                       check=True)
        pub = (tmp / "id_ed25519.pub").read_text()
        lab["airlock"].exec("bash", "-c",
                            "install -d -m 700 -o airlock -g airlock /home/airlock/.ssh && "
                            "cat > /home/airlock/.ssh/authorized_keys && "
                            "chown airlock: /home/airlock/.ssh/authorized_keys && "
                            "chmod 600 /home/airlock/.ssh/authorized_keys", input=pub)
    dest = tmp / "download.bin"
    proc = subprocess.run(
        ["sftp", "-q", "-i", str(key), "-P", str(lab["airlock"].port(22)),
         "-o", "StrictHostKeyChecking=no", "-o", f"UserKnownHostsFile={tmp / 'known_hosts'}",
         "-o", "BatchMode=yes", f"airlock@127.0.0.1:{remote}", str(dest)],
        capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    return dest


def test_export_approved_downloads_rejected_does_not(lab) -> None:  # type: ignore[no-untyped-def]
    homepod, airlock = lab["homepod"], lab["airlock"]
    sh(homepod, "mkdir -p ~/out/run/ckpt && cd ~/out"
                " && head -c 1G /dev/urandom > big.bin && echo hello > notes.txt"
                " && head -c 100000 /dev/urandom > run/ckpt/step1.pt && echo '{}' > run/m.json",
       "alice", timeout=300)
    start = time.monotonic()
    proc = sh(homepod, "cd ~/out && mlab request export big.bin notes.txt run "
                       "--reason 'model for ACME'", "alice", timeout=300)
    export_seconds = time.monotonic() - start
    good = _rid(proc.stdout)
    bad = _rid(sh(homepod, "cd ~/out && mlab request export notes.txt run --reason 'raw data'",
                  "alice").stdout)
    item = client(lab, "bob").get(good)
    files = {f["path"]: f for f in item["files"]}
    assert sorted(files) == ["big.bin", "notes.txt", "run/ckpt/step1.pt", "run/m.json"]
    assert files["big.bin"]["size"] == GIB
    local = sh(homepod, "cd ~/out && sha256sum big.bin notes.txt", "alice").stdout.split()
    assert files["big.bin"]["sha256"] == local[0] and files["notes.txt"]["sha256"] == local[2]

    client(lab, "bob").act(good, "approve", "ok for ACME")
    client(lab, "bob").act(bad, "reject", "raw customer data")
    start = time.monotonic()
    proc = sh(airlock, "mlab request publish", "airlock", creds="admin", timeout=300)
    publish_seconds = time.monotonic() - start
    assert f"request {good}: published" in proc.stdout
    print(f"\nexport of 1 GiB + 3 files: {export_seconds:.1f} s; publish: {publish_seconds:.1f} s")

    base = f"/opt/public/airlock/export/{good}"
    start = time.monotonic()
    big = _openssh_sftp_get(lab, f"{base}/big.bin")
    print(f"SFTP download of 1 GiB (OpenSSH sftp): {time.monotonic() - start:.1f} s")
    assert big.stat().st_size == GIB
    assert _sha256_path(big) == files["big.bin"]["sha256"]
    big.unlink()
    sftp = _sftp(lab)
    try:
        for path in ("notes.txt", "run/ckpt/step1.pt", "run/m.json"):
            assert _download_sha256(sftp, f"{base}/{path}") == (
                files[path]["size"], files[path]["sha256"])
        assert f"{files['notes.txt']['sha256']}  notes.txt" in \
            sftp.open(f"{base}/SHA256SUMS").read().decode()
        with pytest.raises(FileNotFoundError):
            sftp.stat(f"/opt/public/airlock/export/{bad}")
        assert sorted(sftp.listdir("/opt/public/airlock/export")) == [str(good)]
    finally:
        sftp.close()
    history = client(lab, "alice").get(good)["history"]
    assert history[-1]["action"] == "published"

    # Revoked: gone from the share at the next publisher run.
    client(lab, "admin").act(good, "revoke", "contract ended")
    sh(airlock, "mlab request publish", "airlock", creds="admin")
    assert not (lab["share"] / "export" / str(good)).exists()
