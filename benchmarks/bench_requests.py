"""Benchmark export staging and publication against coreutils in the same run.

Run: ``.venv/bin/python benchmarks/bench_requests.py [--size-mib 1024] [--json]``

Numbers, not assertions. One random file of ``--size-mib`` MiB in a temporary directory:

- stage: :func:`mlab.requests.checksums.stage_export` (copy into an outbox and sha256 in
  one pass), against the baseline ``cp`` followed by ``sha256sum`` (two passes);
- publish: :func:`mlab.requests.publish.publish_one` (openat/O_NOFOLLOW, copy and verify in
  one pass), against the same baseline.

Goal: each ratio at or below about 1.0 (one streaming pass is no slower than two tools).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from mlab.requests.checksums import collect_sources, stage_export
from mlab.requests.publish import publish_one


def _timed(fn):  # type: ignore[no-untyped-def]
    start = time.monotonic()
    value = fn()
    return time.monotonic() - start, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="File size. Default: 1024.")
    parser.add_argument("--json", action="store_true", help="Print JSON.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlab-bench-req-") as tmp:
        root = Path(tmp)
        src = root / "data.bin"
        with open(src, "wb") as fh:
            for _ in range(args.size_mib):
                fh.write(os.urandom(1024 * 1024))
        subprocess.run(["cat", str(src)], stdout=subprocess.DEVNULL, check=True)  # warm cache

        def baseline() -> None:
            subprocess.run(["cp", str(src), str(root / "copy.bin")], check=True)
            subprocess.run(["sha256sum", str(root / "copy.bin")], check=True,
                           stdout=subprocess.DEVNULL)
            (root / "copy.bin").unlink()

        base_s, _ = _timed(baseline)
        (root / "outbox" / "alice").mkdir(parents=True)
        stage_s, files = _timed(lambda: stage_export(collect_sources([src]),
                                                     root / "outbox" / "alice", "e1"))
        request = {"id": 1, "owner": "alice", "outbox": "e1", "files": files}
        publish_s, outcome = _timed(lambda: publish_one(request, root / "outbox",
                                                        root / "export"))
        assert outcome.action == "published", outcome.detail
    result = {
        "size_mib": args.size_mib,
        "baseline_cp_sha256sum_s": round(base_s, 2),
        "stage_s": round(stage_s, 2),
        "publish_s": round(publish_s, 2),
        "stage_ratio": round(stage_s / base_s, 2),
        "publish_ratio": round(publish_s / base_s, 2),
        "stage_mib_per_s": round(args.size_mib / stage_s, 1),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>26}: {value}")


if __name__ == "__main__":
    main()
