"""The HomePod's start-up gate: no user session before the pod's forbidden egress is refused.

Why: a new pod on Kubernetes runs before the NetworkPolicy engine has programmed its rules
(measured on a kube-router node: a pod with the HomePod labels reached the API server for its
first ~1.5 s). Whatever a user planted in their home (an XFCE autostart entry, a
``.bashrc`` line) runs when their session starts; if that came first it would get out. So
``mlab-entrypoint`` runs this module before it starts supervisord (desktop, xrdp, sshd) and
starts nothing when it fails.

The rule: every address in :func:`targets` must be *refused* (any connect error: RST, ICMP
unreachable, no route, time-out) in one round. While one still accepts a TCP connection the
gate waits and tries again; after ``MLAB_START_GATE_SECONDS`` (default
:data:`DEFAULT_SECONDS`) it gives up with exit code 1 and the entrypoint exits without
starting any session (the pod restarts and tries again; the admin sees the line in its log).

Targets (each ``host:port``, IPv6 as ``[addr]:port``):

- ``KUBERNETES_SERVICE_HOST``/``KUBERNETES_SERVICE_PORT``: the API server, which the kubelet
  puts in every pod's environment (even with ``enableServiceLinks: false``);
- ``MLAB_EGRESS_CHECK``: a comma-separated list of ``[label=]host:port``. On Kubernetes the
  renderer names the Airlock's SSH port at the Airlock Service's fixed clusterIP and the
  kubelet (10250) on the pod's own node, whose address the kubelet puts in
  ``MLAB_NODE_IP`` (downward API ``status.hostIP``) and expands in the list
  (``$(MLAB_NODE_IP)``); the podman engine names the Airlock's SSH address on its network.
  A HomePod has no edge to any of them (mlab.render.homepod.gate_env).

No target at all (a plain ``podman run`` of the image) starts at once and says so.

Run as ``python -m mlab.homepod.startgate``; standard library and :mod:`mlab.topology` only.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable, Mapping

from mlab.topology import EGRESS_CHECK_ENV

DEFAULT_SECONDS = 300.0
"""How long the gate waits for its forbidden egress to be refused before giving up."""
CONNECT_TIMEOUT = 2.0
"""Seconds one connect may take; a time-out counts as refused (a dropped SYN)."""
RETRY_SECONDS = 1.0
"""Pause between rounds while a target still answers."""
PREFIX = "mlab-startgate: "


def parse_target(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port).

    Raises:
        ValueError: not of that form, or a port outside 1-65535.
    """
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = text.rpartition(":")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{text!r} is not host:port")
    return host, int(port_text)


def targets(env: Mapping[str, str]) -> list[tuple[str, str, int]]:
    """The forbidden destinations: (label, host, port), from the environment.

    ``MLAB_EGRESS_CHECK`` entries are ``[label=]host:port``; an entry without a label is
    labelled ``forbidden``.

    Raises:
        ValueError: an entry of MLAB_EGRESS_CHECK is not host:port (names it).
    """
    out: list[tuple[str, str, int]] = []
    host, port = env.get("KUBERNETES_SERVICE_HOST", ""), env.get("KUBERNETES_SERVICE_PORT", "")
    if host and port.isdigit():
        out.append(("API server", host, int(port)))
    for item in filter(None, (s.strip() for s in env.get(EGRESS_CHECK_ENV, "").split(","))):
        label, sep, spec = item.partition("=")
        if not sep:
            label, spec = "forbidden", item
        try:
            h, p = parse_target(spec)
        except ValueError as exc:
            raise ValueError(f"MLAB_EGRESS_CHECK: {exc}") from None
        out.append((label.strip() or "forbidden", h, p))
    return out


def attempt(host: str, port: int, timeout: float = CONNECT_TIMEOUT) -> tuple[bool, str]:
    """One TCP connect: (True, note) when it connected, (False, why) when refused."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True, "accepted a TCP connection"
    except OSError as exc:
        return False, f"{type(exc).__name__}: {exc}"[:80]


def wait(env: Mapping[str, str], say: Callable[[str], None],
         clock: Callable[[], float] = time.monotonic,
         sleep: Callable[[float], None] = time.sleep) -> bool:
    """Wait until every target is refused in one round; True then, False at the deadline.

    Args:
        env: the process environment (targets and ``MLAB_START_GATE_SECONDS``).
        say: prints one log line.
        clock, sleep: time sources (seconds).

    Raises:
        ValueError: a malformed MLAB_EGRESS_CHECK entry or MLAB_START_GATE_SECONDS.
    """
    todo = targets(env)
    if not todo:
        say("no forbidden egress to check (no API server, no MLAB_EGRESS_CHECK): starting")
        return True
    try:
        limit = float(env.get("MLAB_START_GATE_SECONDS", "") or DEFAULT_SECONDS)
    except ValueError:
        raise ValueError("MLAB_START_GATE_SECONDS must be a number of seconds") from None
    start = clock()
    rounds = 0
    while True:
        rounds += 1
        seen = [(label, h, p, *attempt(h, p)) for label, h, p in todo]
        open_ = [(label, h, p, note) for label, h, p, accepted, note in seen if accepted]
        if not open_:
            how = "; ".join(f"{label} {h}:{p} ({note})" for label, h, p, _a, note in seen)
            say(f"forbidden egress refused after {clock() - start:.1f} s ({rounds} round(s)): "
                f"{how}; starting user sessions")
            return True
        label, h, p, note = open_[0]
        if clock() - start >= limit:
            say(f"error: {label} {h}:{p} still {note} after {limit:.0f} s: the network policy "
                "does not govern this HomePod; no user session is started")
            return False
        if rounds == 1 or rounds % 10 == 0:
            how = "; ".join(f"{lb} {hh}:{pp} {nt}" for lb, hh, pp, nt in open_)
            say(f"{how} (network policy not in force yet): waiting")
        sleep(RETRY_SECONDS)


def main() -> int:
    """Entry point: 0 when the sessions may start, 1 when not, 2 on bad settings."""
    def say(line: str) -> None:
        print(PREFIX + line, file=sys.stderr, flush=True)

    try:
        return 0 if wait(os.environ, say) else 1
    except ValueError as exc:
        say(f"error: {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
