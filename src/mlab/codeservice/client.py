"""HTTP client of the code service's JSON API, for CLI commands (``mlab repo``, ``mlab request``).

Invariant: credentials come from ``MLAB_USER`` and ``MLAB_PASSWORD`` (or
``MLAB_PASSWORD_FILE``, set in HomePods by the container contract) or a prompt; they are sent
only as an ``Authorization: Basic`` header and never printed. Every failure becomes an
:class:`mlab.errors.MlabError` with one line naming the server and the fix.
"""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path
from typing import Any

import httpx

from mlab.errors import MlabError, TemporaryError, UsageError
from mlab.topology import PASSWORD_FILE

DEFAULT_TIMEOUT = 3600.0
"""Seconds; approving a large repository clones all of it before the answer."""


class ServiceClient:
    """Calls the code service API as one user.

    Args:
        server: base URL, e.g. ``http://code.mlab.local``.
        user: account name.
        password: its password.
        timeout: seconds per request.
    """

    def __init__(self, server: str, user: str, password: str,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        self.server = server.rstrip("/")
        self._http = httpx.Client(base_url=self.server, auth=(user, password),
                                  timeout=timeout, trust_env=False)

    def request(self, method: str, path: str, json: Any = None, **kwargs: Any) -> Any:
        """Send one request; return the decoded JSON body.

        Args:
            method: HTTP method.
            path: path under the server, e.g. ``/api/repos``.
            json: request body to send as JSON; None for no body.
            **kwargs: passed to :meth:`httpx.Client.request` (e.g. ``files``, ``params``).

        Raises:
            TemporaryError: the server cannot be reached, or answered 5xx.
            MlabError: 401 (wrong credentials), 403, 404, 409, 400: the server's message.
        """
        try:
            resp = self._http.request(method, path, json=json, **kwargs)
        except httpx.HTTPError as exc:
            raise TemporaryError(
                f"cannot reach the code service at {self.server}: {exc}",
                "check --server and that the service runs",
            ) from None
        if resp.status_code == 401:
            raise MlabError(
                f"{self.server}: wrong user name or password",
                "set MLAB_USER and MLAB_PASSWORD",
            )
        try:
            data = resp.json()
        except ValueError:
            data = None
        if resp.status_code >= 400:
            detail = data.get("error") if isinstance(data, dict) else resp.text.strip()
            message = f"{self.server}{path}: {detail or resp.reason_phrase} (HTTP {resp.status_code})"
            if resp.status_code >= 500:
                raise TemporaryError(message)
            raise MlabError(message)
        return data

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()


SECRET_FILE = Path(PASSWORD_FILE)
"""The pod's own password file (docs/CONTRACTS.md), used when nothing else is set."""


def credentials(default_user: str | None = None, ask_user: bool = True) -> tuple[str, str]:
    """``(user, password)`` for the code service: the one rule every client follows.

    User: ``$MLAB_USER``, else ``default_user``, else (with ``ask_user``) a prompt.
    Password: ``$MLAB_PASSWORD``, else the file ``$MLAB_PASSWORD_FILE``, else the pod's
    readable :data:`SECRET_FILE` (in HomePods and the Airlock), else a prompt.

    Args:
        default_user: the user when ``$MLAB_USER`` is unset (``admin`` for admin commands).
        ask_user: prompt for a missing user on a terminal; False: a missing user is an error.

    Raises:
        UsageError: no user (and none may be asked), an unreadable ``MLAB_PASSWORD_FILE``, or
            something missing with no terminal to ask on.
    """
    user = os.environ.get("MLAB_USER") or default_user
    password = os.environ.get("MLAB_PASSWORD")
    if password is None and os.environ.get("MLAB_PASSWORD_FILE"):
        path = os.environ["MLAB_PASSWORD_FILE"]
        try:
            password = Path(path).read_text(encoding="utf-8").strip("\r\n")
        except OSError as exc:
            raise UsageError(f"MLAB_PASSWORD_FILE: cannot read {path}: {exc.strerror}") from None
    if password is None and os.access(SECRET_FILE, os.R_OK):
        password = SECRET_FILE.read_text(encoding="utf-8").strip("\r\n")
    if not user and not ask_user:
        raise UsageError("MLAB_USER: set it to your user name (admin for the admin)")
    if user and password is not None:
        return user, password
    if not sys.stdin.isatty():
        raise UsageError("no credentials for the code service",
                         "set MLAB_USER and MLAB_PASSWORD (or MLAB_PASSWORD_FILE)")
    if not user:
        user = input("code service user: ").strip()
    if password is None:
        password = getpass.getpass(f"code service password for {user}: ")
    return user, password


def server_url(server: str | None, site_path: str | None) -> str:
    """``--server``, else ``http://<codeService.host>`` from the site file.

    Raises:
        UsageError: neither is given, or the site file is invalid.
    """
    if server:
        if not server.startswith(("http://", "https://")):
            raise UsageError(f"--server {server!r}: give a URL like http://code.mlab.local")
        return server
    if site_path and Path(site_path).exists():
        from mlab.site import load_site

        return f"http://{load_site(site_path).code_service.host}"
    raise UsageError("no code service given",
                     "pass --server URL or --site FILE (or set MLAB_SERVER / MLAB_SITE)")


def make_client(server: str | None, site_path: str | None,
                default_user: str | None = None) -> ServiceClient:
    """The client CLI commands use: server from :func:`server_url`, :func:`credentials`."""
    url = server_url(server, site_path)
    user, password = credentials(default_user)
    return ServiceClient(url, user, password)
