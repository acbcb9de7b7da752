"""Helpers: the real code service in a subprocess on a free loopback port, real git.

``service`` starts ``mlab code-service serve`` once per test module with users alice and bob
(password files in a temp users dir) and ``allowLocalUpstreams``, so local bare
repositories stand in for GitHub. Nothing here runs at import time.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

PASSWORDS = {"alice": "alice-secret", "bob": "bob:with:colons"}


def git_env(home: Path) -> dict[str, str]:
    """An environment for the real git: no prompts, no user config, fixed identity."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update({
        "HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0",
        "GIT_AUTHOR_NAME": "Tester", "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "Tester", "GIT_COMMITTER_EMAIL": "t@example.com",
        "LC_ALL": "C",
    })
    return env


def git(*args: str, cwd: Path | None = None, check: bool = True,
        env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run git; stdin is closed (git never waits on a prompt)."""
    done = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL, env=env or git_env(Path(os.environ.get("MLAB_TEST_HOME", "/tmp"))),
    )
    if check and done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done


def make_upstream(root: Path, name: str, commits: int = 2) -> Path:
    """A bare repository with ``main`` (HEAD) and a tag ``v1``, standing in for GitHub."""
    bare = root / f"{name}.git"
    git("init", "-q", "--bare", "-b", "main", str(bare))
    work = root / f"{name}-work"
    git("clone", "-q", str(bare), str(work))
    git("checkout", "-q", "-b", "main", cwd=work)
    for i in range(commits):
        (work / f"file{i}.txt").write_text(f"content {i}\n")
        git("add", ".", cwd=work)
        git("commit", "-q", "-m", f"upstream commit {i}", cwd=work)
    git("tag", "v1", cwd=work)
    git("push", "-q", "origin", "main", "v1", cwd=work)
    return bare


@dataclass
class Service:
    """A running code service."""

    url: str
    port: int
    data: Path
    admin_password: str
    proc: subprocess.Popen[bytes]
    log: Path

    def client(self, user: str = "admin", password: str | None = None) -> httpx.Client:
        """An HTTP client with Basic credentials (admin by default)."""
        pw = password if password is not None else (
            self.admin_password if user == "admin" else PASSWORDS[user])
        return httpx.Client(base_url=self.url, auth=(user, pw), timeout=120, trust_env=False)

    def clone_url(self, repo: str, user: str = "alice") -> str:
        """``http://user:password@127.0.0.1:port/org/repo`` (password URL-quoted)."""
        from urllib.parse import quote

        return f"http://{user}:{quote(PASSWORDS[user], safe='')}@127.0.0.1:{self.port}/{repo}"

    def approve(self, url: str, name: str) -> dict[str, object]:
        """Approve a mirror through the API; assert success."""
        with self.client() as c:
            r = c.post("/api/repos", json={"url": url, "name": name})
        assert r.status_code == 201, r.text
        return r.json()

    def sync(self, name: str) -> dict[str, object]:
        """Sync one mirror through the API."""
        with self.client() as c:
            r = c.post(f"/api/repos/{name}/sync", json={})
        assert r.status_code == 200, r.text
        return r.json()


def start_service(tmp: Path, site_extra: str = "", port: int = 0,
                  homepod_nets: str = "127.0.0.0/8", extra_args: tuple[str, ...] = ()
                  ) -> Service:
    """Start ``mlab code-service serve`` and wait until it answers.

    ``homepod_nets``: the addresses the service takes for HomePods (``MLAB_HOMEPOD_NETS``).
    The tests' clients come from 127.0.0.1, so by default they stand for HomePods and see
    every user branch; ``""`` makes them office PCs (reviewed user branches, the default of
    a site without ``posture``)."""
    users = tmp / "users"
    for name, pw in PASSWORDS.items():
        (users / name).mkdir(parents=True, exist_ok=True)
        (users / name / "password").write_text(pw + "\n")
    site = tmp / "site.yaml"
    if not site.exists():
        site.write_text(
            "name: test\nusers: [{name: alice}, {name: bob}]\n"
            "codeService:\n  host: code.test\n  allowLocalUpstreams: true\n"
            "  reviewers: [bob]\n" + site_extra
        )
    data = tmp / "data"
    log = tmp / f"service-{time.time_ns()}.log"
    env = {k: v for k, v in os.environ.items() if k != "MLAB_ADMIN_PASSWORD_FILE"}
    env["MLAB_HOMEPOD_NETS"] = homepod_nets
    log_fh = open(log, "wb")  # noqa: SIM115 - the child keeps its copy
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlab.cli.main", "code-service", "serve", "--data", str(data),
         "--site", str(site), "--host", "127.0.0.1", "--port", str(port), "--users-dir",
         str(users), "--no-background-sync", *extra_args],
        stdout=subprocess.DEVNULL, stderr=log_fh, stdin=subprocess.DEVNULL, env=env,
        start_new_session=True,
    )
    log_fh.close()
    deadline = time.monotonic() + 30
    bound = None
    scheme = "http"
    while time.monotonic() < deadline and bound is None:
        text = log.read_text(errors="replace")
        found = re.search(r"listening on (https?)://127\.0\.0\.1:(\d+)", text)
        if found:
            scheme, bound = found.group(1), int(found.group(2))
            break
        if proc.poll() is not None:
            raise AssertionError(f"service exited:\n{text}")
        time.sleep(0.05)
    assert bound, f"service did not start:\n{log.read_text()}"
    password = (data / "admin-password").read_text().strip()
    svc = Service(f"{scheme}://127.0.0.1:{bound}", bound, data, password, proc, log)
    while time.monotonic() < deadline:
        try:
            httpx.get(svc.url + "/api/whoami", timeout=2, trust_env=False, verify=False)
            return svc
        except httpx.HTTPError:
            time.sleep(0.05)
    raise AssertionError("service does not answer")


def stop_service(svc: Service, sig: int = signal.SIGTERM) -> None:
    """Stop the service (and only it: its own session)."""
    if svc.proc.poll() is None:
        os.killpg(svc.proc.pid, sig)
        try:
            svc.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(svc.proc.pid, signal.SIGKILL)
            svc.proc.wait(timeout=15)


@contextmanager
def module_service(factory: pytest.TempPathFactory, name: str, site_extra: str = "",
                   upstream: bool = True) -> Iterator[Service]:
    """One test module's service: its own temp dir (``MLAB_TEST_HOME`` for the module only),
    ``site_extra`` in the site, and with ``upstream`` a one-commit upstream approved as
    ``org/<name>``; stopped at the end."""
    tmp = factory.mktemp(name)
    with pytest.MonkeyPatch.context() as env:  # for this module's tests only
        env.setenv("MLAB_TEST_HOME", str(tmp))
        service = start_service(tmp, site_extra)
        if upstream:
            bare = make_upstream(tmp, name, commits=1)
            service.approve(f"file://{bare}", f"org/{name}")
        yield service
        stop_service(service)
