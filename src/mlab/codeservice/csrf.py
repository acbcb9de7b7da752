"""Cross-site request forgery defence for the code service (issue 13, item 6).

Invariant: a state-changing request (any method but GET, HEAD, OPTIONS) is served only
when it cannot have been forged by another web site in the browser of a signed-in user:

- it carries no ``Origin`` and no ``Referer`` (git, the CLI, scripts: not a browser page),
  or the ``Origin`` (else the ``Referer``) names this very host (the ``Host`` header);
  ``Origin: null`` (sandboxed pages, ``data:`` URLs) is foreign;
- under ``/api/``, POST, PUT and PATCH carry ``Content-Type: application/json``. A browser
  can send a cross-site POST without asking the server first only as ``text/plain``,
  ``application/x-www-form-urlencoded`` or ``multipart/form-data`` (the Fetch standard's
  "CORS-safelisted request-header"), so JSON also forces a CORS preflight, which this
  service never grants.

Browsers cache Basic credentials per origin and send them with forged requests, which is
why the checks cannot rely on authentication. The service renders no HTML forms (every
change goes through the JSON API); a form added later must carry a token
(the OWASP "synchronizer token" pattern) in addition to these checks.

Plain ASGI (not starlette's BaseHTTPMiddleware, which would buffer the streamed git
bodies and hide client disconnects).
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
JSON_TYPES = {"application/json"}


def check(method: str, path: str, headers: dict[str, str]) -> tuple[int, str] | None:
    """The CSRF rule for one request (pure).

    Args:
        method: HTTP method, upper case.
        path: the request path.
        headers: lower-cased header names to values.

    Returns:
        ``(status, message)`` to refuse with, or None to serve.
    """
    if method in SAFE_METHODS:
        return None
    host = headers.get("host", "").lower()
    origin = headers.get("origin")
    source = origin if origin is not None else headers.get("referer")
    if source is not None:
        netloc = urlsplit(source.strip()).netloc.lower() if source.strip() != "null" else ""
        if not netloc or netloc != host:
            return 403, (f"refusing a {method} from {'Origin' if origin is not None else 'Referer'} "
                         f"{source.strip()!r}: state changes are accepted only from this "
                         "site's own pages or from non-browser clients")
    if path.startswith("/api/") and method in ("POST", "PUT", "PATCH"):
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in JSON_TYPES:
            return 415, (f"Content-Type {ctype or '(none)'!r}: API requests that change "
                         "something must send Content-Type: application/json")
    return None


class CSRFMiddleware:
    """Refuse forged state-changing requests (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                       for k, v in scope.get("headers", [])}
            refused = check(scope["method"].upper(), scope.get("path", ""), headers)
            if refused is not None:
                status, message = refused
                body = json.dumps({"error": message}).encode()
                await send({"type": "http.response.start", "status": status,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
