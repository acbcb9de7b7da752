"""The one HTTP layer of every code-service client: ``mlab repo``, ``mlab request``, the
export publisher, the portal's requests page and ``mlab image build --requests-from``
(:class:`mlab.requests.client.RequestsClient` is this client with the requests API's paths).

Invariants: the server is found by :func:`mlab.codeservice.locate.find_server` and the user
and password by :func:`credentials`, for every client alike; the password is sent only as an
``Authorization: Basic`` header (RFC 7617) and never printed; the environment's proxy
variables are ignored (``trust_env=False``: the Airlock's proxy must not divert calls to the
in-cluster code service, nor see the header). Every failure becomes an
:class:`mlab.errors.MlabError` with one line: ``<server>: cannot reach the code service:
<cause>`` (temporary), ``<server>: user '<user>': wrong user name or password`` (401), or
``<server><path>: <the server's error> (HTTP <status>)`` with the server's hint (temporary
for 5xx).
"""

from __future__ import annotations

import getpass
import os
import ssl
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import certifi
import httpx

from mlab.errors import MlabError, TemporaryError, UsageError
from mlab.topology import PASSWORD_FILE, PORT_CODE

DEFAULT_TIMEOUT = 3600.0
"""Seconds; approving a large repository clones all of it before the answer."""
FALLBACK_CONNECT_TIMEOUT = 5.0
"""Seconds to connect while another address remains to be tried."""


class ServiceClient:
    """Calls the code service as one user.

    Args:
        server: base URL without a trailing slash, e.g. ``http://code.mlab.local``.
        user: account name.
        password: its password.
        timeout: seconds per HTTP call.
        fallbacks: other base URLs to try, in order, when ``server`` refuses the connection
            (nothing was sent then, so trying elsewhere is safe); the one that answers
            becomes ``server``.
        errors: HTTP status -> the :class:`MlabError` subclass raised for it (e.g. the
            requests API's typed errors); others are MlabError, 5xx TemporaryError.
        cafile: PEM CA certificates an https:// server is checked against (the portal's
            ``--code-ca``); None: :func:`tls_verify`'s (``$SSL_CERT_FILE`` or the system's).
    """

    def __init__(self, server: str, user: str, password: str,
                 timeout: float = DEFAULT_TIMEOUT, fallbacks: tuple[str, ...] = (),
                 errors: Mapping[int, type[MlabError]] | None = None,
                 cafile: str | None = None) -> None:
        self.cafile = cafile
        self.server = server.rstrip("/")
        self.user = user
        self.timeout = timeout
        self.fallbacks = fallbacks
        self._errors = dict(errors or {})
        self._auth = (user, password)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.server!r}, user={self.user!r})"

    def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send one request, trying :attr:`fallbacks` while a connection is refused.

        Args:
            method: HTTP method.
            path: path under the server, e.g. ``/api/repos``.
            **kwargs: passed to :func:`httpx.request` (``json``, ``params``, ``files``).

        Returns:
            The response, whatever its status (see :meth:`check`).

        Raises:
            httpx.HTTPError: no answer (:meth:`unreachable` makes it one line).
        """
        while True:
            connect = FALLBACK_CONNECT_TIMEOUT if self.fallbacks else self.timeout
            try:
                return httpx.request(method, f"{self.server}{path}", auth=self._auth,
                                     timeout=httpx.Timeout(self.timeout, connect=connect),
                                     trust_env=False, verify=tls_verify(self.cafile), **kwargs)
            except (httpx.ConnectError, httpx.ConnectTimeout):
                if not self.fallbacks:
                    raise
                self.server, self.fallbacks = self.fallbacks[0], self.fallbacks[1:]

    def unreachable(self, exc: httpx.HTTPError) -> TemporaryError:
        """The one-line error for a call that got no answer."""
        cause = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return TemporaryError(f"{self.server}: cannot reach the code service: {cause}",
                              hint="check --server / MLAB_SERVER and that the code service runs")

    def check(self, resp: httpx.Response) -> None:
        """Raise the one-line error for an answer of 400 or more; nothing otherwise.

        Raises:
            MlabError: 401 (wrong credentials); 4xx with the server's ``error`` (or
                ``detail``) and ``hint``, as the class :attr:`errors` names for the status.
            TemporaryError: 5xx.
        """
        if resp.status_code == 401:
            raise MlabError(f"{self.server}: user {self.user!r}: wrong user name or password",
                            hint="set MLAB_USER and MLAB_PASSWORD (or MLAB_PASSWORD_FILE)")
        if resp.status_code < 400:
            return
        try:
            body = resp.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and (body.get("error") or body.get("detail")):
            detail, hint = str(body.get("error") or body.get("detail")), body.get("hint")
        else:
            detail, hint = resp.text.strip()[:200] or resp.reason_phrase, None
        url = resp.request.url.copy_with(query=None)
        message = f"{url}: {detail} (HTTP {resp.status_code})"
        default = TemporaryError if resp.status_code >= 500 else MlabError
        raise self._errors.get(resp.status_code, default)(message, hint=hint)

    def request(self, method: str, path: str, json: Any = None, **kwargs: Any) -> Any:
        """Send one request; return the decoded JSON body (None when there is none).

        Args:
            method: HTTP method.
            path: path under the server, e.g. ``/api/repos``.
            json: request body to send as JSON; None for no body.
            **kwargs: passed to :func:`httpx.request` (e.g. ``files``, ``params``).

        Raises:
            TemporaryError: the server cannot be reached, or answered 5xx.
            MlabError: 401 (wrong credentials), 403, 404, 409, 400: the server's message.
        """
        try:
            resp = self.send(method, path, json=json, **kwargs)
        except httpx.HTTPError as exc:
            raise self.unreachable(exc) from None
        self.check(resp)
        try:
            return resp.json()
        except ValueError:
            return None

    @contextmanager
    def stream(self, method: str, path: str) -> Iterator[httpx.Response]:
        """A streamed answer of 2xx (its body is read by the caller).

        Raises:
            MlabError, TemporaryError: as :meth:`check`.
            httpx.HTTPError: the connection failed (before or while streaming).
        """
        with httpx.stream(method, f"{self.server}{path}", auth=self._auth, timeout=self.timeout,
                          trust_env=False, verify=tls_verify(self.cafile)) as resp:
            if resp.status_code >= 400:
                resp.read()
                self.check(resp)
            yield resp


def tls_verify(cafile: str | None = None) -> ssl.SSLContext | bool:
    """What an HTTPS code service's certificate is checked against: ``cafile`` when given,
    else the file ``$SSL_CERT_FILE`` names (the site CA, `mlab ca`; OpenSSL's own variable,
    which httpx does not read when ``trust_env`` is off, as here to keep proxies out), else
    the system's trust store together with certifi's bundle (httpx's own default is
    certifi's alone, which misses the code service's CA that a HomePod's entrypoint adds to
    the system store, e.g. for `mlab request` run with no login environment). Hostnames are
    always checked.

    Raises:
        MlabError: the file (``cafile`` or ``$SSL_CERT_FILE``) is no readable PEM file.
    """
    cafile = cafile or os.environ.get("SSL_CERT_FILE")
    if not cafile:
        ctx = ssl.create_default_context()  # OpenSSL's default paths: /etc/ssl/certs on Debian
        ctx.load_verify_locations(certifi.where())
        return ctx
    try:
        return ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise MlabError(f"SSL_CERT_FILE={cafile}: not a readable PEM certificate file ({exc})",
                        hint="point it at the site CA: SSL_CERT_FILE=$(mlab ca --site FILE)"
                        ) from None


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


def make_client(server: str | None, site: str | Path | None = None,
                default_user: str | None = None) -> ServiceClient:
    """The client CLI commands use: the server :func:`mlab.codeservice.locate.find_server`
    finds (from ``server``/``$MLAB_SERVER``, the site file, ``$MLAB_CODE_HOST``, the local
    site), the user and password of :func:`credentials`.

    Raises:
        UsageError: no server found, or no credentials (see :func:`credentials`).
    """
    from mlab.codeservice.locate import find_server

    url = find_server(server, site)
    user, password = credentials(default_user)
    return ServiceClient(url, user, password, fallbacks=container_port_fallback(url))


def container_port_fallback(url: str) -> tuple[str, ...]:
    """``(http://HOST:8080,)`` when ``url`` is ``http://$MLAB_CODE_HOST`` (the Service, port
    80), tried when nothing answers there: the container port, which the podman engine's
    HomePods reach directly; else ``()``."""
    host = os.environ.get("MLAB_CODE_HOST")
    return (f"http://{host}:{PORT_CODE}",) if host and url == f"http://{host}" else ()
