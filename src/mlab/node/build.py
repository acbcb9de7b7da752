"""Build the node's programs from pinned Go modules, cached by recipe under the state dir.

Invariant: each Go module folder under ``mlab/node/go/`` (``kubernetes``, ``kube-router``,
``coredns``) is one recipe: its ``go.mod``/``go.sum`` pin every version, and the hash of
those files, the link flags and the Go version names the output folder
``bin/<recipe>-<hash12>/``. A folder exists only when its build finished (built in a
temporary folder, then renamed), so a second ``mlab node up`` builds nothing. Builds use
``-trimpath`` and the same flags as any other build of these modules on the machine, so
Go's shared build cache makes a rebuild fast.

The Kubernetes version is named once: the ``require k8s.io/kubernetes`` line of
``go/kubernetes/go.mod``; the version stamps (``-X ...version.gitVersion``, without which
every binary says ``v0.0.0-master`` and kubectl cannot parse it) are derived from it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from mlab.errors import DeployError, ToolMissingError
from mlab.node.layout import NodeLayout

Say = Callable[[str], None]


def go_dir(recipe: str) -> Path:
    """The Go module folder of a recipe (``kubernetes``, ``kube-router``, ``coredns``)."""
    return Path(str(resources.files("mlab.node").joinpath("go", recipe)))


def required_version(recipe: str, module: str) -> str:
    """The version ``recipe``'s go.mod requires of ``module`` (``v1.34.4``).

    Raises:
        DeployError: go.mod does not require it.
    """
    text = (go_dir(recipe) / "go.mod").read_text()
    m = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", text, re.M)
    if not m:
        raise DeployError(f"node: go/{recipe}/go.mod does not require {module}")
    return m.group(1)


def kubernetes_version() -> str:
    """The one pinned Kubernetes release (from ``go/kubernetes/go.mod``)."""
    return required_version("kubernetes", "k8s.io/kubernetes")


def version_ldflags(version: str) -> str:
    """``-s -w`` plus the version stamps of component-base and client-go for ``version``."""
    m = re.fullmatch(r"v(\d+)\.(\d+)\.\d+", version)
    if not m:
        raise DeployError(f"node: Kubernetes version {version!r} is not vMAJOR.MINOR.PATCH")
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {pkg}.gitVersion={version}", f"-X {pkg}.gitMajor={m.group(1)}",
                  f"-X {pkg}.gitMinor={m.group(2)}", f"-X {pkg}.gitTreeState=clean"]
    return " ".join(flags)


@dataclass(frozen=True)
class Recipe:
    """One Go build: module folder, packages (``-o DIR`` names binaries after them), flags."""

    name: str
    packages: tuple[str, ...]
    ldflags: str
    cgo: bool = True


def recipes() -> list[Recipe]:
    """The three builds of the node."""
    k8s = kubernetes_version()
    return [
        Recipe("kubernetes", tuple(f"k8s.io/kubernetes/cmd/{c}" for c in (
            "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet",
            "kube-proxy", "kubectl")), version_ldflags(k8s)),
        Recipe("kube-router", ("github.com/cloudnativelabs/kube-router/v2/cmd/kube-router",),
               "-s -w"),
        Recipe("coredns", ("github.com/coredns/coredns",), "-s -w", cgo=False),
    ]


def go_binary() -> str:
    """Path of ``go``.

    Raises:
        ToolMissingError: Go is not installed.
    """
    path = shutil.which("go") or ("/usr/local/go/bin/go" if os.path.exists("/usr/local/go/bin/go") else None)
    if not path:
        raise ToolMissingError("node: go is not installed", hint="install Go 1.24 or newer")
    return path


def recipe_hash(recipe: Recipe) -> str:
    """12 hex digits over go.mod, go.sum, the flags and the Go version."""
    go = go_binary()
    version = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True,
                             check=False).stdout.strip()
    h = hashlib.sha256()
    for f in ("go.mod", "go.sum"):
        h.update((go_dir(recipe.name) / f).read_bytes())
    h.update(f"{recipe.packages}|{recipe.ldflags}|{recipe.cgo}|{version}".encode())
    return h.hexdigest()[:12]


def binary_name(package: str) -> str:
    """The file ``go build -o DIR`` writes for ``package`` (its last path element, without
    a ``/vN`` major-version suffix)."""
    parts = package.split("/")
    if re.fullmatch(r"v\d+", parts[-1]):
        parts = parts[:-1]
    return parts[-1]


def recipe_dir(lay: NodeLayout, recipe: Recipe) -> Path:
    """The cache folder of a recipe's binaries."""
    return lay.bin_root / f"{recipe.name}-{recipe_hash(recipe)}"


def build(lay: NodeLayout, recipe: Recipe, say: Say) -> Path:
    """Build ``recipe`` unless its folder exists; return the folder.

    Raises:
        DeployError: ``go build`` failed (names the recipe and its log file).
    """
    out = recipe_dir(lay, recipe)
    if out.is_dir():
        return out
    lay.bin_root.mkdir(parents=True, exist_ok=True)
    lay.logs.mkdir(parents=True, exist_ok=True)
    logf = lay.log(f"build-{recipe.name}")
    say(f"building {recipe.name} (go build, several minutes the first time; log {logf})")
    tmp = Path(tempfile.mkdtemp(prefix=f".{recipe.name}-", dir=lay.bin_root))
    env = dict(os.environ, GOTOOLCHAIN="local", GOFLAGS="-mod=readonly",
               CGO_ENABLED="1" if recipe.cgo else "0")
    argv = [go_binary(), "build", "-trimpath", "-ldflags", recipe.ldflags, "-o", str(tmp) + "/",
            *recipe.packages]
    with open(logf, "w") as log:
        log.write(" ".join(argv) + "\n")
        log.flush()
        proc = subprocess.run(argv, cwd=go_dir(recipe.name), env=env, stdout=log,
                              stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DeployError(f"node: building {recipe.name} failed (go build exit "
                          f"{proc.returncode}); see {logf}")
    tmp.chmod(0o755)
    tmp.rename(out)
    return out


def debian_program(name: str, package: str) -> Path:
    """A program Debian provides (etcd, containerd, ctr).

    Raises:
        ToolMissingError: not installed (names the package).
    """
    path = shutil.which(name) or next(
        (p for p in (f"/usr/bin/{name}", f"/usr/sbin/{name}") if os.path.exists(p)), None)
    if not path:
        raise ToolMissingError(f"node: {name} is not installed",
                               hint=f"apt-get install {package} (bash scripts/setup.sh --tests installs it)")
    return Path(path)


def ensure_binaries(lay: NodeLayout, say: Say) -> dict[str, Path]:
    """Every program of the node: built ones (cached) and Debian's.

    Returns:
        program name -> path.
    """
    bins: dict[str, Path] = {}
    for recipe in recipes():
        folder = build(lay, recipe, say)
        for pkg in recipe.packages:
            bins[binary_name(pkg)] = folder / binary_name(pkg)
    for name, package in (("etcd", "etcd-server"), ("containerd", "containerd"),
                          ("ctr", "containerd"), ("ipset", "ipset"), ("conntrack", "conntrack")):
        bins[name] = debian_program(name, package)
    return bins
