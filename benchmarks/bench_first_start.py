"""Benchmark the first start's longest step: the HomePod base image from nothing.

Run: ``.venv/bin/python benchmarks/bench_first_start.py [--samples N] [--json]``
(root, mmdebstrap, podman; about 4 minutes a sample and case on 2 cores; 3 GB of memory
or disk while it runs; every image it makes is removed).

Cases, interleaved (``sampling.interleave``, no warm-up: each run downloads everything, so
every run is a cold one; mmdebstrap keeps its package cache inside its own temporary tree,
never the host's /var/cache/apt):

- ``baseline``: plain ``mmdebstrap --variant=apt --include=<packages.txt>`` with default
  options (temporary tree under /tmp, the tarball on disk), then ``podman import``: what a
  straightforward build of the same package list costs;
- ``mlab``: what ``mlab.image.build.build_base`` runs (``mmdebstrap_argv``: unsafe dpkg
  I/O, the dpkg path rules, provision.sh with its pip install of MLab's dependencies, in
  ``scratch_dir``), then ``podman import``. It does *more* than the baseline (provision.sh,
  whose venv also makes the import slower: more files);
- ``before`` (``--before``): the same hooks without the dpkg options, on disk (main's build
  before issue 18), the like-for-like comparison.

Prints each case's median and spread, the ratio against the baseline, the time of each
mmdebstrap phase (from the ``I:`` lines of its log) and the tarball size. Numbers, not
assertions; docs/image.md records them with the machine's load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlab.image import build, recipe
from mlab.podman.runner import podman

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sampling import as_json, dumps, interleave, report  # noqa: E402

PHASES: dict[str, dict[str, list[float]]] = {}
SIZES: dict[str, list[float]] = {}


def run_phased(case: str, argv: list[str], env: dict[str, str]) -> None:
    """Run mmdebstrap, noting when each ``I: ...`` line appears (phase starts)."""
    start = time.monotonic()
    marks: list[tuple[float, str]] = []
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)
    assert proc.stdout is not None
    tail: list[str] = []
    for line in proc.stdout:
        tail = (tail + [line])[-5:]
        if not line.startswith("I: "):
            continue
        if " hook" in line:  # copy-in, provision.sh, clean-up: one phase
            name = "customize hooks (provision.sh)"
        elif line.rstrip().endswith("..."):
            name = line[3:].strip().rstrip(".").split(" /")[0]
        else:
            continue
        if not marks or marks[-1][1] != name:
            marks.append((time.monotonic() - start, name))
    if proc.wait() != 0:
        raise SystemExit(f"{case}: mmdebstrap failed: {''.join(tail)}")
    marks.append((time.monotonic() - start, "end"))
    phases = PHASES.setdefault(case, {})
    for (t0, name), (t1, _) in zip(marks, marks[1:]):
        phases.setdefault(name, []).append(t1 - t0)


def build_once(case: str) -> float:
    """One cold build of ``case`` to an image under a throw-away tag; returns seconds."""
    ref = f"localhost/mlab-bench-first-start/{case}:{os.getpid()}"
    cache = build.cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-", dir=cache) as tmp:
        if case == "before":
            # main's build before issue 18: the same hooks, no dpkg options, on disk.
            ctx, chroot_env = build.prepare_context(Path(tmp))
            scratch = Path(tempfile.gettempdir())
            timed_tar = Path(tmp) / "rootfs.tar"
            argv = [a for a in build.mmdebstrap_argv(ctx, chroot_env, timed_tar)
                    if a != "--dpkgopt=force-unsafe-io" and not a.startswith("--extract-hook=")
                    and "force-unsafe-io" not in a]
            run_phased(case, argv, dict(os.environ))
        elif case == "baseline":
            scratch = Path(tempfile.gettempdir())
            tar = Path(tmp) / "rootfs.tar"
            argv = ["mmdebstrap", "--variant=apt", "--verbose",
                    "--include=" + ",".join(recipe.packages()),
                    recipe.SUITE, str(tar), *recipe.MIRRORS]
            run_phased(case, argv, dict(os.environ))
            timed_tar = tar
        else:
            ctx, chroot_env = build.prepare_context(Path(tmp))
            scratch = build.scratch_dir(cache)
            timed_tar = Path(tmp) / "rootfs.tar"  # on disk, as build_base writes it
            run_phased(case, build.mmdebstrap_argv(ctx, chroot_env, timed_tar),
                       {**os.environ, "TMPDIR": str(scratch)})
        SIZES.setdefault(case, []).append(timed_tar.stat().st_size / 1e6)
        t0 = time.monotonic()
        try:
            podman(["import", str(timed_tar), ref], timeout=1800)
        finally:
            timed_tar.unlink(missing_ok=True)
        PHASES[case].setdefault("podman import", []).append(time.monotonic() - t0)
    elapsed = time.monotonic() - start
    podman(["rmi", ref], check=False)
    print(f"  {case}: {elapsed:.1f} s (scratch {scratch})", file=sys.stderr, flush=True)
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1, help="runs of each case (default 1)")
    parser.add_argument("--before", action="store_true",
                        help="also the build as it was before issue 18 (same hooks, no dpkg "
                        "options, on disk): like for like with provision.sh")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args()
    load = os.getloadavg()
    cases = {"baseline": lambda: build_once("baseline"), "mlab": lambda: build_once("mlab")}
    if args.before:
        cases["before"] = lambda: build_once("before")
    stats = interleave(cases, samples=args.samples, warmup=0)
    phases = {case: {name: round(statistics.median(ts), 1) for name, ts in p.items()}
              for case, p in PHASES.items()}
    sizes = {case: round(statistics.median(v)) for case, v in SIZES.items()}
    if args.json:
        print(dumps({"cases": as_json(stats, baseline="baseline"), "phases_s": phases,
                     "tarball_mb": sizes, "load_before": load, "load_after": os.getloadavg()}))
        return 0
    print(report(stats, baseline="baseline",
                 title="HomePod base image from nothing (mmdebstrap + podman import)"))
    print(f"load average before {load[0]:.1f}, after {os.getloadavg()[0]:.1f}")
    for case, p in phases.items():
        print(f"\n{case} (tarball {sizes[case]} MB), median seconds per phase:")
        for name, secs in p.items():
            print(f"  {name:48} {secs:7.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
