"""Idle culling end to end (docs/culling.md): a real HomePod pod under podman, with the
labels `mlab up` gives it, and `mlab cull --once` / `mlab wake` as a user runs them.

The site uses short limits (idle after 30 s, warning 10 s before, GPU pods after 24 s). The
tests run in file order on one pod: xdotool input keeps it alive; a CPU-busy process keeps it
alive; with a VNC client connected but no input the warning dialog appears (screenshot
through VNC) and the pod is stopped; its home survives `mlab wake`, which answers VNC again;
a fake `nvidia-smi` (the only stand-in: the GPU reading) makes the GPU rules apply.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_runner import Run, mlab_site

from mlab.podman.runner import podman

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

USER, UID, PASSWORD = "alice", 1001, "cull-pw-1"
VNCDO = str(Path(sys.executable).with_name("vncdo"))


class Pod:
    """The test site's one HomePod pod and the `mlab` runner for its site file."""

    def __init__(self, root: Path, site: str) -> None:
        self.site, self.root = site, root
        self.pod = f"mlab-{site}-homepod-{USER}"
        self.container = f"{self.pod}-homepod"
        self.volume = f"mlab_{site}_home-{USER}"
        self.file = root / "site.yaml"
        self.env = {"MLAB_STATE_DIR": str(root / "state")}

    def mlab(self, *args: str) -> Run:
        return mlab_site(self.file, *args, env=self.env, timeout=300)

    def cull(self) -> dict[str, Any]:
        rows = json.loads(self.mlab("cull", "--once", "-o", "json").stdout)
        assert [r["user"] for r in rows] == [USER], rows
        return rows[0]

    def exec(self, *argv: str, user: str | None = None, check: bool = True) -> str:
        args = ["exec", *(["-u", user] if user else []), self.container, *argv]
        return podman(args, check=check, timeout=120).stdout

    def sample(self) -> dict[str, Any]:
        return json.loads(self.exec("/usr/local/lib/mlab/activity"))

    def vnc_port(self, port: int = 5900) -> int:
        out = podman(["port", self.container, f"{port}/tcp"]).stdout.split()[0]
        return int(out.rsplit(":", 1)[1])

    def status(self) -> str:
        out = podman(["pod", "inspect", self.pod, "--format", "{{.State}}"]).stdout
        return out.strip()

    def audit(self) -> list[dict[str, Any]]:
        path = self.root / "state" / self.site / "cull-audit.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def move_mouse(self) -> None:
        self.exec("env", "DISPLAY=:1", "XAUTHORITY=/dev/null", "xdotool",
                  "mousemove_relative", "--", "7", "3", user=USER)


def rfb_banner(port: int, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(timeout)
            return s.recv(12).startswith(b"RFB ")
    except OSError:
        return False


@pytest.fixture(scope="module")
def hp(homepod_image: str, tmp_path_factory: pytest.TempPathFactory, e2e: Any) -> Iterator[Pod]:
    root = tmp_path_factory.mktemp("cull")
    site = e2e.unique_name("t16c")
    p = Pod(root, site)
    p.file.write_text(yaml.safe_dump({
        "apiVersion": "mlab.io/v1", "name": site,
        "users": [{"name": USER, "uid": UID}],
        "culling": {"idleAfter": "30s", "gpuIdleAfter": "24s", "warnBefore": "10s",
                    "cpuBusyPercent": 15, "gpuBusyPercent": 10},
    }))
    labels = ["--label", f"app.kubernetes.io/instance={site}",
              "--label", "app.kubernetes.io/component=homepod", "--label", f"mlab.io/user={USER}"]
    try:
        podman(["pod", "create", "--name", p.pod, *labels, "-p", "127.0.0.1::5900",
                "-p", "127.0.0.1::3389"])
        podman(["volume", "create", p.volume])
        podman(["create", "--pod", p.pod, "--name", p.container, "-e", f"MLAB_USER={USER}",
                "-e", f"MLAB_UID={UID}", "-e", f"MLAB_PASSWORD={PASSWORD}",
                "-v", f"{p.volume}:/home/{USER}", homepod_image])
        podman(["pod", "start", p.pod])
        e2e.wait_until_ready(e2e.Container(p.container), 180)
        p.exec("sh", "-c", f"echo kept > /home/{USER}/notes.txt", user=USER)
        yield p
    finally:
        for _ in range(3):  # a loaded machine can make one `pod rm` time out
            podman(["pod", "rm", "-f", "-t", "5", p.pod], check=False, timeout=300)
            if podman(["pod", "exists", p.pod], check=False).returncode != 0:
                break
        podman(["volume", "rm", "-f", p.volume], check=False)


def test_sampler_reads_the_desktop(hp: Pod) -> None:
    hp.move_mouse()
    s = hp.sample()
    assert [d["display"] for d in s["displays"]] == [":1"] and s["displays"][0]["user"] == USER
    assert s["input_idle_s"] is not None and s["input_idle_s"] < 10, s
    assert s["gpu"] is None and "gpu_error" not in s  # no nvidia-smi: not an error
    assert set(s["sessions"]) == {"vnc", "rdp", "ssh", "novnc"}


def test_xdotool_input_keeps_it_alive(hp: Pod) -> None:
    start = time.monotonic()
    while time.monotonic() - start < 40:  # longer than idleAfter
        hp.move_mouse()
        row = hp.cull()
        assert row["action"] == "keep", row
        assert row["idle_s"] < 20, row  # the input reached the X server: no warning due
        time.sleep(4)
    assert hp.status() == "Running"


def test_cpu_busy_process_keeps_it_alive(hp: Pod) -> None:
    pids = [hp.exec("sh", "-c", "setsid python3 -c 'while True: pass' </dev/null >/dev/null 2>&1 & echo $!",
                    user=USER).strip() for _ in range(2)]
    try:
        time.sleep(32)  # no input for longer than idleAfter
        for _ in range(3):
            row = hp.cull()
            assert row["action"] == "keep", row
            assert row["reason"].startswith("busy: CPU") and "python3" in row["reason"], row
            print(row["reason"])
            assert row["idle_s"] >= 30
            time.sleep(3)
    finally:
        hp.exec("kill", *pids, check=False)
    hp.move_mouse()
    assert hp.cull()["action"] == "keep"


class Xvfb:
    """A private X display for the RDP client."""

    def __init__(self) -> None:
        rfd, wfd = os.pipe()
        self.proc = subprocess.Popen(["Xvfb", "-displayfd", str(wfd), "-screen", "0",
                                      "1024x768x24", "-nolisten", "tcp"], pass_fds=(wfd,),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(wfd)
        with os.fdopen(rfd) as r:
            self.display = ":" + r.readline().strip()

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def test_idle_connected_rdp_client_is_seen_and_warned(hp: Pod) -> None:
    """An RDP client logged in and left alone: its xrdp display is sampled like the VNC
    one, the warning (dialog and notification) goes to it too, and input cancels it."""
    x = Xvfb()
    client = subprocess.Popen(
        ["xfreerdp", f"/v:127.0.0.1:{hp.vnc_port(3389)}", f"/u:{USER}", f"/p:{PASSWORD}",
         "/cert:ignore", "/size:1024x768", "/bpp:24", "-wallpaper"],
        env={**os.environ, "DISPLAY": x.display}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            s = hp.sample()
            rdp = [d for d in s["displays"] if d["display"] != ":1" and d["user"] == USER]
            if rdp and s["sessions"]["rdp"] >= 1:
                break
            assert client.poll() is None and time.monotonic() < deadline, s
            time.sleep(2)
        display = rdp[0]["display"]
        seen: list[str] = []
        while time.monotonic() < deadline + 120:
            row = hp.cull()
            seen.append(row["action"])
            if row["action"] == "warn":
                break
            time.sleep(2)
        assert seen[-1] == "warn", seen
        s = hp.sample()
        assert s["sessions"]["rdp"] >= 1 and client.poll() is None  # still connected
        assert {d["display"] for d in s["displays"]} >= {":1", display}
        time.sleep(1.5)
        for d in (":1", display):
            tree = hp.exec("env", f"DISPLAY={d}", f"XAUTHORITY=/home/{USER}/.Xauthority",
                           "xwininfo", "-root", "-tree", user=USER)
            assert "MLab: idle desktop" in tree, (d, tree[-2000:])
        hp.move_mouse()
        assert hp.cull()["action"] == "unwarn"
    finally:
        client.terminate()
        client.wait(timeout=10)
        x.close()


def test_warning_is_also_a_desktop_notification(hp: Pod) -> None:
    """notify-send on the desktop session's D-Bus (found in the session's environment);
    XFCE's notification daemon shows it; unwarn closes it."""
    out = json.loads(hp.exec("/usr/local/lib/mlab/activity", "warn", "60").strip())
    try:
        assert out["notified"] == out["warned"] >= 1, out
        assert "not_notified" not in out, out
        time.sleep(1.5)
        tree = hp.exec("env", "DISPLAY=:1", f"XAUTHORITY=/home/{USER}/.Xauthority", "xwininfo",
                       "-root", "-tree", user=USER)
        assert "xfce4-notifyd" in tree, tree[-3000:]
    finally:
        hp.exec("/usr/local/lib/mlab/activity", "unwarn")
    assert hp.exec("cat", "/run/mlab/idle-warning.notifications", check=False).strip() == ""


def test_idle_connected_vnc_client_is_warned_then_culled(hp: Pod, tmp_path: Path) -> None:
    from PIL import Image, ImageChops

    port = hp.vnc_port()
    before = tmp_path / "before.png"
    subprocess.run([VNCDO, "-s", f"127.0.0.1::{port}", "-p", PASSWORD, "capture", str(before)],
                   check=True, timeout=60, capture_output=True)
    # A VNC client that stays connected and sends nothing.
    viewer = subprocess.Popen([VNCDO, "-s", f"127.0.0.1::{port}", "-p", PASSWORD, "pause", "300"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        seen: list[str] = []
        start = time.monotonic()
        warned_shot = None
        while time.monotonic() - start < 120:
            row = hp.cull()
            seen.append(row["action"])
            if row["action"] == "warn":
                assert hp.sample()["sessions"]["vnc"] >= 1  # the viewer is connected
                time.sleep(1.5)
                tree = hp.exec("env", "DISPLAY=:1", "XAUTHORITY=/dev/null", "xwininfo", "-root",
                               "-tree")
                assert "MLab: idle desktop" in tree
                warned_shot = tmp_path / "warning.png"
                subprocess.run([VNCDO, "-s", f"127.0.0.1::{port}", "-p", PASSWORD, "capture",
                                str(warned_shot)], check=True, timeout=60, capture_output=True)
            if row["action"] == "cull":
                break
            time.sleep(2)
        assert "warn" in seen and seen[-1] == "cull", seen
        last_warn = len(seen) - 1 - seen[::-1].index("warn")
        assert "unwarn" not in seen[last_warn:], seen  # warned, then culled without a break
        # The screenshot shows the dialog: the middle of the screen changed.
        a, b = (Image.open(p).convert("L") for p in (before, warned_shot))
        w, h = a.size
        box = (w // 3, h // 3, 2 * w // 3, 2 * h // 3)
        diff = ImageChops.difference(a.crop(box), b.crop(box)).point(lambda v: 255 if v > 40 else 0)
        changed = diff.histogram()[255] / (diff.size[0] * diff.size[1])
        assert changed > 0.05, changed
        shots = os.environ.get("MLAB_CULL_SCREENSHOT")
        if shots:
            Image.open(warned_shot).save(shots)
    finally:
        viewer.terminate()
        viewer.wait(10)
    assert hp.status() == "Exited"
    events = hp.audit()
    assert events[-1]["event"] == "cull" and events[-1]["user"] == USER
    assert "idle: no input for" in events[-1]["reason"]
    assert podman(["volume", "exists", hp.volume], check=False).returncode == 0
    # Stopped pods are reported, not sampled.
    assert hp.cull()["action"] == "stopped"


def test_wake_keeps_the_home_and_answers_vnc(hp: Pod) -> None:
    start = time.monotonic()
    hp.mlab("wake", USER)
    port = hp.vnc_port()
    while not rfb_banner(port):
        assert time.monotonic() - start < 120, "no VNC after wake"
        time.sleep(0.2)
    print(f"woken HomePod answered VNC after {time.monotonic() - start:.1f} s")
    assert hp.status() == "Running"
    assert hp.exec("cat", f"/home/{USER}/notes.txt").strip() == "kept"
    events = hp.audit()
    assert events[-1]["event"] == "wake" and events[-1]["was_culled"] is True
    state = json.loads((hp.root / "state" / hp.site / "cull.json").read_text())
    assert USER not in state["culled"]


def test_gpu_reading_busy_and_shorter_limit(hp: Pod) -> None:
    """Only the GPU reading is a stand-in: a fake nvidia-smi on the HomePod's PATH."""
    fake = "#!/bin/sh\ncat /tmp/fake-gpu\n"
    hp.exec("sh", "-c", f"printf '%s' '{fake}' > /usr/local/bin/nvidia-smi && "
            "chmod 755 /usr/local/bin/nvidia-smi && echo '87, 20480' > /tmp/fake-gpu")
    from mlab.cull.local import homepods  # the pod is found by its labels

    assert USER in homepods(hp.site)
    # The desktop that the wake test just restarted is CPU-busy for a while on a loaded
    # machine, and a CPU reason comes before a GPU one: wait until only the GPU is busy.
    deadline = time.monotonic() + 120
    def cpu_busy(sample: dict[str, Any]) -> bool:
        top = sample.get("cpu_top") or {}
        return sample["cpu_percent"] >= 15 or float(top.get("percent") or 0) >= 80

    while cpu_busy(hp.sample()) and time.monotonic() < deadline:
        time.sleep(2)
    s = hp.sample()
    assert s["gpu"] == {"count": 1, "util_percent": 87.0,
                        "devices": [{"util_percent": 87.0, "memory_mib": 20480.0}]}
    row = hp.cull()
    assert row["action"] in ("keep", "unwarn") and row["reason"].startswith("busy: GPU 87"), row
    hp.exec("sh", "-c", "echo '0, 100' > /tmp/fake-gpu")
    row = hp.cull()
    assert "(limit 24s)" in row["reason"], row  # gpuIdleAfter, not idleAfter
    hp.exec("sh", "-c", "echo 'NVIDIA-SMI has failed' > /tmp/fake-gpu")
    s = hp.sample()
    assert s["gpu"] is None and "unexpected output" in s["gpu_error"]
