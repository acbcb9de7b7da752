"""The sampler finds a desktop's D-Bus session address in the environment of a process on
that display (for notify-send), run against this machine's real /proc."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ACTIVITY = Path(__file__).resolve().parents[2] / "src/mlab/image/rootfs/usr/local/lib/mlab/activity"


def _bus(number: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ACTIVITY), "bus", number], capture_output=True,
                          text=True, timeout=60, check=False)


def test_bus_address_comes_from_a_process_on_that_display() -> None:
    session = subprocess.Popen(["sleep", "60"], env={
        "DISPLAY": ":77.0", "DBUS_SESSION_BUS_ADDRESS": "unix:path=/tmp/mlab-test-bus-77"})
    try:
        found = _bus("77")
        assert found.returncode == 0, found.stderr
        assert found.stdout.strip() == "unix:path=/tmp/mlab-test-bus-77"
    finally:
        session.kill()
        session.wait()


def test_no_session_says_why() -> None:
    missing = _bus("78")
    assert missing.returncode == 1
    assert "on :78 has DBUS_SESSION_BUS_ADDRESS (no desktop session bus)" in missing.stderr
