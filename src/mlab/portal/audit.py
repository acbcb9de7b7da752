"""The portal's audit trail: sign-ins, failed sign-ins, sign-outs, desktop openings and
refusals, each with the user's name (never a password, token or cookie).

Records go to the JSON-lines file ``--audit-log`` (the format of
:mod:`mlab.codeservice.audit`: one ``write`` per line, ``O_APPEND``) and to the log.
"""

from __future__ import annotations

import logging
from typing import Any

from mlab.codeservice.audit import append
from mlab.portal.config import PortalConfig

log = logging.getLogger("mlab.portal.audit")


def audit(config: PortalConfig, event: str, **fields: Any) -> None:
    """Record ``event`` (``login``, ``login-failed``, ``login-throttled``, ``logout``,
    ``desktop-open``, ``desktop-denied``, ``desktop-error``, ``desktop-wake``) with
    ``fields`` (user, reason...)."""
    log.info("[mlab/portal] %s %s", event, fields)
    if config.audit_log is not None:
        append(config.audit_log, event, **fields)
