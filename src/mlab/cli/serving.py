"""The listening socket of the servers MLab runs (``code-service serve``, ``portal serve``)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import sys
from typing import TYPE_CHECKING

from mlab.errors import UsageError

if TYPE_CHECKING:
    import uvicorn


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


TLS_RECHECK_S = 30.0
"""Seconds between two looks at an HTTPS server's certificate and key files. A Kubernetes
Secret volume shows a renewed Secret within about a minute (the kubelet's sync period plus
its cache, https://kubernetes.io/docs/concepts/configuration/secret/#using-secrets-as-files-from-a-pod)."""

log = logging.getLogger("mlab.serving")


def _stamp(*paths: str) -> tuple[tuple[int, int, int], ...] | None:
    """Inode, mtime (ns) and size of each path, symlinks followed (a Secret volume swaps
    its ``..data`` link); None when one is missing."""
    try:
        return tuple((s.st_ino, s.st_mtime_ns, s.st_size) for s in map(os.stat, paths))
    except OSError:
        return None


async def keep_tls_fresh(context: ssl.SSLContext, cert: str, key: str,
                         every: float = TLS_RECHECK_S) -> None:
    """Load ``cert`` and ``key`` into ``context`` again whenever either file changes, so a
    renewed certificate (a Secret updated by cert-manager or by hand) is served without a
    restart. Runs until cancelled.

    ``SSLContext.load_cert_chain`` replaces the pair for handshakes that start afterwards;
    open connections keep theirs. A pair that does not load (the key of another
    certificate while a copy is half done, a file missing) is logged once per change and
    the old pair stays served (it is tried on a scratch context first: a failed
    ``load_cert_chain`` leaves the new certificate with the old key, measured here); the
    next change is tried again.

    Args:
        context: the server's context (uvicorn's ``Config.ssl`` after ``Config.load()``).
        cert: PEM certificate chain file; key: its PEM private key file.
        every: seconds between looks (:data:`TLS_RECHECK_S`).
    """
    seen = _stamp(cert, key)
    while True:
        await asyncio.sleep(every)
        now = _stamp(cert, key)
        if now is None or now == seen:
            continue
        seen = now
        try:
            # A pair that fails half-way leaves a context with the new certificate and the
            # old key, which fails every handshake: try it on a scratch context first.
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
            context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            log.warning("%s: the changed certificate or key does not load (%s); still "
                        "serving the previous one", cert, exc)
        else:
            log.info("%s: serving the renewed certificate", cert)


def run_servers(*pairs: tuple[uvicorn.Server, socket.socket],
                tls_recheck: float = TLS_RECHECK_S) -> None:
    """Run uvicorn servers of one app in one event loop, each on its socket, until one stops
    (SIGTERM or SIGINT stops all: uvicorn's handlers set ``should_exit``); each HTTPS
    server's certificate and key are watched by :func:`keep_tls_fresh`.

    Source of the pattern: uvicorn's ``Server.serve(sockets=...)`` (uvicorn.server). The
    app's lifespan runs in the servers whose config says ``lifespan="on"`` (one of them).

    Raises:
        whatever a server's ``serve`` raised.
    """
    async def main() -> None:
        watchers = []
        for server, _ in pairs:
            cfg = server.config
            if not cfg.loaded:
                cfg.load()  # serve() would otherwise load it; the watcher needs cfg.ssl
            if cfg.ssl is not None and cfg.ssl_certfile and cfg.ssl_keyfile:
                watchers.append(asyncio.create_task(keep_tls_fresh(
                    cfg.ssl, str(cfg.ssl_certfile), str(cfg.ssl_keyfile), tls_recheck)))
        tasks = [asyncio.create_task(server.serve(sockets=[sock])) for server, sock in pairs]
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for server, _ in pairs:
            server.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
        for watcher in watchers:
            watcher.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        for task in done:
            task.result()

    config = pairs[0][0].config
    factory = getattr(config, "get_loop_factory", None)  # uvicorn >= 0.36
    if factory is None:  # pyproject allows uvicorn >= 0.29
        config.setup_event_loop()
        asyncio.run(main())
        return
    from uvicorn._compat import asyncio_run

    asyncio_run(main(), loop_factory=factory())
