"""The site file: one YAML document that describes an MLab cluster.

Invariant: a :class:`Site` that loads is internally consistent (unique user names that are
DNS-1123 labels, valid CIDRs, no two Services claiming one port on one external IP, positive
GPU counts). Every field has a description stating its unit, its default and what an empty
value means; the JSON Schema (``mlab site schema``) and the reference docs come from here.

Keys in the file are camelCase (``officeCIDRs``, ``storageClass``), like Kubernetes objects;
the Python attributes are snake_case.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import zoneinfo
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from mlab.errors import SiteError
from mlab.strict_yaml import load_strict
from mlab.topology import (
    AIRLOCK_ACCESS,
    CLAIM_OUTBOX,
    CLAIM_SHARE,
    EXPORT_PATH,
    HOMEPOD_ACCESS,
    PORT_CODE,
    PORT_CODE_SERVICE,
    SHARE_PATH,
    AccessName,
    service_port,
)

API_VERSION: Literal["mlab.io/v1"] = "mlab.io/v1"

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
"""RFC 1123 label as Kubernetes uses it for names (IsDNS1123Label): at most 63 characters."""

QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|Pi|M|G|T|P|E|Ei)?$")
"""A Kubernetes resource.Quantity in its common forms (``500m``, ``6Gi``, ``2``)."""

PUBLISHER_ACCOUNT = "mlab-publisher"
"""The code-service account of the export publisher (its own container next to the Airlock,
docs/requests.md): it may list exports and add notes, has no git access, and no person
logs in with it. Also its key in the password state."""

HOMEPOD_NETS_ENV = "MLAB_HOMEPOD_NETS"
"""The code service's environment variable naming the HomePods' addresses (comma-separated
CIDRs): the cluster's pod range on Kubernetes, each HomePod's address under podman
(``mlab.codeservice.reviewed``)."""
RESERVED_USERS = ("admin", "airlock", PUBLISHER_ACCOUNT)
"""User names that would clash with the password state's ``admin``, ``airlock`` and
publisher keys."""

PRIVATE_RANGES = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16")
"""RFC 1918 private ranges and the RFC 3927 link-local range (cloud metadata 169.254.169.254)."""
PRIVATE_RANGES_V6 = (
    "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8", "64:ff9b::/96",
)
"""IPv6 ranges the internet edges exclude on a dual-stack cluster: unique local (RFC 4193,
the IPv6 private range), link-local (RFC 4291), the deprecated site-local range (RFC 3879),
multicast, and the NAT64 prefix (RFC 6052), through which an IPv6 peer names any IPv4
address, the private ranges above included. Not ``::ffff:0:0/96`` (IPv4-mapped): the API
server (v1.34) rejects it as an except of ``::/0`` ("must be a strict subset of `cidr`", Go
reads it as IPv4), and an IPv4-mapped address never goes on the wire as IPv6."""


def _cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError as exc:
        raise ValueError(f"not a CIDR like 10.0.0.0/8: {exc}") from None


def _ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"not an IP address: {value!r}") from None


def _label(value: str) -> str:
    if not DNS1123_LABEL.match(value):
        raise ValueError(
            f"{value!r} is not a DNS-1123 label (lower-case letters, digits and '-', "
            "starting and ending with a letter or digit, at most 63 characters)"
        )
    return value


def _quantity(value: str | int) -> str:
    text = str(value)
    if not QUANTITY.match(text):
        raise ValueError(f"{text!r} is not a Kubernetes quantity like 6Gi, 500m or 2")
    return text


@functools.lru_cache(maxsize=1)
def _known_timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def _listed_timezone(name: str) -> bool:
    """Whether ``zoneinfo.available_timezones()`` lists ``name`` (a well-formed key) through
    a zoneinfo file, checked for this name alone, by the same rule: a file whose first bytes
    are ``TZif`` under a ``zoneinfo.TZPATH`` root, reached through real directories (the
    walk follows no directory links), not under ``right/`` or ``posix/``, not
    ``posixrules``. False means only "not found this way" (tzdata may still list it)."""
    parts = name.split("/")
    if name == "posixrules" or parts[0] in ("right", "posix"):
        return False
    for root in zoneinfo.TZPATH:
        path = root
        for part in parts[:-1]:
            path = os.path.join(path, part)
            if os.path.islink(path) or not os.path.isdir(path):
                break
        else:
            try:
                with open(os.path.join(path, parts[-1]), "rb") as f:
                    if f.read(4) == b"TZif":
                        return True
            except OSError:
                pass
    return False


def _timezone(value: str) -> str:
    """Accept a name of the IANA time zone database (what TZ in the pods takes).

    Checked against the zoneinfo files when this machine has them (Debian's tzdata); a
    machine without them accepts any well-formed name rather than rejecting every one.
    """
    if not re.fullmatch(r"[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+)*", value):
        raise ValueError(f"{value!r} is not a time zone name like Asia/Shanghai or UTC")
    if _listed_timezone(value):
        # Listing the whole database opens its 600 files (0.03 s per site; issue 18).
        return value
    known = _known_timezones()
    if known and value not in known:
        raise ValueError(
            f"{value!r} is not in the IANA time zone database; use a name like Asia/Shanghai"
        )
    return value


_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def duration_seconds(value: str) -> int | None:
    """Seconds of a duration like ``90s``, ``10m``, ``3h``, ``1h30m``, ``2d``; None for
    ``never``.

    Raises:
        ValueError: not such a duration (or zero).
    """
    if value == "never":
        return None
    match = _DURATION.match(value) if value else None
    if not match or not any(match.groups()):
        raise ValueError(f"{value!r} is not a duration like 90s, 10m, 3h, 1h30m, 2d or never")
    d, h, m, s = (int(g or 0) for g in match.groups())
    total = ((d * 24 + h) * 60 + m) * 60 + s
    if total <= 0:
        raise ValueError(f"{value!r} must be longer than zero (or never)")
    return total


def _duration(value: str) -> str:
    duration_seconds(value)
    return value


CIDR = Annotated[str, AfterValidator(_cidr)]
IP = Annotated[str, AfterValidator(_ip)]
Label = Annotated[str, AfterValidator(_label)]
Quantity = Annotated[str, AfterValidator(_quantity)]
Duration = Annotated[str, AfterValidator(_duration)]
Port = Annotated[int, Field(ge=1, le=65535)]


class Model(BaseModel):
    """Base of every site model: camelCase keys, unknown keys rejected, immutable."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        validate_default=True,
    )


class Image(Model):
    """The HomePod image, shared by HomePods, the Airlock and the code service."""

    repository: str = Field(
        "localhost/mlab/homepod",
        description="Image repository without tag. Default: the locally built image "
        "(`mlab image build --local`).",
    )
    tag: str = Field("latest", description="Image tag. Default: latest.")
    pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        "IfNotPresent", description="Kubernetes imagePullPolicy. Default: IfNotPresent."
    )
    pull_secrets: list[Label] = Field(
        default_factory=list,
        description="Names of existing docker-registry Secrets for imagePullSecrets. "
        "Empty: none.",
    )
    plain_http: bool = Field(
        False,
        description="The registry in `repository` speaks plain HTTP, not TLS (a registry on "
        "a trusted local network): `mlab image push` and the podman engine's pull skip TLS; "
        "on Kubernetes, containerd needs the same (docs/image.md). Default: false.",
    )
    ca_file: str | None = Field(
        None,
        description="Absolute path of a PEM file holding the CA that signed the registry's "
        "TLS certificate (a local CA), trusted for this registry only: `mlab image push` "
        "and the podman engine's pull give it to podman (`--cert-dir`), and `mlab node up "
        "--site` to containerd (`ca` in the registry's hosts.toml). The machine's trust "
        "store is not changed. Not with plainHttp. None: the system's CAs (docs/image.md).",
    )

    @model_validator(mode="after")
    def _tls_choice(self) -> Image:
        if self.ca_file is not None:
            if self.plain_http:
                raise ValueError("caFile is for a TLS registry; plainHttp: true says it has no TLS "
                                 "(drop one of them)")
            if not self.ca_file.startswith("/"):
                raise ValueError(f"caFile {self.ca_file!r} must be an absolute path")
        return self

    @property
    def ref(self) -> str:
        """The full image reference, ``repository:tag``."""
        return f"{self.repository}:{self.tag}"


class Toleration(Model):
    """A Kubernetes toleration (core/v1 Toleration)."""

    key: str | None = Field(None, description="Taint key. None: match every key (with Exists).")
    operator: Literal["Exists", "Equal"] = Field("Equal", description="Default: Equal.")
    value: str | None = Field(None, description="Taint value for Equal. None: empty.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect. None: every effect."
    )


class Placement(Model):
    """Where a pod may run: the core/v1 PodSpec fields nodeName, nodeSelector, tolerations."""

    node_name: str | None = Field(
        None, description="Pin the pod to this node (PodSpec.nodeName). None: scheduler decides."
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="PodSpec.nodeSelector labels. Empty: any node."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, description="PodSpec.tolerations. Empty: none."
    )


class Resources(Model):
    """Compute resources of one container (core/v1 ResourceRequirements)."""

    requests: dict[str, Quantity] = Field(
        default_factory=dict,
        description="Requests, e.g. {memory: 6Gi, cpu: '2'}. Empty: none (best effort).",
    )
    limits: dict[str, Quantity] = Field(
        default_factory=dict,
        description="Limits, e.g. {memory: 24Gi}. Empty: no limit.",
    )
    gpus: int = Field(
        0,
        ge=0,
        description="Number of nvidia.com/gpu devices (requested and limited alike). "
        "0: no GPU.",
    )

    @field_validator("gpus", mode="before")
    @classmethod
    def _gpus_integer(cls, gpus: Any) -> Any:
        # Strict: 1.5, "2", true are mistakes, not GPU counts (nvidia.com/gpu is whole).
        if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0:
            raise ValueError(f"must be a whole number of GPUs (0 or more), got {gpus!r}")
        return gpus


class Storage(Model):
    """A PersistentVolumeClaim to create, or an existing one to use."""

    claim: str | None = Field(
        None,
        description="Name of an existing PersistentVolumeClaim to use. None: MLab creates one "
        "with `size` and `storageClass`.",
    )
    size: Quantity = Field("20Gi", description="Size of a claim MLab creates. Default: 20Gi.")
    storage_class: str | None = Field(
        None, description="storageClassName of a claim MLab creates. None: the cluster default."
    )
    sub_path: str | None = Field(
        None, description="Mount only this sub-directory of the claim. None: the whole claim."
    )


class ExtraVolume(Model):
    """An extra existing claim mounted into a user's HomePod."""

    claim: Label = Field(description="Name of an existing PersistentVolumeClaim.")
    mount_path: str = Field(description="Absolute path inside the HomePod.")
    read_only: bool = Field(False, description="Mount read-only. Default: false.")
    sub_path: str | None = Field(None, description="Sub-directory of the claim. None: all.")


ServiceType = Literal["ClusterIP", "NodePort", "LoadBalancer"]


class Exposure(Model):
    """How a Kubernetes Service exposes a component (core/v1 ServiceSpec)."""

    type: ServiceType = Field("ClusterIP", description="Service type. Default: ClusterIP.")
    external_ips: list[IP] = Field(
        default_factory=list,
        alias="externalIPs",
        description="ServiceSpec.externalIPs: node addresses that route to the Service. "
        "Empty: none.",
    )
    ports: dict[AccessName, Port] = Field(
        default_factory=dict,
        description="Service port per access name, overriding `access.ports`. Empty: the "
        "defaults. Every Service publishes all of its access ports.",
    )
    node_ports: dict[AccessName, Annotated[int, Field(ge=30000, le=32767)]] = Field(
        default_factory=dict,
        description="Fixed nodePort per access name (NodePort and LoadBalancer only, "
        "30000-32767). Empty: Kubernetes assigns them.",
    )


class UserCulling(Model):
    """Per-user overrides of the site's idle culling (docs/culling.md)."""

    idle_after: Duration | None = Field(
        None,
        description="Idle time before this user's HomePod is stopped, e.g. 8h, or never. "
        "None: the site's culling.idleAfter (gpuIdleAfter for a pod with GPUs).",
    )


def setting(default: Any, description: str, *, shown: str | None = None, **bounds: Any) -> Any:
    """A site field with a default, its description ending in ``Default: <default>.``.

    Args:
        default: the value used when the site file leaves the field out.
        description: what the field means (the site reference, ``mlab site docs``, shows it).
        shown: how the default reads in the description when ``str(default)`` does not
            (``25`` for 25.0, ``4294967296 (4 GiB)``).
        **bounds: pydantic's numeric bounds (``ge``, ``gt``, ``le``).

    Returns:
        A pydantic ``Field``.
    """
    text = shown if shown is not None else str(default)
    return Field(default, description=f"{description} Default: {text}.", **bounds)


class Culling(Model):
    """Idle HomePods give their machine back (`mlab cull`, docs/culling.md). A HomePod is
    idle while no keyboard or mouse input reaches any of its desktops or terminals and its
    users' processes stay under both busy thresholds; an open connection is not use."""

    enabled: bool = Field(True, description="Let `mlab cull` stop idle HomePods. Default: true.")
    idle_after: Duration = setting(
        "4h", "Idle time before a HomePod is stopped (its home is kept), e.g. 90s, 30m, 4h, "
        "1d, or never.",
    )
    gpu_idle_after: Duration = setting(
        "1h", "Idle time before a HomePod with GPUs (resources.gpus > 0, or nvidia-smi lists "
        "one) is stopped; GPUs are the scarcest thing.",
    )
    warn_before: Duration = setting(
        "10m", "How long before the stop a desktop dialog warns the user with the time left; "
        "any input cancels the stop.",
    )
    cpu_busy_percent: float = setting(
        25.0, "CPU use of the users' processes, in percent of one core averaged since the "
        "last sample, at or above which the HomePod is busy (a training run with nobody "
        "at the keyboard is not idle).",
        gt=0, shown="25",
    )
    gpu_busy_percent: float = setting(
        10.0, "nvidia-smi utilisation.gpu (percent, the busiest GPU) at or above which the "
        "HomePod is busy.",
        gt=0, le=100, shown="10",
    )
    interval: Duration = setting(
        "1m", "How often `mlab cull` samples each HomePod.",
    )


def _shared_default(model: type[Model]) -> Any:
    """A default factory that gives every user the same default ``model()`` instance.

    Site models are frozen and never mutated (rendering is pure), so one instance serves
    all users: on a 10,000-user site building a fresh one per user and field was about
    0.05 s of validation, and ``model_dump(exclude_defaults=True)`` (the code service's
    site ConfigMap) calls the factory again per user to compare, another 0.05 s (issue 18).
    """
    instance = model()
    return lambda: instance


class User(Model):
    """One engineer, who gets one HomePod."""

    name: Label = Field(description="Login name; a DNS-1123 label (used in object names).")
    uid: int = Field(1000, ge=1000, le=60000, description="Numeric uid (and gid). Default: 1000.")
    password_secret: Label | None = Field(
        None,
        description="Name of an existing Secret with key `password`. None: MLab generates a "
        "password once and keeps it stable across renders.",
    )
    sudo: bool = Field(True, description="Passwordless sudo in the HomePod. Default: true.")
    groups: list[Label] = Field(
        default_factory=list, description="Extra groups, also used as pod labels. Empty: none."
    )
    placement: Placement = Field(
        default_factory=_shared_default(Placement), description="Node placement."
    )
    resources: Resources = Field(
        default_factory=_shared_default(Resources), description="CPU, memory, GPUs."
    )
    home: Storage = Field(
        default_factory=_shared_default(Storage),
        description="Home directory volume at /home/<name>. Default: a new 20Gi claim.",
    )
    volumes: list[ExtraVolume] = Field(
        default_factory=list, description="Extra existing claims to mount. Empty: none."
    )
    service: Exposure = Field(
        default_factory=_shared_default(Exposure),
        description="How this user's HomePod Service is exposed.",
    )
    ssh_keys: list[str] = Field(
        default_factory=list,
        description="OpenSSH public keys for authorized_keys. Empty: password login only.",
    )
    culling: UserCulling = Field(
        default_factory=_shared_default(UserCulling),
        description="Per-user idle culling overrides.",
    )


class Dataset(Model):
    """A shared dataset claim, mounted into every HomePod."""

    name: Label = Field(description="Short name, used in volume names.")
    claim: Label = Field(description="Name of an existing PersistentVolumeClaim.")
    mount_path: str = Field(
        "", description="Mount path. Empty: /opt/public/datasets/<name>."
    )
    read_only: bool = Field(True, description="Mount read-only. Default: true.")
    sub_path: str | None = Field(None, description="Sub-directory of the claim. None: all.")

    @property
    def path(self) -> str:
        """The mount path, with the default applied."""
        return self.mount_path or f"/opt/public/datasets/{self.name}"


class Proxy(Model):
    """An outbound HTTP proxy for sites behind one."""

    http: str | None = Field(None, description="http_proxy URL. None: direct.")
    https: str | None = Field(None, description="https_proxy URL. None: direct.")
    no_proxy: list[str] = Field(default_factory=list, description="no_proxy hosts. Empty: none.")
    cidrs: list[CIDR] = Field(
        default_factory=list,
        description="Addresses of the proxy. The Airlock and the code service may reach them "
        "on the proxy URLs' ports even inside private ranges (a corporate proxy usually has a "
        "private address, which the internet egress rule excludes). Empty: none.",
    )

    @model_validator(mode="after")
    def _no_credentials(self) -> "Proxy":
        for key, url in (("http", self.http), ("https", self.https)):
            if not url:
                continue
            parts = urlsplit(url)
            try:
                parts.port  # noqa: B018 - raises on a bad port
            except ValueError:
                raise ValueError(f"{key}: {url!r} has an invalid port") from None
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"{key}: {url!r} is not an http:// or https:// URL")
            if parts.password is not None:
                raise ValueError(
                    f"{key}: the proxy URL holds a password, which would land in plain "
                    "manifests; allow the pods' addresses on the proxy instead"
                )
        return self

    def ports(self) -> list[int]:
        """TCP ports of the proxy URLs (80 for http:// and 443 for https:// without one)."""
        out: list[int] = []
        for url in (self.http, self.https):
            if not url:
                continue
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            if port not in out:
                out.append(port)
        return out


class Airlock(Model):
    """The Airlock: the one pod that reaches the internet."""

    enabled: bool = Field(True, description="Deploy the Airlock. Default: true.")
    cluster_ip: IP | None = Field(
        None,
        alias="clusterIP",
        description="Fixed Service clusterIP, inside `cluster.serviceCIDR`. Each HomePod's "
        "start gate must see a connection to it refused before any user session starts "
        "(docs/security.md). None: the address 201 past the start of serviceCIDR "
        "(10.96.0.201 for 10.96.0.0/12).",
    )
    user: Label = Field(
        "airlock",
        description="Login name on the Airlock for SSH/SFTP and the desktop. Default: airlock.",
    )
    password_secret: Label | None = Field(
        None, description="Existing Secret with key `password`. None: generated once."
    )
    placement: Placement = Field(default_factory=Placement, description="Node placement.")
    resources: Resources = Field(default_factory=Resources, description="CPU and memory.")
    share: Storage = Field(
        default_factory=lambda: Storage(size="100Gi"),
        description=f"The airlock share, read-write here and read-only at {SHARE_PATH} "
        "in every HomePod. Default: a new 100Gi claim (must be ReadWriteMany on a cluster "
        "with several nodes).",
    )
    outbox: Storage = Field(
        default_factory=lambda: Storage(size="50Gi"),
        description="One claim holding every user's export outbox (a subPath per user). "
        "Default: a new 50Gi claim.",
    )
    exports: Storage = Field(
        default_factory=lambda: Storage(size="50Gi"),
        description="Verified copies of approved exports when `egress.exportDelivery` is "
        "requester: written by the export publisher, read (read-only) by the code service, "
        "mounted nowhere else. Default: a new 50Gi claim.",
    )
    proxy: Proxy = Field(default_factory=Proxy, description="Outbound proxy. Default: none.")
    ca_bundle_secret: Label | None = Field(
        None,
        description="Existing Secret with key `ca.crt`: an extra CA bundle trusted by the "
        "Airlock (a TLS-intercepting proxy). None: system CAs only.",
    )
    service: Exposure = Field(
        default_factory=lambda: Exposure(ports={"ssh": 10022}),
        description="How the Airlock Service is exposed. Default: ClusterIP, SFTP on 10022.",
    )


class CodeServiceLimits(Model):
    """Limits that keep one user (or one attacker with an account) from exhausting the code
    service: git processes, pushes, logins. Every field has a sane default."""

    git_timeout: int = setting(
        3600, "Seconds one git request (clone, fetch, push) may run before its git processes "
        "are killed.",
        ge=10,
    )
    max_git_processes: int = setting(
        32, "git requests running at once in total; more are answered 503 with Retry-After.",
        ge=1,
    )
    max_git_processes_per_user: int = setting(
        6, "git requests running at once per account; more are answered 429 with "
        "Retry-After.",
        ge=1,
    )
    git_queue_wait: int = setting(
        30, "Seconds a git request beyond `maxGitProcesses` or `maxGitProcessesPerUser` "
        "waits for a free slot before it is refused.",
        ge=0,
    )
    max_refs_per_day: int = setting(
        1000, "Ref updates (creations, updates, deletions) one user may push per UTC day, all "
        "repositories together.",
        ge=1,
    )
    max_push_bytes_per_day: int = setting(
        4 * 1024**3, "Bytes one user may push per UTC day (pack data, all repositories together).",
        ge=1, shown="4294967296 (4 GiB)",
    )
    login_failures_per_account: int = setting(
        10, "Failed logins per account within `loginWindow` before the account is refused "
        "with 429 until the window passes.",
        ge=1,
    )
    login_failures_per_address: int = setting(
        30, "Failed logins per client address within `loginWindow` before the address is "
        "refused with 429.",
        ge=1,
    )
    login_window: int = setting(
        300, "Seconds over which failed logins are counted.",
        ge=1,
    )
    max_concurrent_hashes: int = setting(
        2, "argon2 password checks running at once (each takes 64 MiB); further logins "
        "wait their turn.",
        ge=1,
    )


class CodeService(Model):
    """The code service: approved mirrors over git smart HTTP."""

    host: str = Field(
        "code.mlab.local",
        description="Host name users type in git URLs (http://<host>/<org>/<repo>). "
        "Default: code.mlab.local.",
    )
    cluster_ip: IP | None = Field(
        None,
        alias="clusterIP",
        description="Fixed Service clusterIP, inside `cluster.serviceCIDR`. HomePods reach the "
        "code service at this address through a hostAliases entry for `host` (with "
        "`dns: none` they have no resolver). None: the address 200 past the start of "
        "serviceCIDR (10.96.0.200 for 10.96.0.0/12).",
    )
    storage: Storage = Field(
        default_factory=lambda: Storage(size="50Gi"),
        description="Repositories, database and audit log. Default: a new 50Gi claim.",
    )
    allowed_hosts: list[str] = Field(
        default_factory=lambda: ["github.com"],
        description="Upstream git hosts that may be mirrored. Default: [github.com].",
    )
    allow_local_upstreams: bool = Field(
        False,
        description="Also accept file:// and loopback upstreams (tests, air-gapped sites). "
        "Default: false.",
    )
    sync_interval: int = Field(
        3600, ge=60, description="Seconds between background syncs of a mirror. Default: 3600."
    )
    max_blob_size: int = Field(
        100 * 1024 * 1024,
        ge=1,
        description="Largest blob a push may contain, in bytes. Default: 104857600 (100 MiB).",
    )
    reviewers: list[Label] = Field(
        default_factory=list,
        description="Users who review package and export requests. Empty: only admin.",
    )
    ref_policy: Literal["creator", "namespace"] = Field(
        "creator",
        description="Who may change a user branch or tag. creator: anyone may create a "
        "name nobody holds, and only its creator may update or delete it; names under "
        "`<user>/` are reserved for that user. namespace: users push only under "
        "`refs/heads/<user>/` and `refs/tags/<user>/`. Reviewers delete any user ref with "
        "`mlab repo delete-ref`. Default: creator.",
    )
    limits: CodeServiceLimits = Field(
        default_factory=CodeServiceLimits,
        description="git processes, deadlines, push quotas and login rate limits.",
    )
    two_person_approval: list[Literal["package", "export", "mirror", "branch"]] = Field(
        default_factory=list,
        description="Request kinds that need two distinct approvers. Empty: one is enough.",
    )
    notify_command: list[str] = Field(
        default_factory=list,
        description="Command run on each request transition with the event JSON on stdin. "
        "Empty: none.",
    )
    notify_url: str | None = Field(
        None, description="Webhook URL POSTed the event JSON on each transition. None: none."
    )
    resources: Resources = Field(
        default_factory=lambda: Resources(
            requests={"cpu": "250m", "memory": "256Mi"}, limits={"cpu": "2", "memory": "4Gi"}
        ),
        description="CPU and memory. Default: requests cpu 250m, memory 256Mi; limits cpu "
        "2, memory 4Gi (the git processes of one pod share them; see `limits`).",
    )
    placement: Placement = Field(default_factory=Placement, description="Node placement.")
    service: Exposure = Field(
        default_factory=Exposure,
        description=f"How the code-service Service is exposed (port {PORT_CODE_SERVICE} to {PORT_CODE}).",
    )


def _issuer(value: str) -> str:
    """An OpenID Connect issuer: an https:// URL, or http:// on a loopback host only (a
    provider on the same machine, as in tests); no query or fragment (OIDC Discovery 1.0,
    section 4: the issuer is a URL the discovery path is appended to)."""
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"{value!r} is not an https:// URL like https://sso.example.org/realms/lab")
    if parts.query or parts.fragment:
        raise ValueError(f"{value!r}: an issuer has no query or fragment")
    loopback = parts.hostname == "localhost" or parts.hostname.startswith("127.")
    if parts.scheme == "http" and not loopback:
        raise ValueError(
            f"{value!r}: tokens would cross the network in clear; use https:// "
            "(http:// is accepted for localhost and 127.x only)"
        )
    return value.rstrip("/")


class OpenIDConnect(Model):
    """The organisation's OpenID Connect provider the portal signs users in with
    (authorization code flow with PKCE, OpenID Connect Core 1.0 and RFC 7636)."""

    issuer: Annotated[str, AfterValidator(_issuer)] = Field(
        description="Issuer URL; `<issuer>/.well-known/openid-configuration` must answer. "
        "https:// (http:// only on localhost)."
    )
    client_id: str = Field(description="The portal's client id at the provider.")
    client_secret_secret: Label | None = Field(
        None,
        description="Existing Secret with key `clientSecret` holding the client secret. "
        "None: a public client (PKCE only).",
    )
    username_claim: str = Field(
        "preferred_username",
        description="ID-token claim whose value is the MLab user name. Default: "
        "preferred_username. A signed-in name that is not a site user gets no desktop.",
    )
    groups_claim: str = Field(
        "groups", description="ID-token claim listing the user's groups. Default: groups."
    )
    reviewer_group: str | None = Field(
        None, description="Group whose members see the review queue. None: no one by group."
    )
    admin_group: str | None = Field(
        None, description="Group whose members are portal admins. None: no one by group."
    )
    cidrs: list[CIDR] = Field(
        default_factory=list,
        description="Addresses of the provider, for the portal's egress NetworkPolicy. "
        "Empty: the internet (not private ranges) on the issuer's port.",
    )
    ca_bundle_secret: Label | None = Field(
        None,
        description="Existing Secret with key `ca.crt`: CA certificates the portal trusts, "
        "besides the system's, for the issuer's https:// (a provider with a private CA). "
        "None: system CAs only.",
    )


    @property
    def issuer_port(self) -> int:
        """TCP port of the issuer URL (443 for https://, 80 for http://, RFC 3986 default)."""
        parts = urlsplit(self.issuer)
        return parts.port or (443 if parts.scheme == "https" else 80)


class PortalService(Model):
    """How the portal's Service is exposed (core/v1 ServiceSpec)."""

    type: ServiceType = Field("ClusterIP", description="Service type. Default: ClusterIP.")
    external_ips: list[IP] = Field(
        default_factory=list,
        alias="externalIPs",
        description="ServiceSpec.externalIPs. Empty: none.",
    )
    node_port: Annotated[int, Field(ge=30000, le=32767)] | None = Field(
        None, description="Fixed nodePort (NodePort, LoadBalancer). None: Kubernetes picks."
    )


class Portal(Model):
    """The front door: one web portal with sign-in, each user's desktop in the browser."""

    enabled: bool = Field(False, description="Deploy the portal. Default: false.")
    url: str = Field(
        "http://localhost:8443",
        description="The URL users open (scheme, host, port); the provider redirects back "
        "to `<url>/auth/callback`. Default: http://localhost:8443.",
    )
    oidc: OpenIDConnect | None = Field(
        None,
        description="Single sign-on provider. None: users sign in with their MLab "
        "password (the one of their HomePod).",
    )
    tls_secret: Label | None = Field(
        None,
        description="Existing kubernetes.io/tls Secret; the portal then serves HTTPS "
        "itself. None: plain HTTP behind a TLS-terminating proxy (or on localhost).",
    )
    direct_desktop_ports: bool = Field(
        True,
        description="Also admit office CIDRs to HomePods' VNC, RDP and noVNC ports. "
        "false: desktops are reached through the portal alone (SSH stays open to offices).",
    )
    session_hours: int = Field(
        8, ge=1, le=168, description="Hours a portal session lasts. Default: 8."
    )
    wake: bool = Field(
        False,
        description="Kubernetes: \"Open desktop\" on a culled HomePod scales its Deployment "
        "back to 1, with the portal's own ServiceAccount (a Role that may only get and scale "
        "the site's HomePod Deployments, by name). Needs `cluster.apiServerCIDRs` (the "
        "portal's egress policy to the API server). Default: false (users run `mlab wake`).",
    )
    service: PortalService = Field(
        default_factory=lambda: PortalService(),
        description="How the portal Service is exposed (port `access.ports.portal`).",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/"):
            raise ValueError(f"{value!r} is not a URL like https://mlab.example.org")
        return value.rstrip("/")


class Ports(Model):
    """Default Service ports per access protocol (container ports are fixed)."""

    vnc: Port = Field(5900, description="VNC (RFB). Default: 5900.")
    rdp: Port = Field(3389, description="RDP. Default: 3389.")
    novnc: Port = Field(7030, description="noVNC web page and websocket. Default: 7030.")
    ssh: Port = Field(22, description="SSH and SFTP. Default: 22.")
    portal: Port = Field(8443, description="The portal's web page. Default: 8443.")


class Access(Model):
    """Who may connect to HomePods and the Airlock, and on which ports."""

    office_cidrs: list[CIDR] = Field(
        default_factory=list,
        alias="officeCIDRs",
        description="Source ranges allowed to reach HomePods, the Airlock and the code "
        "service. Empty: no one outside the cluster.",
    )
    ports: Ports = Field(default_factory=Ports, description="Default Service ports.")
    bind_address: IP = Field(
        "127.0.0.1",
        description="podman engine only: host address the Services are published on. "
        "Default: 127.0.0.1.",
    )


class Security(Model):
    """Where users report a hole in the isolation, and what they get for it (SECURITY.md)."""

    report: str | None = Field(
        None,
        description="Where to report a hole: an address (mailto:, https://) or a command "
        "users run, shown by `mlab verify` (and the portal). None: the admin, in person.",
    )
    reward: str | None = Field(
        None,
        description="What the first reporter of a hole gets, e.g. 'a 30 yuan red packet'. "
        "None: thanks and credit in the fix.",
    )

    def where(self) -> str:
        """One line naming where to report (``report``, or the admin when unset)."""
        return self.report or "the site's admin, in person (no security.report in the site file)"


class Cluster(Model):
    """Facts about the Kubernetes cluster that the NetworkPolicies need."""

    pod_cidr: CIDR = Field("10.244.0.0/16", alias="podCIDR", description="Pod network range.")
    service_cidr: CIDR = Field(
        "10.96.0.0/12", alias="serviceCIDR", description="Service (clusterIP) range."
    )
    api_server_cidrs: list[CIDR] = Field(
        default_factory=list,
        alias="apiServerCIDRs",
        description="Addresses of the API server's endpoints (`kubectl get endpointslices -n "
        "default -l kubernetes.io/service-name=kubernetes`): NetworkPolicies see them, not "
        "the kubernetes Service's clusterIP. Only the portal with `portal.wake` reaches "
        "them. Empty: no pod does.",
    )
    api_server_port: Port = Field(
        6443, description="The API server endpoints' port (not the Service's 443). Default: 6443."
    )
    dns_namespace: str = Field("kube-system", description="Namespace of the cluster DNS pods.")
    dns_labels: dict[str, str] = Field(
        default_factory=lambda: {"k8s-app": "kube-dns"},
        description="Labels of the cluster DNS pods. Default: k8s-app=kube-dns.",
    )


POSTURE_DEFAULTS: dict[str, dict[str, str]] = {
    "reviewed": {"ssh": "shell", "clipboard": "to-pod", "exportDelivery": "requester",
                 "userBranches": "reviewed"},
    "open": {"ssh": "full", "clipboard": "both", "exportDelivery": "share",
             "userBranches": "open"},
}
"""What each egress knob is when the site leaves it unset, per ``posture`` (issue 17): the
one place these defaults live; docs/egress.md shows this table."""


class Egress(Model):
    """How data may leave HomePods; every knob left unset follows ``posture``."""

    ssh: Literal["shell", "full"] | None = Field(
        None,
        description="SSH to HomePods. shell: an interactive login shell only (no SFTP, scp, "
        "remote commands, TCP/agent/X11 forwarding or tunnels); full: all of OpenSSH. "
        "None: shell when posture is reviewed, full when open.",
    )
    export_delivery: Literal["requester", "share"] | None = Field(
        None,
        description="Where approved exports go. requester: downloaded from the code service "
        "by their requester with their own credentials (`mlab request download`), never on "
        f"the Airlock share; share: published to {EXPORT_PATH}/<id>/ (the "
        "Airlock's SFTP login, readable in every HomePod). None: requester when posture is "
        "reviewed, share when open.",
    )
    user_branches: Literal["reviewed", "open"] | None = Field(
        None,
        description="User branches and tags on the code service, seen from outside "
        "HomePods (the office PC, any client not on a HomePod address). reviewed: hidden, "
        "and their commits refused, until a reviewer approves a branch request for the "
        "exact commit (`mlab request branch`); open: every branch fetchable from anywhere "
        "(the seed's relay). HomePods always see every branch. None: reviewed when posture "
        "is reviewed, open when open.",
    )
    export_requesters: list[str] = Field(
        default_factory=list,
        description="Who may request exports: user names and `group:<name>` entries "
        "(users[].groups). Empty: every user.",
    )

    @field_validator("export_requesters")
    @classmethod
    def _requesters(cls, value: list[str]) -> list[str]:
        for i, item in enumerate(value):
            name = item.removeprefix("group:")
            if not DNS1123_LABEL.match(name):
                raise ValueError(f"exportRequesters[{i}]: {item!r} must be a user name or "
                                 "group:<name> (a DNS-1123 label)")
        return value


class Tls(Model):
    """Encryption in transit from the office (docs/egress.md "Encryption in transit")."""

    mode: Literal["off", "site-ca", "secret"] = Field(
        "off",
        description="off: the code service and desktops as before (HTTP, VncAuth, noVNC over "
        "HTTP, RDP negotiated). site-ca: MLab makes a CA for the site (kept with its "
        "passwords, `mlab tls ca` prints how to trust it) and issues the code service and "
        "every HomePod a certificate; the code service answers the office on HTTPS only, "
        "HomePods' git goes over HTTPS, VNC offers only VeNCrypt (X509Vnc), noVNC is HTTPS "
        "and RDP is TLS only. secret: as site-ca, but the code service's certificate is the "
        "existing kubernetes.io/tls Secret `tls.secret` (keys tls.crt, tls.key, ca.crt). "
        "Default: off.",
    )
    secret: Label | None = Field(
        None,
        description="mode secret: an existing kubernetes.io/tls Secret with tls.crt, tls.key "
        "and ca.crt (the CA HomePods trust). Its names must cover codeService.host and the "
        "address offices use. None: no such Secret.",
    )
    names: list[str] = Field(
        default_factory=list,
        description="mode site-ca: extra DNS names or IP addresses offices use to reach the "
        "code service and desktops (added to every certificate beside codeService.host, "
        "access.bindAddress, localhost and 127.0.0.1). Empty: none.",
    )

    @model_validator(mode="after")
    def _secret_given(self) -> "Tls":
        if self.mode == "secret" and not self.secret:
            raise ValueError("tls.secret: mode secret needs the name of a kubernetes.io/tls "
                             "Secret (or use mode site-ca)")
        for i, name in enumerate(self.names):
            try:
                ipaddress.ip_address(name)
                continue
            except ValueError:
                pass
            if not re.fullmatch(r"(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?"
                                r"(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*", name):
                raise ValueError(f"tls.names[{i}]: {name!r} must be a DNS name or an IP address")
        return self

    @property
    def enabled(self) -> bool:
        """Whether the site serves TLS (mode is not ``off``)."""
        return self.mode != "off"


class Site(Model):
    """A whole MLab site: everything `mlab render` and `mlab up` need."""

    api_version: Literal["mlab.io/v1"] = Field(API_VERSION, description="Schema version.")
    name: Label = Field(description="Site name; app.kubernetes.io/instance on every object.")
    namespace: Label = Field("mlab", description="Kubernetes namespace. Default: mlab.")
    image: Image = Field(default_factory=Image, description="The HomePod image.")
    timezone: Annotated[str, AfterValidator(_timezone)] = Field(
        "UTC", description="IANA time zone database name, e.g. Asia/Shanghai. Default: UTC."
    )
    locale: str = Field("en_US.UTF-8", description="LANG in every pod. Default: en_US.UTF-8.")
    posture: Literal["reviewed", "open"] = Field(
        "reviewed",
        description="Egress posture (docs/egress.md). reviewed: data leaves HomePods only "
        "through a reviewed export (SSH shell only, clipboard into the desktop only, exports "
        "downloaded by their requester); open: the seed's free paths (SFTP, forwarding, "
        "clipboard both ways, exports on the Airlock share). Sets the defaults of `clipboard` "
        "and `egress`. Default: reviewed.",
    )
    clipboard: Literal["both", "to-pod", "from-pod", "none"] | None = Field(
        None,
        description="Clipboard between client and desktop (VNC, noVNC, RDP): both, to-pod "
        "(paste in only), from-pod or none. None: to-pod when posture is reviewed, both "
        "when open.",
    )
    egress: Egress = Field(
        default_factory=Egress,
        description="Egress knobs; each unset one follows `posture`.",
    )
    dns: Literal["none", "cluster"] = Field(
        "none",
        description="HomePod DNS. none: no resolver, the code service host is a static "
        "host entry (cluster DNS recurses to the internet, a data-exfiltration path); "
        "cluster: allow UDP/TCP 53 to the cluster DNS only.",
    )
    access: Access = Field(default_factory=Access, description="Access from offices.")
    cluster: Cluster = Field(default_factory=Cluster, description="Cluster network facts.")
    users: list[User] = Field(default_factory=list, description="HomePod users.")
    datasets: list[Dataset] = Field(
        default_factory=list, description="Shared datasets mounted into every HomePod."
    )
    airlock: Airlock = Field(default_factory=Airlock, description="The Airlock.")
    code_service: CodeService = Field(default_factory=CodeService, description="Code service.")
    portal: Portal = Field(default_factory=Portal, description="The web portal (front door).")
    security: Security = Field(
        default_factory=Security, description="Reporting holes in the isolation (SECURITY.md)."
    )
    culling: Culling = Field(default_factory=Culling, description="Idle HomePod culling.")
    tls: Tls = Field(default_factory=Tls, description="Encryption in transit (HTTPS, "
                     "VeNCrypt, RDP TLS).")

    @model_validator(mode="after")
    def _consistent(self) -> "Site":
        seen: dict[str, int] = {}
        for index, user in enumerate(self.users):
            if user.name in seen:
                raise ValueError(
                    f"users[{index}].name: duplicate user {user.name!r} "
                    f"(also users[{seen[user.name]}])"
                )
            if user.name in RESERVED_USERS:
                raise ValueError(
                    f"users[{index}].name: {user.name!r} is reserved (the password state "
                    "keeps the Airlock's, the admin's and the export publisher's under these names); pick "
                    "another name"
                )
            seen[user.name] = index
        if self.airlock.enabled and self.airlock.user in seen:
            raise ValueError(
                f"airlock.user: {self.airlock.user!r} is also a HomePod user; pick another name"
            )
        for i, item in enumerate(self.egress.export_requesters):
            if not item.startswith("group:") and item not in seen:
                raise ValueError(f"egress.exportRequesters[{i}]: {item!r} is not a site user "
                                 "(write group:<name> for a group)")
        if self.airlock.user in set(RESERVED_USERS) - {"airlock"}:
            raise ValueError(
                f"airlock.user: {self.airlock.user!r} is a code-service account of its own; "
                "pick another name"
            )
        self._check_port_clashes()
        self._check_private_claims()
        ip = ipaddress.ip_address(self.code_service_ip)
        if ip not in ipaddress.ip_network(self.cluster.service_cidr):
            raise ValueError(
                f"codeService.clusterIP: {ip} is outside cluster.serviceCIDR "
                f"{self.cluster.service_cidr}; pick an address inside it"
            )
        air = ipaddress.ip_address(self.airlock_ip)
        if air not in ipaddress.ip_network(self.cluster.service_cidr):
            raise ValueError(
                f"airlock.clusterIP: {air} is outside cluster.serviceCIDR "
                f"{self.cluster.service_cidr}; pick an address inside it"
            )
        if air == ip:
            raise ValueError(
                f"airlock.clusterIP: {air} is the code service's clusterIP too; give "
                "airlock.clusterIP (or codeService.clusterIP) another address"
            )
        if self.portal.enabled and self.portal.wake and not self.cluster.api_server_cidrs:
            raise ValueError(
                "portal.wake: the portal must reach the API server; set "
                "cluster.apiServerCIDRs to its endpoints' addresses (kubectl get "
                "endpointslices -n default -l kubernetes.io/service-name=kubernetes)"
            )
        return self

    def clipboard_mode(self) -> str:
        """``clipboard``, or the posture's default (:data:`POSTURE_DEFAULTS`)."""
        return self.clipboard or POSTURE_DEFAULTS[self.posture]["clipboard"]

    def ssh_access(self) -> str:
        """``egress.ssh``, or the posture's default: ``shell`` or ``full``."""
        return self.egress.ssh or POSTURE_DEFAULTS[self.posture]["ssh"]

    def export_delivery(self) -> str:
        """``egress.exportDelivery``, or the posture's default: ``requester`` or ``share``."""
        return self.egress.export_delivery or POSTURE_DEFAULTS[self.posture]["exportDelivery"]

    def user_branches(self) -> str:
        """``egress.userBranches``, or the posture's default: ``reviewed`` or ``open``."""
        return self.egress.user_branches or POSTURE_DEFAULTS[self.posture]["userBranches"]

    def may_request_exports(self, user: str) -> bool:
        """Whether ``user`` may submit export requests (``egress.exportRequesters``:
        empty means every user; ``group:<g>`` matches ``users[].groups``)."""
        allowed = self.egress.export_requesters
        if not allowed:
            return True
        if user in allowed:
            return True
        groups = next((set(u.groups) for u in self.users if u.name == user), set())
        return any(f"group:{g}" in allowed for g in groups)

    @property
    def code_service_ip(self) -> str:
        """The code service's fixed clusterIP: ``codeService.clusterIP`` or serviceCIDR + 200."""
        if self.code_service.cluster_ip:
            return self.code_service.cluster_ip
        return _nth_address(self.cluster.service_cidr, 200)

    @property
    def direct_desktops(self) -> bool:
        """Offices reach HomePods' VNC, RDP and noVNC ports: false only when an enabled
        portal is the sole door to desktops (``portal.directDesktopPorts: false``)."""
        return not (self.portal.enabled and not self.portal.direct_desktop_ports)

    @property
    def airlock_ip(self) -> str:
        """The Airlock Service's fixed clusterIP: ``airlock.clusterIP`` or serviceCIDR + 201.

        Fixed so that the renderer can give every HomePod's start gate the Airlock's address
        (HomePods have no DNS and no Service links). Both defaults lie in the band of the
        Service range that Kubernetes keeps for static addresses (KEP-3070: dynamic
        allocation takes the upper band first).
        """
        if self.airlock.cluster_ip:
            return self.airlock.cluster_ip
        return _nth_address(self.cluster.service_cidr, 201)

    def _check_private_claims(self) -> None:
        """A user's home claim is private: no other user, dataset or shared claim uses it."""
        homes = {u.home.claim or f"home-{u.name}": u.name for u in self.users}
        for i, user in enumerate(self.users):
            for j, extra in enumerate(user.volumes):
                if extra.claim in (self.airlock.outbox.claim or CLAIM_OUTBOX,
                                   self.airlock.share.claim or CLAIM_SHARE):
                    raise ValueError(
                        f"users[{i}].volumes[{j}].claim: {extra.claim!r} is the airlock "
                        "share or outbox claim, which HomePods mount only read-only or per user"
                    )
                owner = homes.get(extra.claim)
                if owner is not None and owner != user.name:
                    raise ValueError(
                        f"users[{i}].volumes[{j}].claim: {extra.claim!r} is the home of user "
                        f"{owner!r}; a home is private to its user"
                    )
        shared = [(f"datasets[{k}].claim", d.claim) for k, d in enumerate(self.datasets)]
        shared += [("airlock.share.claim", self.airlock.share.claim or CLAIM_SHARE),
                   ("airlock.outbox.claim", self.airlock.outbox.claim or CLAIM_OUTBOX)]
        for where, claim in shared:
            if claim in homes:
                raise ValueError(
                    f"{where}: {claim!r} is the home of user {homes[claim]!r}; a home is "
                    "private to its user"
                )

    def _check_port_clashes(self) -> None:
        claimed: dict[tuple[str, int], str] = {}
        exposures: list[tuple[str, Exposure, tuple[AccessName, ...]]] = [
            (f"users[{i}].service", u.service, HOMEPOD_ACCESS) for i, u in enumerate(self.users)
        ]
        if self.airlock.enabled:
            exposures.append(("airlock.service", self.airlock.service, AIRLOCK_ACCESS))
        for where, exposure, names in exposures:
            inside: dict[int, str] = {}
            for name in names:
                port = service_port(exposure.ports, self.access.ports, name)
                if port in inside:
                    raise ValueError(
                        f"{where}.ports.{name}: port {port} is also used for "
                        f"{inside[port]} in the same Service; choose another port"
                    )
                inside[port] = name
            for ip in exposure.external_ips:
                for name in names:
                    port = service_port(exposure.ports, self.access.ports, name)
                    key = (ip, port)
                    if key in claimed:
                        raise ValueError(
                            f"{where}.ports.{name}: port {port} on external IP {ip} is "
                            f"already claimed by {claimed[key]}; choose another port"
                        )
                    claimed[key] = f"{where}.ports.{name}"
        for ip in self.code_service.service.external_ips:
            key = (ip, 80)
            if key in claimed:
                raise ValueError(
                    f"codeService.service.externalIPs: port 80 on {ip} is already claimed by "
                    f"{claimed[key]}; choose another port"
                )

    def user(self, name: str) -> User:
        """Return the user called ``name``.

        Raises:
            KeyError: no such user.
        """
        for user in self.users:
            if user.name == name:
                return user
        raise KeyError(name)


def _field_path(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif str(part).startswith("function-") or part in ("str", "int"):
            continue
        else:
            path += ("." if path else "") + str(part)
    return path or "(top level)"


def format_validation_error(exc: ValidationError) -> str:
    """Turn a pydantic error into one line: ``<field path>: <problem>``.

    Only the first error is reported (fix one, re-run); values are not echoed for fields
    whose name suggests a secret.
    """
    err = exc.errors(include_url=False)[0]
    path = _field_path(tuple(err.get("loc", ())))
    msg = err.get("msg", "invalid")
    msg = msg.removeprefix("Value error, ")
    kind = err.get("type")
    if kind == "extra_forbidden":
        msg = "unknown key (check the spelling; `mlab site schema` lists the keys)"
    elif kind == "missing":
        msg = "required key is missing"
    # Errors raised by the Site-level validator carry their own path at the front.
    if path == "(top level)" and ": " in msg and not msg.startswith(" "):
        return msg
    return f"{path}: {msg}"


def parse_site(data: Any, source: str = "site") -> Site:
    """Validate a parsed site document.

    Args:
        data: the YAML document as Python objects (a mapping).
        source: file name used in error messages.

    Raises:
        SiteError: one line naming the field path and the problem.
    """
    if not isinstance(data, dict):
        raise SiteError(f"{source}: the site file must be a YAML mapping")
    try:
        return Site.model_validate(data)
    except ValidationError as exc:
        raise SiteError(f"{source}: {format_validation_error(exc)}") from None


@functools.lru_cache(maxsize=64)
def _nth_address(cidr: str, n: int) -> str:
    """The ``n``-th address of ``cidr`` (memoized: the renderer asks twice per user, and
    parsing the network each time was 0.2 s of a 10,000-user render, issue 18)."""
    return str(ipaddress.ip_network(cidr)[n])


def load_site(path: str | Path) -> Site:
    """Read and validate a site file.

    Args:
        path: a YAML file.

    Raises:
        SiteError: the file is missing, is not YAML, or is invalid (one line, field path).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SiteError(f"{path}: cannot read the site file: {exc.strerror}") from None
    try:
        data = load_strict(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or ""
        raise SiteError(f"{path}: not valid YAML{where}: {problem}".rstrip(": ")) from None
    return parse_site(data, str(path))


def site_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the site file, keys as written in YAML."""
    return Site.model_json_schema(by_alias=True)
