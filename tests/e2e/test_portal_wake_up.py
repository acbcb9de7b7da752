""""Open desktop" wakes a culled HomePod through the portal pod that `mlab up` runs
(docs/culling.md, "Waking from the portal of `mlab up`"): that pod has no podman; it writes
a wake request into the spool and the host's `mlab cull` takes it.

A site brought up by `mlab up` (alice and bob, no Airlock, the portal with its password form
as the only door to the desktops), both HomePods stopped by the culler's own stop. In
headless Chromium, signed in as alice:

1. with no `mlab cull` running, "Open desktop" ends on one clear line saying the host side
   is not running (no endless waiting page), and nothing starts;
2. with `mlab cull` running on the host, "Open desktop" shows the waiting page and then her
   XFCE desktop through noVNC (her VNC server answers); her home survived; the culler's
   audit has the request (``wake-request``, ``woken``) and the ``wake`` (``via: portal``);
3. alice's session asking for bob's desktop is refused, no request for bob reaches the
   host, and bob's HomePod stays stopped.

Own site ``t16wk`` on its own bind address and MLAB_STATE_DIR; ``mlab down --volumes`` at
the end. Run it under ``flock /tmp/mlab-e2e-test_portal_wake_up.lock``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_runner import Run, mlab_site
from portal_harness import Browser, sign_in_password, wait_novnc

from mlab.podman.runner import podman

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]

SITE = "t16wk"
BIND = "127.0.16.3"
PORTAL_PORT = 18463
USERS = {"alice": (1001, 16000), "bob": (1002, 16010)}


class UpSite:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.file = root / f"{SITE}.yaml"
        self.state = root / "state"
        self.env = {**os.environ, "MLAB_STATE_DIR": str(self.state), "COLUMNS": "250"}
        self.url = f"http://{BIND}:{PORTAL_PORT}"
        self.culler: subprocess.Popen[str] | None = None
        self.culler_out: Any = None

    def mlab(self, *args: str, check: bool = True) -> Run:
        return mlab_site(self.file, *args, env=self.env, timeout=900, check=check)

    def pod_state(self, user: str) -> str:
        return podman(["pod", "inspect", f"mlab-{SITE}-homepod-{user}", "--format",
                       "{{.State}}"]).stdout.strip()

    def cull_audit(self) -> list[dict[str, Any]]:
        path = self.state / SITE / "cull-audit.jsonl"
        return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []

    def portal_audit(self) -> list[dict[str, Any]]:
        logs = podman(["logs", f"mlab-{SITE}-portal-portal"], check=False)
        out = []
        for line in (logs.stdout + logs.stderr).splitlines():
            start = line.find('{"')
            if start >= 0:
                try:
                    out.append(json.loads(line[start:]))
                except ValueError:
                    pass
        return out

    def start_culler(self) -> None:
        self.culler_out = (self.root / "cull.out").open("w")
        self.culler = subprocess.Popen(
            [sys.executable, "-m", "mlab.cli.main", "cull", "--site", str(self.file)],
            env=self.env, stdout=self.culler_out, stderr=subprocess.STDOUT, text=True)
        alive = self.state / SITE / "podman" / "wake" / "host" / "alive"
        deadline = time.monotonic() + 120
        while not (alive.exists() and time.time() - alive.stat().st_mtime < 5):
            assert self.culler.poll() is None, (self.root / "cull.out").read_text()[-2000:]
            assert time.monotonic() < deadline, "mlab cull did not start taking requests"
            time.sleep(0.5)

    def stop_culler(self) -> None:
        if self.culler is not None and self.culler.poll() is None:
            self.culler.send_signal(signal.SIGINT)
            try:
                self.culler.wait(30)
            except subprocess.TimeoutExpired:
                self.culler.kill()
                self.culler.wait(30)
        if self.culler_out is not None:
            self.culler_out.close()


@pytest.fixture(scope="module")
def site(homepod_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpSite]:
    s = UpSite(tmp_path_factory.mktemp(SITE))
    # A tag of our own: other checkouts prune localhost/mlab/homepod:<hash> tags.
    tag = homepod_image.rsplit(":", 1)[1]
    own = f"localhost/mlab/{SITE}:{tag}"
    podman(["tag", homepod_image, own])
    s.file.write_text(yaml.safe_dump({
        "apiVersion": "mlab.io/v1", "name": SITE,
        "image": {"repository": f"localhost/mlab/{SITE}", "tag": tag, "pullPolicy": "Never"},
        "access": {"bindAddress": BIND, "officeCIDRs": ["127.0.0.0/8"],
                   "ports": {"portal": PORTAL_PORT}},
        "users": [{"name": name, "uid": uid, "service": {"ports": {
            "vnc": base, "rdp": base + 1, "novnc": base + 2, "ssh": base + 3}}}
            for name, (uid, base) in USERS.items()],
        "airlock": {"enabled": False},
        # The culler runs during the test only to take wake requests: it must not cull.
        "culling": {"idleAfter": "4h", "interval": "10m"},
        "portal": {"enabled": True, "url": s.url, "directDesktopPorts": False},
    }))
    s.mlab("down", "--volumes", check=False)  # leftovers of an interrupted run
    try:
        s.mlab("up")
        rows = json.loads(s.mlab("passwords", "-o", "json").stdout)
        s.passwords = {r["user"]: r["password"] for r in rows}  # type: ignore[attr-defined]
        podman(["exec", "-u", "alice", f"mlab-{SITE}-homepod-alice-homepod", "sh", "-c",
                "echo kept > /home/alice/notes.txt"])
        _cull(s, "alice", "bob")
        yield s
    finally:
        s.stop_culler()
        print((s.root / "cull.out").read_text()[-3000:] if (s.root / "cull.out").exists()
              else "(no culler output)")
        s.mlab("down", "--volumes", check=False)
        podman(["untag", own, own], check=False)


def _cull(s: UpSite, *users: str) -> None:
    """Stop the HomePods with the culler's own stop (what `mlab cull` does when idle)."""
    old = os.environ.get("MLAB_STATE_DIR")
    os.environ["MLAB_STATE_DIR"] = str(s.state)
    try:
        from mlab.cull import local
        from mlab.site import load_site

        loaded = load_site(s.file)
        pods = local.homepods(SITE)
        for user in users:
            with local.state_lock(SITE):
                state = local.load_state(SITE)
                local.stop(loaded, pods[user], "idle: no input for 4h (limit 4h)",
                           {"sessions": {}, "cpu_percent": 0.0}, False, state)
                local.save_state(SITE, state)
    finally:
        if old is None:
            os.environ.pop("MLAB_STATE_DIR", None)
        else:
            os.environ["MLAB_STATE_DIR"] = old
    for user in users:
        assert s.pod_state(user) != "Running"


def test_open_desktop_says_so_when_the_host_side_is_not_running(site: UpSite,
                                                               tmp_path: Path) -> None:
    browser = Browser(tmp_path)
    try:
        sign_in_password(browser, site.url, "alice", site.passwords["alice"])  # type: ignore[attr-defined]
        browser.evaluate("document.getElementById('open').click()")
        line = browser.wait_for("document.getElementById('wake-error') && "
                                "document.getElementById('wake-error').textContent", timeout=60)
    finally:
        browser.close()
    assert "`mlab cull --site SITE.yaml` is not running" in line, line
    assert "mlab wake alice" in line and "\n" not in line, line
    assert site.pod_state("alice") != "Running"
    assert not [r for r in site.cull_audit() if r["event"] in ("wake", "wake-request")]


def test_open_desktop_wakes_through_the_host_and_not_another_users(site: UpSite, e2e: Any,
                                                                   tmp_path: Path) -> None:
    site.start_culler()
    browser = Browser(tmp_path)
    try:
        sign_in_password(browser, site.url, "alice", site.passwords["alice"])  # type: ignore[attr-defined]
        assert browser.evaluate("document.getElementById('state').textContent") == \
            "stopped (Open desktop starts it)"
        start = time.monotonic()
        browser.evaluate("document.getElementById('open').click()")
        browser.wait_for("document.getElementById('waking') !== null", timeout=30)
        browser.wait_for("location.pathname.endsWith('vnc.html')", timeout=180)
        wait_novnc(browser, 90)  # noVNC connected: alice's VNC server answered
        woke = time.monotonic() - start
        print(f"Open desktop (portal of mlab up) on a culled HomePod -> noVNC connected: "
              f"{woke:.1f} s")
        time.sleep(2)  # the first full framebuffer update
        shot = tmp_path / "woken.png"
        browser.screenshot(shot)
        assert e2e.looks_like_desktop(shot), f"no desktop in {shot}"

        # alice's session cannot wake bob: refused by the portal, nothing reaches the host.
        browser.goto(f"{site.url}/desktop/bob")
        text = browser.wait_for("document.body && document.body.innerText", timeout=30)
        assert "This is not your desktop" in text, text
    finally:
        browser.close()
    time.sleep(3)  # more than POLL_S: a request for bob would have been taken by now
    assert site.pod_state("alice") == "Running"
    assert site.pod_state("bob") != "Running"
    home = podman(["exec", f"mlab-{SITE}-homepod-alice-homepod", "cat",
                   "/home/alice/notes.txt"]).stdout
    assert home.strip() == "kept"
    audit = site.cull_audit()
    requests = [(r["user"], r["state"]) for r in audit if r["event"] == "wake-request"]
    assert requests == [("alice", "woken")], audit
    wakes = [r for r in audit if r["event"] == "wake"]
    assert [(r["user"], r["via"], r["was_culled"]) for r in wakes] == [("alice", "portal", True)]
    assert not list((site.state / SITE / "podman" / "wake" / "requests").iterdir())
    events = [(r.get("event"), r.get("user"), r.get("desktop")) for r in site.portal_audit()]
    assert ("desktop-wake", "alice", None) in events, events
    assert ("desktop-denied", "alice", "bob") in events, events
    assert not [e for e in events if e[0] == "desktop-wake" and e[1] == "bob"]
