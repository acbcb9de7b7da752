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

Then the same registry program serves TLS with a certificate from a CA made by the test
(tests/registry_kit.py), declared in the site as ``image.caFile``: ``mlab node up --site``
gives containerd a copy of that CA in the registry's ``hosts.toml`` (``ca = ...``),
``mlab request bake --push`` pushes with it (podman ``--cert-dir``), and both HomePods move
onto the pulled image. The machine's trust store never learns the CA: a client without
it is refused.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from nodekit import Node
from registry_kit import Registry, serving

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
def registry(node: Node, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """docker-registry on the node's address (192.0.2.2), plain HTTP."""
    with serving(tmp_path_factory.mktemp("registry"), layout.NODE_IP) as reg:
        yield reg


@pytest.fixture(scope="module")
def tls_registry(node: Node, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """docker-registry on the node's address, TLS from a CA of the test's own."""
    with serving(tmp_path_factory.mktemp("tls-registry"), layout.NODE_IP, tls=True) as reg:
        yield reg


class RegSite:
    """The test's site file (pinned to one tag at a time) and how to run mlab on it."""

    def __init__(self, node: Node, root: Path, registry: Registry, base: str) -> None:
        self.node, self.root, self.base = node, root, base
        self.file = root / f"{SITE}.yaml"
        self.pushed: list[str] = []
        self.use(registry)

    def use(self, registry: Registry) -> None:
        """Point the site at ``registry`` (plain HTTP, or TLS with its CA as image.caFile)."""
        self.registry = registry.host
        self.tls = {"caFile": str(registry.ca_file)} if registry.ca_file else {"plainHttp": True}

    def write(self, tag: str) -> None:
        self.file.write_text(yaml.safe_dump({
            "apiVersion": "mlab.io/v1", "name": SITE, "namespace": NAMESPACE,
            "image": {"repository": f"{self.registry}/mlab/homepod", "tag": tag,
                      "pullPolicy": "IfNotPresent", **self.tls},
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
def site(node: Node, registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegSite]:
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
    node.clear_leftovers(s.file)
    up = node.mlab("node", "up", "-q", *node.up_args, "--site", str(s.file), timeout=900)
    assert up.returncode == 0, up.stderr
    hosts = default_layout().registry_hosts / registry.host / "hosts.toml"
    assert f'server = "http://{registry.host}"' in hosts.read_text()
    yield s
    node.mlab("delete", "--site", str(s.file), "--delete-data", timeout=600)
    lay = default_layout()
    for ref in s.pushed:  # containerd keeps no pulled test image (the kubelet's GC is off)
        images.ctr(lay, known_bins(lay), ["images", "rm", ref])
        podman(["rmi", "-f", ref, f"localhost/mlab/homepod:{ref.rsplit(':', 1)[1]}"], check=False)
    podman(["untag", base, base], check=False)
    for host in {ref.rsplit("/mlab/", 1)[0] for ref in s.pushed} | {registry.host}:
        shutil.rmtree(lay.registry_hosts / host, ignore_errors=True)


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


def test_pull_from_a_tls_registry_with_the_sites_ca(site: RegSite, tls_registry: Registry) -> None:
    lay = default_layout()
    bins = known_bins(lay)
    # The machine does not trust the test's CA: a client with the system's roots is refused.
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(tls_registry.url, timeout=10, trust_env=False)
    assert httpx.get(tls_registry.url, timeout=10, trust_env=False, verify=ssl.create_default_context(
        cafile=str(tls_registry.ca_file))).status_code == 200

    site.use(tls_registry)
    site.write("unset")
    up = site.node.mlab("node", "up", "-q", *site.node.up_args, "--site", str(site.file), timeout=900)
    assert up.returncode == 0, up.stderr
    folder = lay.registry_hosts / tls_registry.host
    hosts = (folder / "hosts.toml").read_text()
    assert f'server = "https://{tls_registry.host}"' in hosts and "skip_verify" not in hosts, hosts
    assert f'ca = "{folder / "ca.crt"}"' in hosts, hosts
    assert (folder / "ca.crt").read_bytes() == tls_registry.ca_file.read_bytes()  # type: ignore[union-attr]

    stamp = str(time.time_ns())
    start = time.monotonic()
    ref = site.bake(f"tls-{stamp}")  # podman pushes with --cert-dir (the site's caFile)
    pushed = time.monotonic()
    assert ref.startswith(f"{tls_registry.host}/mlab/homepod:pkg-")
    assert ref not in containerd_images(lay, bins)
    site.write(ref.rsplit(":", 1)[1])
    site.mlab("apply", "--restart-user", "alice", "--restart-user", "bob", "--timeout", "900")
    running = time.monotonic()
    pods = site.pods()
    assert set(pods) == {"alice", "bob"}
    for pod in pods.values():
        status = pod["status"]["containerStatuses"][0]
        assert status["image"] == ref and status["ready"], status
    assert ref in containerd_images(lay, bins)  # containerd pulled it over TLS
    events = site.node.kubectl("-n", NAMESPACE, "get", "events", "--field-selector",
                               "reason=Pulled", "-o", "jsonpath={.items[*].message}").stdout
    assert f'Successfully pulled image "{ref}"' in events, events
    assert site.marker("alice") == site.marker("bob") == f"tls-{stamp}"
    print(f"\nTLS registry: bake --push {pushed - start:.0f} s; apply with the pull to 2 "
          f"HomePods running: {running - pushed:.0f} s")
