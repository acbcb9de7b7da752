"""What the rendered pods ask of the entrypoint (docs/CONTRACTS.md): extra groups, a site CA
trusted by curl and Python, the image reference for transcripts, proxies for login
sessions, the HomePod's outbox owned by its user; in airlock mode the audited SFTP
subsystem, the share root, audit.log and top-level folders owned by the Airlock user, and
the export publisher in a container of its own, and a pip index an older MLab left in the
seed's ``pip/`` folder moved to ``pip-index/`` at start. Also
`mlab image build --local --steps FILE` (approved package scripts baked in, with a label).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlab.airlock import pipindex
from mlab.podman.runner import podman
from mlab.render.airlock import PUBLISHER_COMMAND
from mlab.topology import SHARE_FOLDERS

pytestmark = pytest.mark.e2e

PREFIX = "mlabtest-img-"
PASSWORD = "Carol-Passw0rd-9"
PROXY = "http://proxy.example.invalid:3128"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(directory: Path, name: str) -> None:
    """``<name>.crt`` / ``<name>.key``: a self-signed CA (P-256)."""
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2",
            "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    """A site bundle of two CAs (the proxy's second) and a localhost certificate the proxy
    CA signed, as a TLS-intercepting proxy would present."""
    d = tmp_path_factory.mktemp("certs")
    make_ca(d, "other-ca")
    make_ca(d, "proxy-ca")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=localhost", cwd=d)
    (d / "ext").write_text("subjectAltName=DNS:localhost\n")
    openssl("x509", "-req", "-in", "leaf.csr", "-CA", "proxy-ca.crt", "-CAkey", "proxy-ca.key",
            "-CAcreateserial", "-out", "leaf.crt", "-days", "2", "-extfile", "ext", cwd=d)
    (d / "ca.crt").write_text((d / "other-ca.crt").read_text() + (d / "proxy-ca.crt").read_text())
    for f in d.iterdir():
        f.chmod(0o644)
    d.chmod(0o755)
    return d


def test_homepod_groups_ca_image_proxies_and_outbox(homepod_image, e2e, containers, certs,
                                                     tmp_path) -> None:
    outbox = tmp_path / "outbox"
    (outbox / "old").mkdir(parents=True)
    os.chown(outbox / "old", 4321, 4321)
    outbox.chmod(0o755)
    c = e2e.run_container(
        homepod_image, PREFIX,
        env={"MLAB_USER": "carol", "MLAB_UID": "1500", "MLAB_PASSWORD": PASSWORD,
             "MLAB_GROUPS": "data, gpu,users",
             # A list (docs/image.md): the proxy CA is only in the second file (of two CAs).
             "MLAB_CA_BUNDLE": "/etc/mlab/ca/other-ca.crt:/etc/mlab/ca/ca.crt",
             "MLAB_IMAGE": "registry.example/mlab/homepod:1.2", "MLAB_CODE_HOST": "code-service",
             "http_proxy": PROXY, "https_proxy": PROXY, "no_proxy": ".corp.example"},
        volumes=[f"{certs}:/etc/mlab/ca:ro", f"{outbox}:/opt/outbox"],
    )
    containers.append(c)
    e2e.wait_until_ready(c)
    assert set(c.exec("id", "-nG", "carol").stdout.split()) >= {"carol", "data", "gpu", "users"}
    assert c.exec("cat", "/etc/mlab/image").stdout == "registry.example/mlab/homepod:1.2\n"
    # The outbox mount point is carol's; what was in it keeps its owner.
    assert c.exec("stat", "-c", "%U", "/opt/outbox").stdout.strip() == "carol"
    assert c.exec("stat", "-c", "%u", "/opt/outbox/old").stdout.strip() == "4321"
    c.exec("touch", "/opt/outbox/new", user="carol")
    # Login sessions (pam_env) see the proxies, the image, and a no_proxy with the code service.
    env = dict(line.split("=", 1) for line in c.exec("cat", "/etc/environment").stdout.splitlines())
    assert env["http_proxy"] == env["https_proxy"] == PROXY
    assert env["MLAB_IMAGE"] == "registry.example/mlab/homepod:1.2"
    assert set(env["no_proxy"].split(",")) >= {".corp.example", "code-service", "localhost"}
    assert PROXY in c.exec("cat", "/etc/apt/apt.conf.d/80mlab-proxy").stdout
    # The site CA: a server whose certificate the proxy CA signed is trusted by curl (the
    # system bundle) and by Python's default context (the hashed directory).
    c.exec("cp", "/etc/mlab/ca/leaf.crt", "/etc/mlab/ca/leaf.key", "/tmp/")
    c.exec("bash", "-c", "setsid openssl s_server -quiet -www -accept 127.0.0.1:8443 "
           "-cert /tmp/leaf.crt -key /tmp/leaf.key >/dev/null 2>&1 &")
    curl = ["curl", "-sS", "--noproxy", "*", "--retry", "10", "--retry-connrefused",
            "--retry-delay", "1", "-o", "/dev/null", "-w", "%{http_code}", "https://localhost:8443/"]
    assert c.exec(*curl, user="carol").stdout == "200"
    py = ("import ssl, urllib.request; ctx = ssl.create_default_context(); "
          "print(urllib.request.urlopen('https://localhost:8443/', context=ctx).status)")
    assert c.exec("env", "-u", "https_proxy", "python3", "-c", py, user="carol").stdout.strip() == "200"
    assert "OK" in c.exec("openssl", "verify", "/tmp/leaf.crt").stdout
    added = c.exec("ls", "/usr/local/share/ca-certificates").stdout.split()
    assert added == ["mlab-site-1-1.crt", "mlab-site-2-1.crt", "mlab-site-2-2.crt"], added


def test_airlock_sftp_audit_share_folders_and_publisher(homepod_image, e2e, containers,
                                                          tmp_path) -> None:
    share = tmp_path / "share"
    (share / "pip").mkdir(parents=True)
    os.chown(share / "pip", 4321, 4321)
    share.chmod(0o755)
    (share / "audit.log").write_text("")  # root's, as an older image left it
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    # A code service nobody listens on: the publisher must wait, not spin.
    c = e2e.run_container(
        homepod_image, PREFIX,
        env={"MLAB_USER": "airlock", "MLAB_UID": "1999", "MLAB_MODE": "airlock",
             "MLAB_PASSWORD_FILE": "/etc/mlab/secret/password",
             "MLAB_SERVER": "http://127.0.0.1:9"},
        volumes=[f"{share}:/opt/public/airlock", f"{secret}:/etc/mlab/secret/password:ro"],
    )
    containers.append(c)
    e2e.wait_until_ready(c)
    sshd = c.exec("sshd", "-T").stdout
    assert re.search(r"(?m)^subsystem sftp /usr/local/bin/mlab airlock sftp-server$", sshd)
    owners = c.exec("stat", "-c", "%n %u", *(f"/opt/public/airlock/{d}" for d in SHARE_FOLDERS)).stdout
    assert owners.split("\n")[0] == "/opt/public/airlock/pip 4321"  # existing: not re-owned
    assert all(line.endswith(" 1999") for line in owners.strip().split("\n")[1:]), owners
    # the root-owned mount point and log became the Airlock user's (not pip's content)
    assert (share.stat().st_uid, (share / "audit.log").stat().st_uid) == (1999, 1999)
    c.exec("bash", "-c", "touch /opt/public/airlock/by-user && echo {} >> /opt/public/airlock/audit.log",
           user="airlock")
    # Issue 13: the Airlock runs no export publisher (it has its own container).
    status = c.exec("supervisorctl", "-c", "/etc/mlab/supervisord.conf", "status", "publisher",
                    check=False).stdout
    assert "no such process" in status.lower(), status
    # The publisher container as rendered (render.airlock.PUBLISHER_COMMAND): no entrypoint,
    # read-only root, DAC_OVERRIDE only; with no code service it waits, not spins.
    p = e2e.run_container(
        homepod_image, PREFIX,
        env={"MLAB_USER": "mlab-publisher", "MLAB_PASSWORD_FILE": "/etc/mlab/publisher/password",
             "MLAB_SERVER": "http://127.0.0.1:9", "HOME": "/tmp"},
        volumes=[f"{secret}:/etc/mlab/publisher/password:ro", f"{share}/export:/opt/public/airlock/export"],
        extra=["--read-only", "--cap-drop=all", "--cap-add=DAC_OVERRIDE",
               "--security-opt=no-new-privileges", "--entrypoint", PUBLISHER_COMMAND[0]],
    )
    containers.append(p)
    deadline = time.monotonic() + 60
    while "next try in" not in p.logs() and time.monotonic() < deadline:
        time.sleep(0.5)
    logs = p.logs()
    assert logs.count("next try in 30 s") == 1, logs[-2000:]
    assert "cannot reach the code service" in logs
    assert PASSWORD not in logs


def test_airlock_start_moves_an_old_pip_index_out_of_the_seed_folder(homepod_image, e2e, containers,
                                                                      tmp_path) -> None:
    from test_image_access import tiny_wheel

    share = tmp_path / "share"
    pipindex.publish(share, [tiny_wheel(tmp_path)])
    (share / "pip").mkdir()
    for name in ("files", "simple"):  # where MLab 0.1 kept the tree
        os.rename(pipindex.index_dir(share) / name, share / "pip" / name)
    (share / "pip" / "mine-1.0-py3-none-any.whl").write_bytes((share / "pip" / "files" /
                                                               "mlabdemo-1.0-py3-none-any.whl").read_bytes())
    subprocess.run(["chown", "-R", "1999:1999", str(share)], check=True)
    share.chmod(0o755)
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    c = e2e.run_container(
        homepod_image, PREFIX,
        env={"MLAB_USER": "airlock", "MLAB_UID": "1999", "MLAB_MODE": "airlock",
             "MLAB_PASSWORD_FILE": "/etc/mlab/secret/password"},
        volumes=[f"{share}:/opt/public/airlock", f"{secret}:/etc/mlab/secret/password:ro"],
    )
    containers.append(c)
    e2e.wait_until_ready(c)
    assert "mlab-entrypoint: pip/files -> pip-index/files" in c.logs()
    assert sorted(os.listdir(share / "pip")) == ["mine-1.0-py3-none-any.whl"]
    assert (share / "pip-index" / "files" / "mlabdemo-1.0-py3-none-any.whl").stat().st_uid == 1999
    listed = c.exec("python3", "-m", "pip", "--isolated", "download", "--no-deps", "-d", "/tmp/d",
                    "--index-url", "file:///opt/public/airlock/pip-index/simple", "mlabdemo", user="airlock")
    assert listed.returncode == 0 and "mlabdemo-1.0" in listed.stdout, listed.stdout + listed.stderr


def test_image_build_steps_file_bakes_the_scripts_with_a_label(homepod_image, e2e,
                                                                tmp_path) -> None:
    tag = e2e.unique_name("mlabtest-img-")
    marker = f"/opt/{tag}"
    steps = {"packages": [
        {"id": 41, "script": f"echo first > {marker}\n", "owner": "alice", "reason": "test",
         "approved_at": "2026-01-01T00:00:00Z"},
        {"id": 7, "script": f"echo second >> {marker}\n", "owner": "bob", "reason": "test",
         "approved_at": "2026-01-02T00:00:00Z"},
    ]}
    path = tmp_path / "approved.json"
    path.write_text(json.dumps(steps))
    mlab = str(Path(sys.executable).with_name("mlab"))
    proc = subprocess.run([mlab, "image", "build", "--local", "--steps", str(path), "--tag", tag],
                          capture_output=True, text=True, timeout=900, check=False)
    ref = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    try:
        assert proc.returncode == 0, proc.stderr
        assert re.fullmatch(r"localhost/mlab/homepod:pkg-[0-9a-f]{16}", ref), proc.stdout
        labels = json.loads(podman(["image", "inspect", "--format", "{{json .Labels}}", ref]).stdout)
        assert labels["mlab.package-requests"] == "41,7"
        out = podman(["run", "--rm", "--name", e2e.unique_name(PREFIX), ref, "cat", marker]).stdout
        assert out == "first\nsecond\n"
        ids = {podman(["image", "inspect", "--format", "{{.Id}}", r]).stdout.strip()
               for r in (ref, f"localhost/mlab/homepod:{tag}")}
        assert len(ids) == 1
        # :latest stays the image without package scripts.
        assert podman(["run", "--rm", "--name", e2e.unique_name(PREFIX), "localhost/mlab/homepod:latest",
                       "test", "-e", marker], check=False).returncode == 1
    finally:
        podman(["rmi", f"localhost/mlab/homepod:{tag}"], check=False)
        if ref.startswith("localhost/mlab/homepod:pkg-"):
            podman(["rmi", ref], check=False)
