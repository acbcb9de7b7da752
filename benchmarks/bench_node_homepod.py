"""Benchmark: one HomePod's start to VNC answering, on the Kubernetes node and under podman.

Run (root, node lock held, the node's other users idle):
``flock /tmp/mlab-node.lock .venv/bin/python benchmarks/bench_node_homepod.py [--samples 3]
[--keep-image] [--json]``. It starts the node and applies examples/local.yaml first (not
timed) and leaves both running.

Cases, interleaved (benchmarks/sampling.py), each sample a first start of the desktop:

- baseline: ``podman run --rm --entrypoint true IMAGE`` (a container's fixed cost);
- podman: a HomePod container of the same image, with the rendered capability set, a
  start-gate target that is refused at once (as the podman engine's Airlock address is)
  and alice's home on a volume kept across samples (as her claim is on the node), from
  ``podman run -d`` until its published VNC port sends ``RFB``;
- node: alice's Deployment scaled from 0 to 1 until her Service's VNC port sends ``RFB``
  (scheduler, kubelet, CNI chain with the anti-spoofing plugin, kube-router programming
  the pod's policies, the start gate seeing its forbidden egress refused, the desktop).

Then the idle memory (RSS) of the control plane and node agents with the site running
(``bench_node.rss_mib``). Numbers, not assertions: medians, spreads and ratios against the
baseline, plus node over podman pair by pair.
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_node import rss_mib  # noqa: E402
from sampling import as_json, dumps, interleave, report  # noqa: E402

from mlab.image.build import ensure_image  # noqa: E402
from mlab.node import lifecycle  # noqa: E402
from mlab.node.layout import default_layout  # noqa: E402
from mlab.podman.runner import podman  # noqa: E402
from mlab.render.common import SESSION_CAPABILITIES  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "examples" / "local.yaml"
PREFIX = "mlabtest-nodebench-"
BASELINE = "baseline: podman run true"
PODMAN = "podman: HomePod start to VNC"
NODE = "node: HomePod start to VNC"
HOME_VOLUME = PREFIX + "home"
"""alice's home under podman, kept across samples like her claim on the node (the warm-up
round populates it), so both sides start a desktop on an existing home."""


def _rfb(host: str, port: int, timeout: float = 300) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection((host, port), timeout=1) as sock:
                sock.settimeout(2)
                if sock.recv(12).startswith(b"RFB "):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"no VNC banner from {host}:{port}")


class NodeCase:
    """alice's HomePod on the node: scaled to 0 (not timed), then to 1 until VNC answers."""

    def __init__(self, env: dict[str, str], kubectl: str) -> None:
        self.env, self.kubectl = env, kubectl

    def run(self, *args: str) -> str:
        return subprocess.run([self.kubectl, "-n", "mlab", *args], env=self.env,
                              capture_output=True, text=True, check=True, timeout=600).stdout

    def __call__(self) -> float:
        self.run("scale", "deployment/homepod-alice", "--replicas=0")
        self.run("wait", "--for=delete", "pod", "-l", "mlab.io/user=alice", "--timeout=300s")
        ip = self.run("get", "service", "homepod-alice", "-o", "jsonpath={.spec.clusterIP}")
        port = int(self.run("get", "service", "homepod-alice", "-o",
                            "jsonpath={.spec.ports[?(@.name=='vnc')].port}"))
        start = time.perf_counter()
        self.run("scale", "deployment/homepod-alice", "--replicas=1")
        _rfb(ip, port)
        return time.perf_counter() - start


def podman_case(image: str) -> float:
    name = PREFIX + secrets.token_hex(4)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    argv = ["run", "-d", "--name", name, "-e", "MLAB_USER=alice", "-e", "MLAB_MODE=homepod",
            "-e", "MLAB_PASSWORD=Bench-Passw0rd", "-e", f"MLAB_EGRESS_CHECK=127.0.0.1:{closed}",
            "-p", "127.0.0.1::5900", "-v", f"{HOME_VOLUME}:/home/alice", "--cap-drop", "all",
            *[f"--cap-add={c}" for c in SESSION_CAPABILITIES], image]
    start = time.perf_counter()
    podman(argv)
    try:
        port = int(podman(["port", name, "5900/tcp"]).stdout.strip().rsplit(":", 1)[1])
        _rfb("127.0.0.1", port)
        return time.perf_counter() - start
    finally:
        podman(["rm", "-f", "-t", "1", name], check=False)


def _mlab(*args: str, env: dict[str, str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "mlab.cli.main", *args], env=env,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"mlab {' '.join(args)} failed: {proc.stderr.strip()[-500:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=3, help="Counted samples. Default: 3.")
    parser.add_argument("--keep-image", action="store_true",
                        help="use the HomePod image the node holds (do not build the current one)")
    parser.add_argument("--json", action="store_true", help="Print JSON instead of a table.")
    args = parser.parse_args()
    keep = ["--no-homepod-image"] if args.keep_image else []
    lay = default_layout()
    env = dict(os.environ, KUBECONFIG=str(lay.kubeconfig))
    _mlab("node", "up", "-q", *keep, env=env)
    kubectl = str(lifecycle.known_bins(lay)["kubectl"])
    env["MLAB_KUBECTL"] = kubectl
    _mlab("apply", "--site", str(SITE), "--timeout", "600", env=env)
    image = "localhost/mlab/homepod:latest" if args.keep_image else ensure_image()
    node = NodeCase(env, kubectl)
    try:
        stats = interleave({BASELINE: lambda: podman(["run", "--rm", "--entrypoint", "true",
                                                      image]),
                            PODMAN: lambda: podman_case(image), NODE: node},
                           samples=args.samples)
    finally:
        node.run("scale", "deployment/homepod-alice", "--replicas=1")
        node.run("rollout", "status", "deployment/homepod-alice", "--timeout=300s")
        podman(["volume", "rm", "-f", HOME_VOLUME], check=False)
    time.sleep(20)
    memory = {k: round(v) for k, v in rss_mib().items()}
    pairs = [n / p for n, p in zip(stats[NODE].times, stats[PODMAN].times)]
    node_vs_podman = statistics.median(pairs)
    if args.json:
        print(dumps({"cases": as_json(stats, BASELINE), "node_vs_podman": round(node_vs_podman, 2),
                     "idle_rss_mib": memory, "idle_rss_total_mib": sum(memory.values())}))
        return
    print(report(stats, baseline=BASELINE, title="HomePod start to VNC answering"))
    print(f"node over podman, pair by pair (median, min..max): {node_vs_podman:.2f}x "
          f"{min(pairs):.2f}..{max(pairs):.2f}")
    print("idle RSS with the local site running (MiB): "
          + ", ".join(f"{k} {v}" for k, v in sorted(memory.items(), key=lambda kv: -kv[1]))
          + f"; total {sum(memory.values())}")


if __name__ == "__main__":
    main()
