"""Run the podman probe matrix: real connection attempts from inside the running containers.

The matrix is :func:`mlab.verify.matrix.matrix` (pure); :func:`run` executes it: one
``podman exec ... python3 -c`` per source container, all of that source's probes
concurrently, so the whole matrix takes about as long as its slowest blocked probe (a
dropped packet waits for the time-out). The probe program carries the source of
:mod:`mlab.probing.answers`, so host and containers parse answers with the same code.
"""

from __future__ import annotations

import inspect
import json
import socket
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from mlab.podman.plan_file import PlanFile
from mlab.podman.runner import podman_command, podman_env
from mlab.probing import answers
from mlab.verify.matrix import (
    HTTP_TIMEOUT,
    INTERNET_NAME,
    TCP_TIMEOUT,
    HostFacts,
    Probe,
    Result,
    matrix,
    observed,
)

# The program run inside a container and on the host (python3, standard library only; the
# source of `answers` comes first). It reads a JSON list of [kind, host, port] and prints a
# JSON list of [state, detail], state "answered", "connected" (no answer) or "blocked".
_PROGRAM_BODY = r"""
import json, socket, sys, threading, time, urllib.request
TCP, HTTP = float(sys.argv[2]), float(sys.argv[3])
class Unanswered(Exception):
    pass
def tcp(host, port):
    with socket.create_connection((host, port), timeout=TCP):
        return "connected"
def talk(kind, host, port, tls=False):
    s = socket.create_connection((host, port), timeout=TCP)
    data, deadline = b"", time.monotonic() + TCP
    try:
        if tls:  # reachability, not identity: the site CA is not in every container
            import ssl
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            s = ctx.wrap_socket(s, server_hostname=host)
        s.sendall(request(kind, host))
        while len(data) < MAX_ANSWER and time.monotonic() < deadline:
            found = recognise(kind, data)
            if found:
                return found
            s.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            data += chunk
        found = recognise(kind, data)
        if found:
            return found
        raise Unanswered(describe(kind, data))
    except OSError as e:
        raise Unanswered("connected, then " + failure(e))
    finally:
        s.close()
def dns(host, port):
    return "resolved to " + socket.getaddrinfo(host, None)[0][4][0]
def udp_dns(host, port):
    q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + b"".join(
        bytes([len(p)]) + p.encode() for p in "pypi.org".split(".")) + b"\x00\x00\x01\x00\x01"
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(TCP)
    s.sendto(q, (host, port)); s.recvfrom(512)
    return "answered"
def write(path, port):
    import os, tempfile
    fd, name = tempfile.mkstemp(dir=path, prefix=".mlab-verify-")
    os.close(fd); os.unlink(name)
    return "wrote a file"
import http.client, ssl
def connect_within_tcp(address, timeout=None, source_address=None, *args):
    # The connection (to the host, or to a proxy) within TCP seconds, as tcp(): a dropped
    # SYN is "blocked" after TCP, not after the whole HTTP time-out; the answer then has HTTP.
    s = socket.create_connection(address, TCP, source_address, *args)
    s.settimeout(timeout)
    return s
class ConnectWithinTcp:
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self._create_connection = connect_within_tcp
class FastHTTP(ConnectWithinTcp, http.client.HTTPConnection):
    pass
class FastHTTPS(ConnectWithinTcp, http.client.HTTPSConnection):
    pass
class FastHTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req):
        return self.do_open(FastHTTP, req)
class FastHTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req):
        return self.do_open(FastHTTPS, req, context=self._context)
ANY_CERT = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # as talk(): the answer counts, not the certificate
ANY_CERT.check_hostname = False
ANY_CERT.verify_mode = ssl.CERT_NONE
OPENER = urllib.request.build_opener(FastHTTPHandler, FastHTTPSHandler(context=ANY_CERT))
def http(url, port):
    try:
        with OPENER.open(url, timeout=HTTP) as r:
            return "HTTP %d" % r.status
    except urllib.error.HTTPError as e:
        return "HTTP %d" % e.code
KINDS = {"tcp": tcp, "dns": dns, "udp-dns": udp_dns, "http": http, "write": write}
probes = json.loads(sys.argv[1]); out = [None] * len(probes)
def one(i, kind, host, port):
    try:
        if kind in PROTOCOLS:
            out[i] = ["answered", talk(kind, host, port)]
        elif kind.endswith("-tls") and kind[:-4] in PROTOCOLS:
            out[i] = ["answered", talk(kind[:-4], host, port, tls=True)]
        else:
            out[i] = ["answered", KINDS[kind](host, port)]
    except Unanswered as e:
        out[i] = ["connected", str(e)[:160]]
    except Exception as e:
        out[i] = ["blocked", failure(e)]
ts = [threading.Thread(target=one, args=(i, *p)) for i, p in enumerate(probes)]
[t.start() for t in ts]; [t.join() for t in ts]
print(json.dumps(out))
"""
PROBE_PROGRAM = inspect.getsource(answers) + _PROGRAM_BODY


def _run_in(container: str, probes: list[Probe], user: str = "") -> list[Result]:
    """Run ``probes`` in ``container`` (as ``user``), or on the host when container is ''."""
    args = json.dumps([[p.kind, p.host, p.port] for p in probes])
    as_user = ["-u", user] if user else []
    program = ["-c", PROBE_PROGRAM, args, str(TCP_TIMEOUT), str(HTTP_TIMEOUT)]
    argv = (podman_command(["exec", *as_user, container, "python3", *program]) if container
            else [sys.executable, *program])
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, env=podman_env(),
                              timeout=HTTP_TIMEOUT + 60, check=False)
        replies = json.loads(proc.stdout) if proc.returncode == 0 else None
    except (subprocess.TimeoutExpired, ValueError):
        replies = None
    if replies is None:
        why = "could not run the probe " + (f"in {container}" if container else "on the host")
        return [Result(p, False, why) for p in probes]
    return [Result(p, observed(p.expected, str(a[0])), str(a[1]))
            for p, a in zip(probes, replies, strict=True)]


def host_facts(listener_port: int) -> HostFacts:
    """Look up the host's address, the registry's address and the resolvers."""
    internet_ip = ""
    try:
        infos = socket.getaddrinfo(INTERNET_NAME, 443, socket.AF_INET, socket.SOCK_STREAM)
        internet_ip = str(infos[0][4][0])
    except OSError:
        pass
    host_ip = "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect((internet_ip or "192.0.2.1", 9))  # no packet is sent
            host_ip = sock.getsockname()[0]
        except OSError:
            pass
    resolvers = []
    try:
        with open("/etc/resolv.conf", encoding="utf-8") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver" and ":" not in parts[1]:
                    resolvers.append(parts[1])
    except OSError:
        pass
    return HostFacts(listener_port, host_ip, internet_ip, tuple(resolvers[:1]))


def run(plan: PlanFile, code_host: str,
        on_source: Callable[[str], None] | None = None,
        airlock_user: str = "") -> list[Result]:
    """Run the whole matrix against a deployed site.

    Opens a TCP listener on 0.0.0.0 (an ephemeral port) for the run, so "a service the host
    binds on all addresses" is a real target.

    Args:
        plan: the engine's ``plan.json``.
        code_host: ``codeService.host``.
        on_source: called with each source name as its probes start.
        airlock_user: see :func:`matrix`.

    Returns:
        One result per probe, in :func:`matrix` order.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("0.0.0.0", 0))
        listener.listen(64)
        facts = host_facts(listener.getsockname()[1])
        probes = matrix(plan, facts, code_host, airlock_user)
        groups: dict[tuple[str, str], list[int]] = {}
        for index, p in enumerate(probes):
            groups.setdefault((p.container, p.user), []).append(index)
        results: list[Result | None] = [None] * len(probes)

        def one_group(key: tuple[str, str], indexes: list[int]) -> None:
            container, user = key
            items = [probes[i] for i in indexes]
            if on_source and not user:
                on_source(items[0].source)
            done = _run_in(container, items, user)
            for i, res in zip(indexes, done, strict=True):
                results[i] = res

        with ThreadPoolExecutor(max_workers=len(groups) or 1) as pool:
            for fut in [pool.submit(one_group, c, ix) for c, ix in groups.items()]:
                fut.result()
    return [r for r in results if r is not None]
