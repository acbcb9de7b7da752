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
import logging

from starlette.websockets import WebSocket, WebSocketDisconnect

from mlab.portal import rfb
from mlab.portal.audit import audit
from mlab.portal.config import PortalConfig

log = logging.getLogger(__name__)

READ_SIZE = 256 * 1024
"""Bytes read from the VNC server per WebSocket message (a full 1280x800 raw frame is 4 MB)."""
STREAM_LIMIT = 4 * 1024 * 1024
"""The upstream reader's buffer (asyncio's default, 64 KiB, pauses the socket after 128 KiB
and splits every frame into many small WebSocket messages)."""
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
    writer: asyncio.StreamWriter | None = None
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(backend.host, backend.port, limit=STREAM_LIMIT), timeout=10)
        upstream = writer

        async def write_up(data: bytes) -> None:
            upstream.write(data)
            await upstream.drain()

        await rfb.client_handshake(reader.readexactly, write_up, config.vnc_password(user))
        pending = bytearray()

        async def read_browser(n: int) -> bytes:
            while len(pending) < n:
                pending.extend(await _receive(ws))
            out = bytes(pending[:n])
            del pending[:n]
            return out

        await rfb.server_handshake(read_browser, ws.send_bytes)
        if pending:
            await write_up(bytes(pending))
        audit(config, "desktop-open", user=user, backend=f"{backend.host}:{backend.port}")
        await _relay(ws, reader, writer)
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, rfb.HandshakeError) as exc:
        audit(config, "desktop-error", user=user, error=str(exc) or type(exc).__name__)
        with contextlib.suppress(Exception):
            await ws.close(code=INTERNAL_ERROR)
    except WebSocketDisconnect:
        pass
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def _receive(ws: WebSocket) -> bytes:
    message = await ws.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    data = message.get("bytes")
    if data is None:
        data = (message.get("text") or "").encode("latin-1")
    return bytes(data)


async def _relay(ws: WebSocket, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    async def up() -> None:
        while True:
            writer.write(await _receive(ws))
            await writer.drain()

    async def down() -> None:
        while True:
            data = await reader.read(READ_SIZE)
            if not data:
                return
            await ws.send_bytes(data)

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
