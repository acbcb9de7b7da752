"""`mlab image status` on the built image: real podman, real apt against the Debian mirror."""

from __future__ import annotations

import json

import pytest
from cli_runner import mlab

from mlab.podman.runner import podman

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


def test_status_reports_age_and_pending_updates(homepod_image: str) -> None:
    proc = mlab("image", "status", "--image", homepod_image, "-o", "json", timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = json.loads(proc.stdout)
    created = podman(["image", "inspect", "--format", "{{.Created.Unix}}", homepod_image]).stdout
    import datetime as dt

    assert info["created"] == dt.datetime.fromtimestamp(
        int(created), dt.timezone.utc).isoformat(timespec="seconds")
    assert info["age_days"] >= 0 and info["pending"] == len(info["updates"])
    assert info["security"] == sum(u["security"] for u in info["updates"])
    # A wrong reference is one clear line, exit 1, no traceback.
    proc = mlab("image", "status", "--image", "localhost/mlab/no-such-image:x", timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "not found" in proc.stderr
