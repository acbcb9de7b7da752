"""The site model's services: the Airlock and its proxy, the code service and its limits,
the portal and its OpenID Connect provider, ports, access, security, the cluster, egress
and TLS."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    Field,
    field_validator,
    model_validator,
)

from mlab.site.fields import (
    CIDR,
    DNS1123_LABEL,
    IP,
    Label,
    Model,
    Port,
    setting,
)
from mlab.site.users import (
    Exposure,
    Placement,
    Resources,
    ServiceType,
    Storage,
)
from mlab.topology import (
    EXPORT_PATH,
    PORT_CODE,
    PORT_CODE_SERVICE,
    SHARE_PATH,
)


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
