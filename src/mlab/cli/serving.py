"""The listening socket of the servers MLab runs (``code-service serve``, ``portal serve``)."""

from __future__ import annotations

import socket
import sys

from mlab.errors import UsageError


def listen(name: str, host: str, port: int, tls: bool, option: str = "--port") -> socket.socket:
    """A TCP socket listening on ``host``:``port`` (0: a free port), announced on stderr as
    ``<name>: listening on http(s)://host:port`` with the port actually bound.

    Raises:
        UsageError: the address cannot be bound (in use, not local, no permission), naming
            ``option`` (``--port``, ``--tls-port``) and the operating system's reason.
    """
    try:
        sock = socket.create_server((host, port), backlog=256)
    except OSError as exc:
        raise UsageError(f"{option} {port}: cannot listen on {host}:{port}: "
                         f"{exc.strerror}") from None
    scheme = "https" if tls else "http"
    print(f"{name}: listening on {scheme}://{host}:{sock.getsockname()[1]}", file=sys.stderr,
          flush=True)
    return sock
