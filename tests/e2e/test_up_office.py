"""Published ports seen from another host: office addresses get in, others do not.

A network namespace stands in for the office network (a veth pair, host side 10.250.4.1,
which is the site's bind address). Inside it, 10.250.4.2 is in ``access.officeCIDRs`` and
10.250.4.3 is not. The HomePod's ports are DNAT rules of MLab's own table (internal
network), the Airlock's and code service's are netavark's: both kinds are checked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

NS = "mlabtest-up-office"
HOST_IF, NS_IF = "mlt4o0", "mlt4o1"
BIND, OFFICE, STRANGER = "10.250.4.1", "10.250.4.2", "10.250.4.3"
SITE = "t4upoffice"


def _ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True)


def _cleanup() -> None:
    _ip("netns", "del", NS, check=False)
    _ip("link", "del", HOST_IF, check=False)


@pytest.fixture
def office_ns() -> Iterator[str]:
    _cleanup()
    _ip("netns", "add", NS)
    try:
        _ip("link", "add", HOST_IF, "type", "veth", "peer", "name", NS_IF)
        _ip("link", "set", NS_IF, "netns", NS)
        _ip("addr", "add", f"{BIND}/24", "dev", HOST_IF)
        _ip("link", "set", HOST_IF, "up")
        for addr in (OFFICE, STRANGER):
            _ip("-n", NS, "addr", "add", f"{addr}/24", "dev", NS_IF)
        _ip("-n", NS, "link", "set", NS_IF, "up")
        _ip("-n", NS, "link", "set", "lo", "up")
        yield NS
    finally:
        _cleanup()


def _reach(source: str, ports: list[int]) -> dict[int, bool]:
    """From the namespace, bound to ``source``: which ports of BIND accept a connection."""
    program = (
        "import json, socket, sys\n"
        "out = {}\n"
        "for p in json.loads(sys.argv[2]):\n"
        "    s = socket.socket(); s.settimeout(3); s.bind((sys.argv[1], 0))\n"
        "    try:\n"
        f"        s.connect(('{BIND}', p)); out[p] = True\n"
        "    except OSError:\n"
        "        out[p] = False\n"
        "    s.close()\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run(["ip", "netns", "exec", NS, sys.executable, "-c", program, source,
                           json.dumps(ports)], capture_output=True, text=True, check=True)
    return {int(k): v for k, v in json.loads(proc.stdout).items()}


def test_published_ports_answer_office_addresses_only(
    office_ns: str, homepod_image: str, tmp_path: Path
) -> None:
    repo, tag = homepod_image.rsplit(":", 1)
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({
        "apiVersion": "mlab.io/v1", "name": SITE,
        "image": {"repository": repo, "tag": tag, "pullPolicy": "Never"},
        "access": {"bindAddress": BIND, "officeCIDRs": [f"{OFFICE}/32"]},
        "users": [{"name": "alice", "uid": 1001, "service": {"ports": {
            "vnc": 15901, "rdp": 13389, "novnc": 17031, "ssh": 12201}}}],
        "airlock": {"service": {"ports": {"vnc": 15900, "novnc": 17030, "ssh": 10022}}},
    }))
    env = {**os.environ, "MLAB_STATE_DIR": str(tmp_path / "state")}

    def mlab(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mlab.cli.main", *args, "--site", str(site)],
                              env=env, capture_output=True, text=True, timeout=600, check=False)

    try:
        proc = mlab("up")
        assert proc.returncode == 0, proc.stderr
        ports = [15901, 12201, 10022, 80]
        assert _reach(OFFICE, ports) == {p: True for p in ports}
        assert _reach(STRANGER, ports) == {p: False for p in ports}
        verify = mlab("verify", "-o", "json")
        bad = [r for r in json.loads(verify.stdout) if not r["ok"]]
        assert verify.returncode == 0 and not bad, bad
    finally:
        mlab("down", "--volumes")
