"""`mlab image build --local --refresh` (issue 17): the real mmdebstrap build of the base
again with an unchanged recipe, so the image carries Debian's current security updates.

The base's recipe tag moves to the refreshed image (labelled ``mlab.refreshed``, also kept
under a dated tag), the app layer is rebuilt on it (a new image reference), and
``mlab image status`` then finds no missing security update. Takes minutes; run it under
``flock /tmp/mlab-e2e-image.lock`` (the base tag is shared by every checkout on the machine).
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
from cli_runner import mlab

from mlab.image import recipe
from mlab.image.build import refreshed_label
from mlab.podman.runner import podman

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(3600)]


def _image_id(ref: str) -> str:
    return podman(["image", "inspect", "--format", "{{.Id}}", ref]).stdout.strip()


def test_refresh_rebuilds_the_base_and_status_finds_no_missing_security_update(
        homepod_image: str) -> None:
    base = f"{recipe.BASE_REPOSITORY}:{recipe.base_hash()[:16]}"
    before = _image_id(base)
    started = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    proc = mlab("image", "build", "--local", "--refresh", "-q", timeout=3300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ref = proc.stdout.strip().splitlines()[-1]
    assert ref != homepod_image, "the app layer is rebuilt on the refreshed base"
    assert _image_id(base) != before, "the recipe's base tag names the new bootstrap"
    label = refreshed_label(base)
    assert label and dt.datetime.fromisoformat(label) >= started, label
    dated = [n for n in json.loads(podman(["image", "inspect", base]).stdout)[0]["RepoTags"]
             if n.startswith(f"{base}-r")]
    assert dated, "the refreshed base keeps a dated tag"
    proc = mlab("image", "status", "--image", ref, "-o", "json", timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = json.loads(proc.stdout)
    assert info["age_days"] == 0
    assert info["security"] == 0, [u for u in info["updates"] if u["security"]]
    # A build without --refresh now reuses the refreshed base and this image.
    again = mlab("image", "build", "--local", "-q", timeout=1200)
    assert again.returncode == 0 and again.stdout.strip().splitlines()[-1] == ref, again.stderr
