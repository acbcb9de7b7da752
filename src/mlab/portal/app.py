"""The portal's ASGI application: sign-in, the user's page, the desktop.

Routes:
- ``GET /``: the sign-in page, or the signed-in user's page (desktop state, native
  clients, sign-out).
- ``GET /auth/login`` -> the provider; ``GET /auth/callback`` <- the provider
  (authorization code flow with PKCE S256, state and nonce: Authlib's Starlette client,
  OpenID Connect Core 1.0 section 3.1 and RFC 7636); ``POST /auth/password`` (sites
  without a provider: the user's MLab password); ``POST /auth/logout``.
- ``GET /desktop/{user}``: noVNC pointed at ``/desktop/{user}/websockify`` (the proxy,
  :mod:`mlab.portal.proxy`); ``GET /desktop/{user}.rdp``; ``/novnc/``: noVNC's files.

Every POST checks the CSRF token and the Origin header; every desktop route checks that the
session's user is the path's user, and nobody else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from authlib.integrations.starlette_client import OAuth, OAuthError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from mlab.errors import UsageError
from mlab.portal import pages, requests_view, staged
from mlab.portal.audit import audit
from mlab.portal.config import PortalConfig, read_secret
from mlab.portal.proxy import desktop_socket
from mlab.portal.ratelimit import SignInLimits
from mlab.portal.sessions import (
    ROTATE,
    SessionMiddleware,
    SessionStore,
    SqliteSessionStore,
    check_csrf,
    csrf_token,
)
from mlab.portal.wake import Wakes, vnc_answers

log = logging.getLogger(__name__)

SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _html(text: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status_code=status, headers=SECURITY_HEADERS)


def _config(request: Request) -> PortalConfig:
    return request.app.state.config  # type: ignore[no-any-return]


def _is_site_user(config: PortalConfig, name: str) -> bool:
    return any(u.name == name for u in config.site.users)


NEXT = "next"
"""Session key: the desktop path a signed-out visitor asked for (a bookmark), opened right
after sign-in instead of the user's page."""


def _after_sign_in(next_path: object) -> str:
    """Where sign-in sends the browser: the remembered desktop path, else the user's page.
    Only ``/desktop/<name>`` paths are followed (no open redirect)."""
    if isinstance(next_path, str) and next_path.startswith("/desktop/") \
            and "/" not in next_path[len("/desktop/"):] and "." not in next_path:
        return next_path
    return "/"


def _sign_in(request: Request, user: str, groups: list[str], method: str) -> str:
    """Make the session a signed-in one with a fresh id and a fresh CSRF token; return
    where to send the browser (:func:`_after_sign_in`)."""
    config = _config(request)
    target = _after_sign_in(request.session.get(NEXT))
    oidc = config.site.portal.oidc
    reviewers = set(config.site.code_service.reviewers)
    roles = []
    if user in reviewers or (oidc and oidc.reviewer_group in groups):
        roles.append("reviewer")
    if oidc and oidc.admin_group and oidc.admin_group in groups:
        roles.append("admin")
    request.session.clear()
    request.session.update(user=user, roles=roles, csrf=secrets.token_urlsafe(32))
    request.session[ROTATE] = True
    audit(config, "login", user=user, method=method, roles=roles)
    return target


def _origin_ok(request: Request) -> bool:
    """A POST's Origin, when the browser sends one, must be the portal's own."""
    origin = request.headers.get("origin")
    return origin is None or origin == _config(request).origin


async def index(request: Request) -> Response:
    config = _config(request)
    user = request.session.get("user")
    csrf = csrf_token(request.session)
    if not user:
        return _html(pages.sign_in(config.site.portal.oidc is not None, csrf))
    has_desktop = _is_site_user(config, user) and user in config.backends
    state = await _desktop_state(config, user) if has_desktop else "none"
    if state != "running" and request.app.state.wakes is not None:
        state = "stopped (Open desktop starts it)"
    host = urlsplit(config.url).hostname or "localhost"
    ssh_port = config.site.user(user).service.ports.get("ssh", config.site.access.ports.ssh) \
        if has_desktop else config.site.access.ports.ssh
    reviewer = "reviewer" in request.session.get("roles", [])
    extra = ""
    if has_desktop and config.code_url:
        mine, queue, error = await requests_view.load(config, user, reviewer)
        extra = requests_view.section(mine, queue, error, csrf, reviewer)
    if has_desktop and config.share is not None:
        try:
            extra += staged.section(await asyncio.to_thread(staged.read, config.share, user))
        except OSError as exc:
            extra += staged.section(None, f"cannot read the share: {exc.strerror or exc}")
    return _html(pages.home(
        user, csrf, state, f"ssh -p {ssh_port} {user}@{host}",
        rdp=config.site.portal.direct_desktop_ports, has_desktop=has_desktop, extra=extra))


async def review(request: Request) -> Response:
    """``POST /requests/{id}``: approve or reject with a comment (reviewers; CSRF-checked)."""
    config = _config(request)
    form = await request.form()
    user = request.session.get("user")
    if not user or not _origin_ok(request) or not check_csrf(request.session, form.get("csrf")):
        return _html(pages.message("Refused", "The form expired; reload the page."), 403)
    if "reviewer" not in request.session.get("roles", []) or not _is_site_user(config, user):
        return _html(pages.message("Refused", "Only reviewers act on requests."), 403)
    error = await requests_view.act(config, user, int(request.path_params["id"]),
                                    str(form.get("action") or ""), str(form.get("comment") or ""))
    audit(config, "review", user=user, request=request.path_params["id"],
          action=form.get("action"), error=error)
    if error:
        return _html(pages.message("Not done", error), 409)
    return RedirectResponse("/", status_code=303)


async def _desktop_state(config: PortalConfig, user: str) -> str:
    backend = config.backends[user]
    return "running" if await vnc_answers(backend.host, backend.port) else "not reachable"


def _throttled(request: Request) -> Response | None:
    """429 when the client's address is over its sign-in limit (audited), else None."""
    limits: SignInLimits = request.app.state.limits
    address = request.client.host if request.client else "unknown"
    if limits.address_allows(address):
        return None
    audit(_config(request), "login-throttled", address=address, endpoint=request.url.path)
    return _too_many(limits.retry_after(address=address))


def _too_many(seconds: int) -> Response:
    return HTMLResponse(
        pages.message("Too many sign-ins", f"Wait {seconds} s, then try again."),
        status_code=429, headers={**SECURITY_HEADERS, "Retry-After": str(seconds)})


async def login(request: Request) -> Response:
    if (refused := _throttled(request)) is not None:
        return refused
    oauth: OAuth = request.app.state.oauth
    return await oauth.idp.authorize_redirect(request, _config(request).redirect_uri)  # type: ignore[no-any-return]


async def callback(request: Request) -> Response:
    config = _config(request)
    oidc = config.site.portal.oidc
    assert oidc is not None  # the route exists only with a provider
    if (refused := _throttled(request)) is not None:
        return refused
    oauth: OAuth = request.app.state.oauth
    try:
        token = await oauth.idp.authorize_access_token(
            request, claims_options={"iss": {"essential": True, "values": [oidc.issuer]}})
    except OAuthError as exc:
        audit(config, "login-failed", method="oidc", reason=exc.error)
        return _html(pages.message("Sign-in failed", f"The provider said: {exc.error}"), 401)
    claims: dict[str, Any] = token.get("userinfo") or {}
    name = claims.get(oidc.username_claim)
    if not isinstance(name, str) or not name:
        audit(config, "login-failed", method="oidc", reason=f"no {oidc.username_claim} claim",
              subject=claims.get("sub"))
        return _html(pages.message("Sign-in failed",
                                   f"The provider sent no {oidc.username_claim}."), 401)
    groups = claims.get(oidc.groups_claim) or []
    groups = [g.rsplit("/", 1)[-1] for g in groups if isinstance(g, str)]
    return RedirectResponse(_sign_in(request, name, groups, "oidc"), status_code=303)


async def password_login(request: Request) -> Response:
    config = _config(request)
    if (refused := _throttled(request)) is not None:
        return refused
    form = await request.form()
    if not _origin_ok(request) or not check_csrf(request.session, form.get("csrf")):
        return _html(pages.message("Refused", "The form expired; reload the page."), 403)
    name = str(form.get("username") or "")
    given = str(form.get("password") or "")
    limits: SignInLimits = request.app.state.limits
    if not limits.user_allows(name):
        audit(config, "login-throttled", user=name, method="password")
        return _too_many(limits.retry_after(user=name))
    ok = False
    if _is_site_user(config, name):
        try:
            ok = secrets.compare_digest(read_secret(config.password_file(name)).encode(),
                                        given.encode())
        except OSError:
            ok = False
    if not ok:
        limits.user_failed(name)
        audit(config, "login-failed", method="password", user=name)
        return _html(pages.sign_in(False, csrf_token(request.session),
                                   "Wrong user name or password."), 401)
    return RedirectResponse(_sign_in(request, name, [], "password"), status_code=303)


async def logout(request: Request) -> Response:
    config = _config(request)
    form = await request.form()
    if not _origin_ok(request) or not check_csrf(request.session, form.get("csrf")):
        return _html(pages.message("Refused", "The form expired; reload the page."), 403)
    user = request.session.get("user")
    request.session.clear()
    audit(config, "logout", user=user)
    return RedirectResponse("/", status_code=303)


def _own_desktop(request: Request) -> str | Response:
    """The path's user when it is the session's; else the refusal (audited)."""
    config = _config(request)
    user = request.path_params["user"]
    who = request.session.get("user")
    if not who:  # a bookmark: sign in first, then straight back here
        request.session[NEXT] = request.url.path
        first = "/auth/login" if config.site.portal.oidc is not None else "/"
        return RedirectResponse(first, status_code=303)
    if who != user or user not in config.backends:
        audit(config, "desktop-denied", user=who, desktop=user)
        return _html(pages.message("Not yours", "This is not your desktop."), 403)
    return user


async def desktop(request: Request) -> Response:
    """noVNC for the session's own desktop; a stopped (culled) HomePod is woken first, with
    a page that reloads itself until the VNC server answers."""
    user = _own_desktop(request)
    if isinstance(user, Response):
        return user
    config = _config(request)
    wakes: Wakes | None = request.app.state.wakes
    if wakes is not None:
        backend = config.backends[user]
        if not await vnc_answers(backend.host, backend.port):
            if not wakes.running(user):
                error = wakes.pop_error(user)
                if error:  # shown once; opening the desktop again tries again
                    audit(config, "desktop-error", user=user, error=error)
                    return _html(pages.waking(user, error), 503)
                if wakes.start(user):
                    audit(config, "desktop-wake", user=user)
            return _html(pages.waking(user, None))
    query = urlencode({"autoconnect": "1", "reconnect": "1", "resize": "remote",
                       "path": f"desktop/{user}/websockify"})
    return RedirectResponse(f"/novnc/vnc.html?{query}", status_code=303)


async def rdp(request: Request) -> Response:
    user = _own_desktop(request)
    if isinstance(user, Response):
        return user
    config = _config(request)
    if not config.site.portal.direct_desktop_ports:
        return _html(pages.message("No RDP", "This site reaches desktops through the portal only."), 404)
    port = config.site.user(user).service.ports.get("rdp", config.site.access.ports.rdp)
    host = urlsplit(config.url).hostname or "localhost"
    return PlainTextResponse(
        pages.rdp_file(host, port, user), media_type="application/x-rdp",
        headers={"Content-Disposition": f'attachment; filename="{user}.rdp"', **SECURITY_HEADERS})


WARM_UP_DELAYS_S = (0, 2, 5, 10, 30, 60)
"""Tries to fetch the provider's discovery document and keys at start (it may start later)."""


async def _warm_up(oauth: OAuth) -> None:
    """Fetch the provider's discovery document and JWKS once at start, so that the first
    sign-in does not wait for them (Authlib caches both; a rotated key is fetched again)."""
    for delay in WARM_UP_DELAYS_S:
        await asyncio.sleep(delay)
        try:
            await oauth.idp.fetch_jwk_set()
            return
        except Exception as exc:  # noqa: BLE001 - retried; sign-in fetches them anyway
            log.warning("[mlab/portal] provider not reachable yet: %s", exc)


def idp_tls_context(ca_file: Path) -> ssl.SSLContext:
    """TLS verification for the provider: the system's CAs plus ``ca_file`` (PEM).

    Raises:
        UsageError: ``ca_file`` is missing or holds no certificate (one line naming it).
    """
    ctx = ssl.create_default_context()
    try:
        ctx.load_verify_locations(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"--idp-ca-file {ca_file}: not a PEM CA bundle: {exc}") from None
    return ctx


def build_app(config: PortalConfig, limits: SignInLimits | None = None) -> Starlette:
    """The portal application for ``config``.

    Args:
        config: the portal's settings.
        limits: the sign-in rate limits (default: :class:`SignInLimits`'s).

    Raises:
        OSError: noVNC's directory is missing.
    """
    routes: list[Any] = [
        Route("/", index),
        Route("/auth/logout", logout, methods=["POST"]),
        Route("/requests/{id:int}", review, methods=["POST"]),
        Route("/desktop/{user}.rdp", rdp),
        Route("/desktop/{user}", desktop),
        WebSocketRoute("/desktop/{user}/websockify", desktop_socket),
        Mount("/novnc", app=StaticFiles(directory=config.novnc_dir), name="novnc"),
    ]
    oidc = config.site.portal.oidc
    oauth = OAuth()
    if oidc is not None:
        routes += [Route("/auth/login", login), Route("/auth/callback", callback)]
        kwargs: dict[str, Any] = {"client_id": oidc.client_id}
        if config.client_secret:
            kwargs["client_secret"] = config.client_secret
        else:
            kwargs["token_endpoint_auth_method"] = "none"
        client_kwargs: dict[str, Any] = {"scope": "openid profile email",
                                         "code_challenge_method": "S256", "timeout": 15}
        if config.idp_ca_file is not None:
            client_kwargs["verify"] = idp_tls_context(config.idp_ca_file)
        oauth.register(
            "idp",
            server_metadata_url=f"{oidc.issuer}/.well-known/openid-configuration",
            client_kwargs=client_kwargs,
            **kwargs,
        )
    else:
        routes.append(Route("/auth/password", password_login, methods=["POST"]))
    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(_warm_up(oauth)) if oidc is not None else None
        yield
        if task is not None:
            task.cancel()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.config = config
    app.state.oauth = oauth
    app.state.limits = limits or SignInLimits()
    app.state.wakes = Wakes(config.waker) if config.waker is not None else None
    lifetime = config.site.portal.session_hours * 3600
    store: SessionStore | SqliteSessionStore = (
        SqliteSessionStore(config.session_db, lifetime) if config.session_db is not None
        else SessionStore(lifetime=lifetime))
    app.add_middleware(SessionMiddleware, store=store)
    return app
