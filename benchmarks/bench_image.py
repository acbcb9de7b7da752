"""Benchmark the HomePod image: build times, size, start-up, idle memory, stop time.

Run: ``.venv/bin/python benchmarks/bench_image.py [--cold] [--json]``

Numbers, not assertions (tests assert behaviour): each time is reported with a baseline
measured in the same run on the same machine, so ratios compare across machines:

- cached build: ``ensure_image()`` when nothing changed, against ``podman image exists``;
- app layer: the thin ``podman build`` that installs the MLab wheel (what a code edit costs);
- cold base build (``--cold``, about two minutes): mmdebstrap + podman import of the recipe
  under a throw-away tag, removed afterwards;
- start: container start to the VNC handshake (``RFB 003.008`` banner) and to a running
  window manager, against ``podman run --rm IMAGE true`` (a container's fixed cost);
- idle memory of the whole desktop (``podman stats``) after 20 s; goal under 400 MiB;
- ``podman stop`` time (SIGTERM through tini to supervisord); goal about one second.
"""

from __future__ import annotations

import argparse
import json
import secrets
import socket
import sys
import tempfile
import time
from pathlib import Path

from mlab.image import build, recipe
from mlab.podman.runner import podman

PREFIX = "mlabtest-img-bench-"


def timed(fn):  # type: ignore[no-untyped-def]
    start = time.monotonic()
    value = fn()
    return time.monotonic() - start, value


def vnc_banner(port: int, timeout: float = 60) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.settimeout(2)
                if s.recv(12).startswith(b"RFB "):
                    return time.monotonic() - start
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError("no VNC banner")


def measure_container(image: str) -> dict[str, float]:
    name = PREFIX + secrets.token_hex(4)
    baseline, _ = timed(lambda: podman(["run", "--rm", "--entrypoint", "true", image]))
    start = time.monotonic()
    podman(["run", "-d", "--name", name, "-e", "MLAB_USER=alice", "-e",
            "MLAB_PASSWORD=Bench-Passw0rd", "-p", "127.0.0.1::5900", image])
    try:
        port = int(podman(["port", name, "5900/tcp"]).stdout.strip().rsplit(":", 1)[1])
        vnc_banner(port)
        to_vnc = time.monotonic() - start
        while podman(["exec", name, "/usr/local/lib/mlab/desktop-ready"], check=False).returncode:
            time.sleep(0.1)
        to_wm = time.monotonic() - start
        time.sleep(20)
        stats = json.loads(podman(["stats", "--no-stream", "--format", "json", name]).stdout)
        mem = stats[0].get("mem_usage") or stats[0].get("MemUsage", "")
        stop, _ = timed(lambda: podman(["stop", "-t", "10", name]))
    finally:
        podman(["rm", "-f", name], check=False)
    return {"container_baseline_s": baseline, "start_to_vnc_s": to_vnc,
            "start_to_wm_s": to_wm, "ready_ratio": to_wm / baseline,
            "idle_memory": mem, "stop_s": stop}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true", help="also time a cold base build (~2 min)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    results: dict[str, object] = {}
    first, image = timed(build.ensure_image)
    cached, image2 = timed(build.ensure_image)
    assert image == image2
    exists, _ = timed(lambda: build.image_exists(image))
    results.update(first_call_s=first, cached_build_s=cached, cached_baseline_s=exists,
                   cached_ratio=cached / exists)
    size = int(podman(["image", "inspect", "--format", "{{.Size}}", image]).stdout.strip())
    results["image_size_mb"] = round(size / 1e6)
    base_hash = recipe.base_hash()
    base_ref = f"{recipe.BASE_REPOSITORY}:{base_hash[:16]}"
    wheel = recipe.make_wheel()
    salted = wheel
    tag = f"localhost/{PREFIX}app:{secrets.token_hex(4)}"
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / wheel.name).write_bytes(salted.data)
        (Path(tmp) / "Containerfile").write_text(
            recipe.app_containerfile(base_ref, salted, secrets.token_hex(8), base_hash))
        app_s, _ = timed(lambda: podman(["build", "--network=none", "--pull=never", "-q",
                                         "--no-cache", "-t", tag, tmp]))
    podman(["rmi", tag], check=False)
    results["app_layer_build_s"] = app_s
    if args.cold:
        # A throw-away recipe hash: the tag uses the first 16 digits, so salt those.
        salt = secrets.token_hex(8) + base_hash[16:]
        assert salt[:16] != base_hash[:16]
        cold, ref = timed(lambda: build.build_base(salt))
        assert ref != base_ref
        podman(["rmi", ref], check=False)
        results["cold_base_build_s"] = cold
        results["cold_ratio_to_cached"] = cold / cached
    results.update(measure_container(image))
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for key, value in results.items():
            print(f"{key:24} {value:.2f}" if isinstance(value, float) else f"{key:24} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
