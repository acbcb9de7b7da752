"""`mlab image build --local`: reuses the cached image, prints its reference last, tags."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mlab.podman.runner import podman

pytestmark = pytest.mark.e2e


def test_cli_reuses_the_image_and_prints_its_reference_last(homepod_image, e2e) -> None:
    tag = e2e.unique_name("mlabtest-img-")
    mlab = str(Path(sys.executable).with_name("mlab"))
    proc = subprocess.run([mlab, "image", "build", "--local", "--tag", tag],
                          capture_output=True, text=True, timeout=600, check=False)
    try:
        assert proc.returncode == 0, proc.stderr
        ref = proc.stdout.strip().splitlines()[-1]
        assert re.fullmatch(r"localhost/mlab/homepod:[0-9a-f]{16}", ref)
        assert "image ready" in proc.stderr
        # The same recipe: the base was reused (the app layer differs only if someone
        # edited MLab's source since the session fixture built it).
        assert label(ref, "mlab.recipe-hash") == label(homepod_image, "mlab.recipe-hash")
        assert ref.endswith(label(ref, "mlab.app-hash")[:16])
        ids = {podman(["image", "inspect", "--format", "{{.Id}}", r]).stdout.strip()
               for r in (ref, f"localhost/mlab/homepod:{tag}")}
        assert len(ids) == 1
    finally:
        podman(["rmi", f"localhost/mlab/homepod:{tag}"], check=False)


def label(ref: str, key: str) -> str:
    return json.loads(podman(["image", "inspect", "--format", "{{json .Labels}}", ref]).stdout)[key]
