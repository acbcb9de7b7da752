"""The site model's people and their HomePods: :class:`User` with its image, placement,
resources, storage, exposure and culling, the site-wide :class:`Culling`, shared
:class:`Dataset` volumes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from mlab.site.fields import (
    IP,
    Duration,
    Label,
    Model,
    Port,
    Quantity,
    _shared_default,
    setting,
)
from mlab.topology import (
    AccessName,
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
