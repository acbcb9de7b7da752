"""Access clients the end-to-end tests drive, on podman and on the Kubernetes node alike.

- :func:`vnc_capture`: ``vncdo capture`` (vncdotool) with a VNC password;
- :class:`DevTools` and :func:`novnc_screenshot`: Debian's headless Chromium on noVNC's
  page, driven over the DevTools protocol;
- :class:`Xvfb` and :func:`rdp_session`: ``xfreerdp`` under a private Xvfb display, the
  screen read with ``xwd`` (``xfreerdp /auth-only`` passes a wrong password with xrdp);
- :func:`looks_like_desktop`: whether a screenshot shows the XFCE desktop;
- :func:`shell_session`: commands typed into an interactive SSH shell (paramiko), as a
  user does on a site in the reviewed posture (SSH gives a shell only, docs/egress.md).

Every client takes the host and port it connects to (127.0.0.1 and a published port under
podman; a Service's address and port on the node). Nothing runs at import time.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

VNCDO = str(Path(sys.executable).with_name("vncdo"))
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--remote-allow-origins=*", "--window-size=1280,800",
]

def vnc_capture(host: str, port: int, password: str, out: Path, timeout: float = 30
                ) -> subprocess.CompletedProcess[str]:
    """``vncdo capture`` of ``host:port`` (VncAuth with ``password``) into ``out`` (PNG)."""
    return subprocess.run([VNCDO, "-s", f"{host}::{port}", "-p", password, "capture", str(out)],
                          capture_output=True, text=True, timeout=timeout, check=False)



class DevTools:
    """Headless Chromium with a fresh profile, driven over the DevTools protocol (websocket
    JSON-RPC): the tab that shows ``url``. The portal tests' ``Browser`` is this class."""

    def __init__(self, tmp: Path, url: str = "about:blank", ws_timeout: float = 30,
                 extra_flags: tuple[str, ...] = (), ca: Path | None = None) -> None:
        import websocket

        self.profile = tempfile.mkdtemp(prefix="chromium-", dir=tmp)
        self.log = Path(self.profile + ".log")
        env = dict(os.environ)
        if ca is not None:  # trusted as a user who imported it would (see trust_in_nss)
            env["HOME"] = trust_in_nss(ca, Path(self.profile) / "home")
        with open(self.log, "w") as err:
            self.proc = subprocess.Popen(
                ["chromium", *CHROMIUM_FLAGS, *extra_flags, f"--user-data-dir={self.profile}",
                 "--remote-debugging-port=0", url],
                stdout=subprocess.DEVNULL, stderr=err, env=env)
        deadline = time.monotonic() + 30
        port = None
        while port is None:
            m = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", self.log.read_text())
            if m:
                port = int(m.group(1))
            elif time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"chromium did not start: {self.log.read_text()[-500:]}")
            else:
                time.sleep(0.1)
        # The tab that shows ``url`` (not a new-tab page or a worker).
        pages: list[dict[str, Any]] = []
        while not pages:
            pages = [t for t in httpx.get(f"http://127.0.0.1:{port}/json/list").json()
                     if t["type"] == "page" and t["url"].startswith(url.split("?")[0])]
            if not pages and time.monotonic() > deadline:
                raise RuntimeError(f"chromium has no tab with {url}")
            time.sleep(0.1)
        self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"],
                                              timeout=ws_timeout, suppress_origin=True)
        self.next_id = 0

    def call(self, method: str, **params: object) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]  # type: ignore[no-any-return]

    def evaluate(self, expression: str) -> Any:
        """The value of ``expression`` in the page (a promise is awaited)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        return result["result"].get("value")

    def goto(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def wait_for(self, expression: str, timeout: float = 30, poll: float = 0.05) -> Any:
        """Poll ``expression`` every ``poll`` s until it is truthy; return its value.

        Raises:
            TimeoutError: still falsy after ``timeout`` s (the message has the page's URL).
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(expression)
            except RuntimeError:
                value = None  # navigating: no execution context for a moment
            if value:
                return value
            time.sleep(poll)
        where = self.evaluate("location.href + ' ' + document.title")
        raise TimeoutError(f"{expression!r} still false after {timeout} s at {where}")

    def screenshot(self, out: Path) -> None:
        shot = self.call("Page.captureScreenshot", format="png")
        out.write_bytes(base64.b64decode(shot["data"]))

    def cookies(self) -> list[dict[str, Any]]:
        return self.call("Network.getAllCookies")["cookies"]  # type: ignore[no-any-return]

    def close(self) -> None:
        self.ws.close()
        self.proc.terminate()
        self.proc.wait(timeout=10)
        shutil.rmtree(self.profile, ignore_errors=True)


NOVNC_STATE = ("JSON.stringify({ready: document.readyState, cls: document.documentElement.className,"
               " status: (document.getElementById('noVNC_status') || {}).textContent,"
               " loaded: performance.getEntriesByType('resource').length})")


def trust_in_nss(ca: Path, home: Path) -> str:
    """A fresh HOME whose NSS database (``~/.pki/nssdb``, what Chromium on Linux reads)
    trusts ``ca`` as an authority for web sites, as a user importing it would; returns it.
    Uses NSS's own ``certutil`` (libnss3-tools)."""
    db = home / ".pki" / "nssdb"
    db.mkdir(parents=True)
    subprocess.run(["certutil", "-d", f"sql:{db}", "-N", "--empty-password"], check=True,
                   capture_output=True, timeout=60)
    subprocess.run(["certutil", "-d", f"sql:{db}", "-A", "-t", "C,,", "-n", "mlab-site-ca",
                    "-i", str(ca)], check=True, capture_output=True, timeout=60)
    return str(home)


def novnc_screenshot(url: str, out: Path, tmp: Path, ca: Path | None = None) -> bool:
    """Open ``url`` and, once noVNC reports a connection, save a screenshot; return whether
    it connected (else print noVNC's state). ``ca``: trust this authority (an HTTPS page).

    Under heavy load headless Chromium sometimes leaves noVNC's page in its loading state
    (``noVNC_loading``, no connection attempted); like a user, reload it (twice at most).
    """
    browser = DevTools(tmp, url, ca=ca)
    try:
        connected = False
        for attempt in range(3):
            if attempt:
                print(f"noVNC attempt {attempt} stalled: {browser.evaluate(NOVNC_STATE)}; reloading")
                browser.call("Page.reload", ignoreCache=True)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not connected:
                connected = bool(browser.evaluate(
                    "document.documentElement.classList.contains('noVNC_connected')"))
                time.sleep(0.3)
            if connected:
                break
        if not connected:
            print("noVNC state:", browser.evaluate(NOVNC_STATE))
            print("chromium:", browser.log.read_text()[-1500:])
        time.sleep(1.5)  # the first framebuffer update after the connection
        browser.screenshot(out)
        return connected
    finally:
        browser.close()



class Xvfb:
    """A private X display for the RDP client."""

    def __init__(self, tmp: Path) -> None:
        rfd, wfd = os.pipe()
        self.proc = subprocess.Popen(["Xvfb", "-displayfd", str(wfd), "-screen", "0", "1280x800x24",
                                      "-nolisten", "tcp"], pass_fds=(wfd,),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(wfd)
        with os.fdopen(rfd) as r:
            self.display = ":" + r.readline().strip()

    def screenshot(self, out: Path) -> None:
        xwd = subprocess.run(["xwd", "-root", "-silent", "-display", self.display],
                             capture_output=True, check=True, timeout=30).stdout
        from PIL import Image

        try:
            Image.open(io.BytesIO(xwd)).save(out)
        except Exception:  # Pillow without an XWD reader: use ImageMagick.
            subprocess.run(["convert", "xwd:-", str(out)], input=xwd, check=True, timeout=30)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def rdp_session(host: str, port: int, user: str, password: str, tmp: Path,
                wait: float = 40, extra: list[str] | None = None,
                log: Path | None = None) -> tuple[bool, Path]:
    """Log in to ``host:port`` with xfreerdp under Xvfb; poll screenshots until the desktop
    shows (or ``wait`` seconds pass). Returns (desktop seen, last screenshot).

    ``extra``: more xfreerdp arguments (``/sec:tls``, ``/drive:...``); ``log``: a file that
    gets the client's output (its ``/log-level`` messages)."""
    x = Xvfb(tmp)
    out = tmp / f"rdp-{password[:4]}.png"
    sink = open(log, "w") if log else None  # noqa: SIM115 - closed below
    client = subprocess.Popen(
        ["xfreerdp", f"/v:{host}:{port}", f"/u:{user}", f"/p:{password}", "/cert:ignore",
         "/size:1280x800", "/bpp:24", "-wallpaper", *(extra or [])],
        env={**os.environ, "DISPLAY": x.display},
        stdout=sink or subprocess.DEVNULL, stderr=subprocess.STDOUT if sink else subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            time.sleep(2)
            x.screenshot(out)
            if looks_like_desktop(out):
                return True, out
        return False, out
    finally:
        client.terminate()
        client.wait(timeout=10)
        x.close()
        if sink:
            sink.close()


def looks_like_desktop(png: str | Path) -> bool:
    """True when a screenshot shows the XFCE desktop: a light panel along the top and a
    non-black wallpaper colour covering much of the screen, with many colours in all
    (false for a black screen, noVNC's own page, or xrdp's login dialog)."""
    from PIL import Image, ImageStat

    with Image.open(png) as raw:
        img = raw.convert("RGB")
    w, h = img.size
    colors = img.getcolors(maxcolors=w * h) or []
    count, dominant = max(colors)
    panel = ImageStat.Stat(img.crop((0, 0, w, 20))).mean
    return (
        len(colors) > 50
        and count / (w * h) > 0.4
        and sum(dominant) > 30
        and sum(panel) / 3 > 150
    )


def shell_session(host: str, port: int, user: str, password: str, command: str,
                  connect_wait: float = 90, timeout: float = 60) -> str:
    """Type ``command`` into an interactive SSH shell; return what it printed.

    The command runs between two marker lines (the output between them is returned, escape
    sequences and carriage returns removed); the shell exits after it. ``connect_wait``
    seconds of retries cover a server that is still starting; ``timeout`` bounds each read.
    """
    import paramiko

    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # noqa: S507 - test pod
    deadline = time.monotonic() + connect_wait
    while True:
        try:
            client.connect(host, port=port, username=user, password=password, timeout=10,
                           allow_agent=False, look_for_keys=False)
            break
        except (OSError, paramiko.SSHException):
            if time.monotonic() > deadline:
                raise
            time.sleep(2)
    try:
        chan = client.invoke_shell(width=400)
        chan.settimeout(timeout)
        chan.sendall(f"printf '%s\\n' MLAB-B''EGIN; {command}; printf '%s\\n' MLAB-E''ND; exit\n"
                     .encode())
        data = b""
        while True:
            chunk = chan.recv(65536)
            if not chunk:
                break
            data += chunk
        # bash's bracketed paste and a pager's keypad mode (ESC = / ESC >) are no output.
        text = re.sub(r"\x1b(\[[0-9;?]*[A-Za-z]|[=>])", "", data.decode(errors="replace"))
        lines = [ln.strip() for ln in text.replace("\r", "").split("\n")]
        return "\n".join(lines[lines.index("MLAB-BEGIN") + 1:lines.index("MLAB-END")])
    finally:
        client.close()
