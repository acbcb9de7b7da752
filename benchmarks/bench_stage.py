"""Benchmark of `mlab stage pip` and the share's index, as ratios against baselines measured
in the same run (so the machine and the network cancel out).

1. stage vs download: ``mlab stage pip`` of a real requirements set (numpy, pandas,
   scikit-learn, requests and their dependencies) beside a plain ``pip download`` of the
   same set; each with an empty pip cache. Goal: ratio <= 1.15 (the extra is wheel
   building and index writing).
2. incremental index: publishing one wheel with N (10,000) wheels already in the share.
   Goal: under 1 s; the baseline is a full rebuild of every page (hashes every wheel).
3. offline install: ``pip install`` from the share's index beside ``pip install
   --no-index --find-links`` of the plain wheel folder (both into a fresh ``--target``).

Usage: ``.venv/bin/python benchmarks/bench_stage.py [--quick] [--wheels N]``
(``--quick``: requests only and 2,000 wheels). Needs PyPI; prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "airlock"))

from airlock_testlib import make_wheel  # noqa: E402  (tiny valid wheels)

from mlab.airlock import pipindex  # noqa: E402

FULL_SET = ["numpy", "pandas", "scikit-learn", "requests"]
QUICK_SET = ["requests"]


def _timed(fn) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _fresh_cache_env(root: Path) -> dict[str, str]:
    cache = Path(tempfile.mkdtemp(dir=root, prefix="cache-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["XDG_CACHE_HOME"] = str(cache)
    return env


def bench_stage_vs_download(root: Path, specs: list[str]) -> dict[str, float]:
    def download() -> None:
        dest = Path(tempfile.mkdtemp(dir=root, prefix="dl-"))
        subprocess.run([sys.executable, "-m", "pip", "--isolated", "--disable-pip-version-check", "download", "-q", "--dest", str(dest), *specs],
                       check=True, env=_fresh_cache_env(root))

    def stage(share: Path) -> None:
        subprocess.run([sys.executable, "-m", "mlab.cli.main", "stage", "pip", "--share", str(share), *specs],
                       check=True, env=_fresh_cache_env(root), stdout=subprocess.DEVNULL)

    share = root / "share"
    base1 = _timed(download)
    staged = _timed(lambda: stage(share))
    base2 = _timed(download)
    baseline = (base1 + base2) / 2
    return {"download_s": round(baseline, 2), "stage_s": round(staged, 2), "ratio": round(staged / baseline, 3)}


def bench_incremental_index(root: Path, count: int) -> dict[str, float]:
    share = root / "big-share"
    src = root / "big-src"
    projects = max(1, count // 5)  # five versions per project, like a real share
    for i in range(count):
        make_wheel(src, f"proj{i % projects}", f"1.{i // projects}")
    pipindex.publish(share, sorted(src.glob("*.whl")))
    one = make_wheel(root / "new", "proj0", "9.0")
    incremental = _timed(lambda: pipindex.publish(share, [one]))
    new_project = make_wheel(root / "new", "brand-new", "1.0")
    incremental_new = _timed(lambda: pipindex.publish(share, [new_project]))
    rebuild = _timed(lambda: pipindex.rebuild(share))
    return {"wheels": count + 2, "publish_one_s": round(incremental, 3),
            "publish_new_project_s": round(incremental_new, 3), "full_rebuild_s": round(rebuild, 2)}


def bench_offline_install(root: Path, specs: list[str]) -> dict[str, float]:
    share = root / "share"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    base = [sys.executable, "-m", "pip", "--isolated", "--disable-pip-version-check", "install", "-q", "--no-cache-dir", "--target"]

    def from_index() -> None:
        subprocess.run([*base, str(Path(tempfile.mkdtemp(dir=root))), "--index-url",
                        (share / "pip" / "simple").as_uri(), *specs], check=True, env=env)

    def from_folder() -> None:
        subprocess.run([*base, str(Path(tempfile.mkdtemp(dir=root))), "--no-index", "--find-links",
                        str(share / "pip" / "files"), *specs], check=True, env=env)

    # alternate and keep the best of two: byte-compiling dominates and is noisy on 2 cores
    folder = _timed(from_folder)
    index = _timed(from_index)
    folder = min(folder, _timed(from_folder))
    index = min(index, _timed(from_index))
    return {"find_links_s": round(folder, 2), "index_s": round(index, 2), "ratio": round(index / folder, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="requests only and 2,000 wheels")
    parser.add_argument("--wheels", type=int, default=None, help="wheels already present (default 10,000; quick 2,000)")
    args = parser.parse_args()
    specs = QUICK_SET if args.quick else FULL_SET
    count = args.wheels or (2000 if args.quick else 10000)
    root = Path(tempfile.mkdtemp(prefix="mlab-bench-stage-"))
    try:
        result = {
            "set": specs,
            "stage_vs_download": bench_stage_vs_download(root, specs),
            "incremental_index": bench_incremental_index(root, count),
            "offline_install": bench_offline_install(root, specs),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
