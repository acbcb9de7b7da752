"""The verify probe program's ``http`` kind waits TCP_TIMEOUT for the connection and
HTTP_TIMEOUT for the answer (mlab.probing.podman): a dropped SYN is "blocked" after the
first, as a ``tcp`` probe is, not after the second. Before, HomePod -> https://code...
(dropped by the site's rules) waited the whole 20 s, most of `mlab verify`'s 25 s.

Real sockets on loopback, the program run as `mlab verify` runs it on the host. A dropped
SYN without a firewall: a listener with ``listen(0)`` whose one-slot accept queue is full
drops every further SYN (Linux, net.ipv4.tcp_abort_on_overflow=0).
"""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import sys
import threading
import time

from mlab.probing.podman import PROBE_PROGRAM


def _probe(kind: str, host: str, tcp: float, http_s: float) -> tuple[list[str], float]:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", PROBE_PROGRAM, json.dumps([[kind, host, 0]]),
                           str(tcp), str(http_s)], capture_output=True, text=True, timeout=120,
                          check=True)
    return json.loads(proc.stdout)[0], time.monotonic() - start


def test_a_dropped_syn_is_blocked_after_the_tcp_time_out() -> None:
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        port = full.getsockname()[1]
        queued: list[socket.socket] = []
        hangs = False
        try:
            # Fill the queue until a connection attempt hangs (its SYNs are dropped).
            while not hangs and len(queued) < 8:
                s = socket.socket()
                s.settimeout(1)
                try:
                    s.connect(("127.0.0.1", port))
                    queued.append(s)
                except TimeoutError:
                    s.close()
                    hangs = True
            assert hangs, "the full accept queue did not drop a SYN: no test"
            state, took = _probe("http", f"http://127.0.0.1:{port}/", 1.5, 30)
            assert state[0] == "blocked" and "timed out" in state[1], state
            assert took < 10, f"{took:.1f} s: the connection waited the HTTP time-out"
        finally:
            for s in queued:
                s.close()


def test_a_slow_answer_still_has_the_http_time_out() -> None:
    """The answer may take longer than TCP_TIMEOUT (the Airlock's download from PyPI)."""

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            time.sleep(2.5)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        state, took = _probe("http", f"http://127.0.0.1:{server.server_port}/", 1.0, 30)
    finally:
        server.shutdown()
        server.server_close()
    assert state == ["answered", "HTTP 204"], state
    assert took >= 2.5
