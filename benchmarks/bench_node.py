"""Benchmark the one-node Kubernetes: ``mlab node up`` with programs cached, ``mlab apply``
of the local site to every pod Ready, idle memory, ``mlab delete``.

Run: ``.venv/bin/python benchmarks/bench_node.py [--json]`` (root; builds what is missing
first, which is not timed). It stops a running node first (``mlab node down``) and leaves
it running at the end.

Numbers, not assertions; each reported with a baseline measured in the same run:

- baseline: ``podman run --rm --network none IMAGE true`` (a container's fixed cost);
- ``node up`` from stopped, binaries and images cached. Goal: under 60 s;
- ``apply`` of examples/local.yaml (2 users) until every Deployment is ready. Goal: < 60 s;
- RSS of the control plane and node agents at idle (every process ``mlab node`` started,
  plus containerd's shims). Goal: under 1.5 GiB;
- ``mlab delete`` (waits until the pods are gone, then removes the policies).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from mlab.image.build import ensure_image
from mlab.node import lifecycle
from mlab.node.layout import default_layout
from mlab.podman.runner import podman

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "examples" / "local.yaml"
sys.path.insert(0, str(ROOT / "benchmarks"))

from sampling import print_figures  # noqa: E402
from sampling import timed_mlab as _mlab  # noqa: E402


def rss_mib() -> dict[str, float]:
    """RSS in MiB of each process the node started, and of containerd's shims together."""
    lay = default_layout()
    out: dict[str, float] = {}
    for pidfile in sorted(lay.pids.glob("*.pid")):
        pid = pidfile.read_text().strip()
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                out[pidfile.stem] = int(line.split()[1]) / 1024
    shims = 0
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if (proc / "comm").read_text().strip().startswith("containerd-shim"):
                shims += int(next(ln for ln in (proc / "status").read_text().splitlines()
                                  if ln.startswith("VmRSS:")).split()[1])
        except (OSError, StopIteration):
            pass
    out["containerd-shims"] = shims / 1024
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--keep-image", action="store_true",
                        help="use the HomePod image the node holds (do not build the current one)")
    args = parser.parse_args()
    keep = ["--no-homepod-image"] if args.keep_image else []
    _mlab("node", "up", "-q", *keep)  # build and import what is missing (not timed)
    image = "localhost/mlab/homepod:latest" if args.keep_image else ensure_image()
    start = time.monotonic()
    podman(["run", "--rm", "--network", "none", image, "true"])
    baseline = time.monotonic() - start
    _mlab("node", "down", "-q")
    up = _mlab("node", "up", "-q", *keep)
    env = dict(os.environ, KUBECONFIG=str(default_layout().kubeconfig),
               MLAB_KUBECTL=str(lifecycle.known_bins(default_layout())["kubectl"]))
    apply = _mlab("apply", "--site", str(SITE), "--timeout", "600", env=env)
    time.sleep(20)
    memory = rss_mib()
    delete = _mlab("delete", "--site", str(SITE), env=env)
    result = {
        "baseline_container_s": round(baseline, 2),
        "node_up_cached_s": round(up, 1),
        "apply_to_ready_s": round(apply, 1),
        "delete_s": round(delete, 1),
        "up_vs_baseline": round(up / baseline, 1),
        "apply_vs_baseline": round(apply / baseline, 1),
        "idle_rss_mib": {k: round(v) for k, v in memory.items()},
        "idle_rss_total_mib": round(sum(memory.values())),
    }
    print_figures(result, args.json)


if __name__ == "__main__":
    main()
