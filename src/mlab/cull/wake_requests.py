"""Wake requests: how the portal pod of `mlab up` asks the host to start its user's culled
HomePod without holding any power to start containers itself (docs/culling.md).

Under the podman engine the portal pod has no podman, and giving it podman's socket would
give it root on the host. Instead it writes a *request* - a file named after the signed-in
user, nothing else - into a spool directory, and the host's ``mlab cull`` (the culler that
culled the HomePod in the first place) takes it and runs the code of ``mlab wake USER``
(:func:`mlab.cull.local.wake`) for that one user, under these rules:

- the file name must be a user of the site (anything else is deleted and audited as
  refused); the request's content is at most :data:`MAX_REQUEST_BYTES` of JSON carrying an
  id the reply echoes, nothing the host acts on;
- the user's HomePod pod must exist and be recorded as *culled* in ``cull.json``: a pod an
  admin stopped is not started from the portal; a running one is answered ``running``;
- one wake per user per :data:`MIN_INTERVAL_S`; requests for one user collapse into one
  file (the portal's newest wins);
- every request is one ``wake-request`` line in ``cull-audit.jsonl`` with the user's name
  and the outcome (and a woken one also the culler's ``wake`` line, ``via: portal``).

Layout, under the podman engine's state directory (``<state>/<site>/podman/wake``)::

    requests/<user>       the portal writes (mounted read-write into the portal pod)
    host/alive            the host touches it every POLL_S while it takes requests
    host/<user>.json      the host's reply: {"id", "state", "reason", "at", "woken_at"}

``host/`` is mounted read-only into the portal pod, so the portal cannot forge replies or
the heartbeat. The worst a taken-over portal can do is start culled HomePods of the site's
own users, at most once each per :data:`MIN_INTERVAL_S`, each audited.

The portal side is :class:`HostWaker` (the ``--wake host`` engine of
:func:`mlab.portal.wake.make_waker`); the host side is :func:`serve_pending` and
:class:`RequestServer` (run by ``mlab cull``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlab.atomic import write_atomic
from mlab.errors import MlabError
from mlab.topology import WAKE_HOST, WAKE_PORTAL_DIR, WAKE_REQUESTS, WAKE_SPOOL

log = logging.getLogger(__name__)

SPOOL, REQUESTS, HOST, PORTAL_DIR = WAKE_SPOOL, WAKE_REQUESTS, WAKE_HOST, WAKE_PORTAL_DIR
"""Names of the spool (rules in :mod:`mlab.topology`, shared with the podman translation)."""
ALIVE = "alive"

POLL_S = 1.0
"""How often the host looks for requests (and touches ``host/alive``)."""
ALIVE_STALE_S = 15.0
"""The portal calls the host side stopped when ``host/alive`` is older than this."""
REPLY_TIMEOUT_S = 90.0
"""The portal gives up waiting for the host's reply after this long."""
MIN_INTERVAL_S = 30.0
"""At most one wake per user this often (seconds), however many requests come."""
MAX_REQUEST_BYTES = 512

NOT_RUNNING = ("nobody on the host is taking wake requests (the admin's `mlab cull --site "
               "SITE.yaml` is not running); ask your admin to start it, or to run "
               "`mlab wake {user}`")


class WakeRefused(MlabError):
    """The host refused or failed a wake request; the message is shown to the user."""


def spool_dir(podman_state_dir: Path) -> Path:
    """The spool under the podman engine's state directory (``<state>/<site>/podman``)."""
    return podman_state_dir / SPOOL


def prepare(spool: Path) -> None:
    """Create ``requests/`` and ``host/`` (mode 0700, owned by whoever runs `mlab up`)."""
    for sub in (REQUESTS, HOST):
        (spool / sub).mkdir(parents=True, exist_ok=True, mode=0o700)


def _read_small(path: Path, limit: int) -> bytes | None:
    """The first ``limit`` bytes of a regular file, never following a link; None if gone."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return None
        return f.read(limit)


def host_alive(spool: Path, now: Callable[[], float] = time.time) -> bool:
    """True when the host side touched ``host/alive`` less than :data:`ALIVE_STALE_S` ago."""
    try:
        return now() - (spool / HOST / ALIVE).stat().st_mtime < ALIVE_STALE_S
    except OSError:
        return False


def read_reply(spool: Path, user: str) -> dict[str, Any] | None:
    """The host's last reply for ``user``, or None."""
    raw = _read_small(spool / HOST / f"{user}.json", 4096)
    try:
        data = json.loads(raw) if raw else None
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


@dataclass
class HostWaker:
    """The portal's wake engine ``host``: write a request, wait for the host's reply.

    Blocking (the portal calls it in a thread of its own, :class:`mlab.portal.wake.Wakes`).

    Attributes:
        spool: the spool as the portal sees it (``--wake-dir``).
        timeout_s: how long to wait for the reply (seconds).
        poll_s: how often to look for it (seconds).
    """

    spool: Path
    timeout_s: float = REPLY_TIMEOUT_S
    poll_s: float = 0.2

    def __call__(self, user: str) -> str:
        """Ask the host to wake ``user``'s HomePod; return the reply's state (``woken`` or
        ``running``).

        Raises:
            WakeRefused: the host side is not running, refused, failed or did not answer in
                :attr:`timeout_s` (one line for the waiting page).
        """
        if not host_alive(self.spool):
            raise WakeRefused(NOT_RUNNING.format(user=user))
        rid = secrets.token_hex(8)
        try:
            write_atomic(self.spool / REQUESTS / user,
                         json.dumps({"user": user, "id": rid, "at": time.time()}), 0o600,
                         fsync=False)
        except OSError as exc:
            raise WakeRefused(f"cannot write the wake request to {self.spool / REQUESTS}: "
                              f"{exc.strerror or exc}") from None
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            reply = read_reply(self.spool, user)
            if reply and reply.get("id") == rid:
                if reply.get("state") in ("woken", "running"):
                    return str(reply["state"])
                raise WakeRefused(str(reply.get("reason") or reply.get("state")))
            if not host_alive(self.spool):
                raise WakeRefused(NOT_RUNNING.format(user=user))
            time.sleep(self.poll_s)
        raise WakeRefused(f"the host did not answer the wake request in {self.timeout_s:.0f} s "
                          "(`mlab cull` is busy or stuck); try again, or ask your admin")


Waker = Callable[[str], Any]
"""The host's wake of one user (``mlab.cull.local.wake`` with the site bound)."""
Lookup = Callable[[], dict[str, Any]]
"""HomePods by user, each with a ``status`` (``mlab.cull.local.homepods``)."""
Culled = Callable[[], dict[str, Any]]
"""Users recorded as culled (``mlab.cull.local.culled``)."""
Audit = Callable[[dict[str, Any]], None]


def _decide(user: str, users: set[str], pods: dict[str, Any], culled: dict[str, Any],
            last: dict[str, Any] | None, now: float) -> tuple[str, str]:
    """What to do with one request (pure): ``(state, reason)``, state one of ``wake``,
    ``running``, ``refused``."""
    if user not in users:
        return "refused", f"{user!r} is not a user of the site"
    pod = pods.get(user)
    if pod is None:
        return "refused", f"there is no HomePod for {user} (the admin runs `mlab up`)"
    if pod.status == "Running":
        return "running", "already running"
    woken_at = float((last or {}).get("woken_at") or 0)
    if now - woken_at < MIN_INTERVAL_S:
        return "refused", (f"woken {now - woken_at:.0f} s ago; try again in "
                           f"{MIN_INTERVAL_S - (now - woken_at):.0f} s")
    if user not in culled:
        return "refused", (f"{user}'s HomePod was stopped by an admin, not culled; ask your "
                           f"admin (`mlab wake {user}`)")
    return "wake", "culled"


def _remove(entry: os.DirEntry[str]) -> None:
    """Delete a spool entry of any kind (a directory too: it would be taken every second),
    never following a link."""
    if entry.is_dir(follow_symlinks=False):
        shutil.rmtree(entry.path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.unlink(entry.path)


def serve_pending(spool: Path, users: set[str], wake: Waker, pods: Lookup, culled: Culled,
                  audit: Audit, now: Callable[[], float] = time.time) -> list[dict[str, Any]]:
    """Take every pending request once: check it, wake, reply, audit; touch ``host/alive``.

    Args:
        spool: the spool directory (host side).
        users: the site's user names.
        wake: wakes one user's HomePod (raises on failure).
        pods: the site's HomePods by user (looked up only when there is a request).
        culled: users recorded as culled.
        audit: appends one audit record.
        now: the clock (epoch seconds).

    Returns:
        One row per request: ``{"user", "state", "reason"}`` (state: woken, running,
        refused, error).
    """
    prepare(spool)
    (spool / HOST / ALIVE).touch(mode=0o644)  # the heartbeat the portal reads
    rows: list[dict[str, Any]] = []
    try:
        entries = sorted(os.scandir(spool / REQUESTS), key=lambda e: e.name)
    except OSError:
        return rows
    if not entries:
        return rows
    found: dict[str, Any] | None = None
    for entry in entries:
        name = entry.name
        if name.startswith("."):  # a request being written (tmp, then rename)
            try:
                written = entry.stat(follow_symlinks=False).st_mtime
            except FileNotFoundError:  # renamed into place since the scan: the next poll
                continue
            if now() - written > 60:
                _remove(entry)
            continue
        raw = _read_small(Path(entry.path), MAX_REQUEST_BYTES) \
            if entry.is_file(follow_symlinks=False) else None
        _remove(entry)
        try:
            rid = json.loads(raw or b"{}").get("id")
        except (ValueError, AttributeError):
            rid = None
        rid = rid if isinstance(rid, str) and rid.isalnum() and len(rid) <= 64 else None
        if name not in users:
            rows.append({"user": name[:64], "state": "refused",
                         "reason": "not a user of the site"})
            audit({"event": "wake-request", "user": name[:64], "via": "portal",
                   "state": "refused", "reason": "not a user of the site"})
            continue
        if found is None:
            found = pods()
        last = read_reply(spool, name)
        state, reason = _decide(name, users, found, culled(), last, now())
        if state == "wake":
            try:
                wake(name)
                state, reason = "woken", "culled; started"
            except Exception as exc:  # noqa: BLE001 - replied and audited, the loop goes on
                state = "error"
                reason = exc.one_line() if isinstance(exc, MlabError) else repr(exc)
                log.warning("[mlab/wake-%s] wake failed: %s", name, reason)
        woken_at = now() if state == "woken" else (last or {}).get("woken_at")
        write_atomic(spool / HOST / f"{name}.json", json.dumps(
            {"id": rid, "state": state, "reason": reason, "at": now(), "woken_at": woken_at}),
            0o600, fsync=False)
        audit({"event": "wake-request", "user": name, "via": "portal", "state": state,
               "reason": reason})
        rows.append({"user": name, "state": state, "reason": reason})
    return rows


@dataclass
class RequestServer:
    """Takes wake requests every :data:`POLL_S` in a thread of its own, so that a long cull
    pass does not hold them up (the culler's state file is locked for each change, see
    :func:`mlab.cull.local.state_lock`).

    Attributes:
        step: one :func:`serve_pending` call with everything bound; returns its rows.
        report: called with each non-empty list of rows (printing).
    """

    step: Callable[[], list[dict[str, Any]]]
    report: Callable[[list[dict[str, Any]]], None]
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True, name="wake-requests")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rows = self.step()
                if rows:
                    self.report(rows)
            except Exception as exc:  # noqa: BLE001 - logged; the next poll tries again
                log.warning("[mlab/wake-requests] %s", exc)
            self._stop.wait(POLL_S)


def podman_step(site: Any, spool: Path) -> Callable[[], list[dict[str, Any]]]:
    """:func:`serve_pending` for ``site``'s pods under the podman engine: the wake is
    :func:`mlab.cull.local.wake` (``via: portal``), the audit the culler's.

    Args:
        site: the validated site (:class:`mlab.site.Site`).
        spool: the spool (:func:`spool_dir` of the podman engine's state directory).
    """
    from mlab.cull import local

    users = {u.name for u in site.users}
    return lambda: serve_pending(
        spool, users, wake=lambda user: local.wake(site, user, via="portal"),
        pods=lambda: local.homepods(site.name), culled=lambda: local.culled(site.name),
        audit=lambda event: local.audit(site.name, event))
