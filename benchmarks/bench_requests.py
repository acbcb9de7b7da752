"""Benchmark export staging and publication against coreutils in the same run.

Run: ``.venv/bin/python benchmarks/bench_requests.py [--size-mib 1024] [--samples 5] [--json]``

Numbers, not assertions; interleaved samples (A B C A B C ...), median, min..max and the
pair-by-pair ratio against the baseline. One random file of ``--size-mib`` MiB in a temporary directory:

- stage: :func:`mlab.requests.checksums.stage_export` (copy into an outbox and sha256 in
  one pass), against the baseline ``cp`` followed by ``sha256sum`` (two passes);
- publish: :func:`mlab.requests.publish.publish_one` (openat/O_NOFOLLOW, copy and verify in
  one pass), against the same baseline.

Goal: each ratio at or below about 1.0 (one streaming pass is no slower than two tools).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sampling import as_json, dumps, interleave, report  # noqa: E402

from mlab.requests.checksums import collect_sources, stage_export  # noqa: E402
from mlab.requests.publish import publish_one  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="File size. Default: 1024.")
    parser.add_argument("--samples", type=int, default=5, help="Counted runs per case. Default: 5.")
    parser.add_argument("--json", action="store_true", help="Print JSON.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlab-bench-req-") as tmp:
        root = Path(tmp)
        src = root / "data.bin"
        with open(src, "wb") as fh:
            for _ in range(args.size_mib):
                fh.write(os.urandom(1024 * 1024))
        counter = iter(range(1, 1_000_000))

        def baseline() -> None:
            subprocess.run(["cp", str(src), str(root / "copy.bin")], check=True)
            subprocess.run(["sha256sum", str(root / "copy.bin")], check=True,
                           stdout=subprocess.DEVNULL)
            (root / "copy.bin").unlink()

        def stage() -> None:
            n = next(counter)
            outbox = root / "outbox" / "alice"
            outbox.mkdir(parents=True, exist_ok=True)
            stage_export(collect_sources([src]), outbox, f"s{n}")
            shutil.rmtree(outbox / f"s{n}")

        def publish() -> float:
            # staging is set-up here, not timed: only the publication is
            n = next(counter)
            outbox = root / "outbox" / "alice"
            outbox.mkdir(parents=True, exist_ok=True)
            files = stage_export(collect_sources([src]), outbox, f"p{n}")
            request = {"id": n, "owner": "alice", "outbox": f"p{n}", "files": files}
            start = time.perf_counter()
            outcome = publish_one(request, root / "outbox", root / "export")
            seconds = time.perf_counter() - start
            assert outcome.action == "published", outcome.detail
            shutil.rmtree(outbox / f"p{n}")
            shutil.rmtree(root / "export" / str(n))
            return seconds

        cases = {"stage_export (copy + sha256, one pass)": stage,
                 "publish_one (verify + copy, one pass)": publish,
                 "cp + sha256sum (baseline)": baseline}
        stats = interleave(cases, samples=args.samples)
    base = "cp + sha256sum (baseline)"
    if args.json:
        print(dumps({"size_mib": args.size_mib, "figures": as_json(stats, base)}))
    else:
        print(report(stats, baseline=base, goals={k: 1.0 for k in cases if k != base},
                     title=f"export of one {args.size_mib} MiB file"))


if __name__ == "__main__":
    main()
