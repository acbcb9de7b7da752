"""``plan.json``: what the podman engine ran, for ``mlab status``, ``mlab verify`` and the
code-service locator (:mod:`mlab.codeservice.locate`).

One typed record, written and read only through :class:`PlanFile`: the networks
(:class:`~mlab.podman.translate.NetworkSpec`; their fixed addresses are derived from
the subnet), and each pod's containers, network attachments and published ports
(:class:`~mlab.podman.translate.Port`). No secrets: Secret and ConfigMap contents
stay in the engine's ``files/`` directory. A file of another :data:`VERSION` (or none, from
before the version field) is refused with one line naming the file; ``mlab up`` rewrites it.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from mlab.atomic import write_atomic
from mlab.errors import DeployError
from mlab.podman.translate import NetworkSpec, Plan, Port

VERSION = 1
"""The ``version`` of the file this MLab writes and reads; raise it when a field changes."""
PLAN_FILE = "plan.json"
"""The file's name in the engine's state directory (``<state>/<site>/podman``)."""


class PodRecord(BaseModel):
    """One pod of the plan as ``status`` and ``verify`` see it.

    Attributes:
        name: podman pod name ``mlab-<site>-<deployment>``.
        component: homepod, airlock, code-service or portal.
        user: the HomePod user, or None.
        deployment: the rendered Deployment's name (``homepod-alice``, ``airlock``).
        containers: podman container names, the pod's main container first.
        networks: (network name, fixed IPv4 address) pairs, in attach order.
        ports: published ports.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    component: str
    user: str | None
    deployment: str
    containers: tuple[str, ...]
    networks: tuple[tuple[str, str], ...]
    ports: tuple[Port, ...]


class PlanFile(BaseModel):
    """The engine's record of the last ``mlab up`` of one site.

    Attributes:
        version: :data:`VERSION` of the format.
        site: site name.
        bind_address: ``access.bindAddress``.
        placeholder_code_service: the code service runs the placeholder server.
        image: the site's image reference (``status`` compares running HomePods with it).
        networks: the site's networks, NAT network first.
        pods: pods, code service first.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = VERSION
    site: str
    bind_address: str
    placeholder_code_service: bool = False
    image: str = ""
    networks: tuple[NetworkSpec, ...]
    pods: tuple[PodRecord, ...]

    @classmethod
    def of(cls, plan: Plan, placeholder: bool = False, image: str = "") -> PlanFile:
        """The record of a translated plan (drops manifests and file contents)."""
        return cls(
            site=plan.site, bind_address=plan.bind_address,
            placeholder_code_service=placeholder, image=image, networks=plan.networks,
            pods=tuple(
                PodRecord(name=p.name, component=p.component, user=p.user,
                          deployment=p.name.removeprefix(f"mlab-{plan.site}-"),
                          containers=tuple(p.container_names()), networks=p.networks,
                          ports=p.ports)
                for p in plan.pods),
        )

    def components(self, component: str) -> list[PodRecord]:
        """The pods of one component, in plan order."""
        return [p for p in self.pods if p.component == component]

    def first(self, component: str) -> PodRecord | None:
        """The (first) pod of a component, or None."""
        return next(iter(self.components(component)), None)

    def nat_network(self) -> NetworkSpec:
        """The NAT network of the Airlock and the code service."""
        return next(n for n in self.networks if not n.internal)

    def network(self, name: str) -> NetworkSpec:
        """The network called ``name``.

        Raises:
            DeployError: the plan has no such network (a pod names one it lacks).
        """
        for net in self.networks:
            if net.name == name:
                return net
        raise DeployError(f"{PLAN_FILE} of site {self.site}: no network {name!r}",
                          hint="run `mlab up` again to rewrite it")

    def write(self, path: Path) -> None:
        """Write the record to ``path`` atomically (mode 0600)."""
        write_atomic(path, self.model_dump_json(indent=2), 0o600)

    @classmethod
    def read(cls, path: Path) -> PlanFile:
        """Read a record written by :meth:`write`.

        Raises:
            DeployError: one line naming ``path``: the file is missing or unreadable, is not
                JSON, is of another :data:`VERSION` (or has none), or a field is wrong.
        """
        fix = "run `mlab up` again to rewrite it"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DeployError(f"{path}: no plan (the site is not up)",
                              hint="run `mlab up` first") from None
        except OSError as exc:
            raise DeployError(f"{path}: cannot read the plan: {exc.strerror}") from None
        except ValueError as exc:
            raise DeployError(f"{path}: not JSON ({exc})", hint=fix) from None
        found = data.get("version") if isinstance(data, dict) else None
        if found != VERSION:
            which = "no version (an older MLab's)" if found is None else f"version {found!r}"
            raise DeployError(f"{path}: plan of {which}; this MLab reads version {VERSION}",
                              hint=fix)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(x) for x in err["loc"])
            raise DeployError(f"{path}: field {field}: {err['msg']}", hint=fix) from None
