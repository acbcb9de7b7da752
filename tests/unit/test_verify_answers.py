"""`mlab verify` counts an allowed edge only when the service answers (issue 10, point 2).

The parsers are table-driven with the bytes the HomePod's servers send (Xtigervnc's and
OpenSSH's banners, websockify's page; xrdp's Connection Confirm exactly as captured from a
running HomePod on 2026-12-05); the probe program runs for real on the host against
listeners on loopback: a port nobody listens on (refused), one that accepts and says nothing,
one that answers like the upstream proxy of these machines (HTTP 403), and one that resets.
"""

from __future__ import annotations

import errno
import socket
import ssl
import struct
import threading
import urllib.error
from collections.abc import Callable, Iterator

import pytest

from mlab.probing import answers
from mlab.probing.podman import _run_in
from mlab.verify.matrix import Probe, host_kind, observed

# The Connection Confirm xrdp sends to `answers.request("rdp")` (captured from a HomePod).
XRDP_CC = bytes.fromhex("030000130ed000001234000201080001000000")


@pytest.mark.parametrize(
    ("protocol", "data", "expected"),
    [
        ("rfb", b"RFB 003.008\n", "RFB 003.008"),
        ("rfb", b"RFB 003.0", None),
        ("rfb", b"HTTP/1.1 403 Forbidden\r\n\r\n", None),
        ("ssh", b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n",
         "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3"),
        ("ssh", b"SSH-2.0-Open", None),
        ("ssh", b"HTTP/1.1 403 Forbidden\r\n", None),
        ("rdp", XRDP_CC, "X.224 Connection Confirm (RDP negotiation response, protocol 1)"),
        ("rdp", XRDP_CC[:10], None),
        ("rdp", bytes.fromhex("0300000b06d00000123400"), "X.224 Connection Confirm"),
        ("rdp", bytes.fromhex("0300000b06e00000000000"), None),  # a request, not a confirm
        ("rdp", b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n", None),
        ("novnc", b"HTTP/1.1 200 OK\r\nServer: WebSockify\r\n\r\n<title>noVNC</title>",
         "HTTP 200 noVNC page"),
        ("novnc", b"HTTP/1.1 403 Forbidden\r\n\r\nnoVNC", None),
        ("novnc", b"HTTP/1.1 200 OK\r\n\r\n<html>proxy</html>", None),
    ],
    ids=["rfb", "rfb-short", "rfb-proxy", "ssh", "ssh-short", "ssh-proxy", "rdp-nego",
         "rdp-short", "rdp-plain", "rdp-request", "rdp-proxy", "novnc", "novnc-403",
         "novnc-other-page"],
)
def test_recognise(protocol: str, data: bytes, expected: str | None) -> None:
    assert answers.recognise(protocol, data) == expected


def test_rdp_request_is_an_x224_connection_request_with_negotiation() -> None:
    req = answers.request("rdp", "h")
    assert req[:2] == b"\x03\x00" and struct.unpack(">H", req[2:4])[0] == len(req) == 19
    assert req[4] == 14 and req[5] == 0xE0  # length indicator, CR
    assert req[11:13] == b"\x01\x00" and struct.unpack("<I", req[15:19])[0] == 3


def _ssl_error() -> ssl.SSLError:
    """What a TLS handshake with a plain HTTP server raises (made by a real handshake)."""
    import threading

    server = socket.create_server(("127.0.0.1", 0))

    def answer() -> None:
        conn, _ = server.accept()
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        conn.close()

    threading.Thread(target=answer, daemon=True).start()
    ctx = ssl.create_default_context()
    try:
        with socket.create_connection(server.getsockname(), timeout=10) as raw:
            ctx.wrap_socket(raw, server_hostname="localhost")
    except ssl.SSLError as exc:
        return exc
    finally:
        server.close()
    raise AssertionError("a plain HTTP server completed a TLS handshake")


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), "refused"),
        (TimeoutError("timed out"), "timed out"),
        (socket.timeout("timed out"), "timed out"),
        (ConnectionResetError(errno.ECONNRESET, "reset"), "reset"),
        (OSError(errno.EHOSTUNREACH, "No route to host"), "unreachable (No route to host)"),
        (OSError(errno.ENETUNREACH, "Network is unreachable"),
         "unreachable (Network is unreachable)"),
        (socket.gaierror(-2, "Name or service not known"),
         "name not resolved (Name or service not known)"),
        (urllib.error.URLError(ConnectionRefusedError(errno.ECONNREFUSED, "refused")),
         "refused"),
        (urllib.error.URLError(_ssl_error()), "TLS failed (WRONG_VERSION_NUMBER)"),
    ],
    ids=["refused", "timeout", "socket-timeout", "reset", "host-unreachable",
         "net-unreachable", "dns", "urllib-refused", "https-to-plain-http"],
)
def test_failure_names(exc: BaseException, expected: str) -> None:
    assert answers.failure(exc) == expected


def test_host_kind_of_published_ports() -> None:
    assert host_kind("vnc", "127.0.0.1", 5900) == ("rfb", "127.0.0.1")
    assert host_kind("rdp", "127.0.0.1", 3389) == ("rdp", "127.0.0.1")
    assert host_kind("novnc", "127.0.0.1", 7030) == ("novnc", "127.0.0.1")
    assert host_kind("ssh", "127.0.0.1", 22) == ("ssh", "127.0.0.1")
    assert host_kind("http", "127.0.4.1", 80) == ("http", "http://127.0.4.1:80/")


@pytest.mark.parametrize(
    ("expected", "state", "seen"),
    [(True, "answered", True), (True, "connected", False), (True, "blocked", False),
     (False, "answered", True), (False, "connected", True), (False, "blocked", False)],
)
def test_observed(expected: bool, state: str, seen: bool) -> None:
    assert observed(expected, state) is seen


def _server(handler: Callable[[socket.socket], None]) -> Iterator[int]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    stop = threading.Event()

    def loop() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            with conn:
                handler(conn)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield srv.getsockname()[1]
    stop.set()
    thread.join()
    srv.close()


@pytest.fixture
def silent() -> Iterator[int]:
    yield from _server(lambda conn: (conn.recv(1024), threading.Event().wait(4)))


@pytest.fixture
def proxy403() -> Iterator[int]:
    def answer(conn: socket.socket) -> None:
        conn.settimeout(1)
        try:
            conn.recv(1024)
        except OSError:
            pass
        conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    yield from _server(answer)


@pytest.fixture
def resetting() -> Iterator[int]:
    def reset(conn: socket.socket) -> None:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    yield from _server(reset)


@pytest.fixture
def rfb() -> Iterator[int]:
    yield from _server(lambda conn: conn.sendall(b"RFB 003.008\n"))


def test_the_probe_program_on_the_host(silent: int, proxy403: int, resetting: int,
                                       rfb: int) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = closed.getsockname()[1]
    probes = [
        Probe("host", "", "dead", "rfb", "127.0.0.1", dead, True),
        Probe("host", "", "silent", "ssh", "127.0.0.1", silent, True),
        Probe("host", "", "proxy", "rdp", "127.0.0.1", proxy403, True),
        Probe("host", "", "proxy page", "novnc", "127.0.0.1", proxy403, True),
        Probe("host", "", "vnc", "rfb", "127.0.0.1", rfb, True),
        Probe("host", "", "leak", "ssh", "127.0.0.1", proxy403, False),
        Probe("host", "", "closed", "ssh", "127.0.0.1", dead, False),
    ]
    results = {r.probe.target: r for r in _run_in("", probes)}
    assert results["dead"].detail == "refused" and not results["dead"].ok
    assert results["silent"].detail.startswith("connected, but no ssh answer")
    assert not results["silent"].ok
    assert "no rdp answer (got b'HTTP/1.1 403" in results["proxy"].detail
    assert not results["proxy"].ok and not results["proxy page"].ok
    assert results["vnc"].ok and results["vnc"].detail == "RFB 003.008"
    assert not results["leak"].ok and results["leak"].observed
    assert results["closed"].ok and results["closed"].detail == "refused"


def test_a_reset_is_named(resetting: int) -> None:
    (result,) = _run_in("", [Probe("host", "", "rst", "rfb", "127.0.0.1", resetting, True)])
    assert not result.ok
    # The RST may arrive before connect() reports success (then the connect itself fails).
    assert result.detail in ("reset", "connected, then reset",
                             "connected, but no rfb answer (the connection sent nothing)")
