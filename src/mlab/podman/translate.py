"""Translate rendered Kubernetes objects into what ``podman kube play`` 4.3 can run.

Pure: ``Rendered`` (from :func:`mlab.render.render_site`) and the site in, a :class:`Plan`
out; no processes, no files. The podman engine (:mod:`mlab.podman.engine`) carries
the plan out. Invariant: every pod podman runs is one rendered Deployment's pod template,
changed only by the rules below; there is no second, hand-written set of pod definitions.

Translation rules (each a gap between Kubernetes and podman 4.3.1, measured):

- Deployment -> Pod ``mlab-<site>-<deployment>`` with the template's labels (so
  ``podman pod ps --filter label=mlab.io/user=alice`` finds it) plus
  ``mlab.io/podman-spec``, a hash of the translated pod used to decide whether ``mlab up``
  must replace it (idempotence).
- PersistentVolumeClaim -> podman named volume ``mlab-<site>-<claim>`` (volume names are
  global on a host, so they carry the site). A mount of a claim with ``subPath`` becomes a
  ``hostPath`` (DirectoryOrCreate) of that directory inside the volume: 4.3.1's kube play
  ignores ``subPath`` on a volume and mounts the whole of it (every HomePod would see every
  outbox).
- Secret / ConfigMap / projected volumes -> files written by the engine under the state
  directory, mounted as read-only ``hostPath`` (4.3.1's kube play crashes on ``secret``
  volumes); a mount with ``subPath`` becomes a hostPath of that one file.
- Probes, placement, service-account and GPU fields are dropped (kube play ignores or
  rejects them); the engine checks readiness itself by connecting to the published ports.
- Service -> published ports on ``access.bindAddress`` with the Service's port numbers.
  Pods on the NAT network get ``hostPort``/``hostIP`` (netavark publishes them); HomePods
  sit on an ``--internal`` network, where netavark publishes nothing, so their ports become
  DNAT rules in MLab's own nftables table (:mod:`mlab.podman.firewall`).
- NetworkPolicy -> networks. The edges of ``network.yaml`` become: one internal network per
  HomePod shared only with the code service (code service :8080 only, enforced by the
  bridge filter), the Airlock and code service on a NAT network; nothing else attached.
- hostAliases that point at the code service's clusterIP point at its fixed address on the
  pod's network instead; HomePods keep the rendered resolver that answers nothing.
- The portal (``portal.enabled``) runs with ``hostNetwork``, listening on
  ``access.bindAddress`` at its Service port: the host already reaches every HomePod's
  address (published ports are DNAT rules to them) and the provider (often on the host, as
  in tests), and the firewall keeps HomePod networks closed to everything routed. Its
  ``--backend`` options name each HomePod's address and VNC port, ``--code-url`` the code
  service's address on the NAT network (no cluster DNS here).
- The portal wakes a culled HomePod by *asking the host* (``--wake host``): it gets the
  wake spool of ``mlab.cull.wake_requests`` (``<state_dir>/wake``), ``requests/``
  read-write and ``host/`` read-only, and no podman; the host's ``mlab cull`` takes the
  requests. (The rendered portal's own ``--wake`` is replaced.)
- ``portal.directDesktopPorts: false``: HomePods publish only SSH (the rendered policies
  admit only SSH from offices); desktops are reached through the portal alone, which
  reaches each HomePod's VNC at its address.
- IPv6: no MLab container has IPv6. podman 4.3.1's kube play ignores a pod's
  ``securityContext.sysctls`` (measured), so the ``disable_ipv6`` sysctls are podman's
  ``default_sysctls`` in MLab's containers.conf (:mod:`mlab.podman.runner`), set at creation. They
  are not in the rendered Kubernetes manifests either: there ``net.ipv6.*`` sysctls are
  "unsafe" and a pod asking for them is rejected unless the kubelet's
  ``allowedUnsafeSysctls`` lists them; the node's CNI chain does it instead.
- The start gate (:mod:`mlab.homepod.startgate`): the rendered ``MLAB_EGRESS_CHECK`` (the
  Airlock's clusterIP, the node's kubelet) and ``MLAB_NODE_IP`` (downward API) are replaced
  by the Airlock's SSH address on its network, which HomePods must see refused before
  their sessions start.
- The ``securityContext`` (capabilities, seccomp, allowPrivilegeEscalation) is kept as
  rendered: kube play maps it to ``--cap-drop``/``--cap-add`` and ``no-new-privileges``.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import ipaddress
import json
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from mlab.errors import DeployError
from mlab.render.portal import set_options, wake_args
from mlab.site import HOMEPOD_NETS_ENV, Site
from mlab.topology import (
    EGRESS_CHECK_ENV,
    LABEL_COMPONENT,
    LABEL_USER,
    NODE_IP_ENV,
    PORT_CODE,
    PORT_CODE_TLS_SERVICE,
    PORT_SSH,
    PORT_VNC,
    WAKE_HOST,
    WAKE_PORTAL_DIR,
    WAKE_REQUESTS,
    WAKE_SPOOL,
    dial_address,
)

Obj = dict[str, Any]

LABEL_SPEC = "mlab.io/podman-spec"
LABEL_SITE = "mlab.io/site"
"""Label on every podman network and volume MLab creates (pods carry the instance label)."""

VOLUME_ROOT = "/var/lib/containers/storage/volumes"
"""podman's default volume directory as root (``podman info`` Store.VolumePath)."""
HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
"""The host's CA bundle; the Airlock trusts it on podman (a TLS-intercepting proxy's CA is
installed there on such hosts)."""

PLACEHOLDER_COMMAND = [
    "python3", "-c",
    "import http.server as h, signal, sys;"
    "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0));"
    f"h.ThreadingHTTPServer(('', {PORT_CODE}), h.SimpleHTTPRequestHandler).serve_forever()",
]
"""PLACEHOLDER code service (until `mlab code-service serve` is in the image): an HTTP
server on the same port, so networks, published ports and probes are the final ones."""

_DROP_POD_FIELDS = (
    "automountServiceAccountToken", "enableServiceLinks", "nodeName", "nodeSelector",
    "tolerations", "imagePullSecrets", "affinity", "serviceAccountName",
)
_DROP_CONTAINER_FIELDS = ("startupProbe", "readinessProbe", "livenessProbe")


@dataclass(frozen=True)
class NetworkSpec:
    """A podman network MLab creates.

    Attributes:
        name: podman network name (``mlab-<site>`` or ``mlab-<site>-<user>``).
        subnet: IPv4 CIDR, chosen by the engine (fixed, so addresses are stable).
        internal: ``--internal`` (no route out) and ``--disable-dns`` (no resolver).
        user: the HomePod user the network belongs to; None for the NAT network.
    """

    name: str
    subnet: str
    internal: bool
    user: str | None = None

    @property
    def gateway(self) -> str:
        """The bridge's (host's) address: the first host of the subnet."""
        return str(ipaddress.ip_network(self.subnet)[1])

    @property
    def code_ip(self) -> str:
        """The code service's fixed address on this network: the second host."""
        return str(ipaddress.ip_network(self.subnet)[2])

    @property
    def pod_ip(self) -> str:
        """The other pod's (HomePod's, or the Airlock's) fixed address: the third host."""
        return str(ipaddress.ip_network(self.subnet)[3])


@dataclass(frozen=True)
class Port:
    """One published port: ``host_ip:host_port`` -> the pod's ``container_port`` (TCP).

    Attributes:
        name: the Service port name (vnc, rdp, novnc, ssh, http).
        via: ``podman`` (hostPort, netavark) or ``nft`` (MLab's DNAT rule, internal nets).
    """

    name: str
    host_ip: str
    host_port: int
    container_port: int
    via: str


@dataclass(frozen=True)
class FileSpec:
    """A file the engine writes before playing a pod (Secret and ConfigMap contents).

    Attributes:
        path: path relative to the site's podman state directory.
        content: the bytes.
        mode: file mode, e.g. 0o400.
    """

    path: str
    content: bytes = field(repr=False)
    mode: int


@dataclass(frozen=True)
class PodPlan:
    """One pod to play.

    Attributes:
        name: podman pod name ``mlab-<site>-<deployment>``.
        component: homepod, airlock or code-service.
        user: the HomePod user, or None.
        manifest: the translated ``v1 Pod`` for ``podman kube play``.
        networks: (network name, fixed IP) pairs, in attach order.
        ports: published ports.
        files: Secret/ConfigMap files this pod mounts.
        spec_hash: hash of everything above; equal hash means nothing to change.
    """

    name: str
    component: str
    user: str | None
    manifest: Obj
    networks: tuple[tuple[str, str], ...]
    ports: tuple[Port, ...]
    files: tuple[FileSpec, ...]
    spec_hash: str

    def container_names(self) -> list[str]:
        """podman container names of this pod (``<pod>-<container>``)."""
        return [f"{self.name}-{c['name']}" for c in self.manifest["spec"]["containers"]]


@dataclass(frozen=True)
class Plan:
    """Everything ``mlab up`` creates for one site.

    Attributes:
        site: site name.
        networks: networks, NAT network first.
        volumes: named volumes (``mlab-<site>-<claim>``).
        pods: pods, code service first (HomePods' hostAliases point at it).
        bind_address: ``access.bindAddress``.
    """

    site: str
    networks: tuple[NetworkSpec, ...]
    volumes: tuple[str, ...]
    pods: tuple[PodPlan, ...]
    bind_address: str

    def pod(self, component: str, user: str | None = None) -> PodPlan | None:
        """The pod of a component (and user), or None."""
        for pod in self.pods:
            if pod.component == component and pod.user == user:
                return pod
        return None

    def homepod_networks(self) -> list[NetworkSpec]:
        """The internal HomePod networks."""
        return [n for n in self.networks if n.internal]

    def nat_network(self) -> NetworkSpec:
        """The NAT network of the Airlock and the code service."""
        return next(n for n in self.networks if not n.internal)


def prefix(site: Site) -> str:
    """Prefix of every podman object of a site: ``mlab-<site>``."""
    return f"mlab-{site.name}"


def nat_network_name(site: Site) -> str:
    """``mlab-<site>``: the Airlock's and code service's NAT network."""
    return prefix(site)


def homepod_network_name(site: Site, user: str) -> str:
    """``mlab-<site>-hp-<user>``: one user's internal network."""
    return f"{prefix(site)}-hp-{user}"


UPSTREAMS_MOUNT = "/srv/mlab/upstreams"
"""Where the code service sees :func:`local_upstreams_dir` (``codeService.allowLocalUpstreams``):
``mlab repo approve file:///srv/mlab/upstreams/<name>.git``."""


def local_upstreams_dir(state_dir: str) -> str:
    """``$MLAB_STATE_DIR/<site>/upstreams`` (next to the engine's ``podman`` directory, so
    ``mlab down --volumes`` keeps it): host directory of local upstream repositories."""
    return str(PurePosixPath(state_dir).parent / "upstreams")


def volume_name(site: Site, claim: str) -> str:
    """``mlab-<site>-<claim>``: the named volume standing in for a claim."""
    return f"{prefix(site)}-{claim}"


def wanted_networks(site: Site) -> list[tuple[str, bool, str | None]]:
    """(name, internal, user) of every network the site needs, NAT network first."""
    out: list[tuple[str, bool, str | None]] = [(nat_network_name(site), False, None)]
    out += [(homepod_network_name(site, u.name), True, u.name) for u in site.users]
    return out


def _spec_hash(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, default=lambda b: hashlib.sha256(b).hexdigest())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _secret_data(secret: Obj) -> dict[str, bytes]:
    out = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
    out.update({k: str(v).encode() for k, v in (secret.get("stringData") or {}).items()})
    return out


def _source_files(
    kind: str, ref: Obj, sources: dict[tuple[str, str], dict[str, bytes]], where: str
) -> dict[str, bytes]:
    """Key files of one Secret/ConfigMap reference, honouring ``items`` (core/v1 KeyToPath)."""
    name = ref.get("secretName") or ref.get("name") or ""
    if (kind, name) not in sources:
        raise DeployError(
            f"{where}: {kind} {name!r} is not rendered by MLab and podman has no cluster to "
            "read it from",
            hint="on podman let MLab generate it (remove the site's *Secret/claim setting)",
        )
    data = sources[(kind, name)]
    items = ref.get("items")
    if not items:
        return dict(data)
    return {item["path"]: data[item["key"]] for item in items}


def _materialise(
    volume: Obj, sources: dict[tuple[str, str], dict[str, bytes]], where: str
) -> tuple[dict[str, bytes], int]:
    """Files (relative path -> bytes) and mode of a secret/configMap/projected volume."""
    if "secret" in volume:
        ref = volume["secret"]
        return _source_files("Secret", ref, sources, where), ref.get("defaultMode", 0o644)
    if "configMap" in volume:
        ref = volume["configMap"]
        return _source_files("ConfigMap", ref, sources, where), ref.get("defaultMode", 0o644)
    proj = volume["projected"]
    files: dict[str, bytes] = {}
    for src in proj.get("sources", []):
        if "secret" in src:
            files.update(_source_files("Secret", src["secret"], sources, where))
        elif "configMap" in src:
            files.update(_source_files("ConfigMap", src["configMap"], sources, where))
        else:
            raise DeployError(f"{where}: projected source {sorted(src)} is not supported on podman")
    return files, proj.get("defaultMode", 0o644)


def _ports_by_name(container: Obj) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _check_clashes(pods: list[PodPlan]) -> None:
    """On podman every Service shares the bind address: two ports on one number clash."""
    seen: dict[tuple[str, int], str] = {}
    for pod in pods:
        for port in pod.ports:
            key = (port.host_ip, port.host_port)
            where = f"{pod.name} {port.name}"
            if key in seen:
                raise DeployError(
                    f"port {port.host_port} on {port.host_ip} is wanted twice on podman: by "
                    f"{seen[key]} and {where}",
                    hint="give each user and the airlock their own `service.ports` in the "
                    "site file (all Services share access.bindAddress on podman)",
                )
            seen[key] = where


def _portal_on_host(site: Site, spec: Obj, nets: dict[str, NetworkSpec], state_dir: str) -> None:
    """The portal pod on the host's network: listen on ``access.bindAddress`` at the
    Service port, reach each HomePod at its fixed address, ask the host for wakes through
    the wake spool (mutates ``spec``)."""
    spec["hostNetwork"] = True
    container = spec["containers"][0]
    spool = f"{state_dir}/{WAKE_SPOOL}"
    for sub, read_only in ((WAKE_REQUESTS, False), (WAKE_HOST, True)):
        name = f"wake-{sub}"
        spec["volumes"].append({"name": name, "hostPath": {"path": f"{spool}/{sub}",
                                                           "type": "DirectoryOrCreate"}})
        container["volumeMounts"].append({"name": name, "readOnly": read_only,
                                          "mountPath": f"{WAKE_PORTAL_DIR}/{sub}"})
    # The host wakes (no API server here: it replaces the rendered in-cluster wake), the
    # Service port on the bind address, the code service's fixed address on the NAT network.
    options = [*wake_args("host", WAKE_PORTAL_DIR), "--port", str(site.access.ports.portal),
               "--host", site.access.bind_address]
    if "--code-url" in container["command"] and site.tls.enabled:
        # HTTPS only: the code service's published port on the bind address, a name its
        # certificate carries (mlab.tls.names); the NAT network's address is not one.
        options += ["--code-url", f"https://{dial_address(site.access.bind_address)}"
                                  f":{PORT_CODE_TLS_SERVICE}"]
    elif "--code-url" in container["command"]:
        options += ["--code-url", f"http://{nets[nat_network_name(site)].code_ip}:{PORT_CODE}"]
    command = set_options(container["command"], options)
    for net in nets.values():
        if net.internal and net.user is not None:
            command += ["--backend", f"{net.user}={net.pod_ip}:{PORT_VNC}"]
    container["command"] = command


def translate(
    site: Site,
    files: dict[str, list[Obj]],
    secrets: list[Obj],
    subnets: dict[str, str],
    state_dir: str,
    host_ca: bytes | None = None,
    placeholder_code_service: bool = False,
    volume_root: str = VOLUME_ROOT,
) -> Plan:
    """Turn the rendered site into a podman plan.

    Args:
        site: the validated site.
        files: ``Rendered.files`` (file name -> objects); not mutated.
        secrets: ``Rendered.secrets`` (Secrets with the generated passwords).
        subnets: network name -> IPv4 CIDR for every name of :func:`wanted_networks`.
        state_dir: absolute directory where the engine writes :class:`FileSpec` files
            (hostPath volumes point there).
        host_ca: the host's CA bundle; when given the Airlock trusts it (mounted at
            ``/etc/ssl/certs/ca-certificates.crt`` and as ``MLAB_CA_BUNDLE``).
        placeholder_code_service: run :data:`PLACEHOLDER_COMMAND` in the code service.
        volume_root: where podman keeps named volumes (``podman info`` Store.VolumePath);
            a volume's data is ``<volume_root>/<name>/_data``.

    Returns:
        The plan; pods code service first, then Airlock, then HomePods in site order.

    Raises:
        DeployError: an object podman cannot run (an existing Secret MLab did not render,
            ``secretKeyRef`` env, an unknown volume type), naming the object; two Services
            publishing one port number (they all share ``access.bindAddress``).
    """
    objects = [o for name in sorted(files) for o in files[name]]
    sources: dict[tuple[str, str], dict[str, bytes]] = {}
    for obj in [*objects, *secrets]:
        if obj.get("kind") == "Secret":
            sources[("Secret", obj["metadata"]["name"])] = _secret_data(obj)
        elif obj.get("kind") == "ConfigMap":
            data = {k: str(v).encode() for k, v in (obj.get("data") or {}).items()}
            sources[("ConfigMap", obj["metadata"]["name"])] = data
    nets: dict[str, NetworkSpec] = {}
    for name, internal, user in wanted_networks(site):
        if name not in subnets:
            raise DeployError(f"network {name}: no subnet chosen (engine bug)")
        nets[name] = NetworkSpec(name=name, subnet=subnets[name], internal=internal, user=user)
    nat = nets[nat_network_name(site)]
    code_cluster_ip = site.code_service_ip

    deployments = [o for o in objects if o.get("kind") == "Deployment"]
    services = [o for o in objects if o.get("kind") == "Service"]
    claims = sorted(
        {volume_name(site, o["metadata"]["name"]) for o in objects
         if o.get("kind") == "PersistentVolumeClaim"}
    )
    order = {"code-service": 0, "airlock": 1, "homepod": 2}
    deployments.sort(key=lambda d: order.get(
        d["spec"]["template"]["metadata"]["labels"].get(LABEL_COMPONENT, ""), 3))

    pods: list[PodPlan] = []
    volumes = set(claims)
    for dep in deployments:
        template = dep["spec"]["template"]
        labels = dict(template["metadata"].get("labels", {}))
        component = labels.get(LABEL_COMPONENT, "")
        user = labels.get(LABEL_USER)
        pod_name = f"{prefix(site)}-{dep['metadata']['name']}"
        where = f"Deployment {dep['metadata']['name']}"
        if component == "homepod":
            if user is None:
                raise DeployError(f"{where}: a HomePod without the {LABEL_USER} label")
            net = nets[homepod_network_name(site, user)]
            attach: tuple[tuple[str, str], ...] = ((net.name, net.pod_ip),)
            alias_ip = net.code_ip
            via = "nft"
        elif component == "code-service":
            attach = ((nat.name, nat.code_ip),) + tuple(
                (n.name, n.code_ip) for n in nets.values() if n.internal
            )
            alias_ip = nat.code_ip
            via = "podman"
        elif component == "portal":
            attach = ()
            alias_ip = nat.code_ip
            via = "host"
        else:
            attach = ((nat.name, nat.pod_ip),)
            alias_ip = nat.code_ip
            via = "podman"

        spec = copy.deepcopy(template["spec"])
        for key in _DROP_POD_FIELDS:
            spec.pop(key, None)
        for alias in spec.get("hostAliases", []):
            if alias.get("ip") == code_cluster_ip:
                alias["ip"] = alias_ip
        pod_files: list[FileSpec] = []
        new_volumes: list[Obj] = []
        file_volumes: dict[str, str] = {}
        claim_volumes: dict[str, str] = {}
        for vol in spec.get("volumes", []):
            if "persistentVolumeClaim" in vol:
                claim = volume_name(site, vol["persistentVolumeClaim"]["claimName"])
                volumes.add(claim)
                claim_volumes[vol["name"]] = claim
                new_volumes.append({"name": vol["name"], "persistentVolumeClaim": {"claimName": claim}})
            elif "emptyDir" in vol:
                new_volumes.append({"name": vol["name"], "emptyDir": {}})
            elif any(k in vol for k in ("secret", "configMap", "projected")):
                vol_files, mode = _materialise(vol, sources, f"{where} volume {vol['name']}")
                rel = f"files/{dep['metadata']['name']}/{vol['name']}"
                for path, content in sorted(vol_files.items()):
                    if PurePosixPath(path).is_absolute() or ".." in PurePosixPath(path).parts:
                        raise DeployError(f"{where} volume {vol['name']}: bad item path {path!r}")
                    pod_files.append(FileSpec(f"{rel}/{path}", content, mode))
                file_volumes[vol["name"]] = f"{state_dir}/{rel}"
                new_volumes.append({
                    "name": vol["name"],
                    "hostPath": {"path": f"{state_dir}/{rel}", "type": "Directory"},
                })
            elif "hostPath" in vol:
                new_volumes.append(vol)
            else:
                raise DeployError(f"{where} volume {vol['name']}: type {sorted(vol)} is not supported on podman")

        for container in spec["containers"]:
            for key in _DROP_CONTAINER_FIELDS:
                container.pop(key, None)
            res = container.get("resources")
            if res:
                for part in ("requests", "limits"):
                    for key in [k for k in res.get(part, {}) if "/" in k]:
                        del res[part][key]  # extended resources (nvidia.com/gpu)
                    if part in res and not res[part]:
                        del res[part]
                if not res:
                    del container["resources"]
            if component == "homepod":
                # The rendered gate targets (the Airlock's clusterIP, the node's kubelet from
                # the downward API) do not exist here: the Airlock's SSH on its network.
                container["env"] = [e for e in container.get("env", [])
                                    if e["name"] not in (NODE_IP_ENV, EGRESS_CHECK_ENV)]
                container["env"].append(
                    {"name": EGRESS_CHECK_ENV, "value": f"airlock={nat.pod_ip}:22"})
            if component == "code-service":
                # HomePods reach the code service from their own fixed address on their own
                # network; the office and the Airlock come through the NAT network
                # (reviewed user branches, mlab.codeservice.reviewed).
                homepods = ",".join(f"{n.pod_ip}/32" for n in nets.values() if n.internal)
                for env in container.get("env", []):
                    if env["name"] == HOMEPOD_NETS_ENV:
                        env["value"] = homepods
            for env in container.get("env", []):
                if "valueFrom" in env:
                    raise DeployError(
                        f"{where} env {env['name']}: valueFrom is not supported on podman "
                        "(4.3.1 fails on secretKeyRef); render a file mount instead"
                    )
            mounts = []
            for mount in container.get("volumeMounts", []):
                if mount["name"] in file_volumes and mount.get("subPath"):
                    # One file out of a Secret/ConfigMap: its own hostPath File volume.
                    vname = f"{mount['name']}-{len(new_volumes)}"
                    new_volumes.append({
                        "name": vname,
                        "hostPath": {
                            "path": f"{file_volumes[mount['name']]}/{mount['subPath']}",
                            "type": "File",
                        },
                    })
                    mounts.append({"name": vname, "mountPath": mount["mountPath"], "readOnly": True})
                elif mount["name"] in file_volumes:
                    mounts.append({**mount, "readOnly": True})
                elif mount["name"] in claim_volumes and mount.get("subPath"):
                    sub = PurePosixPath(mount["subPath"])
                    if sub.is_absolute() or ".." in sub.parts:
                        raise DeployError(f"{where} mount {mount['mountPath']}: subPath "
                                          f"{mount['subPath']!r} must be relative, without '..'")
                    vname = f"{mount['name']}-{len(new_volumes)}"
                    new_volumes.append({"name": vname, "hostPath": {
                        "path": f"{volume_root}/{claim_volumes[mount['name']]}/_data/{sub}",
                        "type": "DirectoryOrCreate"}})
                    item = {"name": vname, "mountPath": mount["mountPath"]}
                    if mount.get("readOnly"):
                        item["readOnly"] = True
                    mounts.append(item)
                else:
                    mounts.append(mount)
            container["volumeMounts"] = mounts
            if component == "code-service" and site.code_service.allow_local_upstreams:
                # `mlab repo approve file:///...` names a path inside this container: the
                # admin's bare repositories under <state>/<site>/upstreams, read-only.
                new_volumes.append({"name": "local-upstreams", "hostPath": {
                    "path": local_upstreams_dir(state_dir), "type": "DirectoryOrCreate"}})
                container["volumeMounts"].append({"name": "local-upstreams",
                                                  "mountPath": UPSTREAMS_MOUNT, "readOnly": True})
            if component == "code-service" and placeholder_code_service:
                container["command"] = list(PLACEHOLDER_COMMAND)
                container.pop("args", None)
            if component == "airlock" and host_ca is not None:
                rel = f"files/{dep['metadata']['name']}/host-ca/ca-certificates.crt"
                pod_files.append(FileSpec(rel, host_ca, 0o444))
                new_volumes.append({
                    "name": "host-ca",
                    "hostPath": {"path": f"{state_dir}/{rel}", "type": "File"},
                })
                container["volumeMounts"].append(
                    {"name": "host-ca", "mountPath": HOST_CA_BUNDLE, "readOnly": True}
                )
                env = container.setdefault("env", [])
                # OpenSSL, requests and pip each have their own setting for the bundle.
                for var in ("MLAB_CA_BUNDLE", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT"):
                    if not any(e["name"] == var for e in env):
                        env.append({"name": var, "value": HOST_CA_BUNDLE})
        spec["volumes"] = new_volumes
        if component == "portal":
            _portal_on_host(site, spec, nets, state_dir)

        ports: list[Port] = []
        # portal.directDesktopPorts false: like the rendered policies (office -> HomePod keeps
        # only SSH), HomePods publish only SSH; the portal reaches VNC at the pod's address.
        ssh_only = component == "homepod" and not site.direct_desktops
        for svc in services:
            selector = svc["spec"].get("selector") or {}
            if not selector or not _matches(selector, labels):
                continue
            for sp in svc["spec"].get("ports", []):
                target = sp.get("targetPort", sp["port"])
                cport = None
                for container in spec["containers"]:
                    named = _ports_by_name(container)
                    if isinstance(target, str) and target in named:
                        cport = named[target]
                    elif isinstance(target, int):
                        cport = target
                if cport is None:
                    raise DeployError(
                        f"Service {svc['metadata']['name']} port {sp.get('name')}: targetPort "
                        f"{target!r} names no container port"
                    )
                if via == "host":  # listens on the host at the Service port itself
                    cport = int(sp["port"])
                if ssh_only and cport != PORT_SSH:
                    continue
                if component == "code-service" and site.tls.enabled and cport == PORT_CODE:
                    continue  # with tls the office reaches the code service on HTTPS only
                ports.append(Port(sp.get("name", str(sp["port"])), site.access.bind_address,
                                  int(sp["port"]), int(cport), via))
        # podman 4.3 publishes a containerPort without hostPort on the same host port
        # (all addresses), so only ports a Service publishes stay, and only on NAT pods.
        published = {p.container_port: p for p in ports} if via == "podman" else {}
        for container in spec["containers"]:
            kept = []
            for cp in container.get("ports", []):
                if cp["containerPort"] in published:
                    port = published[cp["containerPort"]]
                    item = {**cp, "hostPort": port.host_port}
                    # hostIP 0.0.0.0 reaches netavark verbatim and matches no packet
                    # (measured); no hostIP means every address.
                    if not ipaddress.ip_address(port.host_ip).is_unspecified:
                        item["hostIP"] = port.host_ip
                    kept.append(item)
            if kept:
                container["ports"] = kept
            else:
                container.pop("ports", None)

        meta: Obj = {"name": pod_name, "labels": labels}
        if template["metadata"].get("annotations"):
            meta["annotations"] = dict(template["metadata"]["annotations"])
        manifest: Obj = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}
        digest = _spec_hash({
            "manifest": manifest, "networks": attach, "ports": [p.__dict__ for p in ports],
            "files": [(f.path, f.content, f.mode) for f in pod_files],
        })
        manifest["metadata"]["labels"] = {**labels, LABEL_SPEC: digest}
        pods.append(PodPlan(
            name=pod_name, component=component, user=user, manifest=manifest,
            networks=attach, ports=tuple(ports), files=tuple(pod_files), spec_hash=digest,
        ))
    _check_clashes(pods)
    return Plan(
        site=site.name,
        networks=tuple(nets.values()),
        volumes=tuple(sorted(volumes)),
        pods=tuple(pods),
        bind_address=site.access.bind_address,
    )
