"""Approved exports to their requester: ``GET /api/requests/{id}/files/{path}``.

Invariant (issue 17, ``egress.exportDelivery: requester``): the bytes of an approved export
leave only to the account that requested it, with that account's own credentials. Not a
reviewer, not the admin, not the Airlock's login or another user: any caller but the owner
gets the same 404 as for a request that does not exist. The files are the export
publisher's verified copies in ``<exports_dir>/<id>/`` (a claim only the publisher writes
and only the code service reads), opened through directory descriptors without following
links (the publisher's rule, :mod:`mlab.requests.publish`), streamed in 1 MiB chunks, and
every download is written to the code service's audit log. A revoked export is refused at
once, even before the publisher removes its copy.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from mlab.codeservice import audit
from mlab.requests.checksums import CHUNK
from mlab.requests.model import Conflict, NotFound, RequestError, actor_from
from mlab.requests.publish import SUMS_NAME, _open_dir, _open_file
from mlab.requests.store import RequestStore

EXPORTS_ENV = "MLAB_EXPORTS_DIR"
"""Environment variable naming the delivered exports directory in the code service
(``mlab.render.code_service.EXPORTS_DIR``); unset: this site delivers on the share."""


def _error(exc: RequestError) -> JSONResponse:
    body: dict[str, Any] = {"error": exc.message}
    if exc.hint:
        body["hint"] = exc.hint
    return JSONResponse(body, status_code=exc.status)


def _chunks(fd: int) -> Iterator[bytes]:
    with os.fdopen(fd, "rb") as fh:
        while chunk := fh.read(CHUNK):
            yield chunk


class Delivery:
    """The download route.

    Args:
        store: the requests store (ownership and state).
        authenticate: the code service's authenticate (returns a principal).
        exports_dir: the publisher's output (``<id>/<path>``); None: exports are delivered
            on the Airlock share, and every download answers 404 with a hint.
        audit_log: JSON-lines audit file; None: no audit (tests of other apps).
    """

    def __init__(self, store: RequestStore, authenticate: Callable[..., Any],
                 exports_dir: Path | None, audit_log: Path | None) -> None:
        self.store = store
        self.authenticate = authenticate
        self.exports_dir = exports_dir
        self.audit_log = audit_log

    def _open(self, item: dict[str, Any], path: str, user: str) -> int:
        """A descriptor of the delivered file ``path`` of the approved export ``item``.

        Raises:
            NotFound: not the owner's, not an export, or no such file in it.
            Conflict: not approved, or not delivered (yet).
        """
        rid = int(item["id"])
        if item.get("owner") != user or item.get("kind") != "export":
            raise NotFound(f"no such request: {rid}")
        if item.get("state") != "approved":
            raise Conflict(f"request {rid} is {item.get('state')}: only approved exports "
                           "download")
        if self.exports_dir is None:
            raise NotFound(f"request {rid}: exports are not delivered by the code service "
                           "on this site",
                           hint="egress.exportDelivery is share: download from the Airlock's "
                           "/opt/public/airlock/export/<id>/")
        names = {str(f["path"]) for f in item.get("files", [])} | {SUMS_NAME}
        if path not in names:
            raise NotFound(f"request {rid}: no file {path!r} in this export")
        try:
            with _open_dir(self.exports_dir, [str(rid)]) as dfd:
                return _open_file(dfd, path)
        except OSError:
            raise Conflict(f"request {rid} is approved but not delivered yet",
                           hint="the export publisher passes every 30 s; try again soon, or "
                           "see `mlab request show` for a blocked note") from None

    async def download(self, request: Request) -> Response:
        """``GET /api/requests/{id}/files/{path}``: the file's bytes, owner only."""
        principal = await self.authenticate(request)
        actor = actor_from(principal)
        rid = request.path_params["id"]
        path = request.path_params["path"]
        try:
            item = await run_in_threadpool(self.store.get, rid, actor)
            fd = await run_in_threadpool(self._open, item, path, actor.name)
        except RequestError as exc:
            return _error(exc)
        size = os.fstat(fd).st_size
        if self.audit_log is not None:
            await run_in_threadpool(audit.append, self.audit_log, "export-download",
                                    user=actor.name, request=rid, file=path, bytes=size)
        return StreamingResponse(_chunks(fd), media_type="application/octet-stream",
                                 headers={"Content-Length": str(size)})

    def routes(self) -> list[BaseRoute]:
        """The download route (mount before the catch-all repository route)."""
        return [Route("/api/requests/{id:int}/files/{path:path}", self.download,
                      methods=["GET"])]


def exports_dir_from_env() -> Path | None:
    """``$MLAB_EXPORTS_DIR`` as a path, or None when unset or empty."""
    value = os.environ.get(EXPORTS_ENV, "")
    return Path(value) if value else None
