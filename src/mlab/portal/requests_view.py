"""The signed-in user's requests and, for reviewers, the review queue, through the code
service's requests API (:mod:`mlab.requests.api`).

The portal calls the API as the signed-in user, with that user's own password from
``<users_dir>/<user>/password`` (the account the code service already knows), so the code
service's own rules decide what the user may see and do: the portal adds no authority of
its own. An approve or reject of a request still ``submitted`` is preceded by ``review``
(the state machine goes submitted -> in_review -> approved|rejected).
"""

from __future__ import annotations

from html import escape
from typing import Any

from starlette.concurrency import run_in_threadpool

from mlab.errors import MlabError
from mlab.portal.config import PortalConfig
from mlab.requests.client import RequestsClient

OPEN_STATES = ("submitted", "in_review")
REVIEW_ACTIONS = ("approve", "reject")


def _client(config: PortalConfig, user: str) -> RequestsClient:
    assert config.code_url is not None
    return RequestsClient(config.code_url, user, config.vnc_password(user), timeout=15,
                          cafile=str(config.code_ca) if config.code_ca else None)


async def load(config: PortalConfig, user: str, reviewer: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str | None]:
    """(the user's requests, the open requests a reviewer sees, an error line or None)."""
    if config.code_url is None:
        return [], [], None
    try:
        client = _client(config, user)
        mine = await run_in_threadpool(client.list)
        queue: list[dict[str, Any]] = []
        if reviewer:
            every = await run_in_threadpool(lambda: client.list(all_users=True))
            queue = [r for r in every if r["state"] in OPEN_STATES]
        return mine, queue, None
    except (MlabError, OSError) as exc:
        return [], [], f"requests are not available: {exc}"


async def act(config: PortalConfig, user: str, request_id: int, action: str, comment: str) -> str | None:
    """Approve or reject ``request_id`` as ``user`` with ``comment``; an error line or None."""
    if action not in REVIEW_ACTIONS:
        return f"unknown action {action!r}"
    try:
        client = _client(config, user)
        item = await run_in_threadpool(client.get, request_id)
        if item["state"] == "submitted":
            await run_in_threadpool(client.act, request_id, "review", None)
        await run_in_threadpool(client.act, request_id, action, comment or None)
        return None
    except (MlabError, OSError) as exc:
        return str(exc)


def _row(item: dict[str, Any]) -> str:
    return (f"<tr><td>{escape(str(item['id']))}</td><td>{escape(str(item['kind']))}</td>"
            f"<td>{escape(str(item.get('owner', '')))}</td>"
            f"<td class=state>{escape(str(item['state']))}</td>"
            f"<td>{escape(str(item.get('reason', '')))}</td>")


def section(mine: list[dict[str, Any]], queue: list[dict[str, Any]], error: str | None,
            csrf: str, reviewer: bool) -> str:
    """HTML of the requests and the review queue (every value escaped)."""
    head = "<tr><th>id</th><th>kind</th><th>owner</th><th>state</th><th>reason</th>"
    out = ["<h2>Your requests</h2>"]
    if error:
        out.append(f"<p class=muted>{escape(error)}</p>")
    if mine:
        out.append(f"<table id=mine>{head}</tr>" + "".join(_row(i) + "</tr>" for i in mine) + "</table>")
    elif not error:
        out.append("<p class=muted>None.</p>")
    if reviewer:
        out.append("<h2>Review queue</h2>")
        rows = []
        for item in queue:
            form = (f'<form method=post action="/requests/{int(item["id"])}">'
                    f'<input type=hidden name=csrf value="{escape(csrf)}">'
                    '<input name=comment placeholder=comment> '
                    '<button name=action value=approve>Approve</button> '
                    '<button name=action value=reject>Reject</button></form>')
            rows.append(_row(item) + f"<td>{form}</td></tr>")
        out.append(f"<table id=queue>{head}<th></th></tr>" + "".join(rows) + "</table>"
                   if rows else "<p class=muted>Nothing to review.</p>")
    return "".join(out)
