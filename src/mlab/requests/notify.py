"""Notifications: tell the site about each request transition (a command, a webhook, or both).

Invariant: a notification never changes or delays a decision. It runs after the transaction
committed, in the background; failures and timeouts are logged (without the event's
comment, which may hold personal text) and otherwise ignored.

Event shape (JSON, one object per recorded event)::

    {"event": "request.transition", "id": 7, "kind": "export", "owner": "alice",
     "action": "approve", "from": "in_review", "to": "approved", "by": "bob",
     "at": "2026-11-29T13:31:32Z", "comment": "ok for the customer", "seq": 42}

The command (``codeService.notifyCommand``, an argv list) gets the event on stdin; the
webhook (``codeService.notifyUrl``) gets it as the body of a POST with
``Content-Type: application/json``.
"""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

log = logging.getLogger(__name__)

TIMEOUT = 10.0
"""Seconds a notification command or webhook may take."""


def make_event(request: dict[str, Any], recorded: dict[str, Any]) -> dict[str, Any]:
    """The notification for one recorded event of ``request`` (pure)."""
    return {
        "event": "request.transition",
        "id": request["id"],
        "kind": request["kind"],
        "owner": request["owner"],
        "action": recorded["action"],
        "from": recorded["from"],
        "to": recorded["to"],
        "by": recorded["by"],
        "at": recorded["at"],
        "comment": recorded["comment"],
        "seq": recorded.get("seq"),
    }


@dataclass(frozen=True)
class Notifier:
    """Delivers events to the site's command and webhook.

    Attributes:
        command: argv run once per event with the JSON on stdin. Empty: none.
        url: webhook POSTed once per event. None: none.
    """

    command: Sequence[str] = field(default_factory=tuple)
    url: str | None = None

    @property
    def enabled(self) -> bool:
        """True when a command or a webhook is configured."""
        return bool(self.command) or bool(self.url)

    def send(self, events: list[dict[str, Any]]) -> None:
        """Deliver ``events`` in order (blocking; call it in the background)."""
        for event in events:
            body = json.dumps(event)
            tag = f"[mlab/request-{event.get('id')}] {event.get('action')}"
            if self.command:
                try:
                    proc = subprocess.run(
                        list(self.command), input=body, text=True, capture_output=True,
                        timeout=TIMEOUT, check=False,
                    )
                    if proc.returncode != 0:
                        log.warning("%s: notify command exited %s", tag, proc.returncode)
                except (OSError, subprocess.TimeoutExpired) as exc:
                    log.warning("%s: notify command failed: %s", tag, type(exc).__name__)
            if self.url:
                try:
                    resp = httpx.post(
                        self.url, content=body, timeout=TIMEOUT,
                        headers={"Content-Type": "application/json"},
                    )
                    if resp.status_code >= 400:
                        log.warning("%s: webhook answered %s", tag, resp.status_code)
                except httpx.HTTPError as exc:
                    log.warning("%s: webhook failed: %s", tag, type(exc).__name__)
