"""One podman site of `mlab up` for an e2e module: its site file, state directory, the CLI
through the shared runner (tests/cli_runner.py), and the start-up every such module repeats
(leftovers down, ``mlab up``, the passwords; ``mlab down --volumes`` at the end)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from cli_runner import Run, mlab, mlab_site

from mlab.podman.runner import podman

CLEARED = ("MLAB_SERVER", "MLAB_CODE_URL", "MLAB_CODE_HOST", "MLAB_USER", "MLAB_PASSWORD",
           "MLAB_PASSWORD_FILE")
"""Variables of the developer's shell that would point the CLI elsewhere: left out."""


def site_doc(name: str, image: str, bind: str, users: list[dict[str, Any]],
             **sections: Any) -> dict[str, Any]:
    """A site file's document: ``name`` with ``image`` (``repo:tag``, never pulled), bound to
    ``bind`` with the loopback range as office, ``users`` and the other ``sections``."""
    repo, tag = image.rsplit(":", 1)
    return {
        "apiVersion": "mlab.io/v1",
        "name": name,
        "image": {"repository": repo, "tag": tag, "pullPolicy": "Never"},
        "access": {"bindAddress": bind, "officeCIDRs": ["127.0.0.0/8"]},
        "users": users,
        **sections,
    }


class UpLab:
    """A test site: its file under ``root``, its own ``MLAB_STATE_DIR``, its passwords.

    Args:
        root: the module's temp directory.
        name: the site name.
        doc: the site document (:func:`site_doc`).
        clear: more variables to leave out of the CLI's environment.
    """

    def __init__(self, root: Path, name: str, doc: dict[str, Any],
                 clear: tuple[str, ...] = ()) -> None:
        self.root = root
        self.name = name
        self.file = root / f"{name}.yaml"
        self.file.write_text(yaml.safe_dump(doc))
        self.env = {"MLAB_STATE_DIR": str(root / "state"), "COLUMNS": "200"}
        self.drop = CLEARED + clear
        self.passwords: dict[str, str] = {}
        self.up_log = ""

    def box(self, deployment: str, container: str) -> str:
        """The podman container of ``deployment`` (``homepod-alice``, ``airlock``)."""
        return f"mlab-{self.name}-{deployment}-{container}"

    def mlab(self, *args: str, site: bool = True, env: dict[str, str] | None = None,
             check: bool = True, cwd: Path | None = None) -> Run:
        """``mlab ARGS`` (with ``--site`` unless ``site`` is False) as a process; with
        ``check`` an exit code other than 0 fails with the tails of its output."""
        every = {**self.env, **(env or {})}
        if site:
            return mlab_site(self.file, *args, env=every, drop=self.drop, cwd=cwd, check=check)
        proc = mlab(*args, env=every, drop=self.drop, cwd=cwd, timeout=600)
        if check and proc.returncode != 0:
            raise AssertionError(f"mlab {' '.join(args)} exited {proc.returncode}:\n"
                                 f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc

    def code_server(self) -> str:
        """The code service's published URL (``http://host:port``, from ``mlab status``)."""
        code = next(c for c in json.loads(self.mlab("status", "-o", "json").stdout)
                    if c["name"] == "code-service")
        endpoint = code["endpoints"][0]
        return f"http://{endpoint['host']}:{endpoint['port']}"


@contextmanager
def running(lab: UpLab) -> Iterator[UpLab]:
    """The site up (leftovers of an interrupted run removed first), its passwords read;
    torn down with its volumes at the end, also when the body fails."""
    lab.mlab("down", "--volumes", check=False)
    try:
        up = lab.mlab("up")
        lab.up_log = up.stdout + up.stderr
        rows = json.loads(lab.mlab("passwords", "-o", "json").stdout)
        lab.passwords = {row["user"]: row["password"] for row in rows}
        yield lab
    finally:
        lab.mlab("down", "--volumes", check=False)


def exec_in(container: str, script: str, user: str = "root") -> str:
    """``bash -lc SCRIPT`` in ``container`` as ``user``; fails unless it exits 0. Its stdout."""
    proc = podman(["exec", "-u", user, container, "bash", "-lc", script], check=False,
                  timeout=120)
    assert proc.returncode == 0, f"{container}: {script}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def local_upstream(lab: UpLab, work: Path, text: str) -> bool:
    """A one-commit repository (README = ``text``) made in ``work`` and cloned bare as
    ``up.git`` into the site's upstreams directory (the code service's
    ``/srv/mlab/upstreams``). False, and nothing cloned, when ``up.git`` is there already."""
    work.mkdir()
    git = ["git", "-c", "user.name=T", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q", "-b", "main"], cwd=work, check=True)
    (work / "README").write_text(text)
    subprocess.run([*git, "add", "README"], cwd=work, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "first"], cwd=work, check=True)
    upstreams = lab.root / "state" / lab.name / "upstreams"
    upstreams.mkdir(parents=True, exist_ok=True)
    if (upstreams / "up.git").exists():
        return False
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(upstreams / "up.git")],
                   check=True)
    return True


@contextmanager
def pod_capture(container: str, sink: Path, expression: str) -> Iterator[None]:
    """tcpdump (``-A``, every interface) in ``container``'s network namespace while the
    body runs, written to ``sink``; the body starts only once tcpdump is listening.

    Args:
        container: a running podman container (its PID gives the namespace).
        sink: the text file the capture goes to (read it after the block).
        expression: the pcap filter, e.g. ``"tcp port 80 or tcp port 8080"``.
    """
    pid = podman(["inspect", "-f", "{{.State.Pid}}", container], timeout=60).stdout.strip()
    with open(sink, "w") as out:
        dump = subprocess.Popen(
            ["nsenter", "-t", pid, "-n", "tcpdump", "-l", "-n", "-A", "-s", "0", "-i", "any",
             expression], stdout=out, stderr=subprocess.PIPE, text=True)
        try:
            assert dump.stderr is not None
            while "listening" not in (line := dump.stderr.readline()):
                assert line, "tcpdump did not start"
            yield
        finally:
            dump.terminate()
            dump.communicate(timeout=10)  # also closes its stderr pipe


def captured_packets(sink: Path) -> tuple[str, list[str]]:
    """The capture's text and its packet lines (those naming ``IP``); fails when tcpdump
    saw nothing, i.e. the capture was not on the pod's interface."""
    text = sink.read_text(errors="replace")
    lines = [ln for ln in text.splitlines() if " IP " in ln]
    assert lines, "tcpdump saw no attempt (the capture is not on the pod's interface)"
    return text, lines
