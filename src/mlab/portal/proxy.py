"""The desktop WebSocket: noVNC in the browser <-> the portal <-> the user's VNC server.

Security reasoning, next to the code it protects:
- Only the session's own user's desktop: the path names a user, and a session of any
  other user (admins included) is refused before anything connects upstream.
- Cross-site WebSocket hijacking: browsers send cookies with WebSocket handshakes but the
  same-origin policy does not apply to them; the Origin header must be the portal's own.
- The VNC password is read server-side and never sent to the browser; the browser is
  offered RFB security type None by the portal itself (:mod:`mlab.portal.rfb`).

After both handshakes the bytes flow unchanged; each direction is one task, and the first
to finish (a closed tab, a stopped VNC server) ends the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import ssl

from starlette.websockets import WebSocket, WebSocketDisconnect

from mlab.portal import rfb
from mlab.portal.audit import audit
from mlab.portal.config import PortalConfig

log = logging.getLogger(__name__)

QUEUE_HIGH = 16
"""Chunks from the VNC server (each what one read gave, up to 256 KiB with uvloop) that may
wait for the browser before the portal stops reading from the server."""
MESSAGE_MAX = 64 * 1024
"""Largest WebSocket message to the browser; a longer chunk from the VNC server (up to
256 KiB) goes in pieces (memoryview slices, no copy). websockify's size: a client handles a
message only once all of it arrived, so smaller messages keep the pipeline moving. Measured
(benchmarks/bench_portal.py, portal on the host, alternated runs): 1.04 and 1.24 of
websockify's frame rate with 64 KiB messages, 0.88 and 0.95 with whole chunks."""
POLICY_VIOLATION = 1008
INTERNAL_ERROR = 1011


def _origin(ws: WebSocket) -> str | None:
    return ws.headers.get("origin")


async def desktop_socket(ws: WebSocket) -> None:
    """Handle ``/desktop/{user}/websockify``: check, connect, handshake, relay."""
    config: PortalConfig = ws.app.state.config
    user = ws.path_params["user"]
    session = ws.scope.get("session") or {}
    who = session.get("user")
    if who is None or who != user or _origin(ws) != config.origin:
        audit(config, "desktop-denied", user=who, desktop=user, origin=_origin(ws))
        await ws.close(code=POLICY_VIOLATION)
        return
    backend = config.backends.get(user)
    if backend is None:
        await ws.close(code=POLICY_VIOLATION)
        return
    offered = ws.scope.get("subprotocols") or []
    await ws.accept(subprotocol="binary" if "binary" in offered else None)
    upstream: _Upstream | None = None
    try:
        loop = asyncio.get_running_loop()
        _, up = await asyncio.wait_for(
            loop.create_connection(_Upstream, backend.host, backend.port), timeout=10)
        upstream = up
        start_tls = None
        if config.vnc_ca is not None:  # the site's tls: desktops offer VeNCrypt only
            ctx = ssl.create_default_context(cafile=str(config.vnc_ca))
            # A pod address is in no certificate; the chain (the site CA) is what is checked.
            ctx.check_hostname = False
            start_tls = functools.partial(up.start_tls, ctx)
        await rfb.client_handshake(up.read_exactly, up.write, config.vnc_password(user),
                                   start_tls)
        pending = bytearray()

        async def read_browser(n: int) -> bytes:
            while len(pending) < n:
                pending.extend(await _receive(ws))
            out = bytes(pending[:n])
            del pending[:n]
            return out

        await rfb.server_handshake(read_browser, ws.send_bytes)
        if pending:
            await up.write(bytes(pending))
        audit(config, "desktop-open", user=user, backend=f"{backend.host}:{backend.port}")
        await _relay(ws, up)
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, rfb.HandshakeError,
            ssl.SSLError) as exc:
        audit(config, "desktop-error", user=user, error=str(exc) or type(exc).__name__)
        with contextlib.suppress(Exception):
            await ws.close(code=INTERNAL_ERROR)
    except WebSocketDisconnect:
        pass
    finally:
        if upstream is not None:
            upstream.close()


class _Upstream(asyncio.Protocol):
    """The TCP connection to the VNC server, as a protocol: chunks go to a queue as the
    event loop reads them (no StreamReader buffer to copy through), and reading pauses
    while more than :data:`QUEUE_HIGH` chunks wait for the browser (backpressure)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.Transport | None = None
        self.paused = False
        self.leftover = b""
        self._drained = asyncio.Event()
        self._drained.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.queue.put_nowait(data)
        if self.queue.qsize() >= QUEUE_HIGH and not self.paused and self.transport:
            self.transport.pause_reading()
            self.paused = True

    def eof_received(self) -> bool | None:
        self.queue.put_nowait(b"")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.queue.put_nowait(b"")
        self._drained.set()

    def pause_writing(self) -> None:
        self._drained.clear()

    def resume_writing(self) -> None:
        self._drained.set()

    async def chunk(self) -> bytes:
        """The next chunk from the server; b"" at its end."""
        if self.leftover:
            data, self.leftover = self.leftover, b""
            return data
        data = await self.queue.get()
        if self.paused and self.queue.qsize() <= 1 and self.transport:
            self.transport.resume_reading()
            self.paused = False
        return data

    async def read_exactly(self, n: int) -> bytes:
        """Exactly ``n`` bytes (the handshake).

        Raises:
            asyncio.IncompleteReadError: the server closed first.
        """
        buf = b""
        while len(buf) < n:
            data = await self.chunk()
            if not data:
                raise asyncio.IncompleteReadError(buf, n)
            buf += data
        self.leftover = buf[n:]
        return buf[:n]

    async def write(self, data: bytes) -> None:
        """Send to the server, waiting while its socket buffer is full."""
        assert self.transport is not None
        self.transport.write(data)
        await self._drained.wait()

    async def start_tls(self, ctx: ssl.SSLContext) -> None:
        """Turn the connection into TLS (client side), keeping this protocol (VeNCrypt).

        Raises:
            ssl.SSLError, OSError: the handshake failed (an untrusted certificate, too).
        """
        assert self.transport is not None and not self.leftover
        loop = asyncio.get_running_loop()
        tls = await loop.start_tls(self.transport, self, ctx)
        assert tls is not None
        self.transport = tls  # type: ignore[assignment]

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def _receive(ws: WebSocket) -> bytes:
    message = await ws.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    data = message.get("bytes")
    if data is None:
        data = (message.get("text") or "").encode("latin-1")
    return bytes(data)


async def _relay(ws: WebSocket, upstream: _Upstream) -> None:
    async def up() -> None:
        while True:
            await upstream.write(await _receive(ws))

    async def down() -> None:
        while True:
            data = await upstream.chunk()
            if not data:
                return
            if len(data) <= MESSAGE_MAX:
                await ws.send({"type": "websocket.send", "bytes": data})
                continue
            view = memoryview(data)
            for start in range(0, len(data), MESSAGE_MAX):
                await ws.send({"type": "websocket.send", "bytes": view[start:start + MESSAGE_MAX]})

    tasks = [asyncio.create_task(up()), asyncio.create_task(down())]
    done, rest = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in rest:
        task.cancel()
    for task in rest:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    for task in done:
        exc = task.exception()
        if exc is not None and not isinstance(exc, (WebSocketDisconnect, OSError)):
            log.warning("[mlab/portal] desktop relay ended: %s", exc)
    with contextlib.suppress(Exception):
        await ws.close()
