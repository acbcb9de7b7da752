"""Client of the requests API, used by ``mlab request``, the publisher, the portal and the
image build: the code service's one HTTP layer (:class:`mlab.codeservice.client.ServiceClient`:
Basic auth, no proxy, every failure one line) with the API's paths and typed errors
(400 :class:`InvalidRequest`, 403, 404, 409).

Where the server and credentials come from (first found wins):

- server: :func:`mlab.codeservice.locate.find_server` (``--server URL`` / ``$MLAB_SERVER``,
  ``http://$MLAB_CODE_HOST`` in every HomePod and the Airlock, then ``http://$MLAB_CODE_HOST:8080``
  if nothing answers there; on the host, the local site's code service when it is up);
- user: ``$MLAB_USER``;
- password: ``$MLAB_PASSWORD``, else the file ``$MLAB_PASSWORD_FILE``, else the pod's
  ``/etc/mlab/secret/password`` when readable, else a prompt on the terminal.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from mlab.codeservice.client import ServiceClient, container_port_fallback, credentials
from mlab.errors import MlabError, TemporaryError, UsageError
from mlab.requests.checksums import sha256_stream
from mlab.requests.model import (
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
)

Records = list[dict[str, Any]]
"""Requests as JSON objects (a name of its own: in the class body its ``list`` method hides
the builtin)."""

_STATUS: dict[int, type[MlabError]] = {
    400: InvalidRequest, 403: Forbidden, 404: NotFound, 409: Conflict,
}


def resolve_server(server: str | None) -> str:
    """The code service base URL without a trailing slash
    (:func:`mlab.codeservice.locate.find_server`: the same rules as ``mlab repo``).

    Raises:
        UsageError: no server given and none found.
    """
    from mlab.codeservice.locate import find_server

    return find_server(server)


def resolve_credentials() -> tuple[str, str]:
    """``(user, password)`` by :func:`mlab.codeservice.client.credentials` (the one rule of
    every code-service client), ``MLAB_USER`` required.

    Raises:
        UsageError: no user, an unreadable MLAB_PASSWORD_FILE, or no password and no terminal.
    """
    return credentials(ask_user=False)


class RequestsClient(ServiceClient):
    """A thin, synchronous client of ``/api/requests``.

    Args:
        server: base URL, e.g. ``http://127.0.0.1:8080``.
        user: account name.
        password: its password.
        timeout: seconds per HTTP call.
        fallbacks: other base URLs to try, in order, when ``server`` refuses the connection.
        cafile: PEM CA certificates an https:// server is checked against; None: the
            default (:func:`mlab.codeservice.client.tls_verify`).
    """

    def __init__(self, server: str, user: str, password: str, timeout: float = 60.0,
                 fallbacks: tuple[str, ...] = (), cafile: str | None = None) -> None:
        super().__init__(server, user, password, timeout, fallbacks, errors=_STATUS,
                         cafile=cafile)

    @classmethod
    def from_env(cls, server: str | None = None) -> "RequestsClient":
        """A client for :func:`resolve_server` with :func:`resolve_credentials`.

        When the URL comes from ``MLAB_CODE_HOST`` alone, the container port is tried second
        (:func:`~mlab.codeservice.client.container_port_fallback`).
        """
        user, password = resolve_credentials()
        url = resolve_server(server)
        return cls(url, user, password, fallbacks=container_port_fallback(url))

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.send(method, f"/api/requests{path}", **kwargs)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, f"/api/requests{path}", **kwargs)

    def _raise_for(self, resp: httpx.Response) -> None:
        self.check(resp)

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        """Submit a request (see ``model.validate_submission``); return it."""
        return self._call("POST", "", json=body)  # type: ignore[no-any-return]

    def list(self, *, all_users: bool = False, kind: str | None = None,
             state: str | None = None, history: bool = False) -> list[dict[str, Any]]:
        """Requests visible to the user, newest first."""
        params = {"all": "1" if all_users else "", "kind": kind or "", "state": state or "",
                  "history": "1" if history else ""}
        return self._call("GET", "", params={k: v for k, v in params.items() if v})["requests"]  # type: ignore[no-any-return]

    def get(self, request_id: int) -> dict[str, Any]:
        """One request with history."""
        return self._call("GET", f"/{int(request_id)}")  # type: ignore[no-any-return]

    def diff(self, request_id: int) -> str:
        """A branch request's new commits with their patches, as text (owner, reviewers)."""
        try:
            resp = self._send("GET", f"/{int(request_id)}/diff")
        except httpx.HTTPError as exc:
            raise TemporaryError(f"{self.server}: cannot reach the code service: "
                                 f"{type(exc).__name__}") from None
        self._raise_for(resp)
        return resp.text

    def act(self, request_id: int, action: str, comment: str | None = None) -> dict[str, Any]:
        """review / approve / reject / revoke / cancel; returns the request after it."""
        body = {} if comment is None else {"comment": comment}
        return self._call("POST", f"/{int(request_id)}/{action}", json=body)  # type: ignore[no-any-return]

    def note(self, request_id: int, action: str, comment: str) -> dict[str, Any]:
        """Add a publisher note (``published``, ``blocked``, ``unpublished``)."""
        return self._call("POST", f"/{int(request_id)}/notes",  # type: ignore[no-any-return]
                          json={"action": action, "comment": comment})

    def exports(self) -> Records:
        """Every export request with state, owner, outbox and files (publisher, reviewers)."""
        return self._call("GET", "/exports")["requests"]  # type: ignore[no-any-return]

    def download(self, request_id: int, dest: Path,
                 progress: Callable[[int], None] | None = None) -> Records:
        """Download an approved export of this user into ``dest/<path>`` and check every
        file against its recorded size and sha256 (``egress.exportDelivery: requester``).

        Each file is streamed to ``dest/.<name>.part`` and renamed into place only when it
        matches; an existing file is never overwritten.

        Returns:
            The request's file list (``path``, ``size``, ``sha256``).

        Raises:
            NotFound, Conflict: not this user's approved export, or not delivered yet.
            MlabError: a file differs from its record, or exists already in ``dest``.
        """
        rid = int(request_id)
        files: list[dict[str, Any]] = self.get(rid)["files"]
        for entry in files:
            target = dest / str(entry["path"])
            if target.exists():
                raise UsageError(f"{target}: exists already; pick another -o directory")
            target.parent.mkdir(parents=True, exist_ok=True)
            part = target.with_name(f".{target.name}.part")
            path = quote(str(entry["path"]))
            try:
                with self.stream("GET", f"/api/requests/{rid}/files/{path}") as resp:
                    with open(part, "wb") as out:
                        size, digest = sha256_stream(_reader(resp.iter_bytes()), out.write,
                                                     progress)
            except httpx.HTTPError as exc:
                part.unlink(missing_ok=True)
                raise TemporaryError(f"{self.server}: download of request {rid} "
                                     f"{entry['path']} failed: {type(exc).__name__}") from None
            if (size, digest) != (entry["size"], entry["sha256"]):
                part.unlink(missing_ok=True)
                raise MlabError(f"request {rid} {entry['path']}: received {size} bytes with "
                                f"sha256 {digest[:12]}..., recorded {entry['size']} bytes "
                                f"{str(entry['sha256'])[:12]}...; nothing kept")
            os.replace(part, target)
        return files

    def packages(self) -> Records:
        """Approved package scripts in approval order (reviewers and admin)."""
        return self._call("GET", "/packages")["packages"]  # type: ignore[no-any-return]


def _reader(chunks: Iterator[bytes]) -> Callable[[int], bytes]:
    """A ``read(n)`` over an iterator of chunks (the size hint is ignored)."""
    def read(_n: int) -> bytes:
        return next(chunks, b"")
    return read
