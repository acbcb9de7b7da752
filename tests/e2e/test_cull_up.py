"""`mlab up` leaves a culled HomePod stopped until its user wakes it (docs/culling.md).

A site brought up by `mlab up` (one user, no Airlock, short culling limits): `mlab cull
--once` passes warn and then stop dora's idle HomePod; a second `mlab up` (an admin's change
to the site) says it left the culled HomePod stopped and does not start it; `mlab status`
shows it culled; `mlab wake dora` starts it (audited), and the next `mlab up` changes nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_runner import Run, mlab_site

from mlab.podman.runner import podman

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

SITE = "t16up"
BIND = "127.0.16.1"
POD = f"mlab-{SITE}-homepod-dora"


class UpSite:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.file = root / f"{SITE}.yaml"
        self.env = {"MLAB_STATE_DIR": str(root / "state"), "COLUMNS": "250"}

    def mlab(self, *args: str) -> Run:
        return mlab_site(self.file, *args, env=self.env, timeout=900)

    def state(self) -> str:
        return podman(["pod", "inspect", POD, "--format", "{{.State}}"]).stdout.strip()

    def audit(self) -> list[dict[str, Any]]:
        path = self.root / "state" / SITE / "cull-audit.jsonl"
        return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def site(homepod_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpSite]:
    s = UpSite(tmp_path_factory.mktemp(SITE))
    # A tag of our own: other checkouts prune localhost/mlab/homepod:<hash> tags.
    tag = homepod_image.rsplit(":", 1)[1]
    podman(["tag", homepod_image, f"localhost/mlab/{SITE}:{tag}"])
    s.file.write_text(yaml.safe_dump({
        "apiVersion": "mlab.io/v1", "name": SITE,
        "image": {"repository": f"localhost/mlab/{SITE}", "tag": tag, "pullPolicy": "Never"},
        "access": {"bindAddress": BIND, "officeCIDRs": ["127.0.0.0/8"]},
        "users": [{"name": "dora", "uid": 1001}],
        "airlock": {"enabled": False},
        "culling": {"idleAfter": "30s", "warnBefore": "10s", "cpuBusyPercent": 15},
    }))
    s.mlab("down", "--volumes")
    s.mlab("up")
    try:
        yield s
    finally:
        s.mlab("down", "--volumes")
        # Name the tag twice: `podman untag IMAGE` alone removes every name of the image,
        # the shared localhost/mlab/homepod:<hash> too (which broke the modules after this).
        own = f"localhost/mlab/{SITE}:{tag}"
        podman(["untag", own, own], check=False)


def test_up_leaves_a_culled_homepod_stopped_until_woken(site: UpSite) -> None:
    seen: list[str] = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        rows = {r["user"]: r for r in json.loads(site.mlab("cull", "--once", "-o", "json").stdout)}
        seen.append(rows["dora"]["action"])
        if seen[-1] == "cull":
            break
        time.sleep(4)
    assert seen[-1] == "cull" and "warn" in seen, seen
    assert site.state() == "Exited"

    out = site.mlab("up").stderr
    assert "1 culled left stopped" in out and "0 started" in out, out
    assert site.state() == "Exited"
    assert "culled: idle" in site.mlab("status").stdout

    site.mlab("wake", "dora")
    assert site.state() == "Running"
    assert [e["event"] for e in site.audit()] == ["cull", "wake"]
    out = site.mlab("up").stderr
    assert "culled left stopped" not in out and "0 replaced" in out, out
    assert site.state() == "Running"
