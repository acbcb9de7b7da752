"""``mlab node up``, ``down`` and ``status``: build what is missing, start, wait, stop.

Invariant: ``up`` is idempotent (a running component is left alone, a built recipe is not
rebuilt, certificates are kept) and returns only when the node is Ready with its add-ons
(CoreDNS) rolled out; ``down`` never lets a pod outlive its NetworkPolicies: the scheduler
stops first, every pod is deleted through the API and waited for while kube-router still
enforces, and only then do the node agents and the control plane stop
(CVE-2024-7598, issue 20).
"""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from mlab.errors import DeployError, UsageError
from mlab.node import addons, build, config, cri, hostnet, images, layout, pki, supervisor
from mlab.node.config import Component
from mlab.node.layout import NodeLayout
from mlab.render import dump_yaml

Say = Callable[[str], None]
START_TIMEOUT = 120.0
"""Seconds each component has to answer its health check after it starts."""


def _https(lay: NodeLayout, url: str) -> bool:
    ctx = ssl.create_default_context(cafile=str(lay.pki / "ca.crt"))
    ctx.load_cert_chain(str(lay.pki / "admin.crt"), str(lay.pki / "admin.key"))
    return httpx.get(url, verify=ctx, timeout=2).status_code == 200


def _http_ok(url: str, verify: bool = True) -> bool:
    return httpx.get(url, timeout=2, verify=verify).status_code == 200


def health_checks(lay: NodeLayout, bins: dict[str, Path]) -> dict[str, Callable[[], bool]]:
    """Component name -> a probe that is true once it serves."""
    ip = layout.NODE_IP

    def containerd_ok() -> bool:
        # ctr answers once the socket is up; the kubelet needs the CRI, which initialises
        # later (mlab.node.cri). Both, so a failure names which one is missing in the log.
        return subprocess.run(
            [str(bins["ctr"]), "--address", str(lay.containerd_socket), "version"],
            capture_output=True, timeout=5, check=False).returncode == 0 and \
            cri.cri_serving(lay.containerd_socket)

    return {
        "etcd": lambda: _http_ok(f"http://127.0.0.1:{layout.ETCD_CLIENT_PORT}/health"),
        "kube-apiserver": lambda: _https(lay, f"https://{ip}:{layout.APISERVER_PORT}/readyz"),
        "kube-controller-manager": lambda: _http_ok(
            f"https://127.0.0.1:{layout.CONTROLLER_MANAGER_PORT}/healthz", verify=False),
        "kube-scheduler": lambda: _http_ok(
            f"https://127.0.0.1:{layout.SCHEDULER_PORT}/healthz", verify=False),
        "containerd": containerd_ok,
        "kubelet": lambda: _http_ok(f"http://127.0.0.1:{layout.KUBELET_HEALTHZ_PORT}/healthz"),
        "kube-proxy": lambda: _http_ok(
            f"http://127.0.0.1:{layout.KUBE_PROXY_HEALTHZ_PORT}/healthz"),
        "kube-router": lambda: _http_ok(
            f"http://127.0.0.1:{layout.KUBE_ROUTER_HEALTH_PORT}/healthz"),
    }


PORTS = {
    "etcd": ("127.0.0.1", layout.ETCD_CLIENT_PORT),
    "kube-apiserver": (layout.NODE_IP, layout.APISERVER_PORT),
    "kube-controller-manager": ("127.0.0.1", layout.CONTROLLER_MANAGER_PORT),
    "kube-scheduler": ("127.0.0.1", layout.SCHEDULER_PORT),
    "kubelet": (layout.NODE_IP, layout.KUBELET_PORT),
    "kube-proxy": ("127.0.0.1", layout.KUBE_PROXY_HEALTHZ_PORT),
    "kube-router": ("127.0.0.1", layout.KUBE_ROUTER_HEALTH_PORT),
}
"""The port each component must find free before it starts."""


def kubectl(lay: NodeLayout, bins: dict[str, Path], args: list[str], stdin: str | None = None,
            timeout: float = 120) -> str:
    """Run the node's kubectl as admin; return stdout.

    Raises:
        DeployError: kubectl failed (its last stderr line).
    """
    argv = [str(bins["kubectl"]), "--kubeconfig", str(lay.kubeconfig), *args]
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True,
                          timeout=timeout, check=False)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        raise DeployError(f"node: kubectl {args[0]} failed: {lines[-1] if lines else ''}")
    return proc.stdout


def write_config(lay: NodeLayout) -> None:
    """Certificates, kubeconfigs, component configuration and the CNI folder (a file is
    rewritten only when its content changes)."""
    pki.ensure_pki(lay.pki)
    lay.config.mkdir(parents=True, exist_ok=True)
    lay.registry_hosts.mkdir(parents=True, exist_ok=True)
    files = dict(config.kubeconfigs(lay))
    files["containerd.toml"] = config.containerd_config(lay)
    files["kubelet.yaml"] = config.kubelet_config(lay)
    for name, text in files.items():
        path = lay.config / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    lay.kubeconfig.write_text(config.kubeconfig(lay, "admin", "mlab-admin"))
    lay.kubeconfig.chmod(0o600)
    lay.cni_conf.mkdir(parents=True, exist_ok=True)
    (lay.cni_conf / "10-mlab-node.conflist").write_text(config.cni_conflist())
    lay.cni_bin.mkdir(parents=True, exist_ok=True)
    for plugin in Path("/usr/lib/cni").iterdir():
        link = lay.cni_bin / plugin.name
        if not link.exists():
            link.symlink_to(plugin)
    src = Path(__file__).with_name("antispoof_cni.py")
    dst = lay.cni_bin / "mlab-antispoof"
    if not dst.exists() or dst.read_bytes() != src.read_bytes():
        shutil.copyfile(src, dst)
        dst.chmod(0o755)
    for folder in (lay.data, layout.RUN_DIR):
        folder.mkdir(parents=True, exist_ok=True)


def _started_config(lay: NodeLayout) -> Path:
    """What the running containerd was started with: its pid, then its ``containerd.toml``."""
    return lay.pid("containerd").with_suffix(".toml")


def _started_record(lay: NodeLayout, comp: Component) -> str:
    pid = supervisor.running_pid(lay, comp.name, comp.argv[0])
    return f"# pid {pid}\n" + (lay.config / "containerd.toml").read_text()


def _keep_running_containerd(lay: NodeLayout, comp: Component, wanted: bool,
                             say: Say) -> bool:
    """True when containerd runs and stays; a running one that was not started with the
    current configuration is stopped when the caller needs registries (``wanted``), and
    :func:`up` starts it again."""
    if not supervisor.running_pid(lay, comp.name, comp.argv[0]):
        return False
    copy = _started_config(lay)
    if not wanted or (copy.exists() and copy.read_text() == _started_record(lay, comp)):
        return True
    say("restarting containerd: it was started without the registry hosts folder "
        "(the pods keep running: their runc shims hold them)")
    supervisor.stop(lay, comp.name, comp.argv[0])
    return False


def trust_registry(lay: NodeLayout, registry: config.RegistryTrust) -> Path:
    """Let the node's containerd pull from the registry of ``registry.repository``.

    Writes ``certs.d/HOST[:PORT]/hosts.toml`` (:func:`mlab.node.config.hosts_toml`); with a
    site CA (``image.caFile``) a copy goes next to it as ``ca.crt`` and the file names it, so
    that CA is trusted for this registry only (the host's trust store is not changed).
    containerd reads the file on every pull, so a running node needs no restart.

    Returns:
        The hosts.toml written.

    Raises:
        UsageError: the repository names no registry, or ``image.caFile`` cannot be read.
    """
    host = config.registry_host(registry.repository)
    folder = lay.registry_hosts / host
    folder.mkdir(parents=True, exist_ok=True)
    ca = None
    if registry.ca_file and not registry.plain_http:
        ca = folder / "ca.crt"
        try:
            ca.write_bytes(Path(registry.ca_file).read_bytes())
        except OSError as exc:
            raise UsageError(f"image.caFile: cannot read {registry.ca_file}: {exc.strerror}",
                             hint="give the path of the registry's CA certificate (PEM)") from None
    else:
        (folder / "ca.crt").unlink(missing_ok=True)
    path = folder / "hosts.toml"
    path.write_text(config.hosts_toml(host, registry.plain_http, str(ca) if ca else None))
    return path


def start_component(lay: NodeLayout, comp: Component, check: Callable[[], bool], say: Say) -> None:
    """Start one component (unless running) and wait for its health check.

    Raises:
        DeployError: its port is taken by another program, it exits, or it never answers.
    """
    if not supervisor.running_pid(lay, comp.name, comp.argv[0]):
        addr = PORTS.get(comp.name)
        if addr and not supervisor.port_owner_free(*addr):
            raise DeployError(f"node: port {addr[1]} on {addr[0]} is in use; {comp.name} "
                              "needs it (stop what listens there, or `mlab node down`)")
        say(f"starting {comp.name}")
        supervisor.start(lay, comp)
    supervisor.wait_until(lay, comp, check, START_TIMEOUT)


def node_ready(lay: NodeLayout, bins: dict[str, Path]) -> bool:
    """True when the node object reports Ready."""
    out = kubectl(lay, bins, ["get", "node", layout.NODE_NAME, "-o", "json"])
    conds = json.loads(out).get("status", {}).get("conditions", [])
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


@dataclass
class UpResult:
    """What ``up`` did: the kubeconfig path and seconds spent per phase."""

    kubeconfig: Path
    timings: dict[str, float]


def up(lay: NodeLayout, say: Say, homepod_image: bool = True,
       registries: Sequence[config.RegistryTrust] = ()) -> UpResult:
    """Build what is missing, start every component, wait until the node is Ready.

    A running containerd is left alone, except when ``registries`` are asked for and it was
    not started with the current configuration (a node started before containerd read
    ``registry.config_path``): then it is restarted once; the pods keep running (the runc v2
    shims are the containers' parents; measured on the node: no restart count moved).

    Args:
        homepod_image: also build (cached) and import the HomePod image.
        registries: the ``image`` sections of sites whose registry the node's containerd
            pulls from (:func:`trust_registry`).

    Raises:
        DeployError: a build, a start or a wait failed (names the component and its log).
    """
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    bins = build.ensure_binaries(lay, say)
    timings["binaries"] = time.monotonic() - t0
    write_config(lay)
    for registry in registries:
        path = trust_registry(lay, registry)
        how = ("plain HTTP, as the site declares" if registry.plain_http
               else "TLS with the site's CA" if registry.ca_file else "TLS")
        say(f"containerd pulls from {path.parent.name} ({how}): {path}")
    hostnet.setup()
    checks = health_checks(lay, bins)
    t1 = time.monotonic()
    for comp in config.components(lay, bins):
        fresh = False
        if comp.name == "containerd":
            fresh = not _keep_running_containerd(lay, comp, bool(registries), say)
        start_component(lay, comp, checks[comp.name], say)
        if comp.name == "containerd":
            if fresh:
                _started_config(lay).write_text(_started_record(lay, comp))
            images.ensure_node_images(lay, bins, say)
    timings["start"] = time.monotonic() - t1
    say("waiting for the node to be Ready")
    kubelet = next(c for c in config.components(lay, bins) if c.name == "kubelet")
    supervisor.wait_until(lay, kubelet, lambda: node_ready(lay, bins), START_TIMEOUT,
                          what="report the node Ready")
    say("applying add-ons (CoreDNS, storage class, kube-router's role)")
    kubectl(lay, bins, ["apply", "--server-side", "--field-manager=mlab-node",
                        "--force-conflicts", "-f", "-"], stdin=dump_yaml(addons.objects()))
    if homepod_image:
        t2 = time.monotonic()
        images.ensure_homepod_image(lay, bins, say)
        timings["homepod-image"] = time.monotonic() - t2
    say("waiting for CoreDNS")
    kubectl(lay, bins, ["-n", "kube-system", "rollout", "status", "deployment/coredns",
                        f"--timeout={int(START_TIMEOUT)}s"], timeout=START_TIMEOUT + 30)
    timings["total"] = time.monotonic() - t0
    return UpResult(lay.kubeconfig, timings)


def known_bins(lay: NodeLayout) -> dict[str, Path]:
    """Program paths of the cached builds and Debian (no building)."""
    bins: dict[str, Path] = {}
    for recipe in build.recipes():
        folder = build.recipe_dir(lay, recipe)
        for pkg in recipe.packages:
            bins[build.binary_name(pkg)] = folder / build.binary_name(pkg)
    for name, package in (("etcd", "etcd-server"), ("containerd", "containerd"),
                          ("ctr", "containerd")):
        bins[name] = build.debian_program(name, package)
    return bins


def drain_pods(lay: NodeLayout, bins: dict[str, Path], say: Say, timeout: float = 180) -> None:
    """Stop the scheduler, then delete every pod and wait until the kubelet has stopped
    them all, while kube-router still enforces their policies."""
    supervisor.stop(lay, "kube-scheduler")
    say("deleting every pod (policies stay until they are gone)")
    kubectl(lay, bins, ["delete", "pods", "--all", "--all-namespaces", "--wait=true",
                        f"--timeout={int(timeout)}s"], timeout=timeout + 30)


def kill_tasks(lay: NodeLayout, bins: dict[str, Path]) -> None:
    """SIGKILL every container task left in containerd (when the API could not drain)."""
    try:
        listing = images.ctr(lay, bins, ["tasks", "ls", "-q"], timeout=30).split()
    except DeployError:
        return
    for task in listing:
        try:
            images.ctr(lay, bins, ["tasks", "kill", "-s", "SIGKILL", task], timeout=30)
        except DeployError:
            pass


def down(lay: NodeLayout, say: Say, purge: bool = False) -> list[str]:
    """Stop the node. Returns problems that did not stop it (one line each).

    Args:
        purge: also delete data, certificates and configuration (binaries are kept).
    """
    problems: list[str] = []
    bins = known_bins(lay)
    comps = {c.name: c for c in config.components(lay, bins)}
    api_up = bool(supervisor.running_pid(lay, "kube-apiserver"))
    if api_up and supervisor.running_pid(lay, "kubelet"):
        try:
            drain_pods(lay, bins, say)
        except DeployError as exc:
            problems.append(f"draining pods: {exc.message}")
    if supervisor.running_pid(lay, "containerd"):
        kill_tasks(lay, bins)
    for name in ("kubelet", "kube-proxy", "kube-router", "kube-scheduler",
                 "kube-controller-manager", "kube-apiserver", "etcd", "containerd"):
        if supervisor.stop(lay, name, comps[name].argv[0]):
            say(f"stopped {name}")
    say("removing the node's network state")
    for argv in ([str(bins["kube-proxy"]), "--cleanup"],
                 [str(bins["kube-router"]), "--cleanup-config"]):
        if Path(argv[0]).exists():
            subprocess.run(argv, capture_output=True, timeout=120, check=False)
    problems += hostnet.teardown()
    if purge:
        problems += purge_state(lay)
    return problems


def _unmount_under(path: Path) -> None:
    mounts = [ln.split()[1] for ln in Path("/proc/mounts").read_text().splitlines()]
    for m in sorted((m for m in mounts if m.startswith(str(path) + "/")), reverse=True):
        subprocess.run(["umount", "-l", m], capture_output=True, check=False)


def purge_state(lay: NodeLayout) -> list[str]:
    """Delete data, certificates, configuration, volumes and IPAM state (not binaries)."""
    problems = []
    for path in (lay.data, layout.RUN_DIR):
        _unmount_under(path)
    for path in (lay.data, lay.pki, lay.config, lay.root / "cni", lay.images, lay.pids,
                 layout.RUN_DIR, layout.HOSTPATH_PV_DIR, Path("/var/lib/cni/networks/mlab-node")):
        shutil.rmtree(path, ignore_errors=True)
        if path.exists():
            problems.append(f"could not remove {path}")
    lay.kubeconfig.unlink(missing_ok=True)
    return problems


def status(lay: NodeLayout) -> dict[str, str]:
    """Component name -> ``running (pid N)`` or ``stopped``; plus ``node`` readiness."""
    out: dict[str, str] = {}
    names = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
             "containerd", "kubelet", "kube-proxy", "kube-router")
    for name in names:
        pid = supervisor.running_pid(lay, name)
        out[name] = f"running (pid {pid})" if pid else "stopped"
    if out["kube-apiserver"].startswith("running") and lay.kubeconfig.exists():
        try:
            out["node"] = "Ready" if node_ready(lay, known_bins(lay)) else "NotReady"
        except DeployError:
            out["node"] = "unknown (API server does not answer)"
    else:
        out["node"] = "down"
    return out
