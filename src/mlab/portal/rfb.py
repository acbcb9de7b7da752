"""The RFB (VNC) handshake the portal performs on both sides of its desktop proxy.

The portal stands between the browser (noVNC) and a HomePod's VNC server. Towards the
HomePod it is an RFB client that answers the VncAuth challenge with the user's password,
which it reads server-side; towards the browser it is an RFB server offering only the
security type None. After both handshakes the bytes are passed through unchanged, starting
with the browser's ClientInit. So the browser never sees the VNC password, and the 8-character
VncAuth secret is no longer what guards a desktop: the portal session is.

Source of the rules: RFC 6143 (The Remote Framebuffer Protocol), sections 7.1.1
(ProtocolVersion), 7.1.2 (Security), 7.1.3 (SecurityResult) and 7.2.2 (VNC Authentication:
the 16-byte challenge encrypted with DES, the password as key, truncated or NUL-padded to 8
bytes; implementations reverse the bits of each key byte, as TigerVNC and noVNC do).
Only protocol 3.8 is spoken upstream (TigerVNC's); the browser may answer 3.7 or 3.8.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable

from cryptography.hazmat.primitives.ciphers import Cipher, modes

try:  # cryptography >= 43 keeps DES-family ciphers in the "decrepit" module
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES  # type: ignore[attr-defined,no-redef]

VERSION_38 = b"RFB 003.008\n"
SEC_NONE = 1
SEC_VNC_AUTH = 2
SEC_VENCRYPT = 19
X509_VNC = 261
"""VeNCrypt subtype X509Vnc: TLS with the desktop's certificate, then VncAuth (the only one
a desktop offers with the site's ``tls``; TigerVNC's rfbproto "VeNCrypt")."""

ReadExactly = Callable[[int], Awaitable[bytes]]
Write = Callable[[bytes], Awaitable[None]]


class HandshakeError(Exception):
    """The VNC server or the browser broke the RFB handshake (message says which step)."""


def _reverse_bits(byte: int) -> int:
    return int(f"{byte:08b}"[::-1], 2)


def vnc_auth_response(password: str, challenge: bytes) -> bytes:
    """The VncAuth answer to ``challenge`` (RFC 6143 7.2.2).

    Args:
        password: the VNC password; only its first 8 bytes (UTF-8) count, as in every
            VNC server.
        challenge: the server's 16 random bytes.

    Returns:
        16 bytes: ``challenge`` DES-ECB encrypted with the bit-reversed password as key.

    Raises:
        ValueError: the challenge is not 16 bytes.
    """
    if len(challenge) != 16:
        raise ValueError(f"a VncAuth challenge is 16 bytes, got {len(challenge)}")
    key = password.encode("utf-8")[:8].ljust(8, b"\0")
    key = bytes(_reverse_bits(b) for b in key)
    # Triple DES with K1 = K2 = K3 is single DES.
    enc = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()  # noqa: S305 - RFB mandates DES-ECB
    return enc.update(challenge) + enc.finalize()


async def _reason(read: ReadExactly) -> str:
    (length,) = struct.unpack(">I", await read(4))
    return (await read(min(length, 4096))).decode("utf-8", "replace")


async def client_handshake(read: ReadExactly, write: Write, password: str,
                           start_tls: Callable[[], Awaitable[None]] | None = None) -> None:
    """Authenticate to a VNC server as an RFB 3.8 client, up to (not including) ClientInit.

    Args:
        read: reads exactly n bytes from the server (raises on end of stream).
        write: sends bytes to the server.
        password: the VNC password (used when the server offers VncAuth).
        start_tls: turns the connection into TLS (client side); given, a server that
            offers only VeNCrypt is answered with subtype X509Vnc: version 0.2, the
            subtype, its ack, then TLS, then VncAuth inside it. None: no VeNCrypt.

    Raises:
        HandshakeError: the server is not RFB 3.8, offers neither None nor VncAuth (nor
            VeNCrypt X509Vnc with ``start_tls``), or refuses the password (its reason in
            the message).
    """
    version = await read(12)
    if not version.startswith(b"RFB 003.") or version < VERSION_38:
        raise HandshakeError(f"VNC server speaks {version!r}, not RFB 3.8")
    await write(VERSION_38)
    (count,) = await read(1)
    if count == 0:
        raise HandshakeError(f"VNC server refused the connection: {await _reason(read)}")
    types = await read(count)
    if SEC_VNC_AUTH not in types and SEC_VENCRYPT in types and start_tls is not None:
        await write(bytes([SEC_VENCRYPT]))
        major, minor = await read(2)
        if (major, minor) < (0, 2):
            raise HandshakeError(f"VNC server speaks VeNCrypt {major}.{minor}, not 0.2")
        await write(bytes([0, 2]))
        if (await read(1)) != b"\0":
            raise HandshakeError("VNC server refused VeNCrypt 0.2")
        (n,) = await read(1)
        subtypes = struct.unpack(f">{n}I", await read(4 * n))
        if X509_VNC not in subtypes:
            raise HandshakeError(f"VNC server offers VeNCrypt subtypes {list(subtypes)}, "
                                 "not X509Vnc")
        await write(struct.pack(">I", X509_VNC))
        if (await read(1)) != b"\1":
            raise HandshakeError("VNC server refused VeNCrypt subtype X509Vnc")
        await start_tls()
        challenge = await read(16)
        await write(vnc_auth_response(password, challenge))
    elif SEC_VNC_AUTH in types:
        await write(bytes([SEC_VNC_AUTH]))
        challenge = await read(16)
        await write(vnc_auth_response(password, challenge))
    elif SEC_NONE in types:
        await write(bytes([SEC_NONE]))
    else:
        raise HandshakeError(f"VNC server offers security types {list(types)}, not VncAuth")
    (result,) = struct.unpack(">I", await read(4))
    if result != 0:
        raise HandshakeError(f"VNC server refused the password: {await _reason(read)}")


async def server_handshake(read: ReadExactly, write: Write) -> None:
    """Greet an RFB client (the browser) offering only security type None, up to ClientInit.

    Args:
        read: reads exactly n bytes from the browser.
        write: sends bytes to the browser.

    Raises:
        HandshakeError: the client is not RFB 3.7/3.8 or picks another security type.
    """
    await write(VERSION_38)
    version = await read(12)
    if version not in (b"RFB 003.007\n", VERSION_38):
        raise HandshakeError(f"browser speaks {version!r}, not RFB 3.7 or 3.8")
    await write(bytes([1, SEC_NONE]))
    (chosen,) = await read(1)
    if chosen != SEC_NONE:
        raise HandshakeError(f"browser chose security type {chosen}, only None is offered")
    if version == VERSION_38:  # 3.7 sends no SecurityResult after None (RFC 6143 7.1.3)
        await write(struct.pack(">I", 0))
