"""Generated passwords: created once per site, kept stable, never printed unless asked.

Invariant: ``<state>/<site>/passwords.json`` (mode 0600, directory 0700) only ever gains
keys; an existing password is never changed, so re-rendering gives the same Secrets. The
file is replaced atomically (temp file + rename) under a lock, so concurrent ``mlab``
commands cannot lose a password or leave half a file.
"""

from __future__ import annotations

import json
import os
import secrets
import string
from pathlib import Path

from filelock import FileLock

from mlab.atomic import write_atomic
from mlab.errors import MlabError
from mlab.site import PUBLISHER_ACCOUNT, Site

ALPHABET = string.ascii_letters + string.digits
"""Letters and digits: safe in every client, URL and shell without quoting."""
LENGTH = 20
"""Characters per password: about 119 bits. VNC (RFB VncAuth) uses only the first 8
characters, which still carry about 48 bits; RDP, SSH and the code service use all 20."""


def state_root(state_dir: Path | None = None) -> Path:
    """The state directory: ``state_dir``, else ``$MLAB_STATE_DIR``, else
    ``~/.local/state/mlab`` (XDG_STATE_HOME honoured)."""
    if state_dir is not None:
        return Path(state_dir)
    env = os.environ.get("MLAB_STATE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "state"
    return base / "mlab"


def passwords_path(site: Site, state_dir: Path | None = None) -> Path:
    """``<state root>/<site name>/passwords.json``."""
    return state_root(state_dir) / site.name / "passwords.json"


def generate_password() -> str:
    """A new random password from the OS CSPRNG (:mod:`secrets`)."""
    return "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))


def password_keys(site: Site) -> list[str]:
    """Keys of the passwords a site needs: every user, ``airlock``, ``admin`` and the export
    publisher's account (:data:`mlab.site.PUBLISHER_ACCOUNT`)."""
    return [u.name for u in site.users] + ["airlock", "admin", PUBLISHER_ACCOUNT]


def _read(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise MlabError(f"{path}: cannot read the password state: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in data.items()
    ):
        raise MlabError(
            f"{path}: the password state is not a JSON object of name to password",
            hint="restore it from a backup; deleting it generates new passwords for everyone",
        )
    return data


def _write(path: Path, data: dict[str, str]) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n", 0o600)


def load_or_create_passwords(site: Site, state_dir: Path | None = None) -> dict[str, str]:
    """The site's passwords, generating (once) and storing any that are missing.

    Args:
        site: the site; its name selects the state file.
        state_dir: state root; None: ``$MLAB_STATE_DIR`` or ``~/.local/state/mlab``.

    Returns:
        A new dict with a key per user name, ``airlock`` and ``admin`` (plus any keys of
        removed users, which are kept so a returning user keeps their password).

    Raises:
        MlabError: the state file is unreadable or corrupt (it is never overwritten then).
    """
    path = passwords_path(site, state_dir)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise MlabError(f"{path.parent}: cannot create the state directory: {exc.strerror}") from None
    with FileLock(str(path) + ".lock", timeout=60):
        data = _read(path)
        missing = [k for k in password_keys(site) if k not in data]
        if missing:
            for key in missing:
                data[key] = generate_password()
            _write(path, data)
        elif path.exists() and (path.stat().st_mode & 0o077):
            os.chmod(path, 0o600)
    return dict(data)
