"""Benchmark the portal: its desktop proxy's throughput and the time from sign-in to a
visible desktop, each against a baseline measured in the same run.

Run: ``.venv/bin/python benchmarks/bench_portal.py [--seconds 8] [--rounds 3] [--json]``

Real parts: a HomePod container for alice (the local image), Keycloak with the portal's
realm, ``mlab portal serve``, headless Chromium.

- throughput: full-screen raw framebuffer updates (``FramebufferUpdateRequest`` with
  incremental=0, encoding Raw, so every frame is width x height x 4 bytes) pulled over a
  WebSocket for ``--seconds``, through the portal's proxy (session cookie, security None)
  and directly from the HomePod's websockify (VncAuth), alternated ``--rounds`` times;
  goal: the portal adds under 10 % (ratio of medians >= 0.90). On a shared machine
  wall-clock throughput mostly measures other load, so the relays' own CPU time per MB is
  reported too (the portal process against the HomePod's websockify process, both
  relaying TCP to WebSocket);
- sign-in to desktop: Chromium from the portal's sign-in button through Keycloak's login
  page to noVNC's connected state, against opening noVNC directly on the HomePod with the
  password in the URL (no sign-in); goal: under 5 s with the HomePod running. Timed for the
  first sign-in after Keycloak's start (cold: its first login page is slow), a second one
  (warm), each split into steps, and a bookmark of the desktop URL (sign-in straight to
  the desktop).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # access_clients, which portal_harness imports
sys.path.insert(0, str(ROOT / "tests" / "e2e"))  # before tests/: its conftest is the one meant
sys.path.insert(0, str(ROOT / "benchmarks"))

from conftest import run_container, wait_for_port, wait_until_ready  # noqa: E402
from portal_harness import (  # noqa: E402
    Browser,
    Keycloak,
    Person,
    Portal,
    free_port,
    open_desktop,
    realm_json,
    sign_in,
    wait_novnc,
)
from sampling import interleave, ratio  # noqa: E402

from mlab.image.build import ensure_image  # noqa: E402
from mlab.portal import rfb  # noqa: E402

PREFIX = "mlabtest-portal-bench-"


class WsStream:
    """Exact reads over a WebSocket client connection (RFB does not align with frames)."""

    def __init__(self, ws) -> None:  # type: ignore[no-untyped-def]
        self.ws = ws
        self.buf = bytearray()
        self.received = 0

    async def read(self, n: int) -> bytes:
        while len(self.buf) < n:
            data = self.ws.recv()
            self.received += len(data)
            self.buf.extend(data if isinstance(data, bytes) else data.encode("latin-1"))
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    async def write(self, data: bytes) -> None:
        self.ws.send(data)


async def _frames(stream: WsStream, password: str | None, seconds: float) -> tuple[int, int]:
    await rfb.client_handshake(stream.read, stream.write, password or "")
    await stream.write(b"\x01")  # ClientInit, shared
    width, height = struct.unpack(">HH", await stream.read(4))
    await stream.read(16)  # pixel format (32 bpp true colour in TigerVNC's default)
    (name_len,) = struct.unpack(">I", await stream.read(4))
    await stream.read(name_len)
    await stream.write(struct.pack(">BxHi", 2, 1, 0))  # SetEncodings: Raw only
    frames = 0
    start_bytes = stream.received
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await stream.write(struct.pack(">BBHHHH", 3, 0, 0, 0, width, height))
        msg_type, _, rects = struct.unpack(">BBH", await stream.read(4))
        assert msg_type == 0, f"unexpected server message {msg_type}"
        for _ in range(rects):
            _, _, w, h, enc = struct.unpack(">HHHHi", await stream.read(12))
            if enc == 0:
                await stream.read(w * h * 4)
        frames += 1
    return frames, stream.received - start_bytes


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of process ``pid`` so far (/proc/PID/stat, proc(5))."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def pull(url: str, seconds: float, password: str | None, cookie: str | None = None,
         origin: str | None = None,
         relay_pids: Callable[[], list[int]] = list) -> tuple[float, float, float, float]:
    """Frames per second, MB/s, the relay's CPU milliseconds per MB over ``url``, and the
    part of that spent in the kernel (system time).

    ``relay_pids`` gives the processes relaying the WebSocket (the portal, or the HomePod's
    websockify, which forks one child per connection); their CPU time per byte is what the
    proxy costs, whatever else runs on the machine (wall-clock throughput on a shared
    machine is mostly other people's load).
    """
    from websockets.sync.client import connect

    # Like a browser, offer permessage-deflate (Chromium always does; a server that accepts
    # it compresses every frame).
    headers = {"Cookie": cookie} if cookie else None
    with connect(url, subprotocols=["binary"], origin=origin, additional_headers=headers,
                 compression="deflate", max_size=None, open_timeout=30) as ws:
        return _measure(ws, seconds, password, relay_pids)


def _measure(ws, seconds: float, password: str | None,  # type: ignore[no-untyped-def]
             relay_pids: Callable[[], list[int]]) -> tuple[float, float, float, float]:
    pids = relay_pids()
    before = [cpu_seconds(p) for p in pids]
    start = time.monotonic()
    frames, nbytes = asyncio.run(_frames(WsStream(ws), password, seconds))
    took = time.monotonic() - start
    after = [cpu_seconds(p) for p in pids]
    user = sum(a[0] - b[0] for a, b in zip(after, before))
    system = sum(a[1] - b[1] for a, b in zip(after, before))
    mb = nbytes / 1e6
    return frames / took, mb / took, (user + system) * 1e3 / mb, system * 1e3 / mb


def websockify_pids(container: str) -> list[int]:
    """Host PIDs of the websockify processes in ``container`` (``podman top ... hpid``)."""
    from mlab.podman.runner import podman

    out = []
    for line in podman(["top", container, "hpid", "args"]).stdout.splitlines()[1:]:
        hpid, _, args = line.strip().partition(" ")
        if "websockify" in args:
            out.append(int(hpid))
    return out


class ContainerPortal:
    """``mlab portal serve`` in a container of its own from the HomePod image, on the host's
    network: as the portal runs under ``mlab up`` and on Kubernetes (its own pod). That
    matters for the comparison: on these machines every container sits in the cgroup
    ``cpu:/libpod_parent`` while host processes share the root one with everything else, so
    under load a host process and a container get different CPU shares (measured: a host
    portal using less CPU per byte than websockify still reached 0.68-0.71 of its frame rate)."""

    def __init__(self, image: str, tmp: Path, site_file: Path, port: int, users_dir: Path,
                 backends: dict[str, str], client_secret: str | None = None) -> None:
        from mlab.podman.runner import podman

        self._podman = podman
        volumes = [f"{site_file}:/etc/mlab/site.yaml:ro", f"{users_dir}:/etc/mlab/users:ro"]
        args = ["portal", "serve", "--site", "/etc/mlab/site.yaml", "--host", "127.0.0.1",
                "--port", str(port), "--users-dir", "/etc/mlab/users"]
        if client_secret is not None:
            secret = tmp / "client-secret"
            secret.write_text(client_secret + "\n")
            volumes.append(f"{secret}:/etc/mlab/portal/client-secret:ro")
            args += ["--client-secret-file", "/etc/mlab/portal/client-secret"]
        for user, address in backends.items():
            args += ["--backend", f"{user}={address}"]
        self.container = run_container(image, PREFIX + "portal-", volumes=volumes, args=args,
                                       extra=["--network", "host", "--entrypoint", '["mlab"]'],
                                       capabilities=())
        deadline = time.monotonic() + 60
        while "listening on" not in self.container.logs():
            if time.monotonic() > deadline:
                raise RuntimeError(f"portal did not start: {self.container.logs()[-2000:]}")
            time.sleep(0.2)

    def pids(self) -> list[int]:
        """Host PIDs of the portal's processes (``podman top ... hpid``)."""
        out = self._podman(["top", self.container.name, "hpid", "args"]).stdout
        return [int(line.split()[0]) for line in out.splitlines()[1:]
                if "portal" in line and "serve" in line]

    def stop(self) -> None:
        self.container.remove()


def _portal(image: str | None, tmp: Path, site: Path, port: int, vnc_port: int,
            client_secret: str | None = None) -> Portal | ContainerPortal:
    backends = {"alice": f"127.0.0.1:{vnc_port}"}
    if image is None:
        return Portal(tmp, site, port, tmp / "users", backends, client_secret)
    return ContainerPortal(image, tmp, site, port, tmp / "users", backends, client_secret)


def portal_pids(portal: Portal | ContainerPortal) -> list[int]:
    """The processes relaying for the portal (one: the uvicorn server)."""
    return portal.pids() if isinstance(portal, ContainerPortal) else [portal.proc.pid]


def start_password_portal(tmp: Path, url: str, port: int, vnc_port: int,
                          image: str | None = None) -> Portal | ContainerPortal:
    """The portal for a site without a provider (sign-in with alice's MLab password); in a
    container from ``image``, or a host process when None."""
    site = tmp / "site.yaml"
    site.write_text(json.dumps({
        "apiVersion": "mlab.io/v1", "name": "bench", "users": [{"name": "alice"}],
        "portal": {"enabled": True, "url": url}}))
    return _portal(image, tmp, site, port, vnc_port)


def password_cookie(url: str, user: str, password: str) -> str:
    """Sign in with the password form (CSRF token from the sign-in page); the session id."""
    import re

    import httpx

    # The cookie is Secure: http.cookiejar keeps it from http://localhost, so carry it by hand.
    with httpx.Client(base_url=url) as client:
        page = client.get("/")
        sid = page.cookies["mlab_portal"]
        csrf = re.search(r'name=csrf value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        r = client.post("/auth/password", data={"csrf": csrf, "username": user,
                                                "password": password},
                        headers={"Cookie": f"mlab_portal={sid}"})
        assert r.status_code == 303, r.text
        return str(r.cookies["mlab_portal"])


def start_sso_portal(tmp: Path, url: str, port: int, vnc_port: int, keycloak: Keycloak,
                     client_secret: str, image: str | None = None) -> Portal | ContainerPortal:
    """The portal for a site signing in through ``keycloak``."""
    site = tmp / "site.yaml"
    site.write_text(json.dumps({
        "apiVersion": "mlab.io/v1", "name": "bench", "users": [{"name": "alice"}],
        "portal": {"enabled": True, "url": url,
                   "oidc": {"issuer": keycloak.issuer, "clientId": "mlab-portal"}}}))
    return _portal(image, tmp, site, port, vnc_port, client_secret)


def sign_in_times(tmp: Path, url: str, novnc_port: int, vnc_password: str,
                  alice: Person) -> dict[str, object]:
    """Seconds from the portal's sign-in button to noVNC connected, split at the user's
    page, and the baseline (noVNC straight from the HomePod, password in the URL); plus
    the session cookie (``cookie``) for the throughput runs."""
    out: dict[str, object] = {}
    browser = Browser(tmp)
    try:
        start = time.monotonic()
        browser.goto(f"http://127.0.0.1:{novnc_port}/vnc.html?autoconnect=1&password={vnc_password}")
        wait_novnc(browser, 60)
        out["direct_novnc_s"] = round(time.monotonic() - start, 2)
    finally:
        browser.close()
    for label in ("cold", "warm"):  # the first sign-in after Keycloak's start, then another
        browser = Browser(tmp)
        marks: dict[str, float] = {}
        try:
            start = time.monotonic()
            sign_in(browser, url, alice.name, alice.password, marks)
            open_desktop(browser, timeout=60, marks=marks)
            out[f"{label}_sign_in_to_desktop_s"] = round(marks["connected"] - start, 2)
            steps, last = {}, start
            for step in ("portal_page", "login_form", "submitted", "signed_in", "novnc_page",
                         "connected"):
                steps[step] = round(marks[step] - last, 2)
                last = marks[step]
            out[f"{label}_steps_s"] = steps
            out["cookie"] = next(c["value"] for c in browser.cookies()
                                 if c["name"] == "mlab_portal")
        finally:
            browser.close()
    # A bookmark of the desktop: signed out, /desktop/alice goes through Keycloak's page
    # and straight back to the desktop (no user's page, no click).
    browser = Browser(tmp)
    try:
        start = time.monotonic()
        browser.goto(f"{url}/desktop/{alice.name}")
        browser.wait_for("document.getElementById('kc-form-login') !== null", timeout=60)
        form = time.monotonic()
        browser.evaluate(
            f"document.getElementById('username').value = {json.dumps(alice.name)};"
            f"document.getElementById('password').value = {json.dumps(alice.password)};"
            "document.getElementById('kc-login').click(); true")
        browser.wait_for("location.pathname.endsWith('vnc.html')", timeout=60)
        wait_novnc(browser, 60)
        out["bookmark_to_desktop_s"] = round(time.monotonic() - start, 2)
        out["bookmark_login_form_s"] = round(form - start, 2)
    finally:
        browser.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8, help="seconds per throughput run")
    parser.add_argument("--rounds", type=int, default=3, help="alternated runs per path")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--image", help="HomePod image reference (default: ensure_image())")
    parser.add_argument("--portal-on-host", action="store_true",
                        help="run the portal as a host process (default: its own container "
                        "from the image, as deployed)")
    parser.add_argument("--throughput-only", action="store_true",
                        help="only the proxy's throughput: a site without a provider (password "
                        "sign-in), no Keycloak, no browser")
    parser.add_argument("--warm-keycloak", action="store_true",
                        help="render Keycloak's login page once after its start, before the "
                        "first sign-in (Keycloak.warm), to see what of the cold first sign-in "
                        "is Keycloak's first page")
    parser.add_argument("--sign-in-only", action="store_true",
                        help="only the sign-in timings: no throughput runs")
    args = parser.parse_args()
    image = args.image or ensure_image()
    portal_image = None if args.portal_on_host else image
    tmp = Path(tempfile.mkdtemp(prefix="mlab-bench-portal-"))
    port = free_port()
    url = f"http://localhost:{port}"
    alice = Person("alice", "Alice-" + secrets.token_hex(4))
    client_secret = secrets.token_urlsafe(24)
    keycloak = None if args.throughput_only else Keycloak(
        tmp, realm_json(url, client_secret, [alice]))
    vnc_password = "Vnc-" + secrets.token_hex(2)  # VncAuth uses 8 characters
    (tmp / "users" / "alice").mkdir(parents=True)
    (tmp / "users" / "alice" / "password").write_text(vnc_password + "\n")
    pod = portal = None
    results: dict[str, object] = {}
    try:
        pod = run_container(image, PREFIX, ports=(5900, 7030), env={
            "MLAB_USER": "alice", "MLAB_MODE": "homepod",
            "MLAB_PASSWORD_FILE": "/etc/mlab/secret/password", "MLAB_SUDO": "0"},
            volumes=(f"{tmp / 'users' / 'alice' / 'password'}:/etc/mlab/secret/password:ro",))
        wait_until_ready(pod, timeout=240)
        wait_for_port(pod.port(7030))
        if keycloak is None:
            portal = start_password_portal(tmp, url, port, pod.port(5900), portal_image)
            cookie = password_cookie(url, "alice", vnc_password)
        else:
            results["keycloak_start_s"] = round(keycloak.wait(), 1)
            if args.warm_keycloak:
                results["keycloak_warm_s"] = round(keycloak.warm(url), 2)
            portal = start_sso_portal(tmp, url, port, pod.port(5900), keycloak, client_secret,
                                      portal_image)
            results.update(sign_in_times(tmp, url, pod.port(7030), vnc_password, alice))
            cookie = results.pop("cookie")  # type: ignore[assignment]
            # Keycloak is not on the desktop's data path: stop its JVM so that both relays
            # share the cores with the same load.
            keycloak.stop()
            keycloak = None
        if args.sign_in_only:
            results["load_average"] = os.getloadavg()[0]
            return _print(results, args.json)

        direct: list[tuple[float, float, float, float]] = []
        proxied: list[tuple[float, float, float, float]] = []

        def run_direct() -> float:
            direct.append(pull(f"ws://127.0.0.1:{pod.port(7030)}/websockify", args.seconds,
                               vnc_password, relay_pids=lambda: websockify_pids(pod.name)))
            return 1 / direct[-1][0]  # seconds per frame: sampling.py compares times

        def run_portal() -> float:
            proxied.append(pull(f"ws://127.0.0.1:{port}/desktop/alice/websockify", args.seconds,
                                None, cookie=f"mlab_portal={cookie}", origin=url,
                                relay_pids=lambda: portal_pids(portal)))
            return 1 / proxied[-1][0]

        # Interleaved, the first case rotating each round, one warm-up round dropped.
        stats = interleave({"websockify": run_direct, "portal": run_portal},
                           samples=args.rounds, warmup=1)
        direct, proxied = direct[-args.rounds:], proxied[-args.rounds:]
        per_frame, low, high = ratio(stats, "portal", "websockify")
        results["portal_to_direct_fps_pairwise"] = {
            "median": round(1 / per_frame, 3), "min": round(1 / high, 3), "max": round(1 / low, 3)}
        d_fps = statistics.median(r[0] for r in direct)
        p_fps = statistics.median(r[0] for r in proxied)
        d_cpu = statistics.median(r[2] for r in direct)
        p_cpu = statistics.median(r[2] for r in proxied)
        d_sys = statistics.median(r[3] for r in direct)
        p_sys = statistics.median(r[3] for r in proxied)
        results.update(
            direct_fps=round(d_fps, 2), portal_fps=round(p_fps, 2),
            direct_mb_s=round(statistics.median(r[1] for r in direct), 1),
            portal_mb_s=round(statistics.median(r[1] for r in proxied), 1),
            portal_to_direct_fps=round(p_fps / d_fps, 3),
            per_round_ratios=[round(p[0] / d[0], 2) for d, p in zip(direct, proxied)],
            rounds=args.rounds, seconds_per_run=args.seconds,
            websockify_cpu_ms_per_mb=round(d_cpu, 2), portal_cpu_ms_per_mb=round(p_cpu, 2),
            websockify_sys_ms_per_mb=round(d_sys, 2), portal_sys_ms_per_mb=round(p_sys, 2),
            portal_to_websockify_cpu=round(p_cpu / d_cpu, 3), goal_ratio=0.90,
            load_average=os.getloadavg()[0],
        )
    finally:
        if portal is not None:
            portal.stop()
        if pod is not None:
            pod.remove()
        if keycloak is not None:
            keycloak.stop()
    return _print(results, args.json)


def _print(results: dict[str, object], as_json: bool) -> int:
    if as_json:
        print(json.dumps(results, indent=2))
    else:
        for key, value in results.items():
            print(f"{key:24} {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
