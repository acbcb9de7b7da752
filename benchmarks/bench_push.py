"""Benchmark: a small push and a no-change fetch through the code service against plain
``git http-backend``, interleaved in one run (issue 18, the push and fetch rows).

Both servers serve byte-identical copies of the service's own mirror (the baseline copy has
no hooks: it is what git alone costs). The baseline is a threaded HTTP/1.1 server that runs
``git http-backend`` as a CGI with the same environment the service gives it, including
``GIT_PROTOCOL`` (so both speak protocol v2 for fetches) and ``HTTP_CONTENT_ENCODING``; it
needs no authentication, so the service's extra 401 round trip is part of its cost. The
service is told that the benchmark's clients are HomePods (``--homepod-net 127.0.0.1/32``),
the users' path: an outside client of a ``reviewed`` site (the default posture) is served
protocol v0, which made the no-change fetch one request shorter than the baseline's. The
baseline sets ``TCP_NODELAY`` as uvicorn does (else each response waited 40 ms for the
client's delayed ACK).

Measured, alternating service and baseline, ``--samples`` times each:
- push of 3 commits touching 90 files (30 new files each) to a new branch;
- ``git fetch`` with nothing new.

Prints the median and the spread (min..max) of each side and the ratio taken pair by pair
(its median and spread; also the ratio of the medians);
the goals are push <= 1.15x and no-change fetch <= 1.1x. Exit status 0 always.

    .venv/bin/python benchmarks/bench_push.py [--commits 3000] [--samples 9]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import httpx

PASSWORD = "bench-password"


def git(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL).stdout


def make_repo(path: Path, commits: int) -> None:
    """A bare repository with ``commits`` commits of 5 small files each (git fast-import)."""
    git("init", "-q", "--bare", "-b", "main", str(path))
    proc = subprocess.Popen(["git", "--git-dir", str(path), "fast-import", "--quiet"],
                            stdin=subprocess.PIPE)
    assert proc.stdin is not None
    for i in range(commits):
        msg = f"commit {i}\n".encode()
        out = [b"commit refs/heads/main\n",
               f"committer Bench <b@example.com> {1700000000 + i} +0000\n".encode(),
               f"data {len(msg)}\n".encode(), msg]
        for j in range(5):
            data = f"file {i} {j}\n".encode() * 20
            out.append(f"M 644 inline d{i % 97}/f{(i * 5 + j) % 4000}.txt\n"
                       f"data {len(data)}\n".encode() + data + b"\n")
        proc.stdin.write(b"".join(out) + b"\n")
    proc.stdin.close()
    if proc.wait() != 0:
        raise SystemExit("git fast-import failed")
    git("--git-dir", str(path), "repack", "-adq")


class Baseline(BaseHTTPRequestHandler):
    """``git http-backend`` as a plain CGI: no auth, no hooks, same environment."""

    protocol_version = "HTTP/1.1"
    root = Path()
    # TCP_NODELAY, as uvicorn (asyncio) sets it: without it the body written after the
    # headers waited for the client's delayed ACK, 40 ms a request on loopback.
    disable_nagle_algorithm = True

    def log_message(self, *args: object) -> None:
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _serve(self) -> None:
        path, _, query = self.path.partition("?")
        env = {"PATH": os.environ["PATH"], "GIT_PROJECT_ROOT": str(self.root),
               "GIT_HTTP_EXPORT_ALL": "1", "PATH_INFO": path, "QUERY_STRING": query,
               "REQUEST_METHOD": self.command, "REMOTE_USER": "alice",
               "REMOTE_ADDR": "127.0.0.1", "GIT_CONFIG_NOSYSTEM": "1",
               "HOME": str(self.root), "CONTENT_TYPE": self.headers.get("Content-Type", "")}
        if self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        body = self._body() if self.command == "POST" else b""
        out = subprocess.run(["git", "http-backend"], input=body, env=env,
                             capture_output=True).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        status = 200
        headers = []
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = _serve
    do_POST = _serve


def start_service(tmp: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    users = tmp / "users"
    (users / "alice").mkdir(parents=True)
    (users / "alice" / "password").write_text(PASSWORD + "\n")
    site = tmp / "site.yaml"
    site.write_text("name: bench\nusers: [{name: alice}]\ncodeService:\n"
                    "  allowLocalUpstreams: true\n")
    data = tmp / "data"
    log = tmp / "service.log"
    env = {k: v for k, v in os.environ.items() if k != "MLAB_ADMIN_PASSWORD_FILE"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlab.cli.main", "code-service", "serve", "--data", str(data),
         "--site", str(site), "--host", "127.0.0.1", "--port", "0", "--users-dir",
         str(users), "--no-background-sync", "--homepod-net", "127.0.0.1/32"],
        stdout=subprocess.DEVNULL, stderr=open(log, "wb"), env=env)  # noqa: SIM115
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = re.search(r"listening on (http://\S+)", log.read_text(errors="replace"))
        if found:
            return proc, found.group(1), data
        time.sleep(0.05)
    raise SystemExit(f"service did not start:\n{log.read_text()}")


def new_commits(work: Path, tag: str) -> None:
    for c in range(3):
        for j in range(30):
            (work / "bench" / f"{tag}-{c}-{j}.txt").write_text(f"{tag} {c} {j}\n" * 40)
        git("add", ".", cwd=work)
        git("commit", "-q", "-m", f"bench {tag} {c}", cwd=work)


def timed(args: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(args, cwd=cwd, env=env, check=True, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def summary(name: str, svc: list[float], base: list[float], goal: float) -> None:
    """Medians, spreads and the ratio taken pair by pair (sample i of each side ran
    back to back), whose median cancels slow phases of a shared machine."""
    ms, mb = statistics.median(svc), statistics.median(base)
    pairs = [s / b for s, b in zip(svc, base) if b > 0]
    ratio = statistics.median(pairs)
    print(f"{name:28} service {ms * 1000:7.1f} ms ({min(svc) * 1000:.0f}..{max(svc) * 1000:.0f})"
          f"  baseline {mb * 1000:7.1f} ms ({min(base) * 1000:.0f}..{max(base) * 1000:.0f})"
          f"  ratio {ratio:.2f} ({min(pairs):.2f}..{max(pairs):.2f}; of the medians "
          f"{ms / mb:.2f}) goal <= {goal}: {'met' if ratio <= goal else 'MISSED'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commits", type=int, default=3000, help="History size. Default 3000.")
    parser.add_argument("--samples", type=int, default=9, help="Samples per side. Default 9.")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-push-"))
    proc = None
    try:
        upstream = tmp / "upstream.git"
        make_repo(upstream, args.commits)
        proc, url, data = start_service(tmp)
        admin = (data / "admin-password").read_text().strip()
        r = httpx.post(f"{url}/api/repos", json={"url": f"file://{upstream}", "name": "org/r"},
                       auth=("admin", admin), timeout=600, trust_env=False)
        r.raise_for_status()
        base_root = tmp / "base"
        (base_root / "org").mkdir(parents=True)
        shutil.copytree(data / "repos" / "org" / "r.git", base_root / "org" / "r.git",
                        symlinks=True)
        git("--git-dir", str(base_root / "org" / "r.git"), "config", "--unset",
            "core.hooksPath")
        Baseline.root = base_root
        server = ThreadingHTTPServer(("127.0.0.1", 0), Baseline)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        env.update({"HOME": str(tmp), "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0",
                    "GIT_AUTHOR_NAME": "B", "GIT_AUTHOR_EMAIL": "b@example.com",
                    "GIT_COMMITTER_NAME": "B", "GIT_COMMITTER_EMAIL": "b@example.com"})
        port = url.rsplit(":", 1)[1]
        remotes = {
            "service": f"http://alice:{quote(PASSWORD)}@127.0.0.1:{port}/org/r",
            "baseline": f"http://127.0.0.1:{server.server_address[1]}/org/r.git",
        }
        clones = {}
        for side, remote in remotes.items():
            clones[side] = tmp / side
            git("clone", "-q", remote, str(clones[side]), env=env)
            (clones[side] / "bench").mkdir()
        pushes: dict[str, list[float]] = {"service": [], "baseline": []}
        fetches: dict[str, list[float]] = {"service": [], "baseline": []}
        for i in range(args.samples):
            order = ("service", "baseline") if i % 2 == 0 else ("baseline", "service")
            for side in order:
                new_commits(clones[side], f"s{i}")
                pushes[side].append(timed(["git", "push", "-q", "origin",
                                           f"HEAD:refs/heads/alice/bench-{i}"],
                                          clones[side], env))
            for side in order:
                for _ in range(3):
                    fetches[side].append(timed(["git", "fetch", "-q", "origin"],
                                               clones[side], env))
        print(f"repository: {args.commits} commits; {args.samples} samples per side, "
              "interleaved")
        summary("push, 3 commits, 90 files", pushes["service"], pushes["baseline"], 1.15)
        summary("fetch, nothing new", fetches["service"], fetches["baseline"], 1.1)
        server.shutdown()
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
