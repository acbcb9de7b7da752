"""uvicorn's WebSocket protocol (``websockets-sansio``) with a copy-free path for the
desktop's binary messages.

Why: the desktop relay sends each chunk the VNC server gave (up to 256 KiB) as one binary
message. The library path builds every frame in a new buffer (header + payload copied
together, websockets' ``Frame.serialize``) before the socket write; at full-screen frame
rates those copies were a third of the portal's user CPU per byte (benchmarks/bench_portal.py).
Here a binary message on an open connection without extensions goes out as its 2-10 byte
header and the payload itself, in one ``writelines`` (a ``writev(2)``); everything else
(handshake, text, close, pings, flow control) stays the library's.

The frame is RFC 6455 section 5.2's, sent by a server: FIN set, opcode 2 (binary), no
mask, a 7-bit, 16-bit or 64-bit payload length.
"""

from __future__ import annotations

import struct
from typing import Any

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

FIN_BINARY = 0x82
"""FIN bit and opcode 2 (binary frame), RFC 6455 5.2."""


def frame_header(length: int) -> bytes:
    """The header of an unmasked, final binary frame of ``length`` payload bytes.

    Raises:
        ValueError: ``length`` is negative or at least 2**63 (RFC 6455 5.2).
    """
    if length < 0 or length >= 1 << 63:
        raise ValueError(f"a WebSocket payload is 0 to 2**63-1 bytes, not {length}")
    if length < 126:
        return bytes((FIN_BINARY, length))
    if length < 1 << 16:
        return struct.pack("!BBH", FIN_BINARY, 126, length)
    return struct.pack("!BBQ", FIN_BINARY, 127, length)


class RelayWebSocketProtocol(WebSocketsSansIOProtocol):
    """``WebSocketsSansIOProtocol`` whose binary sends skip the frame copy (module doc)."""

    async def send(self, message: Any) -> None:
        data = message.get("bytes") if message["type"] == "websocket.send" else None
        if (data is None or not self.handshake_complete or self.close_sent
                or self.initial_response is not None or self.conn.extensions
                or self.conn.state is not State.OPEN):
            await super().send(message)
            return
        await self.writable.wait()  # the library's flow control: wait while paused
        if self.disconnected or self.transport.is_closing():
            raise ClientDisconnected()
        self.transport.writelines((frame_header(len(data)), data))
