"""noVNC's way into a TLS-only VNC server: a loopback relay that speaks VeNCrypt upstream.

With ``tls`` (docs/egress.md "Encryption in transit") Xtigervnc offers only VeNCrypt
X509Vnc: TLS with the desktop's certificate, then VncAuth inside it. A browser cannot
layer TLS inside a WebSocket, so noVNC offers no X509 subtype. websockify (which itself
serves noVNC over HTTPS/WSS) therefore dials this relay on 127.0.0.1 instead of the VNC
server. The relay:

1. connects to the VNC server, picks security type 19 (VeNCrypt) and subtype 261 (X509Vnc),
   and completes the TLS handshake;
2. greets the browser as an RFB 3.8 server offering only VncAuth (type 2);
3. from then on passes bytes through unchanged: the VNC server's VncAuth challenge, the
   browser's answer (the password is never seen here in any form but that DES answer),
   the SecurityResult and the session, all inside TLS upstream.

So the browser-to-pod hop is WSS and the pod-internal hop is TLS; nothing the user types
leaves the pod in clear. The relay listens on loopback only (nothing outside the pod
reaches it), runs as the desktop's user, and does not check the VNC server's certificate:
it dials 127.0.0.1 inside the pod, where only the user's own processes listen.

Source of the rules: RFC 6143 sections 7.1.1-7.1.3 and 7.2.2; VeNCrypt as TigerVNC speaks
it (rfbproto, "VeNCrypt": version 0.2, a u8 count of u32 subtypes, a u32 choice, a u8 ack;
subtype 261 = X509Vnc).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ssl
import struct
import sys

VERSION_38 = b"RFB 003.008\n"
SEC_VNC_AUTH = 2
SEC_VENCRYPT = 19
X509_VNC = 261
"""VeNCrypt subtype: X.509 TLS, then VncAuth (TigerVNC's ``X509Vnc``)."""
LISTEN_PORT = 5901
"""The relay's loopback port (websockify's target with tls)."""


class RelayError(Exception):
    """The VNC server broke the VeNCrypt handshake (the message says which step)."""


async def _reason(reader: asyncio.StreamReader) -> str:
    (length,) = struct.unpack(">I", await reader.readexactly(4))
    return (await reader.readexactly(min(length, 4096))).decode("utf-8", "replace")


async def vencrypt_upstream(host: str, port: int
                            ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to the VNC server and complete VeNCrypt X509Vnc up to the inner VncAuth.

    Returns:
        The stream pair, now inside TLS; the next bytes are the VncAuth challenge.

    Raises:
        RelayError: the server is not RFB 3.8, offers no VeNCrypt or X509Vnc, or refuses.
        OSError: the connection or the TLS handshake failed.
    """
    reader, writer = await asyncio.open_connection(host, port)
    version = await reader.readexactly(12)
    if not version.startswith(b"RFB 003.") or version < VERSION_38:
        raise RelayError(f"VNC server speaks {version!r}, not RFB 3.8")
    writer.write(VERSION_38)
    (count,) = await reader.readexactly(1)
    if count == 0:
        raise RelayError(f"VNC server refused: {await _reason(reader)}")
    types = await reader.readexactly(count)
    if SEC_VENCRYPT not in types:
        raise RelayError(f"VNC server offers security types {list(types)}, not VeNCrypt")
    writer.write(bytes([SEC_VENCRYPT]))
    major, minor = await reader.readexactly(2)
    if (major, minor) < (0, 2):
        raise RelayError(f"VNC server speaks VeNCrypt {major}.{minor}, not 0.2")
    writer.write(bytes([0, 2]))
    (ok,) = await reader.readexactly(1)
    if ok != 0:
        raise RelayError("VNC server refused VeNCrypt 0.2")
    (n,) = await reader.readexactly(1)
    subtypes = struct.unpack(f">{n}I", await reader.readexactly(4 * n))
    if X509_VNC not in subtypes:
        raise RelayError(f"VNC server offers VeNCrypt subtypes {list(subtypes)}, not X509Vnc")
    writer.write(struct.pack(">I", X509_VNC))
    (ack,) = await reader.readexactly(1)
    if ack != 1:
        raise RelayError("VNC server refused subtype X509Vnc")
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # loopback inside the pod (module docstring)
    await writer.start_tls(ctx, server_hostname=host)
    return reader, writer


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter,
                 host: str, port: int) -> None:
    """Relay one browser connection (websockify's) to the VNC server."""
    try:
        try:
            up_r, up_w = await vencrypt_upstream(host, port)
        except (RelayError, OSError, asyncio.IncompleteReadError) as exc:
            reason = f"mlab vnc-relay: {exc}".encode()[:1024]
            client_w.write(VERSION_38)
            with contextlib.suppress(Exception):
                await client_r.readexactly(12)
                client_w.write(b"\0" + struct.pack(">I", len(reason)) + reason)
                await client_w.drain()
            print(f"mlab vnc-relay: {exc}", file=sys.stderr, flush=True)
            return
        client_w.write(VERSION_38)
        version = await client_r.readexactly(12)
        if version != VERSION_38:
            up_w.close()
            return
        client_w.write(bytes([1, SEC_VNC_AUTH]))
        (chosen,) = await client_r.readexactly(1)
        if chosen != SEC_VNC_AUTH:
            up_w.close()
            return
        await asyncio.gather(_pipe(client_r, up_w), _pipe(up_r, client_w))
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        with contextlib.suppress(Exception):
            client_w.close()


async def serve(listen_port: int, host: str, port: int) -> None:
    """Accept on 127.0.0.1:``listen_port`` until cancelled."""
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, host, port), "127.0.0.1", listen_port)
    print(f"mlab vnc-relay: 127.0.0.1:{listen_port} -> VeNCrypt X509Vnc {host}:{port}",
          file=sys.stderr, flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    """``python -m mlab.homepod.vncrelay [--listen PORT] [--vnc PORT]``."""
    parser = argparse.ArgumentParser(prog="mlab.homepod.vncrelay", description=__doc__.split(
        "\n", 1)[0])
    parser.add_argument("--listen", type=int, default=LISTEN_PORT)
    parser.add_argument("--vnc", type=int, default=5900)
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args.listen, "127.0.0.1", args.vnc))
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
