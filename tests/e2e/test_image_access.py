"""The HomePod image end to end: one container for user alice (password from a mounted
file, an SSH key from the environment, the airlock share mounted read-only), reached on
127.0.0.1 through VNC (vncdotool), the browser (headless Chromium on noVNC), RDP (xfreerdp
under Xvfb) and SSH/SFTP (paramiko). One container is shared by the module to keep the
image tests within their time budget; the test that kills the VNC server runs last.

Set MLAB_UPDATE_SCREENSHOTS=1 to copy the screenshots to docs/ (docs/image.md).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import paramiko
import pytest
from access_clients import VNCDO, novnc_screenshot, rdp_session, vnc_capture

from mlab.podman.runner import podman

pytestmark = pytest.mark.e2e

PREFIX = "mlabtest-img-"
PASSWORD = "Alice-Passw0rd-42"
DOCS = Path(__file__).resolve().parents[2] / "docs"


def keep_screenshot(src: Path, name: str) -> None:
    """Copy a screenshot to docs/ when MLAB_UPDATE_SCREENSHOTS=1."""
    if os.environ.get("MLAB_UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(src, DOCS / name)


def tiny_wheel(directory: Path) -> Path:
    """Write ``mlabdemo-1.0-py3-none-any.whl`` (one module) into ``directory``."""
    path = directory / "mlabdemo-1.0-py3-none-any.whl"
    dist = "mlabdemo-1.0.dist-info"
    files = {
        "mlabdemo.py": b"VALUE = 42\n",
        f"{dist}/METADATA": b"Metadata-Version: 2.1\nName: mlabdemo\nVersion: 1.0\n",
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr(f"{dist}/RECORD", "".join(f"{n},,\n" for n in files) + f"{dist}/RECORD,,\n")
    return path


@pytest.fixture(scope="module")
def ssh_key() -> paramiko.RSAKey:
    return paramiko.RSAKey.generate(2048)


@pytest.fixture(scope="module")
def pod(homepod_image: str, e2e, ssh_key, tmp_path_factory) -> Iterator:
    """A running HomePod for alice, ready (a window manager runs on the VNC display)."""
    tmp = tmp_path_factory.mktemp("pod")
    secret = tmp / "password"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    share = tmp / "share"
    (share / "pip-index" / "simple" / "mlabdemo").mkdir(parents=True)
    (share / "pip-index" / "files").mkdir()
    wheel = tiny_wheel(share / "pip-index" / "files")
    (share / "pip-index" / "simple" / "mlabdemo" / "index.html").write_text(
        f'<html><body><a href="../../files/{wheel.name}">{wheel.name}</a></body></html>\n')
    share.chmod(0o755)
    volume = e2e.unique_name(PREFIX + "home-")
    podman(["volume", "create", volume])
    c = None
    try:
        c = e2e.run_container(
            homepod_image, PREFIX,
            env={"MLAB_USER": "alice", "MLAB_UID": "1234", "MLAB_MODE": "homepod",
                 "MLAB_PASSWORD_FILE": "/etc/mlab/secret/password", "MLAB_CLIPBOARD": "both",
                 "TZ": "Asia/Shanghai", "LANG": "en_US.UTF-8", "MLAB_SUDO": "1",
                 "MLAB_SSH_KEYS": f"ssh-rsa {ssh_key.get_base64()} alice@test"},
            ports=(5900, 3389, 7030, 22),
            volumes=(f"{volume}:/home/alice", f"{secret}:/etc/mlab/secret/password:ro",
                     f"{share}:/opt/public/airlock:ro"),
        )
        e2e.wait_until_ready(c)
        for p in (5900, 3389, 7030, 22):
            e2e.wait_for_port(c.port(p))
        if os.environ.get("MLAB_UPDATE_SCREENSHOTS") == "1":
            # A terminal with CJK text for the documentation's pictures.
            c.exec("bash", "-c", "cd && DISPLAY=:1 setsid xfce4-terminal --geometry 80x16+260+160 "
                   "-x bash -c 'echo MLab HomePod: 你好，世界; python3 --version; exec bash' "
                   ">/dev/null 2>&1 &", user="alice")
            time.sleep(6)
        yield c
    finally:
        if c is not None:
            c.remove()
        podman(["volume", "rm", "-f", volume], check=False)


# --- image contents ----------------------------------------------------------------------

def test_image_has_services_tools_and_mlab(pod) -> None:
    for _ in range(50):  # supervisord calls a service RUNNING after its startsecs
        status = pod.exec("supervisorctl", "-c", "/etc/mlab/supervisord.conf", "status",
                          check=False).stdout
        if "STARTING" not in status:
            break
        time.sleep(0.2)
    for service in ("xvnc", "desktop", "novnc", "sshd", "xrdp", "xrdp-sesman"):
        assert re.search(rf"^{service}\s+RUNNING", status, re.M), status
    tools = pod.exec("bash", "-c", "for t in python3 pip3 gcc make git sudo curl wget ip "
                     "dpkg-scanpackages apt-ftparchive /usr/lib/openssh/sftp-server mlab; do "
                     "command -v $t >/dev/null || echo MISSING $t; done; "
                     "python3 -c 'import sysconfig; print(sysconfig.get_paths()[\"include\"])'")
    assert "MISSING" not in tools.stdout
    assert pod.exec("test", "-f", tools.stdout.split()[-1] + "/Python.h", check=False).returncode == 0
    assert "Usage: mlab" in pod.exec("mlab", "--help").stdout
    assert pod.exec("test", "-s", "/usr/share/mlab/pristine/status", check=False).returncode == 0
    assert "deb.debian.org" in pod.exec("cat", "/usr/share/mlab/pristine/sources.list").stdout
    # PID 1 is an init, so SIGTERM stops the container promptly.
    assert "tini" in pod.exec("cat", "/proc/1/cmdline").stdout
    assert "zh_CN.utf8" in pod.exec("locale", "-a").stdout
    assert pod.exec("readlink", "/etc/localtime").stdout.strip().endswith("Asia/Shanghai")


def test_password_not_in_clear_on_disk_or_in_logs(pod) -> None:
    assert PASSWORD not in pod.logs()
    shadow = pod.exec("getent", "shadow", "alice").stdout
    assert PASSWORD not in shadow and shadow.split(":")[1].startswith("$")
    env = pod.exec("bash", "-c", "cat /proc/$(pgrep -o supervisord)/environ | tr '\\0' '\\n'").stdout
    assert PASSWORD not in env


def test_homepod_pip_and_apt_point_only_at_the_airlock_share(pod) -> None:
    assert pod.exec("cat", "/etc/apt/sources.list").stdout.strip() == \
        "deb [trusted=yes] file:/opt/public/airlock/apt ./"
    assert pod.exec("ls", "/etc/apt/sources.list.d").stdout.strip() == ""
    assert "index-url = file:///opt/public/airlock/pip-index/simple" in pod.exec("cat", "/etc/pip.conf").stdout
    # Plain `pip install SPEC` works for the user: into the user's default environment
    # ~/.venv on the home volume, first on PATH in a login shell (docs/image.md "Python").
    out = pod.exec("su", "-", "alice", "-c", "pip install mlabdemo && python3 -c "
                   "'import mlabdemo; print(mlabdemo.VALUE, mlabdemo.__file__)'")
    assert "42 /home/alice/.venv/" in out.stdout


# --- VNC ---------------------------------------------------------------------------------

def test_vnc_shows_the_desktop(pod, e2e, tmp_path) -> None:
    out = tmp_path / "vnc.png"
    # On a loaded machine XFCE draws its panel some seconds after the window manager runs
    # (seen: wallpaper and icons, no panel yet): look again for up to 30 s.
    deadline = time.monotonic() + 30
    while True:
        proc = vnc_capture("127.0.0.1", pod.port(5900), PASSWORD, out)
        assert proc.returncode == 0, proc.stderr
        if e2e.looks_like_desktop(out) or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert e2e.looks_like_desktop(out)
    keep_screenshot(out, "screenshot-vnc.png")


def test_vnc_refuses_a_wrong_password_and_uses_its_first_8_characters(pod, tmp_path) -> None:
    bad = vnc_capture("127.0.0.1", pod.port(5900), "Wrong-Passw0rd-42", tmp_path / "bad.png")
    assert bad.returncode != 0 and not (tmp_path / "bad.png").exists()
    assert "Authentication failure" in bad.stderr
    # VncAuth (RFB 3.8 section 7.2.2) keys DES with 8 bytes: only the prefix counts.
    ok = vnc_capture("127.0.0.1", pod.port(5900), PASSWORD[:8] + "-anything", tmp_path / "ok.png")
    assert ok.returncode == 0, ok.stderr


# --- browser (noVNC) ---------------------------------------------------------------------

class PrefixProxy:
    """A reverse proxy on 127.0.0.1 that serves ``http://127.0.0.1:<target>/`` under
    ``/<prefix>/`` and strips the prefix (like an ingress rewrite rule), for HTTP and
    websocket upgrades. Plain requests are sent upstream with ``Connection: close`` so each
    connection carries one request whose path the proxy can rewrite."""

    def __init__(self, prefix: str, target: int) -> None:
        self.prefix = ("/" + prefix.strip("/")).encode()
        self.target = target
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(32)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _handle(self, client: socket.socket) -> None:
        try:
            with client:
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = client.recv(65536)
                    if not chunk:
                        return
                    head += chunk
                head, _, rest = head.partition(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                method, path, version = lines[0].split(b" ", 2)
                if not (path == self.prefix or path.startswith(self.prefix + b"/")):
                    client.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n"
                                   b"Connection: close\r\n\r\n")
                    return
                path = path[len(self.prefix):] or b"/"
                upgrade = any(h.lower().startswith(b"upgrade:") for h in lines[1:])
                headers = [h for h in lines[1:] if upgrade or not h.lower().startswith(b"connection:")]
                if not upgrade:
                    headers.append(b"Connection: close")
                with socket.create_connection(("127.0.0.1", self.target), timeout=30) as up:
                    up.settimeout(None)
                    up.sendall(b" ".join([method, path, version]) + b"\r\n"
                               + b"\r\n".join(headers) + b"\r\n\r\n" + rest)
                    t = threading.Thread(target=self._pump, args=(client, up), daemon=True)
                    t.start()
                    self._pump(up, client)
                    t.join(timeout=5)
        except Exception:  # noqa: BLE001 - a test proxy: a broken connection is the client's problem
            pass

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def test_browser_shows_the_desktop_through_novnc(pod, e2e, tmp_path) -> None:
    url = (f"http://127.0.0.1:{pod.port(7030)}/vnc.html?autoconnect=1&resize=scale"
           f"&password={PASSWORD}")
    out = tmp_path / "browser.png"
    if not novnc_screenshot(url, out, tmp_path):
        shutil.copyfile(out, "/tmp/img3/fail.png")
        print("\n".join(pod.logs().splitlines()[-40:]))
        pytest.fail("noVNC did not connect")
    assert e2e.looks_like_desktop(out)
    keep_screenshot(out, "screenshot-browser.png")


def test_browser_shows_the_desktop_behind_a_path_prefix(pod, e2e, tmp_path) -> None:
    proxy = PrefixProxy("homepods/alice", pod.port(7030))
    try:
        base = f"http://127.0.0.1:{proxy.port}"
        assert httpx.get(f"{base}/vnc.html", timeout=10).status_code == 404  # prefix needed
        url = (f"{base}/homepods/alice/vnc.html?autoconnect=1&resize=scale"
               f"&password={PASSWORD}&path=homepods/alice/websockify")
        out = tmp_path / "prefix.png"
        assert novnc_screenshot(url, out, tmp_path), "noVNC did not connect behind the prefix"
        assert e2e.looks_like_desktop(out)
    finally:
        proxy.close()


def test_novnc_page_is_served(pod) -> None:
    r = httpx.get(f"http://127.0.0.1:{pod.port(7030)}/vnc.html", timeout=10)
    assert r.status_code == 200 and "noVNC" in r.text


# --- RDP ---------------------------------------------------------------------------------

def test_rdp_gives_a_desktop_while_the_vnc_session_is_open(pod, e2e, tmp_path) -> None:
    viewer = subprocess.Popen([VNCDO, "-s", f"127.0.0.1::{pod.port(5900)}", "-p", PASSWORD,
                               "pause", "60"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1)
        assert viewer.poll() is None, "the VNC viewer did not stay connected"
        seen, shot = rdp_session("127.0.0.1", pod.port(3389), "alice", PASSWORD, tmp_path)
        assert seen, "no desktop over RDP"
        keep_screenshot(shot, "screenshot-rdp.png")
        assert viewer.poll() is None, "the VNC viewer lost its connection"
        # The session's channel sockets (clipboard) are reachable by xrdp: the directory
        # hands its group to them (chansrv removes its listening socket once connected).
        assert pod.exec("stat", "-c", "%G %A", "/run/xrdp/sockdir").stdout.split() == \
            ["xrdp", "drwxrwsrwt"]
        groups = pod.exec("bash", "-c", "stat -c %G /run/xrdp/sockdir/*").stdout.split()
        assert groups and set(groups) == {"xrdp"}
        assert "chansrv_connect: connect failed" not in pod.logs()
    finally:
        viewer.terminate()
        viewer.wait(timeout=10)


def test_rdp_refuses_a_wrong_password(pod, e2e, tmp_path) -> None:
    # xrdp answers a failed login with its login dialog ("login failed for user alice")
    # instead of a desktop; `xfreerdp /auth-only` cannot tell, the screen can.
    seen, shot = rdp_session("127.0.0.1", pod.port(3389), "alice", "Wrong-Passw0rd-42", tmp_path,
                             wait=12)
    assert not seen
    from PIL import Image

    with Image.open(shot) as img:
        assert len(img.convert("RGB").getcolors(1280 * 800) or []) > 2, "blank RDP screen"


# --- SSH and SFTP ------------------------------------------------------------------------

def ssh(port: int, user: str, **auth: object) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect("127.0.0.1", port=port, username=user, timeout=20, allow_agent=False,
                   look_for_keys=False, **auth)
    return client


def run(client: paramiko.SSHClient, command: str) -> str:
    _, stdout, _ = client.exec_command(command, timeout=30)
    return stdout.read().decode()


def test_ssh_password_and_key_login_and_sftp(pod, ssh_key, tmp_path) -> None:
    with ssh(pod.port(22), "alice", password=PASSWORD) as c:
        assert run(c, "id -un; pwd").split() == ["alice", "/home/alice"]
        assert run(c, "sudo -n id -u").strip() == "0"
    with ssh(pod.port(22), "alice", pkey=ssh_key) as c:
        local = tmp_path / "up.txt"
        local.write_text("hello from the office\n")
        sftp = c.open_sftp()
        sftp.put(str(local), "/home/alice/up.txt")
        sftp.get("/home/alice/up.txt", str(tmp_path / "down.txt"))
        assert (tmp_path / "down.txt").read_text() == "hello from the office\n"
        assert sftp.stat("/home/alice/up.txt").st_uid == 1234


def test_ssh_refuses_root_and_a_wrong_password(pod) -> None:
    for user, password in (("root", PASSWORD), ("alice", "Wrong-Passw0rd-42")):
        with pytest.raises(paramiko.AuthenticationException):
            ssh(pod.port(22), user, password=password).close()


def test_files_in_home_belong_to_alice(pod) -> None:
    # The desktop session has written its settings (~/.config/xfce4...) by now.
    assert pod.exec("test", "-d", "/home/alice/.config/xfce4", check=False).returncode == 0
    pod.exec("bash", "-c", "DISPLAY=:1 xfce4-terminal -x touch /home/alice/from-desktop.txt",
             user="alice")
    for _ in range(50):
        if pod.exec("test", "-e", "/home/alice/from-desktop.txt", check=False).returncode == 0:
            break
        time.sleep(0.2)
    foreign = pod.exec("find", "/home/alice", "-path", "/home/alice/.mlab/host-keys", "-prune",
                       "-o", "!", "-user", "alice", "-print").stdout.strip()
    assert foreign == ""
    assert pod.exec("stat", "-c", "%U", "/home/alice/from-desktop.txt").stdout.strip() == "alice"


# --- supervision (last: it restarts the VNC server) --------------------------------------

def test_supervisor_restarts_a_killed_vnc_server(pod, e2e, tmp_path) -> None:
    pod.exec("pkill", "-KILL", "-x", "Xtigervnc")
    start = time.monotonic()
    out = tmp_path / "again.png"
    while time.monotonic() - start < 30:
        if vnc_capture("127.0.0.1", pod.port(5900), PASSWORD, out, timeout=10).returncode == 0:
            break
        time.sleep(0.3)
    elapsed = time.monotonic() - start
    assert out.exists()
    assert elapsed < 10, f"VNC came back after {elapsed:.1f} s"
    e2e.wait_until_ready(pod, timeout=30)
