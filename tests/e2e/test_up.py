"""`mlab up` end to end: the whole platform on this machine with real podman and nftables.

One site (``t4up``, its own bind address 127.0.4.1 so no port collides with anyone's, and
its own MLAB_STATE_DIR) goes through its life: up, the isolation probe matrix, a second up
that changes nothing, adding and removing a user, down and up keeping data, and
``down --volumes`` leaving nothing behind (podman listings and nft tables compared with
before). The tests run in file order and share the site. A second site (``t4upb``) checks
that a port in use and a failure half-way leave nothing started.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_runner import Run, mlab_site
from up_lab import site_doc

from mlab.podman.runner import podman

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

SITE = "t4up"
BIND = "127.0.4.1"


def _site_doc(image: str, users: list[str], name: str = SITE, bind: str = BIND) -> dict[str, Any]:
    return site_doc(
        name, image, bind,
        [{"name": u, "uid": 1001 + i, "service": {"ports": {
            "vnc": 15901 + i, "rdp": 13389 + i, "novnc": 17031 + i, "ssh": 12201 + i}}}
         for i, u in enumerate(users)],
        airlock={"service": {"ports": {"vnc": 15900, "novnc": 17030, "ssh": 10022}}},
        codeService={"allowLocalUpstreams": True, "reviewers": [users[-1]]},
        # The seed's paths (SSH commands below); the reviewed posture: test_egress_up.py.
        posture="open",
    )


class Site:
    """The test site: its file, state directory and a runner for `mlab` commands."""

    def __init__(self, root: Path, image: str, name: str = SITE, bind: str = BIND) -> None:
        self.root, self.image, self.name, self.bind = root, image, name, bind
        self.file = root / f"{name}.yaml"
        self.env = {"MLAB_STATE_DIR": str(root / "state"), "COLUMNS": "200"}

    def write(self, users: list[str]) -> None:
        self.file.write_text(yaml.safe_dump(_site_doc(self.image, users, self.name, self.bind)))

    def mlab(self, *args: str, check: bool = True) -> Run:
        return mlab_site(self.file, *args, env=self.env, check=check)

    def status(self) -> list[dict[str, Any]]:
        return json.loads(self.mlab("status", "-o", "json").stdout)


def _names(args: list[str]) -> str:
    """A podman listing, retried when another user's object vanishes mid-listing (podman
    4.3 then fails the whole listing with "no such ...")."""
    for _attempt in range(5):
        proc = podman(args, check=False)
        if proc.returncode == 0:
            return proc.stdout
        time.sleep(0.2)
    return podman(args).stdout


def listings() -> dict[str, set[str]]:
    """Names of every podman object and nft table on the host."""
    out = {
        "containers": _names(["ps", "-a", "--format", "{{.Names}}"]),
        "pods": _names(["pod", "ps", "--format", "{{.Name}}"]),
        "networks": _names(["network", "ls", "--format", "{{.Name}}"]),
        "volumes": _names(["volume", "ls", "--format", "{{.Name}}"]),
        "nft": subprocess.run(["nft", "list", "tables"], capture_output=True, text=True,
                              check=True).stdout,
    }
    return {k: set(v.split("\n")) - {""} for k, v in out.items()}


def ours(listing: dict[str, set[str]], name: str) -> dict[str, set[str]]:
    """The objects of site ``name`` in a listing (``mlab-<site>`` / ``mlab_<site>``)."""
    return {k: {n for n in v if f"mlab-{name}" in n or f"mlab_{name}" in n}
            for k, v in listing.items()}


def container_ids() -> dict[str, str]:
    out = _names(["ps", "--format", "{{.Names}} {{.ID}}"]).split("\n")
    return dict(line.split() for line in out if line.startswith(f"mlab-{SITE}-"))


@pytest.fixture(scope="module")
def site(homepod_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The t4up site, up with alice and bob; torn down (with volumes) at the end."""
    s = Site(tmp_path_factory.mktemp("t4up"), homepod_image)
    s.write(["alice", "bob"])
    s.mlab("down", "--volumes")  # leftovers of an interrupted run
    s.before = listings()  # type: ignore[attr-defined]
    s.up_output = s.mlab("up")  # type: ignore[attr-defined]
    yield s
    s.mlab("down", "--volumes", check=False)


def test_up_starts_every_component_with_endpoints(site: Site) -> None:
    comps = {c["name"]: c for c in site.status()}
    assert set(comps) == {"code-service", "airlock", "homepod-alice", "homepod-bob"}
    for comp in comps.values():
        assert comp["state"] == "Running", comp
    alice = comps["homepod-alice"]
    assert alice["kind"] == "homepod" and alice["user"] == "alice"
    assert {(e["protocol"], e["host"], e["port"]) for e in alice["endpoints"]} == {
        ("vnc", BIND, 15901), ("rdp", BIND, 13389), ("http", BIND, 17031),
        ("ssh", BIND, 12201), ("sftp", BIND, 12201)}
    assert comps["code-service"]["endpoints"][0]["port"] == 80
    # Generated passwords were shown once, and `mlab passwords` shows them again.
    shown = json.loads(site.mlab("passwords", "-o", "json").stdout)
    users = {row["user"]: row["password"] for row in shown}
    assert len(users["alice"]) == 20
    roles = {row["role"]: row["user"] for row in shown}
    assert roles == {"homepod": "bob", "airlock": "airlock", "code-service admin": "admin"}
    assert users["alice"] in site.up_output.stdout  # type: ignore[attr-defined]
    # Pods carry the rendered labels.
    found = podman(["pod", "ps", "--filter", "label=mlab.io/user=alice",
                    "--filter", f"label=app.kubernetes.io/instance={SITE}",
                    "--format", "{{.Name}}"]).stdout.split()
    assert found == [f"mlab-{SITE}-homepod-alice"]
    # The table says what VNC does with a password, and how HomePods reach the code service.
    table = site.mlab("status").stdout
    assert "(password: its first 8 characters (VncAuth))" in table
    assert "in HomePods: git clone http://code.mlab.local/<org>/<repo>" in table


def test_login_with_the_generated_password_over_published_ssh(site: Site) -> None:
    """The password Secret reached the HomePod as a file (the podman translation of a
    secret volume), and the published SSH port leads to alice's HomePod."""
    import paramiko

    shown = json.loads(site.mlab("passwords", "-o", "json").stdout)
    password = next(row["password"] for row in shown if row["user"] == "alice")
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # noqa: S507 - test host
    client.connect(BIND, port=12201, username="alice", password=password, timeout=30,
                   allow_agent=False, look_for_keys=False)
    try:
        _in, out, _err = client.exec_command("id -un; getent hosts code.mlab.local")
        lines = out.read().decode().split("\n")
    finally:
        client.close()
    assert lines[0] == "alice"
    assert "code.mlab.local" in lines[1]


def test_verify_probe_matrix(site: Site) -> None:
    proc = site.mlab("verify", "-o", "json", check=False)
    results = json.loads(proc.stdout)
    bad = [r for r in results if not r["ok"]]
    assert not bad, json.dumps(bad, indent=1)
    assert proc.returncode == 0
    edges = {(r["source"], r["target"].split(" (")[0]) for r in results}
    # The URL users type (Service port 80, DNAT'd to :8080) and the container port.
    assert ("homepod-alice", "code service code.mlab.local:80") in edges
    assert ("homepod-alice", "code service code.mlab.local:8080") in edges
    assert ("airlock", "code service code.mlab.local:80") in edges
    for port in (22, 443, 9418):
        assert ("homepod-alice", f"code service :{port}") in edges
    # The share write runs as the Airlock's user: root would hide a wrong owner.
    assert ("airlock", "write to the share /opt/public/airlock as airlock") in edges
    assert ("airlock", "PyPI over HTTPS") in edges
    assert len(results) >= 40
    # Every published port answered in its own protocol: a connect alone proves nothing.
    seen = {r["target"].split()[1]: r["detail"] for r in results
            if r["source"] == "host" and r["target"].startswith("homepod-alice")}
    assert seen["vnc"].startswith("RFB 003.")
    assert seen["ssh"].startswith("SSH-2.0-")
    assert seen["novnc"] == "HTTP 200 noVNC page"
    assert seen["rdp"].startswith("X.224 Connection Confirm")
    blocked = [r for r in results if r["expected"] == "blocked"]
    unnamed = [r for r in blocked
               if r["detail"].split(" (")[0] not in ("refused", "timed out", "reset", "unreachable",
                                                     "TLS failed")
               and r["kind"] not in ("dns", "write", "udp-dns")
               # the link probes (raw sockets, forged sources, IPv6) name their own errors:
               # test_verify_runs_the_link_probes_and_they_hold checks those rows
               and r["kind"] not in ("raw", "forged", "tcp6")]
    assert not unnamed, json.dumps(unnamed, indent=1)


def _supervisorctl(container: str, *args: str) -> str:
    return podman(["exec", container, "supervisorctl", "-c", "/etc/mlab/supervisord.conf",
                   *args], check=False).stdout


def test_verify_fails_on_exactly_the_edge_of_a_stopped_service(site: Site) -> None:
    """xrdp stopped inside alice's running HomePod: her published RDP port still has its
    DNAT rule, but nothing answers; verify must fail on that edge and only on it."""
    from mlab.probing.answers import recognise, request

    alice = f"mlab-{SITE}-homepod-alice-homepod"
    assert "stopped" in _supervisorctl(alice, "stop", "xrdp")
    try:
        proc = site.mlab("verify", "-o", "json", check=False)
    finally:
        _supervisorctl(alice, "start", "xrdp")
    assert proc.returncode == 1, proc.stderr
    bad = [(r["source"], r["target"], r["detail"]) for r in json.loads(proc.stdout)
           if not r["ok"]]
    assert bad == [("host", f"homepod-alice rdp {BIND}:13389", "refused")], bad
    assert "MISMATCH" not in proc.stdout  # -o json: data only
    # xrdp answers again before the next test.
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection((BIND, 13389), timeout=3) as conn:
                conn.sendall(request("rdp", BIND))
                if recognise("rdp", conn.recv(4096)):
                    break
        except OSError:
            pass
        assert time.monotonic() < deadline, "xrdp did not come back"
        time.sleep(0.5)


def _tiny_wheel(directory: Path, name: str, version: str) -> Path:
    """A pure-Python wheel of project ``name`` (PEP 427) whose module has ``__version__``."""
    import base64
    import hashlib
    import zipfile

    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f'__version__ = "{version}"\n',
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: t4up\nRoot-Is-Purelib: true\n"
                         "Tag: py3-none-any\n",
    }
    def digest(text: str) -> str:
        raw = hashlib.sha256(text.encode()).digest()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    record = "".join(f"{path},sha256={digest(text)},{len(text.encode())}\n"
                     for path, text in files.items()) + f"{dist}/RECORD,,\n"
    files[f"{dist}/RECORD"] = record
    path = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for member, text in files.items():
            zf.writestr(member, text)
    return path


def test_ssh_session_pip_installs_the_staged_version_into_the_users_environment(
    site: Site, tmp_path: Path
) -> None:
    """Debian's python3-numpy (1.24) is in the image for websockify; a staged newer numpy must
    be what `pip install numpy` gives the user in an SSH session (issue 10), in ~/.venv, while
    the system Python keeps Debian's. The same session has MLAB_PASSWORD_FILE and no ssl-cert."""
    import paramiko

    air = f"mlab-{SITE}-airlock-airlock"
    wheel = _tiny_wheel(tmp_path, "numpy", "99.1.0")
    import base64

    files = "/opt/public/airlock/pip-index/files"
    podman(["exec", "-i", "-u", "airlock", air, "sh", "-c",
            f"mkdir -p {files} && base64 -d > {files}/{wheel.name}"],
           input=base64.b64encode(wheel.read_bytes()).decode())
    podman(["exec", "-u", "airlock", air, "mlab", "airlock", "reindex"])

    shown = json.loads(site.mlab("passwords", "-o", "json").stdout)
    password = next(row["password"] for row in shown if row["user"] == "alice")
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # noqa: S507 - test host
    client.connect(BIND, port=12201, username="alice", password=password, timeout=30,
                   allow_agent=False, look_for_keys=False)

    def run(command: str) -> str:
        _in, out, err = client.exec_command(command, timeout=180)
        text = out.read().decode()
        assert out.channel.recv_exit_status() == 0, (command, text, err.read().decode())
        return text

    try:
        env = run('echo "$MLAB_PASSWORD_FILE"; test -r "$MLAB_PASSWORD_FILE" && echo readable;'
                  ' id -nG; command -v pip python3; echo "$VIRTUAL_ENV"').split("\n")
        login = run("bash -lc 'command -v pip python3'").split()
        installed = run("pip install numpy 2>&1 | tail -n 2; python3 -c "
                        "'import numpy; print(numpy.__version__, numpy.__file__)'")
        system = run("/usr/bin/python3 -c 'import numpy; print(numpy.__version__)'")
    finally:
        client.close()
    assert env[0] == "/etc/mlab/secret/password" and env[1] == "readable", env
    assert "ssl-cert" not in env[2].split(), env[2]
    assert env[3:5] == ["/home/alice/.venv/bin/pip", "/home/alice/.venv/bin/python3"], env
    assert login == ["/home/alice/.venv/bin/pip", "/home/alice/.venv/bin/python3"]
    assert "Successfully installed numpy-99.1.0" in installed, installed
    version, where = installed.strip().splitlines()[-1].split()
    assert version == "99.1.0" and where.startswith("/home/alice/.venv/"), installed
    assert system.strip().startswith("1."), "the system Python keeps Debian's numpy"
    # The desktop session (and so its terminals) has the same PATH.
    alice = f"mlab-{SITE}-homepod-alice-homepod"
    desktop = podman(["exec", "-u", "alice", alice, "sh", "-c",
                      "tr '\\0' '\\n' < /proc/$(pgrep -u alice -x xfce4-session | head -n1)"
                      "/environ | grep '^PATH='"]).stdout
    assert desktop.startswith("PATH=/home/alice/.venv/bin:"), desktop


def test_verify_runs_the_link_probes_and_they_hold(site: Site) -> None:
    """Issue 20: from each HomePod, raw and packet sockets fail, a datagram forged with the
    Airlock's source never arrives, and no IPv6 peer (other HomePods, the Airlock, the code
    service, the host's bridge) answers."""
    results = json.loads(site.mlab("verify", "-o", "json").stdout)
    for user in ("alice", "bob"):
        mine = [r for r in results if r["source"] == f"homepod-{user}"]
        kinds = {r["kind"] for r in mine}
        assert {"raw", "forged", "tcp6"} <= kinds, kinds
        targets = {r["target"].split(" [")[0] for r in mine if r["kind"] == "tcp6"}
        other = "bob" if user == "alice" else "alice"
        assert {f"IPv6 homepod-{other}", "IPv6 airlock", "IPv6 code-service"} <= targets
        assert any(t.startswith("IPv6 host (bridge of") for t in targets), targets
        assert all(r["ok"] for r in mine if r["kind"] in ("raw", "forged", "tcp6"))
    forged = [r for r in results if r["kind"] == "forged"]
    assert len(forged) == 4 and all(r["observed"] == "blocked" for r in forged)


def test_homepod_capabilities_and_raw_socket_under_sudo(site: Site) -> None:
    """The rendered securityContext survives `podman kube play`: the named capabilities,
    seccomp filter mode, no_new_privs only without sudo; root through sudo still cannot open
    a raw socket; no container has IPv6 and the host's bridges have none either."""
    from mlab.render.common import SESSION_CAPABILITIES

    alice = f"mlab-{SITE}-homepod-alice-homepod"
    status = podman(["exec", "-u", "alice", alice, "sudo", "grep", "-E",
                     "^(CapEff|NoNewPrivs|Seccomp):", "/proc/self/status"]).stdout
    fields = dict(line.split(":\t") for line in status.strip().splitlines())
    decoded = podman(["exec", alice, "capsh", f"--decode={fields['CapEff']}"]).stdout
    names = {c.removeprefix("cap_").upper() for c in decoded.split("=")[1].strip().split(",")}
    assert names == set(SESSION_CAPABILITIES)
    assert fields["Seccomp"] == "2" and fields["NoNewPrivs"] == "0"
    raw = podman(["exec", "-u", "alice", alice, "sudo", "python3", "-c",
                  "import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, 255)"],
                 check=False)
    assert raw.returncode != 0 and "PermissionError" in raw.stderr, raw.stderr
    for name in ("homepod-alice-homepod", "homepod-bob-homepod", "airlock-airlock",
                 "code-service-code-service"):
        inet6 = podman(["exec", f"mlab-{SITE}-{name}", "cat", "/proc/net/if_inet6"]).stdout
        assert all(line.split()[-1] == "lo" for line in inet6.splitlines()), (name, inet6)
    nets = podman(["network", "ls", "--filter", f"label=mlab.io/site={SITE}",
                   "--format", "{{.NetworkInterface}}"]).stdout.split()
    assert nets
    for bridge in nets:
        assert Path(f"/proc/sys/net/ipv6/conf/{bridge}/disable_ipv6").read_text() == "1\n"
    logs = podman(["logs", alice]).stderr + podman(["logs", alice]).stdout
    assert "mlab-startgate: forbidden egress refused" in logs
    assert logs.index("forbidden egress refused") < logs.index("starting services for alice")


def test_share_read_write_in_airlock_read_only_in_homepods(site: Site) -> None:
    air = f"mlab-{SITE}-airlock-airlock"
    alice = f"mlab-{SITE}-homepod-alice-homepod"
    podman(["exec", air, "sh", "-c", "echo shared > /opt/public/airlock/t4up-share.txt"])
    assert podman(["exec", alice, "cat", "/opt/public/airlock/t4up-share.txt"]).stdout == "shared\n"
    proc = podman(["exec", alice, "sh", "-c", "echo x > /opt/public/airlock/t4up-write.txt"],
                  check=False)
    assert proc.returncode != 0 and "Read-only" in proc.stderr


def _git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                          check=True).stdout


def test_approve_a_local_repository_and_clone_it_from_a_homepod_on_port_80(
    site: Site, tmp_path: Path
) -> None:
    """The admin's way under `mlab up` (docs/local.md): a bare repository under
    $MLAB_STATE_DIR/<site>/upstreams is file:///srv/mlab/upstreams/... in the code service;
    alice clones it in her HomePod with the URL users type (port 80, no port given)."""
    import base64

    shown = json.loads(site.mlab("passwords", "-o", "json").stdout)
    pw = {row["role"] + ":" + row["user"]: row["password"] for row in shown}
    work = tmp_path / "up"
    work.mkdir()
    _git("init", "-q", "-b", "main", cwd=work)
    (work / "README").write_text("t4up\n")
    _git("add", "README", cwd=work)
    _git("-c", "user.name=T", "-c", "user.email=t@example.org", "commit", "-q", "-m",
         "t4up first", cwd=work)
    upstreams = site.root / "state" / SITE / "upstreams"
    assert upstreams.is_dir(), "mlab up makes the upstreams directory"
    _git("clone", "-q", "--bare", str(work), str(upstreams / "up.git"))
    env = {"MLAB_USER": "admin", "MLAB_PASSWORD": pw["code-service admin:admin"]}
    server = f"http://{BIND}:80"
    site.env.update(env)
    try:
        # A path that is not in the code service: a permanent failure, git's own words.
        bad = site.mlab("repo", "approve", "file:///tmp/nu/up", "--as", "demo/bad",
                        "--server", server, check=False)
        assert bad.returncode == 1, bad.stderr
        errors = [ln for ln in bad.stderr.splitlines() if ln.startswith("mlab: error:")]
        assert len(errors) == 1, bad.stderr
        assert "'/tmp/nu/up' does not appear to be a git repository" in errors[0]
        assert "(HTTP 422)" in errors[0] and "and the repository exists" not in errors[0]
        site.mlab("repo", "approve", "file:///srv/mlab/upstreams/up.git", "--as", "demo/up",
                  "--server", server)
    finally:
        for key in env:
            site.env.pop(key)
    # The index page shows the URL users type.
    import urllib.request

    req = urllib.request.Request(server + "/", headers={"Authorization": "Basic " + (
        base64.b64encode(b"admin:" + pw["code-service admin:admin"].encode()).decode())})
    with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - our loopback
        assert "git clone http://code.mlab.local/demo/up" in resp.read().decode()
    alice = f"mlab-{SITE}-homepod-alice-homepod"
    auth = base64.b64encode(f"alice:{pw['homepod:alice']}".encode()).decode()
    podman(["exec", "-u", "alice", "-e", "GIT_CONFIG_COUNT=1",
            "-e", "GIT_CONFIG_KEY_0=http.extraHeader",
            "-e", f"GIT_CONFIG_VALUE_0=Authorization: Basic {auth}",
            alice, "git", "clone", "-q", "http://code.mlab.local/demo/up", "/tmp/t4up-clone"])
    log = podman(["exec", "-u", "alice", alice, "git", "-C", "/tmp/t4up-clone", "log",
                  "--format=%s"]).stdout
    assert log == "t4up first\n"


def test_second_up_changes_nothing(site: Site) -> None:
    before_ids, before_objects = container_ids(), ours(listings(), SITE)
    nft_before = subprocess.run(["nft", "list", "table", "inet", f"mlab_{SITE}"],
                                capture_output=True, text=True, check=True).stdout
    out = site.mlab("up").stderr
    assert "0 started, 0 replaced, 0 removed, 4 unchanged" in out
    assert container_ids() == before_ids
    assert ours(listings(), SITE) == before_objects
    nft_after = subprocess.run(["nft", "list", "table", "inet", f"mlab_{SITE}"],
                               capture_output=True, text=True, check=True).stdout
    assert nft_after == nft_before


def test_without_the_firewall_verify_fails_and_up_restores_it(site: Site) -> None:
    """The gateway leak of internal networks is real: with MLab's inet table gone, a HomePod
    reaches a host service on 0.0.0.0, and `mlab verify` exits 1 naming that edge."""
    subprocess.run(["nft", "delete", "table", "inet", f"mlab_{SITE}"], check=True)
    proc = site.mlab("verify", "-o", "json", check=False)
    assert proc.returncode == 1
    assert "a probe found a leak; report it to the site's admin" in proc.stderr  # SECURITY.md
    bad = {(r["source"], r["target"].split(" 10.")[0]) for r in json.loads(proc.stdout)
           if not r["ok"]}
    assert ("homepod-alice", "host service on 0.0.0.0 via gateway") in bad, bad
    out = site.mlab("up").stderr
    assert "4 unchanged" in out
    assert site.mlab("verify", check=False).returncode == 0


def test_adding_and_removing_a_user_touches_only_theirs(site: Site) -> None:
    before = container_ids()
    site.write(["alice", "bob", "carol"])
    out = site.mlab("up").stderr
    assert "1 started" in out, out
    after = container_ids()
    for name in ("homepod-alice", "homepod-bob", "airlock"):
        key = f"mlab-{SITE}-{name}-{name.split('-')[0]}"
        assert after[key] == before[key], f"{key} was restarted"
    assert f"mlab-{SITE}-homepod-carol-homepod" in after
    # The code service learns the new user (new site file): it is the only other restart.
    proc = site.mlab("verify", "-o", "json", check=False)
    bad = [r for r in json.loads(proc.stdout) if not r["ok"]]
    assert not bad, json.dumps(bad, indent=1)
    assert any(r["source"] == "homepod-carol" for r in json.loads(proc.stdout))

    site.write(["alice", "bob"])
    out = site.mlab("up").stderr
    assert "1 removed" in out and "0 started" in out, out
    final = container_ids()
    assert f"mlab-{SITE}-homepod-carol-homepod" not in final
    for name in ("homepod-alice", "homepod-bob", "airlock"):
        key = f"mlab-{SITE}-{name}-{name.split('-')[0]}"
        assert final[key] == before[key]
    nets = _names(["network", "ls", "--format", "{{.Name}}"]).split()
    assert f"mlab-{SITE}-hp-carol" not in nets


def test_down_then_up_keeps_homes_and_share(site: Site) -> None:
    alice = f"mlab-{SITE}-homepod-alice-homepod"
    podman(["exec", alice, "sh", "-c", "echo mine > /home/alice/t4up-keep.txt"])
    site.mlab("down")
    assert not ours(listings(), SITE)["pods"]
    assert f"mlab_{SITE}" not in " ".join(listings()["nft"])
    assert ours(listings(), SITE)["volumes"], "down without --volumes must keep volumes"
    site.mlab("up")
    assert podman(["exec", alice, "cat", "/home/alice/t4up-keep.txt"]).stdout == "mine\n"
    assert podman(["exec", alice, "cat", "/opt/public/airlock/t4up-share.txt"]).stdout == "shared\n"


def test_down_volumes_leaves_nothing_behind(site: Site) -> None:
    before: dict[str, set[str]] = site.before  # type: ignore[attr-defined]
    assert not any(ours(before, SITE).values())
    site.mlab("down", "--volumes")
    after = listings()
    assert not any(ours(after, SITE).values()), ours(after, SITE)
    for kind in after:
        new = after[kind] - before[kind]
        assert not {n for n in new if SITE in n}, (kind, new)
    ruleset = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True,
                             check=True).stdout
    # Whole names only: another checkout's site may run at the same time (127.0.4.17, mlab_t4upx).
    assert not re.search(rf"\bmlab_{SITE}\b", ruleset), ruleset
    assert not re.search(rf"{re.escape(BIND)}(?![\d])", ruleset), ruleset
    # The homes are gone, so the passwords go too: the next `up` shows new ones.
    assert not (site.root / "state" / SITE / "passwords.json").exists()


# --- bad input: nothing half-started --------------------------------------------------------

def test_port_in_use_names_the_port_and_starts_nothing(
    homepod_image: str, tmp_path: Path
) -> None:
    s = Site(tmp_path, homepod_image, name="t4upb", bind="127.0.4.2")
    s.write(["dave"])
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.4.2", 12201))
        taken.listen(1)
        before = listings()
        proc = s.mlab("up", check=False)
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("mlab: error:")]
    assert len(lines) == 1 and "port 12201 on 127.0.4.2 is already in use" in lines[0], proc.stderr
    assert listings() == before or not any(ours(listings(), "t4upb").values())
    assert not any(ours(listings(), "t4upb").values())


def test_failure_half_way_rolls_back(
    homepod_image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pod that never gets ready (injected) makes `up` remove everything it created."""
    from mlab.errors import DeployError
    from mlab.image.site_image import image_ref
    from mlab.podman import engine as podman_engine
    from mlab.site import load_site

    s = Site(tmp_path, homepod_image, name="t4upb", bind="127.0.4.2")
    s.write(["dave"])
    monkeypatch.setenv("MLAB_STATE_DIR", str(tmp_path / "state"))

    def never_ready(*_a: Any, **_k: Any) -> None:
        raise DeployError("injected: not ready")

    monkeypatch.setattr(podman_engine, "wait_ready", never_ready)
    with pytest.raises(DeployError, match="injected"):
        podman_engine.up(load_site(s.file), image_of=image_ref)
    left = ours(listings(), "t4upb")
    assert not any(left.values()), left
