"""Benchmark: HomePod start to VNC answering, to a running desktop, and idle memory.

Run: ``.venv/bin/python benchmarks/bench_desktop.py [--samples 3] [--image REF] [--json]``
(root, podman; builds the image first if it is missing, which is not timed).

Each sample, in turn: the baseline ``podman run --rm --entrypoint true IMAGE`` (a
container's fixed cost on this machine), then a fresh HomePod container (first start: a new
home, so the SSH host keys and RDP certificate are made, as on a user's first ``mlab up``):

- start to VNC: ``podman run -d`` until the VNC port sends its ``RFB`` banner;
- start to desktop: until ``desktop-ready`` (a window manager runs);
- phases from the container's own log timestamps: the entrypoint (container start to
  supervisord's start), supervisord's first tick (its start to its first spawn), Xvnc (its
  spawn to "Listening for VNC connections");
- idle memory (``podman stats``) ``--idle`` seconds after the desktop is ready.

Prints the median and min..max of each figure and the start-to-VNC ratio against the
baseline, pair by pair. Goals (issue 18): VNC answering < 5 s; idle < 250 MiB.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import socket
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sampling import Samples, dumps  # noqa: E402

from mlab.podman.runner import podman  # noqa: E402

PREFIX = "mlabtest-desk-bench-"
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z (.*)$")


def _vnc_banner(port: int, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.settimeout(2)
                if sock.recv(12).startswith(b"RFB "):
                    return
        except OSError:
            pass
        time.sleep(0.02)
    raise TimeoutError("no VNC banner")


def _ts(text: str) -> float:
    head, _, frac = text.partition(".")
    return datetime.fromisoformat(head + "+00:00").timestamp() + float("0." + frac)


def _phases(name: str) -> dict[str, float]:
    started = podman(["inspect", "--format", "{{.State.StartedAt}}", name]).stdout.strip()
    # "2026-12-05 07:14:03.19716163 +0000 UTC"
    day, clock = started.split()[:2]
    t0 = _ts(f"{day}T{clock}")
    logs = podman(["logs", "-t", name]).stdout
    marks: dict[str, float] = {}
    for line in logs.splitlines():
        m = _STAMP.match(line)
        if not m:
            continue
        when, text = _ts(m.group(1)), m.group(2)
        if "supervisord started" in text:
            marks.setdefault("supervisord", when)
        elif "INFO spawned:" in text:
            marks.setdefault("first spawn", when)
            if "'xvnc'" in text:
                marks.setdefault("xvnc spawned", when)
        elif "Listening for VNC connections" in text:
            marks.setdefault("vnc listening", when)
    out = {}
    if "supervisord" in marks:
        out["entrypoint s"] = marks["supervisord"] - t0
        if "first spawn" in marks:
            out["supervisord first tick s"] = marks["first spawn"] - marks["supervisord"]
    if "xvnc spawned" in marks and "vnc listening" in marks:
        out["Xvnc spawn to listening s"] = marks["vnc listening"] - marks["xvnc spawned"]
    return out


def _mib(text: str) -> float:
    m = re.match(r"([\d.]+)\s*([kKMG]i?B)", text)
    if not m:
        return float("nan")
    scale = {"kB": 1e3 / 2**20, "KiB": 1 / 1024, "MB": 1e6 / 2**20, "MiB": 1.0,
             "GB": 1e9 / 2**20, "GiB": 1024.0}[m.group(2)]
    return float(m.group(1)) * scale


ENTRYPOINT = (Path(__file__).resolve().parents[1] / "src" / "mlab" / "image" / "rootfs" / "usr"
              / "local" / "sbin" / "mlab-entrypoint")


def one_sample(image: str, idle: float, extra: list[str]) -> dict[str, float]:
    start = time.perf_counter()
    podman(["run", "--rm", "--entrypoint", "true", image])
    figures = {"baseline: podman run true s": time.perf_counter() - start}
    name = PREFIX + secrets.token_hex(4)
    start = time.perf_counter()
    podman(["run", "-d", "--name", name, "-e", "MLAB_USER=alice", "-e",
            "MLAB_PASSWORD=Bench-Passw0rd", "-p", "127.0.0.1::5900", *extra, image])
    try:
        port = int(podman(["port", name, "5900/tcp"]).stdout.strip().rsplit(":", 1)[1])
        _vnc_banner(port)
        figures["start to VNC answering s"] = time.perf_counter() - start
        while podman(["exec", name, "/usr/local/lib/mlab/desktop-ready"], check=False).returncode:
            time.sleep(0.05)
        figures["start to desktop ready s"] = time.perf_counter() - start
        figures.update(_phases(name))
        time.sleep(idle)
        stats = json.loads(podman(["stats", "--no-stream", "--format", "json", name]).stdout)
        figures["idle memory MiB"] = _mib(stats[0].get("mem_usage") or stats[0].get("MemUsage", ""))
    finally:
        podman(["rm", "-f", "-t", "1", name], check=False)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=3, help="Counted samples. Default: 3.")
    parser.add_argument("--idle", type=float, default=15, help="Seconds before reading memory. Default: 15.")
    parser.add_argument("--image", default=None, help="Image reference. Default: build/reuse the current one.")
    parser.add_argument("--source-entrypoint", action="store_true",
                        help="Mount this checkout's mlab-entrypoint over the image's (measure an "
                        "entrypoint edit without rebuilding the image). Default: off.")
    parser.add_argument("--json", action="store_true", help="Print JSON instead of a table.")
    args = parser.parse_args()
    extra = ["-v", f"{ENTRYPOINT}:/usr/local/sbin/mlab-entrypoint:ro"] if args.source_entrypoint else []
    if args.image is None:
        from mlab.image.build import ensure_image

        args.image = ensure_image()
    one_sample(args.image, 0, extra)  # warm-up: page cache, image layers
    series: dict[str, Samples] = {}
    for _ in range(args.samples):
        for key, value in one_sample(args.image, args.idle, extra).items():
            series.setdefault(key, Samples(key)).times.append(value)
    base = series["baseline: podman run true s"].times
    vnc = series["start to VNC answering s"].times
    ratios = [a / b for a, b in zip(vnc, base)]
    if args.json:
        print(dumps({k: {"median": round(s.median, 3), "min": round(s.spread[0], 3),
                         "max": round(s.spread[1], 3)} for k, s in series.items()}
                    | {"vnc_ratio_to_baseline": round(statistics.median(ratios), 2)}))
        return
    print(f"HomePod start ({args.image}), {args.samples} samples, first start of a new home")
    print(f"{'figure':32} {'median':>9} {'min..max':>17}")
    for key, s in series.items():
        lo, hi = s.spread
        print(f"{key:32} {s.median:9.2f} {lo:8.2f}..{hi:<8.2f}")
    med = series["start to VNC answering s"].median
    print(f"\nstart to VNC / podman run true: {statistics.median(ratios):.2f}x "
          f"(min..max {min(ratios):.2f}..{max(ratios):.2f}); goal < 5 s: {'met' if med < 5 else 'MISSED'}")
    mem = series["idle memory MiB"].median
    print(f"idle memory {mem:.0f} MiB; goal < 250 MiB: {'met' if mem < 250 else 'MISSED'}")


if __name__ == "__main__":
    main()
