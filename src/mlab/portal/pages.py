"""HTML of the portal's pages: small functions of plain values, every value escaped.

Pure: no request, no I/O. Every form carries the session's CSRF token as ``csrf``.
"""

from __future__ import annotations

from html import escape

STYLE = (
    "body{font-family:sans-serif;max-width:46em;margin:2em auto;padding:0 1em;color:#222}"
    "h1{font-size:1.4em}table{border-collapse:collapse}td,th{padding:.3em .8em;"
    "border-bottom:1px solid #ddd;text-align:left}.button,button{display:inline-block;"
    "padding:.5em 1.2em;background:#2a6ebb;color:#fff;border:0;border-radius:4px;"
    "text-decoration:none;font-size:1em;cursor:pointer}.muted{color:#666}"
    "form.inline{display:inline}"
)


def page(title: str, body: str) -> str:
    """A whole HTML document; ``body`` is already-escaped HTML."""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{escape(title)} - MLab</title><style>{STYLE}</style></head>"
        f"<body>{body}</body></html>"
    )


def _csrf(token: str) -> str:
    return f'<input type=hidden name=csrf value="{escape(token)}">'


def sign_in(oidc: bool, csrf: str, error: str | None = None) -> str:
    """The sign-in page: a button to the provider, or (without one) the MLab password form."""
    msg = f"<p class=muted>{escape(error)}</p>" if error else ""
    if oidc:
        form = '<p><a class=button id=signin href="/auth/login">Sign in</a></p>'
    else:
        form = (
            '<form method=post action="/auth/password">' + _csrf(csrf)
            + '<p><label>User <input name=username autocomplete=username required></label></p>'
            + '<p><label>Password <input name=password type=password '
            'autocomplete=current-password required></label></p>'
            + "<p><button id=signin>Sign in</button></p></form>"
        )
    return page("Sign in", f"<h1>MLab</h1>{msg}{form}")


def home(user: str, csrf: str, desktop: str, ssh: str, rdp: bool, has_desktop: bool,
         extra: str = "") -> str:
    """The signed-in user's page.

    Args:
        user: the MLab user name.
        csrf: the session's CSRF token.
        desktop: the desktop's state in words ("running", "not reachable").
        ssh: how to reach SSH/SFTP (``host`` and ``port`` in words), already plain text.
        rdp: offer the ``.rdp`` file (the site exposes desktop ports directly).
        has_desktop: the user is a site user with a HomePod.
        extra: more HTML (already escaped): the requests section.
    """
    parts = [f"<h1>MLab: {escape(user)}</h1>"]
    if has_desktop:
        link = f"/desktop/{escape(user)}"
        parts.append(
            "<h2>Desktop</h2>"
            f"<p>State: <b id=state>{escape(desktop)}</b></p>"
            f'<p><a class=button id=open href="{link}">Open desktop</a></p>'
        )
        native = f"<li>SSH and SFTP: <code>{escape(ssh)}</code></li>"
        if rdp:
            native += f'<li><a href="{link}.rdp">Remote desktop (.rdp file)</a></li>'
        parts.append(f"<h2>Native clients</h2><ul>{native}</ul>")
    else:
        parts.append("<p>You have no HomePod on this site.</p>")
    parts.append(extra)
    parts.append(
        '<form class=inline method=post action="/auth/logout">' + _csrf(csrf)
        + "<button id=signout>Sign out</button></form>"
    )
    return page(user, "".join(parts))


WAKE_REFRESH_S = 2
"""How often the waiting page reloads itself while a HomePod starts."""


def waking(user: str, error: str | None) -> str:
    """The page shown while ``user``'s stopped HomePod starts; it reloads itself every
    :data:`WAKE_REFRESH_S` seconds (the reload opens the desktop once VNC answers).
    ``error``: why the start failed (then no reload)."""
    if error:
        return page("Desktop not started", f"<h1>Your desktop did not start</h1>"
                    f"<p id=wake-error>{escape(error)}</p><p><a href='/'>Back</a></p>")
    body = (f"<h1>Starting your desktop</h1><p id=waking>{escape(user)}'s HomePod was stopped "
            "while idle; it is starting again (your files are kept). This page opens the "
            "desktop as soon as it answers.</p>")
    return page("Starting desktop", body).replace(
        "<head>", f'<head><meta http-equiv=refresh content="{WAKE_REFRESH_S}">', 1)


def message(title: str, text: str) -> str:
    """A page with one message (errors, refusals)."""
    return page(title, f"<h1>{escape(title)}</h1><p>{escape(text)}</p><p><a href='/'>Back</a></p>")


def rdp_file(host: str, port: int, user: str) -> str:
    """A Microsoft Remote Desktop connection file for ``user`` at ``host:port``."""
    return (
        f"full address:s:{host}:{port}\r\nusername:s:{user}\r\n"
        "prompt for credentials:i:1\r\nscreen mode id:i:2\r\n"
    )
