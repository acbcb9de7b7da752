"""Benchmark `mlab up` (podman engine): from nothing to ready, per extra user, verify.

Run: ``.venv/bin/python benchmarks/bench_up.py [--json]`` (root, podman, nftables; builds
the image first if it is missing, which is not timed).

Numbers, not assertions; each is reported with a baseline measured in the same run:

- baseline: ``podman run --rm --network none IMAGE true`` (a container's fixed cost);
- up from nothing, one user (image cached): volumes, networks, firewall, code service,
  Airlock and one HomePod, until every published port answers. Goal: under 20 s;
- one more user: ``up`` after adding a user to the site (that HomePod, and the code
  service, which learns the new user);
- an ``up`` that changes nothing (idempotence check cost);
- ``mlab verify``: the whole probe matrix;
- ``down --volumes``.

The site is ``t4bench`` on 127.0.4.9 with its own state directory; it is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

from mlab.image.build import ensure_image
from mlab.image.site_image import image_ref
from mlab.podman import engine as podman_engine
from mlab.podman.runner import podman
from mlab.probing import podman as probes
from mlab.site import Site, parse_site
from mlab.verify.matrix import Result

NAME = "t4bench"
BIND = "127.0.4.9"


def site(image: str, users: int) -> Site:
    repo, tag = image.rsplit(":", 1)
    return parse_site({
        "name": NAME,
        "image": {"repository": repo, "tag": tag, "pullPolicy": "Never"},
        "access": {"bindAddress": BIND},
        "users": [{"name": f"user{i}", "uid": 1001 + i, "service": {"ports": {
            "vnc": 25901 + i, "rdp": 23389 + i, "novnc": 27031 + i, "ssh": 22201 + i}}}
            for i in range(users)],
        "airlock": {"service": {"ports": {"vnc": 25900, "novnc": 27030, "ssh": 20022}}},
    })


def timed(fn: Callable[[], Any]) -> float:
    start = time.monotonic()
    fn()
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="Print JSON. Default: a table.")
    args = parser.parse_args()
    image = ensure_image()
    with tempfile.TemporaryDirectory(prefix="mlab-bench-up-") as state:
        os.environ["MLAB_STATE_DIR"] = state
        podman_engine.down(NAME, volumes=True)
        base = min(timed(lambda: podman(["run", "--rm", "--network", "none", image, "true"]))
                   for _ in range(2))
        try:
            one = site(image, 1)
            first = timed(lambda: podman_engine.up(one, image_of=image_ref))
            extra = timed(lambda: podman_engine.up(site(image, 2), image_of=image_ref))
            same = timed(lambda: podman_engine.up(site(image, 2), image_of=image_ref))
            plan = podman_engine.load_plan(NAME)
            assert plan is not None
            results: list[Result] = []
            verify = timed(lambda: results.extend(probes.run(plan, one.code_service.host)))
            bad = sum(not r.ok for r in results)
        finally:
            down = timed(lambda: podman_engine.down(NAME, volumes=True))
    rows = {
        "baseline: podman run --rm IMAGE true": base,
        "up from nothing, 1 user, every port ready": first,
        "up adding a second user": extra,
        "up with nothing to change": same,
        f"verify ({len(results)} probes, {bad} mismatches)": verify,
        "down --volumes": down,
    }
    if args.json:
        print(json.dumps({k: round(v, 2) for k, v in rows.items()}
                         | {"up_ratio_to_baseline": round(first / base, 1)}, indent=2))
        return
    for label, seconds in rows.items():
        print(f"{seconds:7.2f} s  {seconds / base:6.1f} x baseline  {label}")
    print(f"goal: one HomePod ready in under 20 s -> {'met' if first < 20 else 'NOT met'}")


if __name__ == "__main__":
    main()
