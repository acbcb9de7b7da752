"""Benchmark: what idle culling costs a HomePod, and how fast a culled one comes back.

In one run, on a real HomePod pod (the image `mlab image build --local` makes):

- CPU seconds per activity sample (``/usr/local/lib/mlab/activity``: xprintidle per display,
  ss, /proc, nvidia-smi when present), measured inside the container with getrusage over
  ``--samples`` runs, against the baseline of starting ``python3 -c pass`` the same way; the
  goal is under 1 % of one core at one sample per minute (< 0.6 CPU-seconds a sample);
- seconds from ``mlab wake`` (``podman pod start``) until the VNC port sends its RFB banner,
  against the pod's first start in the same run; the goal is under 15 s.

Prints a table; exit status 0 always (ratios are for people, not CI).

    .venv/bin/python benchmarks/bench_cull.py [--samples 20] [--image REF]
"""

from __future__ import annotations

import argparse
import json
import secrets
import socket
import time

from mlab.image.build import ensure_image
from mlab.podman.runner import podman

MEASURE = r"""
import resource, subprocess, sys
n = int(sys.argv[1])
def cpu(argv):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    for _ in range(n):
        subprocess.run(argv, stdout=subprocess.DEVNULL, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / n
base = cpu(["python3", "-c", "pass"])
sample = cpu(["/usr/local/lib/mlab/activity"])
print(base, sample)
"""


def rfb(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.settimeout(2)
            return s.recv(4) == b"RFB "
    except OSError:
        return False


def start_and_wait(pod: str, container: str) -> float:
    t0 = time.monotonic()
    podman(["pod", "start", pod])
    port = int(podman(["port", container, "5900/tcp"]).stdout.split()[0].rsplit(":", 1)[1])
    while not rfb(port):
        if time.monotonic() - t0 > 300:
            raise TimeoutError("no VNC banner after 300 s")
        time.sleep(0.1)
    return time.monotonic() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--image", help="HomePod image reference. Default: ensure_image()'s.")
    args = ap.parse_args()
    image = args.image or ensure_image()
    pod = f"mlabbench-cull-{secrets.token_hex(3)}"
    container = f"{pod}-homepod"
    try:
        podman(["pod", "create", "--name", pod, "-p", "127.0.0.1::5900"])
        podman(["create", "--pod", pod, "--name", container, "-e", "MLAB_USER=bench",
                "-e", "MLAB_UID=1001", "-e", "MLAB_PASSWORD=bench-pw", image])
        first = start_and_wait(pod, container)
        for _ in range(600):  # the desktop, so xprintidle has a display to read
            if podman(["exec", container, "/usr/local/lib/mlab/desktop-ready"],
                      check=False).returncode == 0:
                break
            time.sleep(0.2)
        reading = json.loads(podman(["exec", container, "/usr/local/lib/mlab/activity"]).stdout)
        base, per = map(float, podman(["exec", "-i", container, "python3", "-", str(args.samples)],
                                      input=MEASURE, timeout=600).stdout.split())
        podman(["pod", "stop", "-t", "10", pod])
        wake = start_and_wait(pod, container)
    finally:
        podman(["pod", "rm", "-f", "-t", "2", pod], check=False)
    print(f"displays read per sample        {len(reading['displays'])}")
    print(f"python3 -c pass (baseline)      {base * 1000:8.1f} ms CPU")
    print(f"activity sample                 {per * 1000:8.1f} ms CPU  "
          f"({per / base:.1f}x baseline)")
    print(f"one sample a minute             {per / 60 * 100:8.3f} % of one core (goal < 1 %)")
    print(f"first start -> VNC banner       {first:8.1f} s")
    print(f"wake after cull -> VNC banner   {wake:8.1f} s  ({wake / first:.2f}x first start; "
          "goal < 15 s)")


if __name__ == "__main__":
    main()
