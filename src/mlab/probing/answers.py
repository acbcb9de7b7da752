"""What each service says when it answers, and how a failed connection is named (pure).

``mlab verify`` counts an allowed edge only when the service itself answers: on these
machines a TCP connect proves nothing (an upstream proxy may accept a connection to an
address that is not routed locally and answer HTTP 403; docs/local.md). Each protocol has a request
(possibly empty: the server speaks first) and a parser that recognises the answer:

=========  ==========================================  ========================================
protocol   request                                     answer recognised
=========  ==========================================  ========================================
``rfb``    none                                        ``RFB xxx.yyy\\n`` (RFC 6143 section 7.1.1)
``ssh``    none                                        ``SSH-2.0-...`` (RFC 4253 section 4.2)
``rdp``    X.224 Connection Request with an RDP        TPKT + X.224 Connection Confirm (CDT
           Negotiation Request (MS-RDPBCGR 2.2.1.1)    0xD0), MS-RDPBCGR 2.2.1.2
``novnc``  ``GET /vnc.html``                           HTTP 200 whose body names noVNC
=========  ==========================================  ========================================

(HTTP to the code service goes through ``urllib`` in the probe program: any HTTP status is an
answer there.) A blocked attempt is named by :func:`failure`: ``refused`` (RST to the SYN: a
REJECT rule, or nothing listens), ``timed out`` (a DROP), ``reset`` (accepted, then reset),
``unreachable`` (ICMP host/network unreachable, no route), ``TLS failed`` (HTTPS to a
plain HTTP port: the code service's other scheme, ``tls``).

This module uses only the standard library and has no I/O: the probe program that runs in
the containers (python3 of the image) includes its source, so host and containers parse
answers with the same code.
"""

from __future__ import annotations

import errno
import socket
import ssl
import struct

PROTOCOLS = ("rfb", "ssh", "rdp", "novnc")
"""The protocols this module knows (probe kinds)."""
MAX_ANSWER = 256 * 1024
"""Bytes read at most while waiting for an answer to be recognised."""


def request(protocol: str, host: str) -> bytes:
    """The bytes to send first (empty when the server speaks first).

    Args:
        protocol: one of :data:`PROTOCOLS`.
        host: the name or address connected to (the HTTP Host header).

    Raises:
        ValueError: unknown protocol.
    """
    if protocol in ("rfb", "ssh"):
        return b""
    if protocol == "rdp":
        # RDP Negotiation Request: type 1, flags 0, length 8, requested protocols
        # PROTOCOL_SSL | PROTOCOL_HYBRID (3) (MS-RDPBCGR 2.2.1.1.1).
        neg = struct.pack("<BBHI", 0x01, 0x00, 8, 0x00000003)
        # X.224 Connection Request TPDU (ITU-T X.224 13.3): LI, CR|CDT=0xE0, DST-REF 0,
        # SRC-REF 0, class 0, then the variable part.
        x224 = bytes([6 + len(neg), 0xE0, 0, 0, 0, 0, 0]) + neg
        # TPKT header (RFC 1006): version 3, reserved, total length.
        return struct.pack(">BBH", 3, 0, 4 + len(x224)) + x224
    if protocol == "novnc":
        return (f"GET /vnc.html HTTP/1.0\r\nHost: {host}\r\nUser-Agent: mlab-verify\r\n"
                f"Connection: close\r\n\r\n").encode()
    raise ValueError(f"unknown protocol {protocol!r}")


def recognise(protocol: str, data: bytes) -> str | None:
    """Name the answer when ``data`` (everything read so far) is the service's, else None.

    Args:
        protocol: one of :data:`PROTOCOLS`.
        data: the bytes received so far.

    Returns:
        A short description (``RFB 003.008``, ``SSH-2.0-OpenSSH_9.2p1``, ``X.224 Connection
        Confirm``, ``HTTP 200 noVNC page``) or None while the answer is incomplete or wrong.
    """
    if protocol == "rfb":
        if len(data) >= 12 and data[:4] == b"RFB " and data[7:8] == b"." and data[11:12] == b"\n":
            return data[:11].decode("ascii", "replace")
        return None
    if protocol == "ssh":
        line = data.split(b"\n", 1)[0].rstrip(b"\r")
        if b"\n" in data and line.startswith(b"SSH-"):
            return line[:60].decode("ascii", "replace")
        return None
    if protocol == "rdp":
        if len(data) < 11 or data[0] != 3:
            return None
        total = struct.unpack(">H", data[2:4])[0]
        if len(data) < total or data[5] & 0xF0 != 0xD0:
            return None
        detail = "X.224 Connection Confirm"
        if total >= 19 and data[11] == 0x02:  # RDP Negotiation Response (2.2.1.2.1)
            chosen = struct.unpack("<I", data[15:19])[0]
            detail += f" (RDP negotiation response, protocol {chosen})"
        elif total >= 19 and data[11] == 0x03:  # RDP Negotiation Failure (2.2.1.2.2)
            detail += " (RDP negotiation failure)"
        return detail
    if protocol == "novnc":
        head, _, body = data.partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0].split()
        if len(status) >= 2 and status[0].startswith(b"HTTP/") and status[1] == b"200" \
                and b"noVNC" in body:
            return "HTTP 200 noVNC page"
        return None
    raise ValueError(f"unknown protocol {protocol!r}")


def describe(protocol: str, data: bytes) -> str:
    """What was received instead of an answer (for the detail column)."""
    if not data:
        return f"connected, but no {protocol} answer (the connection sent nothing)"
    return f"connected, but no {protocol} answer (got {data[:40]!r})"


_UNREACHABLE = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL}


def failure(exc: BaseException) -> str:
    """Name a failed attempt: refused, timed out, reset, unreachable, or the error itself.

    Args:
        exc: what ``socket.create_connection`` (or a later read, or ``urlopen``) raised.

    Returns:
        ``refused``, ``timed out``, ``reset``, ``unreachable (...)``, ``TLS failed (...)``,
        ``name not resolved (...)`` or ``TypeName: message``.
    """
    reason = getattr(exc, "reason", None)  # urllib's URLError wraps the socket's error
    if isinstance(reason, BaseException):
        exc = reason
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ssl.SSLError):  # TLS spoken to a plain port, or the reverse
        return f"TLS failed ({exc.reason or exc})"[:120]
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(exc, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        return "reset"
    if isinstance(exc, socket.gaierror):
        return f"name not resolved ({exc.strerror or exc})"
    if isinstance(exc, OSError) and exc.errno in _UNREACHABLE:
        return f"unreachable ({exc.strerror})"
    return f"{type(exc).__name__}: {exc}"[:120]
