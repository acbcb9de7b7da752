"""The IPv6 fix of the podman engine is what makes `mlab verify` pass (issue 20, issue 13.3).

A one-user site (``t4v6``, bind 127.0.4.61) brought up with the test switch
``MLAB_TEST_PODMAN_KEEP_IPV6=1`` (containers keep IPv6, no bridge sysctl, no IPv6 drop rules):
`mlab verify` exits 1 and names the IPv6 edge (the host's bridge over link-local) with the
fix; the IPv4 matrix still holds. Then `mlab down` and `mlab up` without the switch: verify
passes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

SITE = "t4v6"
BIND = "127.0.4.61"


def _mlab(root: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mlab.cli.main", *args, "--site",
                           str(root / "site.yaml")], env=env, capture_output=True, text=True,
                          timeout=600, check=False)


@pytest.fixture(scope="module")
def site(homepod_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    root = tmp_path_factory.mktemp("t4v6")
    repo, tag = homepod_image.rsplit(":", 1)
    (root / "site.yaml").write_text(yaml.safe_dump({
        "apiVersion": "mlab.io/v1", "name": SITE,
        "image": {"repository": repo, "tag": tag, "pullPolicy": "Never"},
        "access": {"bindAddress": BIND, "officeCIDRs": ["127.0.0.0/8"]},
        "users": [{"name": "alice", "uid": 1001, "service": {"ports": {
            "vnc": 16901, "rdp": 16389, "novnc": 16031, "ssh": 16201}}}],
        "airlock": {"service": {"ports": {"vnc": 16900, "novnc": 16030, "ssh": 16022}}},
    }))
    env = {**os.environ, "MLAB_STATE_DIR": str(root / "state"), "COLUMNS": "200"}
    env.pop("MLAB_TEST_PODMAN_KEEP_IPV6", None)
    _mlab(root, env, "down", "--volumes")
    yield root, env
    _mlab(root, env, "down", "--volumes")


def test_without_the_ipv6_fix_verify_fails_naming_the_ipv6_edge(site: Any) -> None:
    root, env = site
    unsafe = {**env, "MLAB_TEST_PODMAN_KEEP_IPV6": "1"}
    up = _mlab(root, unsafe, "up")
    assert up.returncode == 0, up.stderr[-3000:]
    proc = _mlab(root, unsafe, "verify", "-o", "json")
    assert proc.returncode == 1, proc.stderr[-2000:]
    bad = [r for r in json.loads(proc.stdout) if not r["ok"]]
    assert bad, "verify passed with IPv6 on"
    assert all(r["kind"] == "tcp6" for r in bad), json.dumps(bad, indent=1)
    host = [r for r in bad if r["target"].startswith("IPv6 host (bridge of mlab-t4v6-hp-alice)")]
    assert host, json.dumps(bad, indent=1)
    assert "fix: the podman engine takes IPv6 off" in host[0]["detail"]
    # The same edge as one line on stderr, with the fix.
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("mlab verify: MISMATCH")]
    assert any("homepod-alice --> IPv6 host (bridge of mlab-t4v6-hp-alice)" in ln
               and "fix: the podman engine takes IPv6 off" in ln for ln in lines), proc.stderr
    # The switch left the firewall without its IPv6 rules.
    rules = subprocess.run(["nft", "list", "table", "inet", "mlab_t4v6"], capture_output=True,
                           text=True, check=True).stdout
    assert "nfproto ipv6" not in rules


def test_with_the_fix_verify_passes(site: Any) -> None:
    root, env = site
    assert _mlab(root, env, "down").returncode == 0
    up = _mlab(root, env, "up")
    assert up.returncode == 0, up.stderr[-3000:]
    proc = _mlab(root, env, "verify", "-o", "json")
    bad = [r for r in json.loads(proc.stdout) if not r["ok"]]
    assert proc.returncode == 0 and not bad, json.dumps(bad, indent=1)
    rules = subprocess.run(["nft", "list", "table", "inet", "mlab_t4v6"], capture_output=True,
                           text=True, check=True).stdout
    assert "meta nfproto ipv6 drop" in rules
