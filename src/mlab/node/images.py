"""Images for the node's containerd: pause and CoreDNS made here, the HomePod from podman.

Invariant: no image is ever pulled (there is no registry); each one is made locally, turned
into a ``docker-archive`` with ``podman save`` and imported with ``ctr images import`` into
the CRI namespace ``k8s.io``. An image already in containerd is not imported again.

- pause: Kubernetes' own ``build/pause/linux/pause.c`` from the pinned module, linked
  static with gcc (what the upstream pause image holds).
- CoreDNS: the binary built from the pinned module, alone in the image.
- HomePod: :func:`mlab.image.build.ensure_image` (cached by recipe hash), imported under
  its hash tag and tagged ``localhost/mlab/homepod:latest`` in containerd.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from mlab.errors import DeployError
from mlab.node import layout
from mlab.node.build import Say, go_binary, go_dir, kubernetes_version
from mlab.node.layout import NodeLayout
from mlab.podman.runner import podman


def ctr(lay: NodeLayout, bins: dict[str, Path], args: list[str], timeout: float = 600) -> str:
    """Run ``ctr`` against the node's containerd in the CRI namespace; return stdout.

    Raises:
        DeployError: ctr failed (its last stderr line).
    """
    argv = [str(bins["ctr"]), "--address", str(lay.containerd_socket),
            "-n", layout.CONTAINERD_NAMESPACE, *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        raise DeployError(f"node: ctr {args[0]} {args[1] if len(args) > 1 else ''} failed: "
                          f"{lines[-1] if lines else proc.returncode}")
    return proc.stdout


def containerd_images(lay: NodeLayout, bins: dict[str, Path]) -> set[str]:
    """References of the images in the node's containerd."""
    return set(ctr(lay, bins, ["images", "ls", "-q"]).split())


def rootfs_tar(files: dict[str, bytes]) -> bytes:
    """A tar of ``path -> content`` files (mode 0755, root-owned): a one-binary rootfs."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name.lstrip("/"))
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def import_podman_image(lay: NodeLayout, bins: dict[str, Path], ref: str) -> None:
    """``podman save`` ``ref`` as a docker-archive and import it into containerd."""
    lay.images.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=lay.images) as tmp:
        archive = Path(tmp) / "image.tar"
        podman(["save", "--format", "docker-archive", "-o", str(archive), ref], timeout=1800)
        ctr(lay, bins, ["images", "import", str(archive)], timeout=1800)


def make_single_binary_image(lay: NodeLayout, bins: dict[str, Path], ref: str,
                             name: str, data: bytes) -> None:
    """An image holding only ``/NAME`` as its entrypoint, imported into containerd."""
    lay.images.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=lay.images) as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        rootfs.write_bytes(rootfs_tar({name: data}))
        podman(["import", "--change", f'ENTRYPOINT ["/{name}"]', str(rootfs), ref])
    import_podman_image(lay, bins, ref)


def build_pause(lay: NodeLayout) -> bytes:
    """Compile Kubernetes' pause.c (from the pinned module) statically; return the binary.

    Raises:
        DeployError: gcc failed (log file named).
    """
    gcc = shutil.which("gcc")
    if not gcc:
        raise DeployError("node: gcc is not installed (apt-get install gcc libc6-dev)")
    moddir = subprocess.run(
        [go_binary(), "list", "-m", "-f", "{{.Dir}}", "k8s.io/kubernetes"],
        cwd=go_dir("kubernetes"), capture_output=True, text=True, check=False,
    ).stdout.strip()
    src = Path(moddir) / "build" / "pause" / "linux" / "pause.c"
    logf = lay.log("build-pause")
    lay.logs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "pause"
        argv = [gcc, "-Os", "-static", "-Wall", f'-DVERSION={kubernetes_version()}',
                "-o", str(out), str(src)]
        with open(logf, "w") as log:
            proc = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, check=False)
        if proc.returncode != 0 or not out.exists():
            raise DeployError(f"node: building the pause image failed (gcc); see {logf}")
        return out.read_bytes()


def ensure_node_images(lay: NodeLayout, bins: dict[str, Path], say: Say) -> None:
    """Import pause and CoreDNS into containerd where missing."""
    have = containerd_images(lay, bins)
    if layout.PAUSE_IMAGE not in have:
        say("making the pause image")
        make_single_binary_image(lay, bins, layout.PAUSE_IMAGE, "pause", build_pause(lay))
    if layout.COREDNS_IMAGE not in have:
        say("making the CoreDNS image")
        make_single_binary_image(lay, bins, layout.COREDNS_IMAGE, "coredns",
                                 Path(bins["coredns"]).read_bytes())


def ensure_homepod_image(lay: NodeLayout, bins: dict[str, Path], say: Say) -> str:
    """Build (cached) the HomePod image with podman and make containerd hold it under its
    hash reference and ``localhost/mlab/homepod:latest``. Returns the hash reference."""
    from mlab.image import recipe
    from mlab.image.build import ensure_image

    ref = ensure_image(progress=lambda m: say(f"HomePod image: {m}"))
    if ref not in containerd_images(lay, bins):
        say(f"importing {ref} into containerd")
        import_podman_image(lay, bins, ref)
    ctr(lay, bins, ["images", "tag", "--force", ref, f"{recipe.REPOSITORY}:latest"])
    return ref
