"""The names, ports, paths and labels MLab's components agree on, stated once.

Pure: no I/O and no imports of other MLab modules, so the site model, the renderers, the
podman translation, the verify probes and the CLI can all import it. The container ports are
fixed by the image (docs/CONTRACTS.md); the labels are the Kubernetes recommended labels
(https://kubernetes.io/docs/concepts/overview/working-with-objects/common-labels/).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

# Labels and annotations.
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_USER = "mlab.io/user"
GROUP_LABEL_PREFIX = "group.mlab.io/"
"""``group.mlab.io/<group>: "true"`` on a HomePod pod for each of the user's groups."""
ANNOTATION_EDGE = "mlab.io/edge"
"""NetworkPolicy annotation naming the allowed edge; dump_yaml also writes it as a comment."""

# Container ports (fixed by the image, docs/CONTRACTS.md).
PORT_VNC = 5900
PORT_RDP = 3389
PORT_NOVNC = 7030
PORT_SSH = 22
PORT_CODE = 8080
"""The code service's container port (``mlab code-service serve``); its Service maps 80 here."""
PORT_CODE_SERVICE = 80
"""The code-service Service port (the URL users type: ``http://$MLAB_CODE_HOST``)."""
PORT_CODE_TLS = 8443
"""The code service's HTTPS container port (``tls.mode`` not off): the office's only way in."""
PORT_CODE_TLS_SERVICE = 443
"""The code-service Service port of :data:`PORT_CODE_TLS` (``https://<codeService.host>``)."""
CODE_SERVICE_PORTS: dict[int, int] = {PORT_CODE: PORT_CODE_SERVICE,
                                      PORT_CODE_TLS: PORT_CODE_TLS_SERVICE}
"""The code service's container port -> its Service port (what the Service and the podman
engine's DNAT map)."""
AccessName = Literal["vnc", "rdp", "novnc", "ssh"]
"""The access names: the keys of ``access.ports`` and of a Service's ``ports``."""
CONTAINER_PORTS: dict[str, int] = {"vnc": PORT_VNC, "rdp": PORT_RDP, "novnc": PORT_NOVNC, "ssh": PORT_SSH}
PORT_PORTAL = 8443
"""The portal's container port (HTTP, or HTTPS with ``portal.tlsSecret``)."""
PORT_DNS = 53
HOMEPOD_ACCESS: tuple[AccessName, ...] = ("vnc", "rdp", "novnc", "ssh")
"""The access names of a HomePod (its container ports and Service ports, in this order)."""
AIRLOCK_ACCESS: tuple[AccessName, ...] = ("ssh", "novnc", "vnc")
"""The access names of the Airlock (no RDP: one desktop, by VNC or noVNC)."""
PORT_KUBELET = 10250
"""The kubelet's API on every node (its default ``port``); a HomePod must not reach it. The
HomePod start gate tries it on the pod's own node (``status.hostIP``)."""
HOMEPOD_IN = (PORT_VNC, PORT_RDP, PORT_NOVNC, PORT_SSH)
"""What an office reaches on a HomePod (only SSH when the portal is the sole door to desktops)."""
AIRLOCK_IN = (PORT_SSH, PORT_NOVNC, PORT_VNC)
"""What an office reaches on the Airlock."""

LOOPBACK = "127.0.0.1"
CLUSTER_DOMAIN = "cluster.local"
"""Kubernetes' default cluster DNS domain (the kubelet's ``clusterDomain``; the MLab node's):
Services are ``<service>.<namespace>.svc.<domain>``."""


def dial_address(bind_address: str) -> str:
    """The address a client on the same host dials to reach a listener on ``bind_address``.

    Args:
        bind_address: a listener's IPv4 or IPv6 address (``access.bindAddress``, a published
            port's host IP).

    Returns:
        ``127.0.0.1`` for an unspecified address (``0.0.0.0``, ``::``: every address of the
        host, loopback included), else ``bind_address`` itself. This is the one statement of
        "0.0.0.0 means 127.0.0.1" (the readiness wait, the endpoints table, the host probes
        and the code-service locator use it).
    """
    return LOOPBACK if bind_address in ("0.0.0.0", "::") else bind_address


# The HomePod start gate's environment (mlab.homepod.startgate).
EGRESS_CHECK_ENV = "MLAB_EGRESS_CHECK"
"""Comma-separated ``[label=]host:port`` the gate must see refused before sessions start."""
SERVER_ENV = "MLAB_SERVER"
"""The code service's URL for every client command (mlab.codeservice.locate). HomePods of a
site with ``tls`` get ``https://<codeService.host>`` in it (their only way in)."""
NODE_IP_ENV = "MLAB_NODE_IP"
"""The pod's node address (downward API ``status.hostIP``), named in EGRESS_CHECK_ENV."""

# Paths inside HomePods and the Airlock.
SHARE_PATH = "/opt/public/airlock"
"""The Airlock share: read-write in the Airlock, read-only in every HomePod."""
EXPORT_DIR = "export"
EXPORT_PATH = f"{SHARE_PATH}/{EXPORT_DIR}"
"""Where the publisher delivers approved requests (``<id>/`` below it)."""
PIP_INDEX_DIR = "pip-index"
"""MLab's pip repository in the share: ``files/`` (wheels) and ``simple/`` (PEP 503 pages).

Not inside the seed's ``pip/`` folder: there the seed's ``pip install *`` passes every entry
as a project name, and ``files`` and ``simple`` made it fail ("No matching distribution found
for simple"). MLab up to 0.1 kept the tree in ``pip/``; ``mlab airlock migrate`` moves it."""
PIP_INDEX_URL = f"file://{SHARE_PATH}/{PIP_INDEX_DIR}/simple"
"""The ``index-url`` of a HomePod's ``/etc/pip.conf``."""
SHARE_FOLDERS = ("pip", "apt", PIP_INDEX_DIR, "downloads", "git", EXPORT_DIR)
"""The share's top-level folders (docs/CONTRACTS.md "Share layout"): the Airlock creates
them as its user's, and an SFTP chroot account keeps them the user's."""
OUTBOX_PATH = "/opt/outbox"
CA_DIR = "/etc/mlab/ca"
PASSWORD_DIR = "/etc/mlab/secret"
PASSWORD_FILE = f"{PASSWORD_DIR}/password"
WAKE_PORTAL_DIR = "/var/lib/mlab/wake"
"""The wake spool in the portal pod of `mlab up` (``--wake-dir``; mlab.cull.wake_requests)."""
WAKE_SPOOL = "wake"
"""The wake spool's directory under the podman engine's state directory."""
WAKE_REQUESTS = "requests"
"""Spool part the portal writes (read-write in its pod)."""
WAKE_HOST = "host"
"""Spool part the host's `mlab cull` writes: heartbeat and replies (read-only in the pod)."""

# Default claim and Secret names (used when the site names none).
CLAIM_SHARE = "airlock-share"
CLAIM_OUTBOX = "outbox"
CLAIM_EXPORTS = "exports"
SECRET_AIRLOCK_PASSWORD = "airlock-password"


def service_port(overrides: Mapping[AccessName, int], defaults: object, name: AccessName) -> int:
    """The Service port of one access name: the Service's override, else ``access.ports``.

    Args:
        overrides: the Exposure's ``ports`` (access name -> port), possibly empty.
        defaults: the site's ``access.ports`` object (one int attribute per access name).
        name: ``vnc``, ``rdp``, ``novnc`` or ``ssh``.

    Returns:
        The TCP port (1-65535) the Service listens on for ``name``.

    Raises:
        AttributeError: ``name`` is no access name.

    The rule is the site schema's (``Exposure.ports``: "overriding ``access.ports``").
    """
    if name in overrides:
        return int(overrides[name])
    return int(getattr(defaults, name))


@dataclass(frozen=True)
class Edge:
    """One allowed connection of the network; everything not in :data:`EDGES` is denied.

    Attributes:
        source: a component (``homepod``, ``airlock``, ``code-service``, ``portal``) or
            ``office`` (the site's ``access.officeCidrs``).
        destination: a component, ``office``, ``kube-dns`` (UDP and TCP), ``internet``
            (public addresses: not private, link-local or cluster ranges), ``proxy``
            (``airlock.proxy.cidrs`` on the proxy URLs' ports), ``identity-provider``
            (``portal.oidc.cidrs``, else the internet, on the issuer's port) or
            ``api-server`` (``cluster.apiServerCIDRs`` on ``cluster.apiServerPort``).
        ports: destination TCP ports; empty: every port (internet), or the port the site
            gives (proxy, identity provider, API server).
        condition: when the edge exists: ``always``, or the site facts it needs, joined by
            ``+``: ``office`` (office CIDRs given), ``airlock`` (Airlock enabled), ``portal``
            (portal enabled), ``dns-cluster`` (``dns: cluster``), ``proxy`` (proxy addresses
            given), ``direct-desktops`` (offices reach desktop ports, not only the portal),
            ``oidc`` (``portal.oidc`` set), ``wake`` (``portal.wake``: the portal scales
            culled HomePods through the API server),
            ``tls`` (``tls.mode`` is not off: offices, HomePods, the Airlock (its login and
            its export publisher) and the portal reach the code service on HTTPS only) or
            ``plain-http`` (it is off).
    """

    source: str
    destination: str
    ports: tuple[int, ...]
    condition: str = "always"


EDGES: tuple[Edge, ...] = (
    Edge("office", "homepod", HOMEPOD_IN, "office+direct-desktops"),
    Edge("office", "homepod", (PORT_SSH,), "office"),
    Edge("homepod", "code-service", (PORT_CODE,), "plain-http"),
    Edge("homepod", "code-service", (PORT_CODE_TLS,), "tls"),
    Edge("homepod", "kube-dns", (PORT_DNS,), "dns-cluster"),
    Edge("office", "airlock", AIRLOCK_IN, "office+airlock"),
    Edge("airlock", "internet", (), "airlock"),
    Edge("airlock", "kube-dns", (PORT_DNS,), "airlock"),
    Edge("airlock", "code-service", (PORT_CODE,), "airlock+plain-http"),
    Edge("airlock", "code-service", (PORT_CODE_TLS,), "airlock+tls"),
    Edge("airlock", "proxy", (), "airlock+proxy"),
    Edge("code-service", "proxy", (), "proxy"),
    Edge("office", "code-service", (PORT_CODE_TLS,), "office+tls"),
    Edge("office", "code-service", (PORT_CODE,), "office+plain-http"),
    Edge("code-service", "internet", ()),
    Edge("code-service", "kube-dns", (PORT_DNS,)),
    Edge("office", "portal", (PORT_PORTAL,), "office+portal"),
    Edge("portal", "homepod", (PORT_VNC,), "portal"),
    Edge("portal", "code-service", (PORT_CODE,), "portal+plain-http"),
    Edge("portal", "code-service", (PORT_CODE_TLS,), "portal+tls"),
    Edge("portal", "kube-dns", (PORT_DNS,), "portal"),
    Edge("portal", "identity-provider", (), "portal+oidc"),
    Edge("portal", "api-server", (), "portal+wake"),
)
"""The network's allowed edges: the NetworkPolicies (``mlab.render.network``, ``.portal``)
grant exactly these (tests/unit/test_topology.py checks both ways, with the evaluator
``mlab.verify.policy_eval``); the podman emulation and ``mlab verify`` probe them. No
HomePod edge reaches the identity provider or the API server: only the portal does."""

PORT_GIT = 9418
"""The git protocol's port: a code service must not answer it (only HTTP at :data:`PORT_CODE`)."""
PORT_KUBELET = 10250
"""The kubelet's port on a node (the ``node`` peer of :data:`DENIED`)."""

DENIED: tuple[tuple[str, str, int], ...] = (
    ("homepod", "internet", 443),
    ("homepod", "homepod", PORT_VNC),
    ("homepod", "homepod", PORT_SSH),
    ("homepod", "airlock", PORT_SSH),
    ("homepod", "airlock", PORT_NOVNC),
    ("homepod", "code-service", PORT_SSH),
    ("homepod", "code-service", 443),
    ("homepod", "code-service", PORT_GIT),
    ("homepod", "node", PORT_KUBELET),
    ("homepod", "outside-dns", PORT_DNS),
    ("airlock", "homepod", PORT_VNC),
    ("airlock", "homepod", PORT_SSH),
    ("airlock", "code-service", PORT_SSH),
    ("airlock", "code-service", 443),
    ("airlock", "code-service", PORT_GIT),
    ("code-service", "homepod", PORT_SSH),
    ("homepod", "metadata", 80),
    ("airlock", "metadata", 80),
    ("airlock", "private", 443),
    ("outsider", "homepod", PORT_VNC),
    ("outsider", "homepod", PORT_SSH),
    ("outsider", "airlock", PORT_SSH),
    ("outsider", "airlock", PORT_NOVNC),
    ("outsider", "code-service", PORT_CODE),
)
"""Denied examples (source, destination, TCP or DNS port), at least one of each denied class:
HomePods reach no internet, no other HomePod, no Airlock, no other code-service port, not
the node (kubelet, host services) and no DNS server outside the cluster; nothing reaches a
HomePod but offices and the portal; no pod reaches cloud metadata (169.254.169.254) or
private addresses; a pod of the namespace without MLab's labels (``outsider``) reaches none
of MLab's pods."""

EXISTENCE_WORDS = frozenset({"office", "airlock", "portal", "proxy", "oidc", "wake"})
"""Condition words that say whether an edge's end exists at all (an Airlock, an office, a
portal, a proxy): an edge whose missing words include one of these has nothing to probe.
The other words (``dns-cluster``, ``direct-desktops``) only open or close the edge."""


@dataclass(frozen=True)
class Check:
    """One row of the probe matrix: a connection ``mlab verify`` must try, with its outcome.

    Attributes:
        source: a component, ``office`` or ``outsider`` (a pod of the namespace without
            MLab's labels).
        destination: a component or peer of :class:`Edge` (``internet``, ``kube-dns``,
            ``proxy``, ``office``) or of :data:`DENIED` (``metadata``, ``private``, ``node``,
            ``outside-dns``).
        port: the destination port; 0 for an edge to every port (``internet``, ``proxy``).
        expected: True when an active edge allows it (the service must answer), False when
            it must be blocked.
    """

    source: str
    destination: str
    port: int
    expected: bool

    @property
    def name(self) -> str:
        """``source --> destination :port`` (the port left out when 0)."""
        port = f" :{self.port}" if self.port else ""
        return f"{self.source} --> {self.destination}{port}"


def allows(source: str, destination: str, port: int, facts: set[str]) -> bool:
    """Whether an active edge of :data:`EDGES` allows ``source`` to reach ``destination:port``.

    Args:
        source: a component, ``office`` or ``outsider``.
        destination: a component or peer.
        port: destination port (an edge with no ports allows every port).
        facts: the site's condition words (``mlab.render.network.site_facts``).

    Returns:
        True when some active edge from ``source`` to ``destination`` lists ``port`` (or no
        port at all).
    """
    return any(e.source == source and e.destination == destination
               and (not e.ports or port in e.ports) and edge_active(e, facts) for e in EDGES)


def checks(facts: set[str]) -> list[Check]:
    """The probe matrix of a site: every edge of :data:`EDGES` and every :data:`DENIED` example.

    Args:
        facts: the site's condition words (``mlab.render.network.site_facts``).

    Returns:
        One check per (source, destination, port), in table order: each port of an active
        edge (expected allowed); each port of an inactive edge whose ends exist (expected
        blocked unless another active edge allows it: ``office --> homepod :22`` stays open
        when only the portal is the door to desktops); each :data:`DENIED` row whose ends
        exist (expected blocked). The engines bind each check to concrete probes
        (``mlab.verify.matrix`` for podman, ``mlab.verify.kube_matrix`` on a cluster).
    """
    seen: dict[tuple[str, str, int], Check] = {}
    rows = [(e.source, e.destination, port, e.condition)
            for e in EDGES for port in (e.ports or (0,))]
    rows += [(src, dst, port, "airlock" if "airlock" in (src, dst) else "always")
             for src, dst, port in DENIED]
    for src, dst, port, condition in rows:
        missing = set(condition.split("+")) - facts - {"always"}
        if missing & EXISTENCE_WORDS:
            continue
        key = (src, dst, port)
        if key not in seen:
            seen[key] = Check(src, dst, port, allows(src, dst, port, facts))
    return list(seen.values())


def edge_active(edge: Edge, facts: set[str]) -> bool:
    """Whether ``edge`` exists on a site with ``facts`` (the condition words that hold).

    Args:
        edge: one row of :data:`EDGES`.
        facts: the words of :class:`Edge` ``condition`` true for the site, e.g.
            ``{"office", "airlock"}``.

    Returns:
        True when every word of the edge's condition is in ``facts`` (``always``: True).
    """
    if edge.condition == "always":
        return True
    return all(word in facts for word in edge.condition.split("+"))


def active_edge(source: str, destination: str, facts: set[str]) -> Edge | None:
    """The first row of :data:`EDGES` from ``source`` to ``destination`` that exists on a site
    with ``facts`` (:func:`edge_active`), e.g. the HomePod -> code-service edge on 8443 with
    ``tls`` and on 8080 without; None when no such edge is active."""
    return next((e for e in EDGES if (e.source, e.destination) == (source, destination)
                 and edge_active(e, facts)), None)
