"""Benchmark: cloning through the code service against plain git transports, in one run.

Generates a repository with at least ``--size-mb`` MB of incompressible history (random
blobs through ``git fast-import``), approves it as a mirror, then times:

- a bare clone through the code service (auth, streaming CGI through starlette/uvicorn);
- the same through a plain ``git http-backend`` CGI server (Python's ``http.server``
  CGI handler, which hands the socket to the CGI directly: the cheapest HTTP baseline);
- ``git clone --no-local`` of the path (git's own pack transport, no HTTP);
- a no-change fetch through both HTTP servers;
- ``--parallel`` concurrent bare clones through both HTTP servers.

Prints a table of seconds and ratios (service / baseline); the goal is a clone within
1.3x of plain ``git http-backend``. Exit status 0 always: ratios are for people, not CI.

    .venv/bin/python benchmarks/bench_clone.py [--size-mb 200] [--parallel 20]
"""

from __future__ import annotations

import argparse
import http.server
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import CGIHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

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
             "--users-dir", str(users), "--no-background-sync"],
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


def start_cgi(root: Path) -> tuple[ThreadingHTTPServer, int]:
    """Plain ``git http-backend`` behind Python's CGI handler, repositories under ``root``."""
    cgi = root.parent / "cgi-root"
    (cgi / "cgi-bin").mkdir(parents=True)
    script = cgi / "cgi-bin" / "git"
    script.write_text("#!/bin/sh\nexec git http-backend\n")
    script.chmod(0o755)
    # The CGI handler drops to "nobody" before exec when it can; keep our own uid instead
    # (the repositories are ours, and git refuses repositories of other owners).
    http.server.nobody_uid = os.getuid  # type: ignore[assignment]
    os.environ["GIT_PROJECT_ROOT"] = str(root)
    os.environ["GIT_HTTP_EXPORT_ALL"] = "1"

    class Handler(CGIHTTPRequestHandler):
        def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            super().__init__(*args, directory=str(cgi), **kwargs)

        def log_message(self, *args):  # type: ignore[no-untyped-def]
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--parallel", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2, help="best of N for single clones")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mlab-bench-clone-"))
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    proc = None
    try:
        t0 = time.perf_counter()
        upstream = tmp / "upstream" / "big.git"
        upstream.parent.mkdir()
        make_repo(upstream, args.size_mb)
        size = sum(f.stat().st_size for f in upstream.rglob("*") if f.is_file())
        print(f"repository: {size / 1e6:.0f} MB on disk ({time.perf_counter() - t0:.1f} s to "
              "generate)", file=sys.stderr)
        proc, port, admin = start_service(tmp / "svc")
        r = httpx.post(f"http://127.0.0.1:{port}/api/repos", auth=("admin", admin),
                       json={"url": f"file://{upstream}", "name": "bench/big"},
                       timeout=3600, trust_env=False)
        r.raise_for_status()
        server, cgi_port = start_cgi(tmp / "upstream")
        svc_url = f"http://bench:{USERS['bench']}@127.0.0.1:{port}/bench/big"
        cgi_url = f"http://127.0.0.1:{cgi_port}/cgi-bin/git/big.git"
        urls = {"service": svc_url, "plain http-backend": cgi_url,
                "clone --no-local": str(upstream)}
        results: dict[str, float] = {}
        n = 0

        def clone(url: str, extra: tuple[str, ...] = ()) -> Path:
            nonlocal n
            n += 1
            dest = tmp / f"clone{n}"
            run("git", "clone", "-q", "--bare", *extra, url, str(dest), env=env)
            return dest

        for name, url in urls.items():
            extra = ("--no-local",) if name == "clone --no-local" else ()
            best = min(timed(lambda: shutil.rmtree(clone(url, extra))) for _ in range(args.rounds))
            results[f"clone: {name}"] = best
        for name in ("service", "plain http-backend"):
            dest = clone(urls[name])
            results[f"no-change fetch: {name}"] = min(
                timed(lambda: run("git", "--git-dir", str(dest), "fetch", "-q", "origin",
                                  "+refs/heads/*:refs/heads/*", env=env)) for _ in range(5))
            shutil.rmtree(dest)
        for name in ("service", "plain http-backend"):
            with ThreadPoolExecutor(args.parallel) as pool:
                def one(_: int) -> None:
                    shutil.rmtree(clone(urls[name]))
                results[f"{args.parallel} concurrent clones: {name}"] = timed(
                    lambda: list(pool.map(one, range(args.parallel))))
        server.shutdown()
        print(f"{'measurement':45} {'seconds':>8}")
        for key, value in results.items():
            print(f"{key:45} {value:8.2f}")
        base = results["clone: plain http-backend"]
        print(f"\nclone ratio service / plain http-backend: {results['clone: service'] / base:.2f}"
              " (goal <= 1.3)")
        print(f"clone ratio service / clone --no-local:    "
              f"{results['clone: service'] / results['clone: clone --no-local']:.2f}")
        print(f"no-change fetch ratio service / plain:      "
              f"{results['no-change fetch: service'] / results['no-change fetch: plain http-backend']:.2f}")
        key = f"{args.parallel} concurrent clones"
        print(f"{key} ratio service / plain:     "
              f"{results[key + ': service'] / results[key + ': plain http-backend']:.2f}")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
