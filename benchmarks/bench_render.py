"""Benchmark: the whole ``mlab render --out-dir DIR`` command on a big site, against a baseline.

Run: ``.venv/bin/python benchmarks/bench_render.py [--users 10000] [--samples 5] [--json]``

What a user waits for is the whole command (interpreter start, imports, reading the site
file, validation, rendering, writing the five files), so that is what is timed, as a
process. The baseline, measured in the same run with interleaved samples, is a process
that does only the irreducible part with PyYAML's C (libyaml) code: it starts Python,
reads the same site file with ``yaml.CSafeLoader``, reads the already-rendered objects
(JSON, the fastest stdlib reader) and writes them as YAML with ``yaml.CSafeDumper`` to the
same five files. A ratio near 1 means MLab adds little on top of reading and writing YAML.

Also prints the linearity: the command at ``--users``, at a tenth of it and at 1 user (the
fixed cost of starting); linear means the time per user above the fixed cost stays the
same (their ratio, big over small, about 1).

Also prints each case's median CPU seconds (user + system of the process and its worker
processes): on a shared machine the wall time depends on what else runs, the CPU much less;
and the load average before and after, to judge how quiet the machine was.

Goal (issue 18): 10,000 users in under 2 s for the whole command, and linear.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sampling import as_json, dumps, interleave, report  # noqa: E402

BASELINE = r"""
import json, sys, yaml
from pathlib import Path
site, objs, out = sys.argv[1:4]
yaml.load(Path(site).read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)
files = json.loads(Path(objs).read_text(encoding="utf-8"))
Path(out).mkdir(exist_ok=True)
for name, docs in files.items():
    text = yaml.dump_all(docs, Dumper=yaml.CSafeDumper, sort_keys=False, default_flow_style=False)
    (Path(out) / name).write_text(text, encoding="utf-8")
"""


def big_site(users: int) -> dict[str, Any]:
    """A site document with ``users`` users, each with its own claim and placement."""
    return {
        "name": "bench",
        "namespace": "bench",
        "timezone": "Asia/Shanghai",
        "access": {"officeCIDRs": ["192.168.0.0/16", "172.17.0.0/16"]},
        "datasets": [{"name": "public", "claim": "public-dataset", "mountPath": "/opt/public"}],
        "users": [
            {
                "name": f"user{i:05d}",
                "uid": 2000 + i,
                "groups": ["ml"],
                "resources": {"requests": {"memory": "6Gi"}, "limits": {"memory": "24Gi"},
                              "gpus": i % 3},
                "placement": {"nodeSelector": {"pool": f"p{i % 8}"}},
                "volumes": [{"claim": f"scratch-{i:05d}", "mountPath": "/scratch"}],
            }
            for i in range(users)
        ],
    }


def write_site(path: Path, users: int) -> None:
    """Write the site file as a person would (block style YAML)."""
    path.write_text(yaml.dump(big_site(users), Dumper=yaml.CSafeDumper, sort_keys=False),
                    encoding="utf-8")


def rendered_objects(site_path: Path, out_json: Path) -> None:
    """Render once in-process and keep the objects as JSON for the baseline."""
    from mlab.site import load_site
    from mlab.stored_render import render_with_passwords

    rendered = render_with_passwords(load_site(site_path))
    files = {name: list(objs) for name, objs in rendered.files.items()}
    files["secrets.yaml"] = list(rendered.secrets)
    out_json.write_text(json.dumps(files), encoding="utf-8")


def with_cpu(run: Any, into: list[float]) -> Any:
    """``run`` that also appends the CPU seconds (user + system) of the processes it waited
    for, workers included, to ``into``."""
    def timed() -> None:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        run()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        into.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10000, help="Users in the site. Default: 10000.")
    parser.add_argument("--samples", type=int, default=5, help="Counted runs of each case. Default: 5.")
    parser.add_argument("--json", action="store_true", help="Print JSON instead of a table.")
    args = parser.parse_args()
    small = max(1, args.users // 10)
    with tempfile.TemporaryDirectory(prefix="mlab-bench-render-") as tmp:
        root = Path(tmp)
        sites = {n: root / f"site-{n}.yaml" for n in (args.users, small, 1)}
        for n, path in sites.items():
            write_site(path, n)
        objs = root / "objs.json"

        # As installed, Python keeps compiled bytecode (__pycache__); a session or CI
        # environment with PYTHONDONTWRITEBYTECODE set would time compiling every module
        # from source at each start (0.03-0.04 s here). The warm-up round writes the cache.
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["MLAB_STATE_DIR"] = str(root / "state")
        os.environ["MLAB_STATE_DIR"] = env["MLAB_STATE_DIR"]
        rendered_objects(sites[args.users], objs)

        def command(n: int, out: str):  # type: ignore[no-untyped-def]
            argv = [sys.executable, "-m", "mlab.cli.main", "render", "-s", str(sites[n]), "--out-dir",
                    str(root / out)]
            return lambda: subprocess.run(argv, check=True, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL, env=env)

        base_argv = [sys.executable, "-c", BASELINE, str(sites[args.users]), str(objs),
                     str(root / "out-base")]
        cases = {
            f"mlab render --out-dir ({args.users} users)": command(args.users, "out-big"),
            f"mlab render --out-dir ({small} users)": command(small, "out-small"),
            "mlab render --out-dir (1 user)": command(1, "out-one"),
            "baseline: CSafeLoader + CSafeDumper": lambda: subprocess.run(
                base_argv, check=True, stdout=subprocess.DEVNULL, env=env),
        }
        cpu: dict[str, list[float]] = {name: [] for name in cases}
        cases = {name: with_cpu(run, cpu[name]) for name, run in cases.items()}
        load_before = os.getloadavg()
        stats = interleave(cases, samples=args.samples)
        load_after = os.getloadavg()
    # The warm-up round is counted in ``cpu`` too; drop it as interleave drops its time.
    cpu_median = {name: statistics.median(times[-args.samples:]) for name, times in cpu.items()}
    big, little, one = (stats[k].median for k in list(cases)[:3])
    base_name = list(cases)[3]
    # Marginal time per user above a 1-user site (the fixed cost of starting), big over small.
    linearity = ((big - one) / max(1, args.users - 1)) / max(1e-9, (little - one) / max(1, small - 1))
    goal = {f"mlab render --out-dir ({args.users} users)": 2.0}
    if args.json:
        print(dumps({"users": args.users, "figures": as_json(stats, base_name),
                     "cpu_median_s": {k: round(v, 3) for k, v in cpu_median.items()},
                     "load_average_before_after": [load_before, load_after],
                     "marginal_per_user_big_over_small": round(linearity, 2)}))
        return
    print(report(stats, baseline=base_name,
                 title=f"whole-command render, {args.users} and {small} users"))
    for case, seconds in cpu_median.items():
        print(f"  CPU {case}: median {seconds:.2f} s")
    print("load average (1, 5, 15 min) before: {:.2f} {:.2f} {:.2f}; after: {:.2f} {:.2f} {:.2f}; "
          "CPUs: {}".format(*load_before, *load_after, os.cpu_count()))
    name = list(cases)[0]
    print(f"\n{name}: median {big:.2f} s; goal < 2 s: {'met' if big < goal[name] else 'MISSED'}")
    print(f"time per user above a 1-user site, {args.users} over {small} users: {linearity:.2f} "
          "(1.0 = linear)")


if __name__ == "__main__":
    main()
