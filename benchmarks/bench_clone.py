"""Benchmark: cloning and fetching through the code service against plain git http-backend.

Two repositories (``--objects``: about 60,000 small objects and 300 refs, enough for git to
gzip its requests; ``--size-mb``: 200 MB of incompressible blobs) are approved as mirrors
of the service. The baseline serves a byte-identical copy (``cp -a``) of the service's own
mirror through plain ``git http-backend`` behind a minimal CGI server that passes the
``Git-Protocol`` and ``Content-Encoding`` headers, so both sides speak protocol v2 and
both accept gzipped requests. The service is told that the benchmark's clients are HomePods
(``--homepod-net 127.0.0.1/32``): the users' path; an outside client of a ``reviewed`` site
is served protocol v0 and a filtered view, which the baseline does not do. The baseline
sets ``TCP_NODELAY`` as uvicorn does (else each response waits 40 ms for a delayed ACK). For each repository, in interleaved samples (A B A B ...):

- a bare clone through the service and through the baseline;
- a fetch with nothing new (every ref) through both;
- ``--parallel`` concurrent bare clones through both.

Prints, per case, the median and min..max seconds and the pair-by-pair ratio service /
baseline (goals, issue 18: clone and concurrent clones <= 1.05, no-change fetch <= 1.1).
Exit status 0 always: ratios are for people, not CI.

    .venv/bin/python benchmarks/bench_clone.py [--size-mb 200] [--objects 60000]
        [--parallel 20] [--samples 5] [--json]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sampling import as_json, dumps, interleave, report  # noqa: E402

USERS = {"bench": "bench-password"}


def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    subprocess.run(args, cwd=cwd, check=True, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, env=env)


def make_repo(path: Path, size_mb: int) -> None:
    """A bare repo with ``size_mb`` MB of random blobs in 2 MiB files over many commits."""
    run("git", "init", "-q", "--bare", "-b", "main", str(path))
    proc = subprocess.Popen(["git", "--git-dir", str(path), "fast-import", "--quiet"],
                            stdin=subprocess.PIPE)
    assert proc.stdin is not None
    blob = 2 * 1024 * 1024
    count = size_mb * 1024 * 1024 // blob + 1
    for i in range(count):
        data = os.urandom(blob)
        msg = f"commit {i}\n".encode()
        proc.stdin.write(
            b"commit refs/heads/main\n"
            + f"committer Bench <b@example.com> {1700000000 + i} +0000\n".encode()
            + f"data {len(msg)}\n".encode() + msg
            + f"M 644 inline data/file{i % 50}.bin\ndata {len(data)}\n".encode() + data + b"\n"
        )
    proc.stdin.close()
    if proc.wait() != 0:
        raise SystemExit("git fast-import failed")
    run("git", "--git-dir", str(path), "repack", "-q", "-a", "-d")


def make_object_repo(path: Path, objects: int, refs: int = 300) -> None:
    """A bare repo of about ``objects`` small objects, with ``refs`` tags and branches.

    Text files of a few hundred bytes, 25 changed per commit in a tree of 40 folders, so
    blobs, trees and commits all count; every few commits a tag, so a fetch request lists
    enough refs for git to gzip it.
    """
    run("git", "init", "-q", "--bare", "-b", "main", str(path))
    proc = subprocess.Popen(["git", "--git-dir", str(path), "fast-import", "--quiet"],
                            stdin=subprocess.PIPE)
    assert proc.stdin is not None
    per_commit = 25
    # each commit: 25 blobs, about 25 folder trees and the root tree, the commit
    commits = max(1, objects // (2 * per_commit + 2))
    every = max(1, commits // refs)
    for i in range(commits):
        msg = f"commit {i}\n".encode()
        lines = [b"commit refs/heads/main\n",
                 f"committer Bench <b@example.com> {1700000000 + i} +0000\n".encode(),
                 f"data {len(msg)}\n".encode(), msg]
        for j in range(per_commit):
            data = (f"file {i}/{j}\n" + os.urandom(120).hex() + "\n").encode()
            lines.append(f"M 644 inline d{(i + j) % 40}/f{(i * per_commit + j) % 4000}.txt\n"
                         f"data {len(data)}\n".encode() + data + b"\n")
        if i % every == 0:
            kind = "tags/v" if (i // every) % 2 else "heads/b"
            lines.append(f"reset refs/{kind}{i}\nfrom refs/heads/main\n\n".encode())
        proc.stdin.write(b"".join(lines))
    proc.stdin.close()
    if proc.wait() != 0:
        raise SystemExit("git fast-import failed")
    run("git", "--git-dir", str(path), "repack", "-q", "-a", "-d")


def start_service(tmp: Path) -> tuple[subprocess.Popen[bytes], int, str]:
    users = tmp / "users"
    for name, pw in USERS.items():
        (users / name).mkdir(parents=True)
        (users / name / "password").write_text(pw)
    site = tmp / "site.yaml"
    site.write_text("name: bench\nusers: [{name: bench}]\n"
                    "codeService: {allowLocalUpstreams: true}\n")
    log = tmp / "service.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlab.cli.main", "code-service", "serve", "--data",
             str(tmp / "data"), "--site", str(site), "--host", "127.0.0.1", "--port", "0",
             "--users-dir", str(users), "--no-background-sync", "--homepod-net", "127.0.0.1/32"],
            stdout=subprocess.DEVNULL, stderr=fh, stdin=subprocess.DEVNULL)
    for _ in range(600):
        found = re.search(r"listening on http://127\.0\.0\.1:(\d+)", log.read_text())
        if found:
            port = int(found.group(1))
            password = (tmp / "data" / "admin-password").read_text().strip()
            for _ in range(100):
                try:
                    httpx.get(f"http://127.0.0.1:{port}/", timeout=1, trust_env=False)
                    return proc, port, password
                except httpx.HTTPError:
                    time.sleep(0.05)
        time.sleep(0.05)
    raise SystemExit(f"service did not start:\n{log.read_text()}")


class GitCGIHandler(BaseHTTPRequestHandler):
    """Plain ``git http-backend`` as a CGI (RFC 3875), the cheapest HTTP server around it.

    Unlike Python's ``CGIHTTPRequestHandler`` this passes the request headers git needs:
    ``Git-Protocol`` (``HTTP_GIT_PROTOCOL``, without it the CGI speaks protocol v0 while the
    client asked for v2) and ``Content-Encoding`` (``HTTP_CONTENT_ENCODING``: git gzips a
    request body over 1 KiB, and without the header http-backend reads the gzip bytes as
    pkt-lines: "bad line length character"), and it accepts a chunked request body. Like
    the stdlib handler it hands the socket to the CGI as its standard output.
    """

    protocol_version = "HTTP/1.0"
    project_root = ""
    # TCP_NODELAY, as uvicorn (asyncio) sets it: the CGI's small writes must not wait for
    # the client's delayed ACK (40 ms on loopback).
    disable_nagle_algorithm = True

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._cgi()

    def do_POST(self) -> None:  # noqa: N802
        self._cgi()

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _cgi(self) -> None:
        path, _, query = self.path.partition("?")
        body = self._body()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": self.project_root, "GIT_HTTP_EXPORT_ALL": "1",
            "GATEWAY_INTERFACE": "CGI/1.1", "SERVER_PROTOCOL": "HTTP/1.0",
            "REQUEST_METHOD": self.command, "PATH_INFO": path, "QUERY_STRING": query,
            "REMOTE_ADDR": self.client_address[0],
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
        }
        if body:
            env["CONTENT_LENGTH"] = str(len(body))
        for header in ("Git-Protocol", "Content-Encoding"):
            if (value := self.headers.get(header)) is not None:
                env["HTTP_" + header.upper().replace("-", "_")] = value
        self.wfile.write(b"HTTP/1.0 200 Script output follows\r\n")
        self.wfile.flush()
        subprocess.run(["git", "http-backend"], input=body, stdout=self.connection.fileno(),
                       env=env, check=False)

    def log_message(self, *args: object) -> None:
        pass


def start_cgi(root: Path) -> tuple[ThreadingHTTPServer, int]:
    """Plain ``git http-backend`` behind :class:`GitCGIHandler`, repositories under ``root``."""
    handler = type("Handler", (GitCGIHandler,), {"project_root": str(root)})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=200,
                        help="Size of the big repository (random blobs). Default: 200.")
    parser.add_argument("--objects", type=int, default=60000,
                        help="Objects in the many-objects repository (small files, many refs, "
                        "so git gzips its requests); 0 skips it. Default: 60000.")
    parser.add_argument("--parallel", type=int, default=20, help="Concurrent clones. Default: 20.")
    parser.add_argument("--samples", type=int, default=5, help="Counted runs per case. Default: 5.")
    parser.add_argument("--json", action="store_true", help="Print JSON instead of tables.")
    args = parser.parse_args()
    # A terminated run still stops its service and removes its repositories (finally below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = Path(tempfile.mkdtemp(prefix="mlab-bench-clone-"))
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_CONFIG_GLOBAL": "/dev/null"}
    proc = None
    out: dict[str, object] = {}
    try:
        repos: dict[str, Path] = {}
        if args.objects:
            repos["objects"] = tmp / "upstream" / "objects.git"
            make_object_repo(repos["objects"], args.objects)
        if args.size_mb:
            repos["big"] = tmp / "upstream" / "big.git"
            make_repo(repos["big"], args.size_mb)
        proc, port, admin = start_service(tmp / "svc")
        cgi_root = tmp / "cgi"
        for key, upstream in repos.items():
            r = httpx.post(f"http://127.0.0.1:{port}/api/repos", auth=("admin", admin),
                           json={"url": f"file://{upstream}", "name": f"bench/{key}"},
                           timeout=3600, trust_env=False)
            r.raise_for_status()
            # The baseline serves a byte-identical copy of the service's own mirror.
            mirror = tmp / "svc" / "data" / "repos" / "bench" / f"{key}.git"
            (cgi_root / "bench").mkdir(parents=True, exist_ok=True)
            run("cp", "-a", str(mirror), str(cgi_root / "bench" / f"{key}.git"))
        server, cgi_port = start_cgi(cgi_root)
        n = 0

        def clone(url: str) -> Path:
            nonlocal n
            n += 1
            dest = tmp / f"clone{n}"
            run("git", "-c", "protocol.version=2", "clone", "-q", "--bare", url, str(dest), env=env)
            return dest

        for key, upstream in repos.items():
            mirror = tmp / "svc" / "data" / "repos" / "bench" / f"{key}.git"
            count = subprocess.run(["git", "--git-dir", str(mirror), "count-objects", "-v"],
                                   capture_output=True, text=True, check=True).stdout
            refs = len(subprocess.run(["git", "--git-dir", str(mirror), "for-each-ref"],
                                      capture_output=True, text=True, check=True).stdout.splitlines())
            svc = f"http://bench:{USERS['bench']}@127.0.0.1:{port}/bench/{key}"
            cgi = f"http://127.0.0.1:{cgi_port}/bench/{key}.git"
            fetch_dirs = {"service": clone(svc), "baseline": clone(cgi)}

            def fetch(which: str):  # type: ignore[no-untyped-def]
                return lambda: run("git", "-c", "protocol.version=2", "--git-dir",
                                   str(fetch_dirs[which]), "fetch", "-q", "origin",
                                   "+refs/*:refs/*", env=env)

            def many(url: str):  # type: ignore[no-untyped-def]
                def go() -> None:
                    with ThreadPoolExecutor(args.parallel) as pool:
                        for dest in pool.map(lambda _: clone(url), range(args.parallel)):
                            shutil.rmtree(dest)
                return go

            groups = {
                "clone": {"service": lambda: shutil.rmtree(clone(svc)),
                          "plain http-backend (baseline)": lambda: shutil.rmtree(clone(cgi))},
                "no-change fetch": {"service": fetch("service"),
                                    "plain http-backend (baseline)": fetch("baseline")},
                f"{args.parallel} concurrent clones": {
                    "service": many(svc), "plain http-backend (baseline)": many(cgi)},
            }
            goals = {"clone": 1.05, "no-change fetch": 1.1, f"{args.parallel} concurrent clones": 1.05}
            header = (f"repository {key}: {refs} refs; "
                      + ", ".join(line for line in count.splitlines()
                                  if line.startswith(("in-pack", "size-pack"))))
            print(header, file=sys.stderr)
            out[key] = {"about": header}
            for what, cases in groups.items():
                samples = args.samples if "concurrent" not in what else max(3, args.samples // 2)
                stats = interleave(cases, samples=samples)
                base = "plain http-backend (baseline)"
                out[key][what] = as_json(stats, base)  # type: ignore[index]
                if not args.json:
                    print(report(stats, baseline=base, goals={"service": goals[what]},
                                 title=f"\n{header}: {what}"))
        server.shutdown()
        if args.json:
            print(dumps(out))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
