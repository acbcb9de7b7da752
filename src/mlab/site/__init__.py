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
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    Field,
    ValidationError,
    model_validator,
)

from mlab.errors import SiteError
from mlab.site.fields import (
    _DURATION,
    API_VERSION,
    CIDR,
    DNS1123_LABEL,
    HOMEPOD_NETS_ENV,
    IP,
    PRIVATE_RANGES,
    PRIVATE_RANGES_V6,
    PUBLISHER_ACCOUNT,
    QUANTITY,
    RESERVED_USERS,
    Duration,
    Label,
    Model,
    Port,
    Quantity,
    _cidr,
    _duration,
    _ip,
    _known_timezones,
    _label,
    _listed_timezone,
    _quantity,
    _shared_default,
    _timezone,
    duration_seconds,
    setting,
)
from mlab.site.services import (
    POSTURE_DEFAULTS,
    Access,
    Airlock,
    Cluster,
    CodeService,
    CodeServiceLimits,
    Egress,
    OpenIDConnect,
    Portal,
    PortalService,
    Ports,
    Proxy,
    Security,
    Tls,
    _issuer,
)
from mlab.site.users import (
    Culling,
    Dataset,
    Exposure,
    ExtraVolume,
    Image,
    Placement,
    Resources,
    ServiceType,
    Storage,
    Toleration,
    User,
    UserCulling,
)
from mlab.strict_yaml import load_strict
from mlab.topology import (
    AIRLOCK_ACCESS,
    CLAIM_OUTBOX,
    CLAIM_SHARE,
    HOMEPOD_ACCESS,
    AccessName,
    service_port,
)


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

__all__ = [
    "API_VERSION",
    "Access",
    "Airlock",
    "CIDR",
    "Cluster",
    "CodeService",
    "CodeServiceLimits",
    "Culling",
    "DNS1123_LABEL",
    "Dataset",
    "Duration",
    "Egress",
    "Exposure",
    "ExtraVolume",
    "HOMEPOD_NETS_ENV",
    "IP",
    "Image",
    "Label",
    "Model",
    "OpenIDConnect",
    "POSTURE_DEFAULTS",
    "PRIVATE_RANGES",
    "PRIVATE_RANGES_V6",
    "PUBLISHER_ACCOUNT",
    "Placement",
    "Port",
    "Portal",
    "PortalService",
    "Ports",
    "Proxy",
    "QUANTITY",
    "Quantity",
    "RESERVED_USERS",
    "Resources",
    "Security",
    "ServiceType",
    "Site",
    "Storage",
    "Tls",
    "Toleration",
    "User",
    "UserCulling",
    "_DURATION",
    "_cidr",
    "_duration",
    "_field_path",
    "_ip",
    "_issuer",
    "_known_timezones",
    "_label",
    "_listed_timezone",
    "_nth_address",
    "_quantity",
    "_shared_default",
    "_timezone",
    "duration_seconds",
    "format_validation_error",
    "load_site",
    "parse_site",
    "setting",
    "site_schema",
]
