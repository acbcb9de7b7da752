"""Benchmark ``mlab verify --cluster`` on the one-node Kubernetes with the local site.

Run: ``.venv/bin/python benchmarks/bench_verify_cluster.py [--json]`` with the node up and
examples/local.yaml applied (``eval "$(mlab node up -q)"; mlab apply --site
examples/local.yaml``; KUBECONFIG and MLAB_KUBECTL as ``mlab node up`` prints/uses).

Numbers, not assertions, each with a baseline measured in the same run:

- baseline: ``kubectl exec`` of ``python3 -c pass`` in a running HomePod (one probe
  source's fixed cost) and ``kubectl run`` of a pod with the site image to Running and
  deleted (a probe pod's fixed cost);
- ``mlab verify --cluster`` end to end (probe pods, canary, matrix, link probes,
  cleanup). Goal: under 60 s for the 2-user site.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "examples" / "local.yaml"
sys.path.insert(0, str(ROOT / "benchmarks"))

from sampling import print_figures  # noqa: E402
from sampling import timed_run as _timed  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args()
    kubectl = os.environ.get("MLAB_KUBECTL", "kubectl")
    exec_s = _timed([kubectl, "-n", "mlab", "exec", "deploy/homepod-alice", "--", "python3",
                     "-c", "pass"])
    pod_s = _timed([kubectl, "-n", "mlab", "run", "mlab-bench-pod", "--restart=Never",
                    "--image=localhost/mlab/homepod:latest", "--image-pull-policy=Never",
                    "--command", "--", "sleep", "60"])
    pod_s += _timed([kubectl, "-n", "mlab", "wait", "--for=jsonpath={.status.phase}=Running",
                     "pod/mlab-bench-pod", "--timeout=180s"])
    pod_s += _timed([kubectl, "-n", "mlab", "delete", "pod", "mlab-bench-pod",
                     "--grace-period=0", "--wait=false"])
    verify_s = _timed([sys.executable, "-m", "mlab.cli.main", "verify", "--site", str(SITE),
                       "--cluster", "-q", "-o", "json"])
    out = {"baseline_exec_s": round(exec_s, 2), "baseline_pod_s": round(pod_s, 2),
           "verify_cluster_s": round(verify_s, 2),
           "verify_over_exec": round(verify_s / exec_s, 1),
           "verify_over_pod": round(verify_s / pod_s, 1)}
    print_figures(out, args.json, width=20)


if __name__ == "__main__":
    main()
