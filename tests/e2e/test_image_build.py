"""`mlab image build --local`: reuses the cached image, prints its reference last, tags."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mlab.podman import podman

pytestmark = pytest.mark.e2e


def test_cli_reuses_the_image_and_prints_its_reference_last(homepod_image, e2e) -> None:
    tag = e2e.unique_name("mlabtest-img-")
    mlab = str(Path(sys.executable).with_name("mlab"))
    proc = subprocess.run([mlab, "image", "build", "--local", "--tag", tag],
                          capture_output=True, text=True, timeout=600, check=False)
    try:
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip().splitlines()[-1] == homepod_image
        assert "image ready" in proc.stderr
        ids = {podman(["image", "inspect", "--format", "{{.Id}}", ref]).stdout.strip()
               for ref in (homepod_image, "localhost/mlab/homepod:latest",
                           f"localhost/mlab/homepod:{tag}")}
        assert len(ids) == 1
        labels = podman(["image", "inspect", "--format", "{{json .Labels}}", homepod_image]).stdout
        assert "mlab.recipe-hash" in labels and "mlab.app-hash" in labels
    finally:
        podman(["untag", homepod_image, f"localhost/mlab/homepod:{tag}"], check=False)
