"""Repository names and upstream URLs: pure validation, no I/O.

Invariant: a name that passes :func:`parse_repo_path` or :func:`validate_name` can be joined
under the repositories directory without escaping it: each of its two parts matches
``[A-Za-z0-9][A-Za-z0-9._-]*`` (so no ``/``, no ``\\``, no ``..`` part, no leading dot), and
the raw request path is refused outright when it holds a percent-encoded dot, slash or
backslash, so an encoded traversal (``%2e%2e``, ``%2f``) never reaches the decoder.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import NewType
from urllib.parse import urlsplit

from mlab.errors import UsageError

RepoName = NewType("RepoName", str)
"""``org/repo`` without ``.git``, e.g. ``deepvac/deepvac``."""

_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")

GIT_SUFFIXES = ("/info/refs", "/git-upload-pack", "/git-receive-pack")
"""Smart-HTTP endpoints (git's gitprotocol-http); the dumb protocol is not served."""


def _part_ok(part: str) -> bool:
    return bool(_PART.match(part)) and ".." not in part and not part.endswith(".lock")


def validate_name(name: str) -> RepoName:
    """Check an ``org/repo`` name (a trailing ``.git`` is removed).

    Args:
        name: e.g. ``deepvac/deepvac`` or ``deepvac/deepvac.git``.

    Returns:
        The name without ``.git``.

    Raises:
        UsageError: not two parts of letters, digits, ``.``, ``_`` and ``-``.
    """
    text = name.strip().removesuffix(".git")
    parts = text.split("/")
    if len(parts) != 2 or not all(_part_ok(p) for p in parts):
        raise UsageError(
            f"repository name {name!r} is not ORG/REPO",
            "use two parts of letters, digits, '.', '_' and '-', e.g. deepvac/deepvac",
        )
    return RepoName(text)


@dataclass(frozen=True)
class GitPath:
    """A parsed request path under a repository.

    Attributes:
        repo: ``org/repo``.
        rest: what follows the repository: ``""`` (the repository page),
            ``/info/refs``, ``/git-upload-pack`` or ``/git-receive-pack``.
    """

    repo: RepoName
    rest: str


_BAD_RAW = re.compile(r"%(2e|2f|5c|00)", re.IGNORECASE)


def parse_repo_path(path: str, raw_path: bytes | None = None) -> GitPath | None:
    """Split a request path into repository and endpoint; None when it names none.

    Args:
        path: the decoded path, e.g. ``/org/repo.git/info/refs``.
        raw_path: the path as sent (ASGI ``raw_path``), checked for encoded dots, slashes,
            backslashes and NULs, which no valid repository path contains.

    Returns:
        The parsed path, or None for traversal attempts, absolute-looking paths (``//x``),
        bad names and unknown endpoints (the caller answers 404).
    """
    if raw_path is not None and _BAD_RAW.search(raw_path.decode("latin-1")):
        return None
    if not path.startswith("/") or path.startswith("//") or "\\" in path or "\x00" in path:
        return None
    rest = ""
    for suffix in GIT_SUFFIXES:
        if path.endswith(suffix):
            rest = suffix
            path = path[: -len(suffix)]
            break
    parts = path.strip("/").split("/") if path.strip("/") else []
    if path.endswith("/") and rest:
        return None
    if len(parts) != 2:
        return None
    org, repo = parts[0], parts[1].removesuffix(".git")
    if not (_part_ok(org) and _part_ok(repo)):
        return None
    return GitPath(RepoName(f"{org}/{repo}"), rest)


def default_name(url: str) -> RepoName:
    """Derive ``org/repo`` from an upstream URL: its last two path parts, lower-cased.

    ``https://github.com/DeepVAC/deepvac.git`` gives ``deepvac/deepvac`` (the seed's
    ``http://<code>/deepvac/deepvac``).

    Raises:
        UsageError: the URL has fewer than two path parts; pass ``--as ORG/REPO``.
    """
    parts = [p for p in urlsplit(url).path.split("/") if p]
    if len(parts) < 2:
        raise UsageError(f"cannot derive ORG/REPO from {url!r}", "pass --as ORG/REPO")
    return validate_name(f"{parts[-2]}/{parts[-1].removesuffix('.git')}".lower())


def check_upstream(url: str, allowed_hosts: list[str], allow_local: bool) -> None:
    """Check that an upstream URL may be mirrored under the site's rules.

    Accepted: ``https://`` and ``http://`` URLs whose host is in ``allowed_hosts`` (exact,
    case-insensitive; a ``*.example.com`` entry allows sub-domains). With ``allow_local``
    (site ``codeService.allowLocalUpstreams``) also ``file://`` absolute paths and http(s)
    URLs on loopback hosts. Never: credentials in the URL (they would land in the registry
    and logs), ``ext::`` or other transports that run commands, ssh (the service has no keys).

    Raises:
        UsageError: one line naming the URL's problem and the site key that would allow it.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if not allow_local:
            raise UsageError(
                f"upstream {url!r}: file:// upstreams are not allowed",
                "set codeService.allowLocalUpstreams: true in the site file",
            )
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise UsageError(f"upstream {url!r}: use file:///absolute/path")
        if ".." in parts.path.split("/"):
            raise UsageError(f"upstream {url!r}: '..' is not allowed in the path")
        return
    if scheme not in ("https", "http"):
        raise UsageError(
            f"upstream {url!r}: scheme {scheme or '(none)'!r} is not supported",
            "use an https:// URL",
        )
    if parts.username or parts.password:
        raise UsageError(
            f"upstream {parts.hostname}: credentials in the URL are not allowed",
            "mirror a public repository URL",
        )
    host = (parts.hostname or "").lower()
    if not host:
        raise UsageError(f"upstream {url!r}: the URL has no host")
    if allow_local and _is_loopback(host):
        return
    for allowed in allowed_hosts:
        allowed = allowed.lower()
        if host == allowed or (allowed.startswith("*.") and host.endswith(allowed[1:])):
            return
    raise UsageError(
        f"upstream host {host!r} is not in codeService.allowedHosts {allowed_hosts}",
        "add it to the site file's codeService.allowedHosts",
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
