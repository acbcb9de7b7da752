"""End to end: stage on an Airlock container, install offline in a HomePod container.

One Airlock (default network, the host CA bundle mounted, the share read-write) and one
HomePod (``--network none``, the same share read-only) run the real image with its real
services. On the Airlock, user alice stages from PyPI a pure-Python package (six), one with
a C extension (markupsafe) and one whose dependency ships only an sdist (num2words ->
docopt), and from Debian jq (its libraries libjq1 and libonig5 are not in the image) and
htop (shared libraries libnl-3 / libnl-genl-3 not in the image). In the HomePod, with no
network at all, ``pip install`` and ``sudo apt-get install`` of them succeed and the
programs run. A file uploaded over SFTP to the Airlock's sshd is readable and not writable
in the HomePod, and the audit log has a line for each.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import time

import paramiko
import pytest

pytestmark = pytest.mark.e2e

PREFIX = "mlabtest-air-"
USER = "alice"
UID = 1000
CA = "/etc/ssl/certs/ca-certificates.crt"


@pytest.fixture(scope="module")
def pods(homepod_image, tmp_path_factory, e2e):
    # Like a fresh PVC subPath or podman volume: root-owned. The entrypoint must make it
    # the Airlock user's (the regression: `mlab stage` as the user failed on a root share).
    share = tmp_path_factory.mktemp("air-share")
    os.chown(share, 0, 0)
    share.chmod(0o755)
    password = secrets.token_urlsafe(12)
    env = {"MLAB_USER": USER, "MLAB_UID": str(UID), "MLAB_PASSWORD": password}
    started = []
    try:
        airlock = e2e.run_container(
            homepod_image, PREFIX, env={**env, "MLAB_MODE": "airlock"}, ports=[22],
            volumes=[f"{share}:/opt/public/airlock:rw", f"{CA}:{CA}:ro"],
        )
        started.append(airlock)
        homepod = e2e.run_container(
            homepod_image, PREFIX, env={**env, "MLAB_MODE": "homepod"},
            volumes=[f"{share}:/opt/public/airlock:ro"], extra=["--network", "none"],
        )
        started.append(homepod)
        e2e.wait_for_port(airlock.port(22), timeout=60)
        yield airlock, homepod, share, password
    finally:
        for c in started:
            c.remove()


def sh(container, script: str, user: str = USER, timeout: float = 300):
    proc = container.exec("bash", "-lc", script, user=user, check=False, timeout=timeout)
    assert proc.returncode == 0, f"{script}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def staged(pods):
    """Stage as the Airlock user (not root), through the real entrypoint's share setup."""
    airlock, homepod, share, password = pods
    assert (share.stat().st_uid, (share / "audit.log").stat().st_uid) == (UID, UID)
    pip_out = sh(airlock, "mlab stage pip six markupsafe num2words").stdout
    apt_out = sh(airlock, "mlab stage apt jq htop").stdout
    return pip_out, apt_out


def test_pip_packages_install_offline(pods, staged) -> None:
    airlock, homepod, share, _ = pods
    pip_out, _apt = staged
    built = [ln for ln in pip_out.splitlines() if "built from sdist" in ln]
    assert len(built) == 1 and "docopt-0.6.2-" in built[0], pip_out
    assert not list((share / "pip-index" / "files").glob("*.tar.gz"))
    # no network in the HomePod: loopback is its only interface
    ifaces = homepod.exec("python3", "-c", "import socket; print(sorted(n for _, n in socket.if_nameindex()))").stdout
    assert ifaces.strip() == "['lo']"
    # The user's default environment ~/.venv is first on PATH (docs/image.md "Python").
    sh(homepod, "pip install six markupsafe num2words")
    out = sh(homepod, "python3 -c 'import six, markupsafe._speedups, docopt, num2words; print(num2words.num2words(42))'").stdout
    assert out.strip() == "forty-two"
    # the mlab wrapper, and its hint for what is not staged
    sh(homepod, "mlab install pip --user six")
    missing = homepod.exec("bash", "-lc", "mlab install pip --user tomli-w", user=USER, check=False)
    assert missing.returncode == 1
    assert "mlab stage pip tomli-w" in missing.stderr


def test_apt_packages_install_offline(pods, staged) -> None:
    airlock, homepod, share, _ = pods
    _pip, apt_out = staged
    assert "libjq1" in apt_out and "libonig5" in apt_out and "htop_" in apt_out
    update = sh(homepod, "sudo apt-get update 2>&1")
    assert "W:" not in update.stdout and "Err" not in update.stdout, update.stdout
    sh(homepod, "sudo DEBIAN_FRONTEND=noninteractive apt-get install -y jq htop")
    assert sh(homepod, "echo '{\"a\": 7}' | jq .a").stdout.strip() == "7"
    assert "htop" in sh(homepod, "htop --version").stdout
    # every shared library of both programs resolves (jq needs libjq1 and libonig5)
    libs = sh(homepod, "ldd /usr/bin/jq /usr/bin/htop").stdout
    assert "not found" not in libs and "libjq.so" in libs and "libonig.so" in libs
    missing = homepod.exec("bash", "-lc", "mlab install apt sl", user=USER, check=False)
    assert missing.returncode == 1 and "mlab stage apt sl" in missing.stderr


def _connect(airlock, user: str, password: str) -> paramiko.SSHClient:  # type: ignore[no-untyped-def]
    """An SSH client logged in to the Airlock's sshd as ``user``, retried for 30 s (sshd may
    still be restarting after an account or configuration change)."""
    deadline = time.monotonic() + 30
    while True:
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        try:
            client.connect("127.0.0.1", port=airlock.port(22), username=user, password=password,
                           allow_agent=False, look_for_keys=False, timeout=10)
            return client
        except (paramiko.SSHException, OSError):
            client.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.fixture(scope="module")
def uploaded(pods):
    """Upload uploads-data.txt over SFTP to the Airlock's sshd (as alice, with her password)."""
    airlock, homepod, share, password = pods
    # route the sftp subsystem through the audited wrapper (docs/airlock.md, "SFTP")
    sh(airlock, "mlab airlock sftp-audit && supervisorctl -c /etc/mlab/supervisord.conf restart sshd", user="root")
    client = _connect(airlock, USER, password)
    try:
        with client.open_sftp() as s:
            s.putfo(io.BytesIO(b"dataset v1\n"), "/opt/public/airlock/uploads-data.txt")
    finally:
        client.close()
    return "/opt/public/airlock/uploads-data.txt"


def test_sftp_upload_readable_not_writable_in_homepod(pods, uploaded) -> None:
    airlock, homepod, share, password = pods
    assert sh(homepod, "cat /opt/public/airlock/uploads-data.txt").stdout == "dataset v1\n"
    denied = homepod.exec("bash", "-c", "echo x >> /opt/public/airlock/uploads-data.txt", user=USER, check=False)
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr
    denied_root = homepod.exec("touch", "/opt/public/airlock/new", check=False)
    assert denied_root.returncode != 0


def test_audit_log_has_a_line_for_each(pods, staged, uploaded) -> None:
    airlock, homepod, share, _ = pods
    out = sh(homepod, "mlab airlock log -o json").stdout
    records = [json.loads(line) for line in out.splitlines()]
    items = {(r["action"], r["item"].split("-")[0].split("_")[0]) for r in records}
    for name in ("six", "markupsafe", "num2words", "docopt"):
        assert ("stage-pip", name) in items, name
    for name in ("jq", "libjq1", "libonig5", "htop"):
        assert ("stage-apt", name) in items, name
    assert all(r["user"] == USER for r in records)
    assert (share / "audit.log").stat().st_uid == UID
    uploads = [r for r in records if r["action"] == "sftp-upload"]
    assert [(r["item"], r["size"]) for r in uploads] == [(uploaded, 11)]


def test_sftp_only_account_is_chrooted_to_the_share(pods, staged, uploaded) -> None:
    airlock, homepod, share, _ = pods
    out = sh(airlock, "printf 'drop-pass-123\\n' > /root/pw && mlab airlock sftp-account drop --password-file /root/pw",
             user="root").stdout
    assert "root:root 0755" in out and "reloaded sshd" in out
    client = _connect(airlock, "drop", "drop-pass-123")
    try:
        with client.open_sftp() as s:
            assert {"pip", "apt", "upload", "audit.log"} <= set(s.listdir("/"))
            s.putfo(io.BytesIO(b"from drop\n"), "/upload/drop.txt")
            with pytest.raises(OSError):
                s.putfo(io.BytesIO(b"x"), "/outside-upload.txt")
        _stdin, stdout, _stderr = client.exec_command("id")
        assert b"uid=" not in stdout.read()
    finally:
        client.close()
    assert sh(homepod, "cat /opt/public/airlock/upload/drop.txt").stdout == "from drop\n"
    # the chroot keeps the share root root's; the Airlock user still owns the log and the
    # folders, appends to the log, and sudo records the person, not root
    assert share.stat().st_uid == 0
    assert {(share / n).stat().st_uid for n in ("audit.log", "pip", "apt", "downloads", "git", "export")} == {UID}
    sh(airlock, "/opt/mlab/venv/bin/python -c 'from mlab.airlock import audit; audit.record(\"/opt/public/airlock\", \"stage-url\", \"as-user\")'"
       " && sudo /opt/mlab/venv/bin/python -c 'from mlab.airlock import audit; audit.record(\"/opt/public/airlock\", \"stage-url\", \"as-sudo\")'")
    out = sh(homepod, "mlab airlock log -o json").stdout
    tail = {json.loads(line)["item"]: json.loads(line)["user"] for line in out.splitlines()[-2:]}
    assert tail == {"as-user": USER, "as-sudo": USER}


def test_quarantined_uploads_reach_homepods_only_when_released(pods) -> None:
    """An SFTP-only account with --quarantine: its uploads wait outside the share (not in the
    HomePod) until `mlab airlock release` checks them; executables are refused; both audited."""
    import hashlib

    airlock, homepod, _share, _ = pods
    q = "/var/lib/mlab/quarantine"
    out = sh(airlock, "printf 'inbox-pass-123\\n' > /root/pw-inbox && mlab airlock sftp-account "
             f"inbox --password-file /root/pw-inbox --quarantine {q}", user="root").stdout
    assert "reloaded sshd" in out, out
    data = b"id,value\n1,42\n"
    client = _connect(airlock, "inbox", "inbox-pass-123")
    try:
        with client.open_sftp() as s:
            assert "pip" not in s.listdir("/")  # the chroot is the quarantine, not the share
            s.putfo(io.BytesIO(data), "/upload/q-data.csv")
            s.putfo(io.BytesIO(b"\x7fELF\x02\x01\x01" + b"\0" * 64), "/upload/q-tool")
    finally:
        client.close()
    for name in ("q-data.csv", "q-tool"):  # not visible in the HomePod yet
        assert homepod.exec("test", "-e", f"/opt/public/airlock/upload/{name}",
                            check=False).returncode == 1
    out = sh(airlock, f"mlab airlock release --quarantine {q} --settle 0", user="root").stdout
    assert "released q-data.csv" in out and "refused q-tool: an ELF executable" in out, out
    assert sh(homepod, "cat /opt/public/airlock/upload/q-data.csv").stdout == data.decode()
    assert homepod.exec("test", "-e", "/opt/public/airlock/upload/q-tool",
                        check=False).returncode == 1
    log = [json.loads(line) for line in sh(homepod, "mlab airlock log -o json").stdout.splitlines()]
    rel = [r for r in log if r["action"] == "ingress-release" and r["item"] == "upload/q-data.csv"]
    assert rel and rel[-1]["sha256"] == hashlib.sha256(data).hexdigest(), log[-3:]
    assert any(r["action"] == "ingress-refused" and r["item"].startswith("upload/q-tool")
               for r in log)
