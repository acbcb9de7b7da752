"""Waking a culled HomePod when its user presses "Open desktop" (docs/culling.md).

The wake itself is the culler's own code, the same as ``mlab wake USER``
(:func:`mlab.cull.local.wake` under the podman engine, :func:`mlab.cull.kube.wake` on
Kubernetes): it starts the pod (or scales the Deployment to 1), clears the culled mark and
writes the ``wake`` line to the culler's audit log. The portal adds its own ``desktop-wake``
audit line with the signed-in user's name, and shows a waiting page until the VNC server
answers with its RFB banner (a TCP connect alone proves nothing: published ports of a stopped
pod may still be held open on the host).

Engines (``--wake``): ``podman`` and ``kubernetes`` call the culler's wake directly (a portal
on the host, or one with podman/kubectl rights); ``host`` (the portal pod of `mlab up`)
holds no such right: it writes a wake request for the user into ``--wake-dir`` and waits for
the host's ``mlab cull`` to answer (:mod:`mlab.cull.wake_requests`).

Only the session's own user's HomePod is ever woken: the routes check that before calling
:meth:`Wakes.start`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mlab.errors import MlabError, UsageError
from mlab.site import Site

log = logging.getLogger(__name__)

ENGINES = ("none", "podman", "kubernetes", "host", "in-cluster")
"""``mlab portal serve --wake``: who starts a stopped HomePod (``host``: the host's
``mlab cull`` through the wake spool, :mod:`mlab.cull.wake_requests`; ``in-cluster``: the
rendered portal with its own ServiceAccount, :mod:`mlab.cull.incluster`)."""

Waker = Callable[[str], object]

STARTING_S = 120.0
"""After a wake call returns, the HomePod counts as starting (not woken again) this long:
the desktop needs a few seconds before VNC answers (docs/culling.md: 3 to 15 s)."""


def make_waker(engine: str, site: Site, wake_dir: Path | None = None,
               audit_log: Path | None = None) -> Waker | None:
    """The wake function for ``engine`` (``none``: the portal never starts HomePods).

    Args:
        engine: one of :data:`ENGINES`.
        site: the validated site.
        wake_dir: the wake spool as the portal sees it; ``host`` only.
        audit_log: where ``in-cluster`` writes the culler's ``wake`` record (the other
            engines write the culler's own audit file).

    Raises:
        UsageError: an unknown engine, or ``host`` without ``wake_dir`` (one line).
    """
    if engine == "none":
        return None
    if engine == "host":
        if wake_dir is None:
            raise UsageError("--wake host needs --wake-dir (the spool `mlab cull` reads)")
        from mlab.cull.wake_requests import HostWaker

        return HostWaker(wake_dir)
    if engine == "podman":
        from mlab.cull import local

        return lambda user: local.wake(site, user)
    if engine == "kubernetes":
        from mlab.cull import kube

        return lambda user: kube.wake(site, user)
    if engine == "in-cluster":
        from mlab.cull import incluster

        api = incluster.InCluster.from_pod()
        return lambda user: incluster.wake(site, user, api, audit_log)
    raise UsageError(f"--wake {engine!r}: expected one of {', '.join(ENGINES)}")


async def vnc_answers(host: str, port: int, timeout: float = 2.0) -> bool:
    """True when ``host:port`` sends an RFB ProtocolVersion (RFC 6143 7.1.1) in time."""
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        banner = await asyncio.wait_for(reader.readexactly(12), timeout)
        return banner.startswith(b"RFB ")
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
        return False
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


@dataclass
class Wakes:
    """The wakes this portal has started: at most one running per user, each in a thread
    of its own (the engines' wake calls block on podman or kubectl).

    Attributes:
        waker: the engine's wake function.
    """

    waker: Waker
    _threads: dict[str, threading.Thread] = field(default_factory=dict)
    _errors: dict[str, str] = field(default_factory=dict)
    _woken_at: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, user: str) -> bool:
        """Start waking ``user``'s HomePod unless a wake is running; True when started."""
        with self._lock:
            thread = self._threads.get(user)
            if thread is not None and thread.is_alive():
                return False
            self._errors.pop(user, None)
            self._woken_at.pop(user, None)
            thread = threading.Thread(target=self._wake, args=(user,), daemon=True,
                                      name=f"wake-{user}")
            self._threads[user] = thread
            thread.start()
            return True

    def running(self, user: str) -> bool:
        """True while a wake of ``user``'s HomePod is in progress, or returned less than
        :data:`STARTING_S` ago (the desktop is still coming up)."""
        thread = self._threads.get(user)
        if thread is not None and thread.is_alive():
            return True
        return time.monotonic() - self._woken_at.get(user, -STARTING_S) < STARTING_S

    def pop_error(self, user: str) -> str | None:
        """Why the last wake of ``user``'s HomePod failed (once), or None."""
        return self._errors.pop(user, None)

    def _wake(self, user: str) -> None:
        try:
            self.waker(user)
            self._woken_at[user] = time.monotonic()
        except Exception as exc:  # noqa: BLE001 - shown on the waiting page, and logged
            self._errors[user] = exc.one_line() if isinstance(exc, MlabError) else repr(exc)
            log.warning("[mlab/portal] wake %s failed: %s", user, self._errors[user])
