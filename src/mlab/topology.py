"""The names, ports, paths and labels MLab's components agree on, stated once.

Pure: no I/O and no imports of other MLab modules, so the site model, the renderers, the
podman translation, the verify probes and the CLI can all import it. The container ports are
fixed by the image (docs/CONTRACTS.md); the labels are the Kubernetes recommended labels
(https://kubernetes.io/docs/concepts/overview/working-with-objects/common-labels/).
"""

from __future__ import annotations

from collections.abc import Mapping

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
CONTAINER_PORTS = {"vnc": PORT_VNC, "rdp": PORT_RDP, "novnc": PORT_NOVNC, "ssh": PORT_SSH}

# Paths inside HomePods and the Airlock.
SHARE_PATH = "/opt/public/airlock"
"""The Airlock share: read-write in the Airlock, read-only in every HomePod."""
EXPORT_DIR = "export"
EXPORT_PATH = f"{SHARE_PATH}/{EXPORT_DIR}"
"""Where the publisher delivers approved requests (``<id>/`` below it)."""
OUTBOX_PATH = "/opt/outbox"
CA_DIR = "/etc/mlab/ca"
PASSWORD_DIR = "/etc/mlab/secret"
PASSWORD_FILE = f"{PASSWORD_DIR}/password"

# Default claim and Secret names (used when the site names none).
CLAIM_SHARE = "airlock-share"
CLAIM_OUTBOX = "outbox"
CLAIM_EXPORTS = "exports"
SECRET_AIRLOCK_PASSWORD = "airlock-password"


def service_port(overrides: Mapping[str, int], defaults: object, name: str) -> int:
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
