"""A baked image reaches the node through a real registry, and HomePods move one by one.

Debian's ``docker-registry`` (the CNCF distribution registry) serves plain HTTP on the
node's address (192.0.2.2, not a loopback address: containerd's built-in "localhost speaks
HTTP" default does not apply, so the pull works only through the ``hosts.toml`` that
``mlab node up --site`` writes from the site's ``image.plainHttp``). ``mlab request bake
--push`` bakes a marker file into the HomePod image and pushes it; a site pinned to that tag
(its own namespace, two users) is applied and both HomePods come up on the *pulled* image
(containerd did not hold the reference before; nothing is imported with ``ctr``). A second
bake is pushed and pinned: ``mlab apply`` keeps both running HomePods on their image,
``mlab apply --restart-user alice`` moves only alice's, and bob's pod is the same pod,
still running, on the first image. The seconds from ``bake --push`` to a HomePod running the
new image are printed (``-s``).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from nodekit import Node

from mlab.node import images, layout
from mlab.node.images import containerd_images
from mlab.node.layout import default_layout
from mlab.node.lifecycle import known_bins
from mlab.podman.runner import podman
from mlab.requests.packages import PackageStep, dump_steps

pytestmark = [pytest.mark.e2e, pytest.mark.node, pytest.mark.timeout(2400)]

SITE = "t21node"
NAMESPACE = "mlab-t21"
MARKER = "/etc/mlab-bake-marker"


@pytest.fixture(scope="module")
def registry(node: Node, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``192.0.2.2:PORT``: docker-registry on the node's address, storage in a temp folder."""
    binary = shutil.which("docker-registry")
    assert binary, "docker-registry is needed (bash scripts/setup.sh)"
    root = tmp_path_factory.mktemp("registry")
    with socket.socket() as s:
        s.bind((layout.NODE_IP, 0))
        port = s.getsockname()[1]
    config = root / "config.yml"
    config.write_text(yaml.safe_dump({
        "version": 0.1, "log": {"level": "warn"},
        "storage": {"filesystem": {"rootdirectory": str(root / "data")}},
        "http": {"addr": f"{layout.NODE_IP}:{port}"},
    }))
    log = open(root / "registry.log", "wb")  # noqa: SIM115 - the child keeps its copy
    proc = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    url = f"http://{layout.NODE_IP}:{port}/v2/"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url, timeout=2, trust_env=False).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, (root / "registry.log").read_text()
        time.sleep(0.2)
    yield f"{layout.NODE_IP}:{port}"
    proc.terminate()
    proc.wait(timeout=15)


class RegSite:
    """The test's site file (pinned to one tag at a time) and how to run mlab on it."""

    def __init__(self, node: Node, root: Path, registry: str, base: str) -> None:
        self.node, self.root, self.registry, self.base = node, root, registry, base
        self.file = root / f"{SITE}.yaml"
        self.pushed: list[str] = []

    def write(self, tag: str) -> None:
        self.file.write_text(yaml.safe_dump({
            "apiVersion": "mlab.io/v1", "name": SITE, "namespace": NAMESPACE,
            "image": {"repository": f"{self.registry}/mlab/homepod", "tag": tag,
                      "plainHttp": True, "pullPolicy": "IfNotPresent"},
            "access": {"bindAddress": "127.0.0.1", "officeCIDRs": ["127.0.0.0/8"]},
            "users": [{"name": "alice", "uid": 1001}, {"name": "bob", "uid": 1002}],
            "airlock": {"enabled": False},
            "codeService": {"host": "code.t21.local", "reviewers": ["bob"], "clusterIP": "10.96.0.210"},
        }))

    def mlab(self, *args: str, timeout: float = 1200) -> subprocess.CompletedProcess[str]:
        proc = self.node.mlab(*args, "--site", str(self.file), timeout=timeout)
        assert proc.returncode == 0, f"mlab {args} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
        return proc

    def bake(self, marker: str) -> str:
        """``mlab request bake --push`` of a script writing ``marker``; the pushed reference."""
        steps = self.root / f"{marker}.json"
        steps.write_text(dump_steps([PackageStep(
            id=1, owner="alice", reason="a marker for the registry test",
            approved_at="2026-12-05T00:00:00Z", script=f"echo {marker} > {MARKER}\n")]))
        out = self.mlab("request", "bake", "--base", self.base, "--from", str(steps), "--push")
        ref = out.stdout.strip().splitlines()[-1]
        assert ref.startswith(f"{self.registry}/mlab/homepod:pkg-"), ref
        self.pushed.append(ref)
        return ref

    def pods(self) -> dict[str, dict]:
        """User -> its running HomePod pod (not being deleted)."""
        items = self.node.json("-n", NAMESPACE, "get", "pods", "-l",
                               "app.kubernetes.io/component=homepod")["items"]
        return {p["metadata"]["labels"]["mlab.io/user"]: p for p in items
                if p["status"].get("phase") == "Running"
                and not p["metadata"].get("deletionTimestamp")}

    def marker(self, user: str) -> str:
        return self.node.kubectl("-n", NAMESPACE, "exec", f"deploy/homepod-{user}", "--",
                                 "cat", MARKER).stdout.strip()


@pytest.fixture(scope="module")
def site(node: Node, registry: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegSite]:
    from mlab.image.build import ensure_image, image_exists

    # The image `mlab node up` just made: ensure_image() finds it in its cache (the reference
    # depends on the recipe, the source and a refreshed base's time: mlab.image.build).
    built = ensure_image()
    assert image_exists(built), built
    # A tag of our own: other checkouts prune localhost/mlab/homepod:<hash> tags.
    base = f"localhost/mlab/{SITE}:{built.rsplit(':', 1)[1]}"
    podman(["tag", built, base])
    s = RegSite(node, tmp_path_factory.mktemp(SITE), registry, base)
    s.write("unset")
    up = node.mlab("node", "up", "-q", *node.up_args, "--site", str(s.file), timeout=900)
    assert up.returncode == 0, up.stderr
    hosts = default_layout().registry_hosts / registry / "hosts.toml"
    assert f'server = "http://{registry}"' in hosts.read_text()
    yield s
    node.mlab("delete", "--site", str(s.file), "--delete-data", timeout=600)
    lay = default_layout()
    for ref in s.pushed:  # containerd keeps no pulled test image (the kubelet's GC is off)
        images.ctr(lay, known_bins(lay), ["images", "rm", ref])
        podman(["rmi", "-f", ref, f"localhost/mlab/homepod:{ref.rsplit(':', 1)[1]}"], check=False)
    podman(["untag", base, base], check=False)
    shutil.rmtree(hosts.parent, ignore_errors=True)


def test_pull_from_registry_then_restart_one_user(site: RegSite) -> None:
    lay = default_layout()
    bins = known_bins(lay)
    stamp = str(time.time_ns())

    start = time.monotonic()
    first = site.bake(f"first-{stamp}")
    pushed = time.monotonic()
    assert first not in containerd_images(lay, bins)  # only the registry has it
    site.write(first.rsplit(":", 1)[1])
    site.mlab("apply", "--timeout", "900")
    running = time.monotonic()
    pods = site.pods()
    assert set(pods) == {"alice", "bob"}
    for pod in pods.values():
        status = pod["status"]["containerStatuses"][0]
        assert status["image"] == first and status["ready"], status
    assert first in containerd_images(lay, bins)  # containerd pulled it
    assert site.marker("alice") == site.marker("bob") == f"first-{stamp}"
    events = site.node.kubectl("-n", NAMESPACE, "get", "events", "--field-selector",
                               "reason=Pulled", "-o", "jsonpath={.items[*].message}").stdout
    assert f'Successfully pulled image "{first}"' in events, events
    print(f"\nbake --push (cold registry): {pushed - start:.0f} s; apply with the pull to "
          f"2 HomePods running: {running - pushed:.0f} s; bake --push to HomePods on the image: "
          f"{running - start:.0f} s")

    # A second bake: running HomePods keep their image until their user (or the admin) asks.
    start = time.monotonic()
    second = site.bake(f"second-{stamp}")
    pushed = time.monotonic()
    site.write(second.rsplit(":", 1)[1])
    held = site.mlab("apply", "--timeout", "900").stderr
    assert "kept homepod-alice on" in held and "kept homepod-bob on" in held, held
    assert {u: p["metadata"]["uid"] for u, p in site.pods().items()} == {
        u: p["metadata"]["uid"] for u, p in pods.items()}

    site.mlab("apply", "--restart-user", "alice", "--timeout", "900")
    moved = time.monotonic()
    after = site.pods()
    assert after["alice"]["metadata"]["uid"] != pods["alice"]["metadata"]["uid"]
    assert after["alice"]["status"]["containerStatuses"][0]["image"] == second
    assert site.marker("alice") == f"second-{stamp}"
    # bob's HomePod is the same pod, never restarted, still on the first image.
    assert after["bob"]["metadata"]["uid"] == pods["bob"]["metadata"]["uid"]
    bob = after["bob"]["status"]["containerStatuses"][0]
    assert bob["image"] == first and bob["restartCount"] == 0 and bob["ready"]
    assert site.marker("bob") == f"first-{stamp}"
    print(f"bake --push (warm registry): {pushed - start:.0f} s; apply + apply --restart-user "
          f"alice: {moved - pushed:.0f} s; bake --push to alice on the new image: "
          f"{moved - start:.0f} s")
