"""The podman engine: ``mlab up`` / ``down`` / ``status`` on one machine.

Side effects live here; the decisions are pure and live in :mod:`mlab.podman.translate` (what to
run) and :mod:`firewall` (which rules). Invariants:

- Everything MLab creates for a site is findable by name and label: pods
  ``mlab-<site>-*`` with ``app.kubernetes.io/instance=<site>``, networks and volumes
  ``mlab-<site>*`` with ``mlab.io/site=<site>``, nft tables ``mlab_<site>``, files under
  ``<state>/<site>/podman`` (mode 0700). ``down`` removes exactly those.
- Idempotent: a pod whose translated spec hash (label ``mlab.io/podman-spec``) is unchanged
  and running is left alone; only changed, new and removed pods are touched.
- ``up`` checks every port it is about to publish before creating anything, and on a failure
  removes what this run created (pods, networks, volumes) and restores the firewall.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from mlab.atomic import write_atomic
from mlab.errors import DeployError, MlabError, TemporaryError, ToolMissingError
from mlab.podman import firewall, rollout
from mlab.podman.objects import (
    Say,
    bridge_of,
    choose_subnets,
    has_code_service,
    mac_for,
    play,
    remove_pod,
    remove_pods,
    site_networks,
    site_pods,
    site_volumes,
)
from mlab.podman.plan_file import PLAN_FILE, PlanFile
from mlab.podman.runner import check_network_backend, keep_ipv6, podman, podman_version
from mlab.podman.translate import (
    LABEL_SITE,
    LABEL_SPEC,
    VOLUME_ROOT,
    Plan,
    PodPlan,
    translate,
)
from mlab.site import Site
from mlab.topology import LABEL_USER, dial_address

log = logging.getLogger(__name__)

LOCK_TIMEOUT = 900.0
"""Seconds ``up``/``down`` wait for another one on the same host."""
READY_TIMEOUT = 180.0
"""Seconds ``up`` waits for every published port to accept a connection."""


def state_dir(site_name: str) -> Path:
    """``<state root>/<site>/podman``: the engine's files (Secrets, ConfigMaps, last plan)."""
    from mlab.secrets import state_root

    return state_root() / site_name / "podman"


@dataclass
class UpResult:
    """What one ``up`` did: pod names per action, and the seconds it took."""

    created: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)
    """HomePods kept on their running image for their user (:mod:`mlab.podman.rollout`)."""
    culled: list[str] = field(default_factory=list)
    """Culled HomePods left stopped until their user wakes them (docs/culling.md)."""
    placeholder_code_service: bool = False
    seconds: float = 0.0


# --- steps ----------------------------------------------------------------------------------

def _port_free(host_ip: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host_ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host_ip, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise DeployError(f"cannot check port {host_ip}:{port}: {exc.strerror}") from None
    return True


def check_ports(pods: list[PodPlan]) -> None:
    """Fail before creating anything when a port to publish is taken on the bind address.

    Raises:
        DeployError: naming the first taken port and the pod that wants it.
    """
    for pod in pods:
        for port in pod.ports:
            if not _port_free(port.host_ip, port.host_port):
                raise DeployError(
                    f"port {port.host_port} on {port.host_ip} is already in use "
                    f"(wanted by {pod.name} for {port.name})",
                    hint="stop what uses it or change the port in the site file",
                )


def _write_files(root: Path, plan: Plan) -> None:
    """Write every pod's Secret/ConfigMap files (temp file + rename; dirs 0700 at the top)."""
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(root, 0o700)
    for pod in plan.pods:
        for spec in pod.files:
            path = root / spec.path
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
            write_atomic(path, spec.content, spec.mode)


def proxy_endpoints(site: Site) -> list[tuple[str, int]]:
    """(IPv4 address, port) of the Airlock's proxies (``airlock.proxy``), resolved on the
    host; the firewall lets the NAT network reach them even in a private range."""
    from urllib.parse import urlsplit

    out = []
    for url in filter(None, [site.airlock.proxy.http, site.airlock.proxy.https]):
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if not parts.hostname:
            continue
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            infos = socket.getaddrinfo(parts.hostname, port, socket.AF_INET, socket.SOCK_STREAM)
        except OSError:
            raise DeployError(f"airlock.proxy: cannot resolve {parts.hostname!r} on this host",
                              hint="use an address, or fix the host's DNS") from None
        out += sorted({(str(info[4][0]), port) for info in infos})
    return out


def _firewall_script(plan: Plan, proxies: Sequence[tuple[str, int]] = (),
                     offices: Sequence[str] = (), bridges: dict[str, str] | None = None,
                     ) -> str:
    bridges = bridges or {}
    homepods = [
        firewall.HomepodNet(n.user or "", n.subnet, n.code_ip, n.pod_ip, bridges.get(n.name, ""))
        for n in plan.homepod_networks()
    ]
    macs = [mac_for(name, ip) for pod in plan.pods for name, ip in pod.networks]
    dnats = []
    for pod in plan.pods:
        for port in pod.ports:
            if port.via == "nft":
                ip = pod.networks[0][1]
                dnats.append(firewall.Dnat(port.host_ip, port.host_port, ip, port.container_port,
                                           f"{pod.name} {port.name}"))
    code = next((p for p in plan.pods if p.component == "code-service"), None)
    # With tls the code service publishes its https port; HomePods then reach it there too.
    tls = bool(code and any(p.name == "https" for p in code.ports))
    return firewall.ruleset(plan.site, homepods, dnats, plan.nat_network().subnet,
                            code_port=firewall.homepod_code_port(
                                {"tls" if tls else "plain-http"}),
                            nat_code_port=firewall.airlock_code_port(
                                {"tls" if tls else "plain-http"}),
                            proxies=list(proxies), offices=list(offices),
                            nat_bridge=bridges.get(plan.nat_network().name, ""), macs=macs,
                            block_ipv6=not keep_ipv6())


def wait_ready(plan: Plan, timeout: float = READY_TIMEOUT, say: Say | None = None,
               skip: Collection[str] = ()) -> None:
    """Wait until every published port accepts a TCP connection on the bind address.

    Args:
        skip: pod names not to wait for (culled HomePods left stopped).

    Raises:
        DeployError: naming the pods and ports that did not answer in ``timeout`` seconds.
    """
    pending = {(pod.name, p.name, p.host_ip, p.host_port) for pod in plan.pods for p in pod.ports
               if pod.name not in skip}
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for item in sorted(pending):
            host = dial_address(item[2])
            try:
                with socket.create_connection((host, item[3]), timeout=1):
                    pending.discard(item)
            except OSError:
                continue
        if pending:
            if say:
                say(f"waiting for {len(pending)} port(s)")
            time.sleep(0.5)
    if pending:
        first = sorted(pending)[0]
        raise DeployError(
            f"{first[0]} is not ready: {first[1]} port {first[3]} on {first[2]} did not answer "
            f"in {timeout:.0f} s ({len(pending)} port(s) waiting)",
            hint=f"see `podman logs {first[0]}-<container>`",
        )


def plan_path(site_name: str) -> Path:
    """``<state>/<site>/podman/plan.json``: the record of the last ``up``
    (:class:`~mlab.podman.plan_file.PlanFile`)."""
    return state_dir(site_name) / PLAN_FILE


def save_plan(root: Path, plan: Plan, placeholder: bool, image: str = "") -> None:
    """Write ``plan.json`` (:meth:`PlanFile.of <mlab.podman.plan_file.PlanFile.of>`, with
    the site's ``image``) for status and verify."""
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    PlanFile.of(plan, placeholder, image).write(root / PLAN_FILE)


def load_plan(site_name: str) -> PlanFile | None:
    """The last applied plan (``save_plan``), or None when the site is not up (no file).

    Raises:
        DeployError: the file is unreadable, of another version or invalid (one line naming
            it; :meth:`PlanFile.read <mlab.podman.plan_file.PlanFile.read>`).
    """
    path = plan_path(site_name)
    if not path.exists():
        return None
    return PlanFile.read(path)


# --- the commands ---------------------------------------------------------------------------

def build_plan(site: Site, image: str, placeholder: bool) -> Plan:
    """Render the site (:func:`mlab.stored_render.render_with_passwords`: creates passwords
    on first use) and translate it for podman."""
    from mlab.stored_render import render_with_passwords

    site = site.model_copy(update={"image": site.image.model_copy(update={
        "repository": image.rsplit(":", 1)[0], "tag": image.rsplit(":", 1)[1]})})
    rendered = render_with_passwords(site)
    existing = site_networks(site.name)
    ca = Path(firewall_ca_path())
    host_ca = ca.read_bytes() if ca.is_file() else None
    return translate(site, rendered.files, rendered.secrets, choose_subnets(site, existing),
                     str(state_dir(site.name)), host_ca=host_ca,
                     placeholder_code_service=placeholder, volume_root=volume_root())


def volume_root() -> str:
    """Where podman keeps named volumes (``podman info``'s Store.VolumePath)."""
    out = podman(["info", "--format", "{{.Store.VolumePath}}"]).stdout.strip()
    return out or VOLUME_ROOT


def firewall_ca_path() -> str:
    """The host CA bundle the Airlock trusts on podman."""
    from mlab.podman.translate import HOST_CA_BUNDLE

    return HOST_CA_BUNDLE


def up(site: Site, say: Say | None = None, placeholder: bool | None = None,
       wait: bool = True, restart_users: Sequence[str] = (),
       asleep: Collection[str] = (), *, image_of: Callable[[Site, Say], str]) -> UpResult:
    """Bring the site up (or up to date) on this machine.

    Args:
        site: the validated site.
        say: progress callback (one short line per step).
        placeholder: force (True) or forbid (False) the placeholder code service; None:
            use it only when the image has no ``mlab code-service serve``.
        wait: wait until every published port answers.
        restart_users: users whose running HomePods move to the site's image now; others
            whose only change is the image are held (:mod:`mlab.podman.rollout`).
        asleep: users whose HomePods the culler stopped (``mlab.cull.local.culled``); their
            stopped pods stay stopped (``mlab wake USER`` starts them, audited).
        image_of: gives the image to run for ``site`` (builds or pulls it; called before the
            host lock is taken): :func:`mlab.image.site_image.image_ref`, which the caller
            passes because the image package itself runs podman.

    Returns:
        What changed.

    Raises:
        ToolMissingError: podman or nft missing, podman too old, or podman's network
            backend is not netavark with aardvark-dns (checked before anything starts).
        DeployError: a port is taken, a podman step failed, or a pod did not get ready;
            what this run created is removed first.
    """
    say = say or (lambda _m: None)
    podman_version()
    check_network_backend()
    if not shutil.which("nft"):
        raise ToolMissingError("nft is not installed", hint="install it: apt-get install nftables")
    image = image_of(site, say)  # may build for minutes: not under the host lock
    if placeholder is None:
        placeholder = not has_code_service(image, state_dir(site.name) / "image-check.json")
    with host_lock(say):
        return _up(site, say, image, placeholder, wait, tuple(restart_users), frozenset(asleep))


@contextmanager
def host_lock(say: Say) -> Iterator[None]:
    """The host-wide lock held by ``up`` and ``down`` of any site.

    Sites share the host's subnets, ports and firewall: two ``up`` at once could pick the
    same free subnet. Held for the whole command (seconds), so a second command waits.

    Raises:
        TemporaryError: another command held it for :data:`LOCK_TIMEOUT` seconds.
    """
    base = Path("/run/lock") if os.access("/run/lock", os.W_OK) else Path(tempfile.gettempdir())
    lock = FileLock(str(base / "mlab-podman.lock"))
    try:
        lock.acquire(timeout=1)
    except Timeout:
        say("waiting for another mlab up/down on this host")
        try:
            lock.acquire(timeout=LOCK_TIMEOUT)
        except Timeout:
            raise TemporaryError(
                f"another mlab up/down held {lock.lock_file} for {LOCK_TIMEOUT:.0f} s",
                hint="wait for it to finish, then try again") from None
    try:
        yield
    finally:
        lock.release()


def left_culled(names: Collection[str], current: dict[str, dict[str, Any]],
                asleep: Collection[str]) -> list[str]:
    """The pods among ``names`` that ``up`` leaves stopped: existing, not running, and of a
    user the culler stopped (``<state>/<site>/cull.json``) (pure).

    Args:
        names: pods ``up`` would (re)start.
        current: the site's pods as ``podman pod ps --format json`` gives them
            (``Status``, ``Labels``).
        asleep: users whose HomePods are culled.
    """
    return sorted(n for n in names if n in current
                  and current[n].get("Status") != "Running"
                  and current[n].get("Labels", {}).get(LABEL_USER) in asleep)


def _up(site: Site, say: Say, image: str, placeholder: bool, wait: bool,
        restart_users: tuple[str, ...] = (), asleep: frozenset[str] = frozenset()) -> UpResult:
    start = time.monotonic()
    say("rendering the site")
    plan = build_plan(site, image, placeholder)
    root = state_dir(site.name)
    result = UpResult(placeholder_code_service=placeholder)

    current = site_pods(site.name)
    wanted = {p.name: p for p in plan.pods}
    to_play = [p for p in plan.pods
               if p.name not in current
               or current[p.name].get("Labels", {}).get(LABEL_SPEC) != p.spec_hash
               or current[p.name].get("Status") != "Running"]
    stale = [name for name in current if name not in wanted]
    # A culled HomePod stays stopped until its user wakes it (audited): `mlab up` is an
    # admin's change to the site, not a reason to start every idle desktop again.
    result.culled = left_culled([p.name for p in to_play], current, asleep)
    for name in result.culled:
        say(f"leaving {name} stopped (culled; mlab wake USER starts it)")
    to_play = [p for p in to_play if p.name not in result.culled]
    held = rollout.held_pods(to_play, current, rollout.running_images(site.name), image,
                             lambda old: build_plan(site, old, placeholder), restart_users)
    for name, old in held.items():
        say(f"keeping {name} on {old} for its user (mlab restart --user to move it)")
    to_play = [p for p in to_play if p.name not in held]
    result.held = sorted(held)
    result.unchanged = [p.name for p in plan.pods if p not in to_play and p.name not in held]
    # Ports of pods we replace are freed by their removal; the rest must be free now.
    check_ports([p for p in to_play if p.name not in current])

    have_nets = site_networks(site.name)
    have_vols = set(site_volumes(site.name))
    old_rules = firewall.listing(site.name)
    made_nets: list[str] = []
    made_vols: list[str] = []
    played: list[str] = []
    try:
        if stale:
            say(f"removing {', '.join(stale)}")
            remove_pods(stale)
            result.removed += stale
        for vol in plan.volumes:
            if vol not in have_vols:
                say(f"volume {vol}")
                podman(["volume", "create", "--label", f"{LABEL_SITE}={site.name}", vol])
                made_vols.append(vol)
        for net in plan.networks:
            if net.name in have_nets:
                continue
            say(f"network {net.name}")
            args = ["network", "create", "--label", f"{LABEL_SITE}={site.name}",
                    "--subnet", net.subnet, "--gateway", net.gateway]
            if net.internal:
                args += ["--internal", "--disable-dns"]
            podman([*args, net.name])
            made_nets.append(net.name)
        say("firewall")
        bridges = {n.name: bridge_of(n.name) for n in plan.networks}
        firewall.apply(_firewall_script(plan, proxy_endpoints(site),
                                        [c for c in site.access.office_cidrs if ":" not in c],
                                        bridges))
        _write_files(root, plan)
        replace = [p.name for p in to_play if p.name in current]
        if replace:
            say(f"stopping {', '.join(replace)}")
            remove_pods(replace)
            result.replaced += replace
        for pod in to_play:
            say(f"starting {pod.name}")
            if pod.name not in current:
                result.created.append(pod.name)
            play(pod)
            played.append(pod.name)
        # A bridge exists once a container is attached; DNAT from loopback needs this.
        remote = not ipaddress.ip_address(site.access.bind_address).is_loopback
        for net in plan.homepod_networks():
            firewall.set_route_localnet(bridges[net.name])
            if remote:  # other hosts reach published ports: replies are routed
                firewall.set_forwarding(bridges[net.name])
        if not keep_ipv6():  # the host keeps no fe80:: address on a site network
            for net in plan.networks:
                firewall.set_ipv6_off(bridges[net.name])
        for name in have_nets:
            if name not in {n.name for n in plan.networks}:
                say(f"removing network {name}")
                podman(["network", "rm", "-f", name], check=False)
        save_plan(root, plan, placeholder, image)
        if wait:
            say("waiting for every port")
            wait_ready(plan, say=say, skip=result.culled)
    except (MlabError, KeyboardInterrupt):
        say("rolling back")
        for name in reversed(played):
            if name not in current:
                try:
                    remove_pod(name, grace=0)
                except MlabError as exc:
                    log.warning("[mlab/%s] rollback: %s", name, exc)
        for made in made_nets:
            podman(["network", "rm", "-f", made], check=False)
        for vol in made_vols:
            podman(["volume", "rm", "-f", vol], check=False)
        try:
            if old_rules:
                firewall.apply(firewall.delete_script(site.name) + old_rules)
            elif not current:
                firewall.remove(site.name)
        except MlabError as exc:  # pragma: no cover - reported, the first error wins
            log.warning("[mlab/%s] restoring the firewall failed: %s", site.name, exc)
        if not current:
            (root / PLAN_FILE).unlink(missing_ok=True)
            shutil.rmtree(root / "files", ignore_errors=True)
        raise
    result.seconds = time.monotonic() - start
    return result


def down(site_name: str, volumes: bool = False, say: Say | None = None) -> list[str]:
    """Remove a site's pods, networks and firewall tables; with ``volumes`` also its
    volumes, the engine's state files and the generated passwords. Returns the names removed.

    Without ``volumes`` the passwords (``<state>/<site>/passwords.json``) are kept, so a later
    ``up`` gives the same logins to the kept homes. With ``volumes`` they go too: the next
    ``up`` is a first start again and shows its new passwords (issue 10). Repositories under
    ``<state>/<site>/upstreams`` are the admin's and stay.
    """
    say = say or (lambda _m: None)
    podman_version()
    with host_lock(say):
        return _down(site_name, volumes, say)


def _down(site_name: str, volumes: bool, say: Say) -> list[str]:
    removed = list(site_pods(site_name))
    say(f"removing {len(removed)} pod(s)")
    remove_pods(removed)
    for name in site_networks(site_name):
        say(f"removing network {name}")
        podman(["network", "rm", "-f", name], check=False)
        removed.append(name)
    firewall.remove(site_name)
    if volumes:
        for vol in site_volumes(site_name):
            say(f"removing volume {vol}")
            podman(["volume", "rm", "-f", vol], check=False)
            removed.append(vol)
        shutil.rmtree(state_dir(site_name), ignore_errors=True)
        from mlab.secrets import state_root

        passwords = state_root() / site_name / "passwords.json"
        if passwords.exists():
            passwords.unlink()
            removed.append(str(passwords))
    else:
        # Nothing runs: no secret files on disk, and `status` says the site is down.
        plan_path(site_name).unlink(missing_ok=True)
        shutil.rmtree(state_dir(site_name) / "files", ignore_errors=True)
    return removed


def status(site_name: str) -> list[dict[str, Any]]:
    """Each component of the last ``up``: name, kind, user, state and endpoints.

    Returns:
        A list of ``{"name", "kind", "user", "state", "pod", "endpoints": [{"protocol",
        "host", "port", "url"}]}``; state is podman's pod status (Running, Exited, ...) or
        ``missing``.
    """
    plan = load_plan(site_name)
    if plan is None:
        return []
    pods = site_pods(site_name)
    code = plan.first("code-service")
    # With tls the code service publishes only its https port, and desktops speak TLS.
    web = "https" if code and any(p.name == "https" for p in code.ports) else "http"
    out = []
    for pod in plan.pods:
        record = pods.get(pod.name)
        endpoints = []
        for port in pod.ports:
            shown = dial_address(port.host_ip)
            kinds = {"vnc": ["vnc"], "rdp": ["rdp"], "novnc": ["http"], "ssh": ["ssh", "sftp"],
                     "http": ["http"], "https": ["https"]}.get(port.name, [port.name])
            for proto in kinds:
                url = {
                    "vnc": f"vnc://{shown}:{port.host_port}",
                    "rdp": f"rdp://{shown}:{port.host_port}",
                    "ssh": f"ssh://{pod.user or 'airlock'}@{shown}:{port.host_port}",
                    "sftp": f"sftp://{pod.user or 'airlock'}@{shown}:{port.host_port}",
                    "http": (f"{web}://{shown}:{port.host_port}/vnc.html"
                             if port.name == "novnc" else f"http://{shown}:{port.host_port}/"),
                    "https": f"https://{shown}:{port.host_port}/",
                }.get(proto, "")
                endpoints.append({"protocol": proto, "host": shown, "port": port.host_port,
                                  "url": url})
        state = record["Status"] if record else "missing"
        if pod.component == "code-service" and plan.placeholder_code_service:
            state += " (placeholder)"
        out.append({
            "name": pod.deployment, "kind": pod.component, "user": pod.user,
            "state": state, "pod": pod.name, "endpoints": endpoints,
        })
    return rollout.annotate(out, plan.image, rollout.running_images(site_name))
