"""A baked image reaches HomePods through a real registry (podman engine).

Debian's ``docker-registry`` (the CNCF distribution registry) serves plain HTTP on a free
loopback port, declared in the site as ``image.plainHttp: true``. The HomePod image is pushed
under its content tag (``mlab image push``) and a site pinned to it comes up by *pulling* it
(the reference exists only in the registry). Then ``mlab request bake --push`` bakes an
approved package script (Debian's ``sl``) and pushes the result; with the new tag pinned,
``mlab up`` keeps carol's running HomePod on its image and ``mlab status`` says it is older
and what a restart loses; ``mlab restart --user carol`` moves it, and the package is there.
The seconds from ``bake --push`` to carol's HomePod on the new image are printed (-s).

A second registry serves TLS with a certificate from a CA made by the test
(tests/registry_kit.py), named in the site as ``image.caFile``: ``mlab image push`` and the
podman engine's pull (``mlab.image.site_image.image_ref``) trust it through podman's
``--cert-dir`` for that command only; a plain ``podman pull`` is still refused, so the
machine's trust store did not learn the CA.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cli_runner import Run, mlab, mlab_site
from registry_kit import serving

from mlab.podman.runner import podman
from mlab.requests.packages import PackageStep, dump_steps

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]

SITE = "t21reg"
BIND = "127.0.22.1"
CAROL = f"mlab-{SITE}-homepod-carol-homepod"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``127.0.0.1:PORT``: docker-registry on a free port, storage in a temp directory."""
    with serving(tmp_path_factory.mktemp("registry")) as reg:
        yield reg.host


class RegSite:
    def __init__(self, root: Path, registry: str) -> None:
        self.root, self.registry = root, registry
        self.file = root / f"{SITE}.yaml"
        self.env = {**os.environ, "MLAB_STATE_DIR": str(root / "state"), "COLUMNS": "250"}

    def write(self, tag: str) -> None:
        self.file.write_text(yaml.safe_dump({
            "apiVersion": "mlab.io/v1", "name": SITE,
            "image": {"repository": f"{self.registry}/mlab/homepod", "tag": tag,
                      "plainHttp": True, "pullPolicy": "IfNotPresent"},
            "access": {"bindAddress": BIND, "officeCIDRs": ["127.0.0.0/8"]},
            "users": [{"name": "carol", "uid": 1001}],
            "airlock": {"enabled": False},
        }))

    def mlab(self, *args: str, site: bool = True) -> Run:
        """``mlab ARGS [--site FILE]`` on the shared runner; a non-zero exit fails."""
        if site:
            return mlab_site(self.file, *args, env=self.env, timeout=1800)
        return mlab(*args, env=self.env, timeout=1800, check=True)


def carol_image() -> str:
    return podman(["inspect", "--format", "{{.ImageName}}", CAROL]).stdout.strip()


def carol_id() -> str:
    return podman(["inspect", "--format", "{{.Id}}", CAROL]).stdout.strip()


@pytest.fixture(scope="module")
def site(homepod_image: str, registry: str,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegSite]:
    s = RegSite(tmp_path_factory.mktemp(SITE), registry)
    s.write("unset")
    # A tag of our own with the same content tag: other sessions building other recipes
    # prune localhost/mlab/homepod:<hash> tags (mlab.image.build.prune_old_recipes).
    s.base = f"localhost/mlab/{SITE}:{homepod_image.rsplit(':', 1)[1]}"  # type: ignore[attr-defined]
    podman(["tag", homepod_image, s.base])  # type: ignore[attr-defined]
    first = s.mlab("image", "push", s.base).stdout.strip().splitlines()[-1]  # type: ignore[attr-defined]
    assert first == f"{registry}/mlab/homepod:{homepod_image.rsplit(':', 1)[1]}"
    s.first = first  # type: ignore[attr-defined]
    s.write(first.rsplit(":", 1)[1])
    s.mlab("down", "--volumes")
    # Only the registry has this reference: `mlab up` pulls it.
    assert podman(["image", "exists", first], check=False).returncode != 0
    s.mlab("up")
    yield s
    s.mlab("down", "--volumes")
    podman(["rmi", "-f", first], check=False)
    podman(["untag", s.base, s.base], check=False)  # type: ignore[attr-defined]


def test_up_pulls_the_pushed_image(site: RegSite) -> None:
    assert carol_image() == site.first  # type: ignore[attr-defined]
    assert podman(["exec", CAROL, "cat", "/etc/mlab/image"]).stdout.strip() == site.first  # type: ignore[attr-defined]


def test_bake_push_then_restart_moves_carol(site: RegSite) -> None:
    steps = site.root / "approved.json"
    steps.write_text(dump_steps([PackageStep(
        id=7, owner="carol", reason="sl for the demo", approved_at="2026-12-05T00:00:00Z",
        script="set -e\napt-get update -qq\n"
               "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends sl\n",
    )]))
    start = time.monotonic()
    baked = site.mlab("request", "bake", "--base", site.base, "--from", str(steps),  # type: ignore[attr-defined]
                      "--push").stdout.strip().splitlines()[-1]
    pushed = time.monotonic()
    assert baked.startswith(f"{site.registry}/mlab/homepod:pkg-"), baked
    before = carol_id()
    site.write(baked.rsplit(":", 1)[1])

    # The running HomePod is not pulled from under carol: it stays, and status says so.
    out = site.mlab("up").stderr
    assert "1 held on their image" in out, out
    assert carol_id() == before and carol_image() == site.first  # type: ignore[attr-defined]
    rows = {r["pod"]: r for r in json.loads(site.mlab("status", "-o", "json").stdout)}
    row = rows[f"mlab-{SITE}-homepod-carol"]
    assert row["image"] == site.first and row["older_image"] == baked  # type: ignore[attr-defined]
    assert "outside /home" in row["restart_loses"]
    assert "mlab restart --user carol" in site.mlab("status").stdout

    site.mlab("restart", "--user", "carol")
    moved = time.monotonic()
    assert carol_id() != before and carol_image() == baked
    assert "install ok installed" in podman(
        ["exec", CAROL, "dpkg-query", "-W", "-f", "${Status}", "sl"]).stdout
    assert podman(["exec", CAROL, "test", "-x", "/usr/games/sl"], check=False).returncode == 0
    rows = {r["pod"]: r for r in json.loads(site.mlab("status", "-o", "json").stdout)}
    assert "older_image" not in rows[f"mlab-{SITE}-homepod-carol"]
    print(f"\nbake --push: {pushed - start:.0f} s; up + restart onto it: {moved - pushed:.0f} s; "
          f"bake --push to carol on the new image: {moved - start:.0f} s")
    # Next run bakes again (the layer is reused while its local tag exists).
    podman(["rmi", "-f", baked, f"localhost/mlab/homepod:{baked.rsplit(':', 1)[1]}"], check=False)


def test_tls_registry_with_the_sites_ca_file(site: RegSite, tmp_path: Path) -> None:
    from mlab.image.site_image import image_ref
    from mlab.site import load_site

    with serving(tmp_path / "registry", tls=True) as reg:
        tls_site = RegSite(tmp_path, reg.host)
        tls_site.file.write_text(yaml.safe_dump({
            "apiVersion": "mlab.io/v1", "name": SITE,
            "image": {"repository": f"{reg.host}/mlab/homepod", "tag": "unset",
                      "caFile": str(reg.ca_file)},
            "users": [{"name": "carol", "uid": 1001}], "airlock": {"enabled": False},
        }))
        pushed = tls_site.mlab("image", "push", site.base).stdout.strip().splitlines()[-1]  # type: ignore[attr-defined]
        assert pushed == f"{reg.host}/mlab/homepod:{site.base.rsplit(':', 1)[1]}"  # type: ignore[attr-defined]
        try:
            # Without the site's CA the machine refuses the registry: nothing was trusted globally.
            plain = podman(["pull", "-q", "--tls-verify=true", pushed], check=False, timeout=300)
            assert plain.returncode != 0 and "certificate signed by unknown authority" in plain.stderr, plain.stderr
            assert podman(["image", "exists", pushed], check=False).returncode != 0
            loaded = load_site(tls_site.file)
            loaded = loaded.model_copy(update={"image": loaded.image.model_copy(
                update={"tag": pushed.rsplit(":", 1)[1]})})
            assert image_ref(loaded, lambda _m: None) == pushed  # pulled with --cert-dir
            assert podman(["image", "exists", pushed], check=False).returncode == 0
        finally:
            podman(["untag", pushed, pushed], check=False)  # only this name (the image keeps its others)
