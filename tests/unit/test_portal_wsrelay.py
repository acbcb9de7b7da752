"""The portal's copy-free binary frames: headers equal to the websockets library's own
frames (RFC 6455 5.2), and a real uvicorn server with the protocol class delivers every
size intact to a real WebSocket client (websockets), text and close still the library's."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket
from websockets.asyncio.client import connect
from websockets.frames import Frame, Opcode

from mlab.portal.wsrelay import RelayWebSocketProtocol, frame_header

SIZES = [0, 1, 125, 126, 65535, 65536, 300_000]


@pytest.mark.parametrize("size", SIZES)
def test_header_is_the_librarys(size: int) -> None:
    payload = b"\x07" * size
    serialized = Frame(Opcode.BINARY, payload).serialize(mask=False)
    assert frame_header(size) + payload == serialized


def test_header_rejects_impossible_lengths() -> None:
    with pytest.raises(ValueError, match="2\\*\\*63"):
        frame_header(-1)


def test_uvicorn_with_the_protocol_delivers_every_size(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlab.portal import wsrelay

    payloads = [os.urandom(n) for n in SIZES]
    headers: list[int] = []
    monkeypatch.setattr(wsrelay, "frame_header",
                        lambda n: headers.append(n) or frame_header(n))  # type: ignore[func-returns-value]

    async def endpoint(ws: WebSocket) -> None:
        await ws.accept()
        for data in payloads:
            await ws.send_bytes(memoryview(data))  # the relay sends memoryview slices too
        await ws.send_text("done")
        await ws.close(code=1000)

    app = Starlette(routes=[WebSocketRoute("/ws", endpoint)])

    async def main() -> list[object]:
        sock = socket.create_server(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, ws=RelayWebSocketProtocol, lifespan="off",
                                               log_config=None, ws_per_message_deflate=False))
        task = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            while not server.started:
                await asyncio.sleep(0.01)
            async with connect(f"ws://127.0.0.1:{port}/ws", max_size=None) as client:
                return [await client.recv() for _ in range(len(payloads) + 1)]
        finally:
            server.should_exit = True
            await task

    got = asyncio.run(main())
    assert got[:-1] == payloads
    assert got[-1] == "done"
    assert headers == SIZES  # every binary message took the copy-free path


def test_malloc_tuning_applies_on_glibc() -> None:
    import platform

    from mlab.portal.malloc_tuning import keep_freed_heap

    assert platform.libc_ver()[0] == "glibc"  # Debian, the image and the hosts
    assert keep_freed_heap() is True
