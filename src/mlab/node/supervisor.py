"""Processes the node starts and stops itself: one pid file and one log file per component.

Invariant: a component counts as running only when its pid file names a live process whose
command line starts with the component's program (a stale pid reused by another process is
never signalled). Each process runs in its own session, so stopping the caller (a test, a
shell) does not stop the node; ``mlab node down`` does.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from mlab.errors import DeployError, MlabError
from mlab.node.config import Component
from mlab.node.layout import NodeLayout


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [p.decode(errors="replace") for p in raw.split(b"\0") if p]


def running_pid(lay: NodeLayout, name: str, program: str | None = None) -> int | None:
    """The pid of component ``name`` if it runs (and runs ``program``, when given)."""
    try:
        pid = int(lay.pid(name).read_text().strip())
    except (OSError, ValueError):
        return None
    argv = _cmdline(pid)
    if not argv:
        return None
    if program is not None and os.path.basename(argv[0]) != os.path.basename(program):
        return None
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return None
    return None if state == "Z" else pid


def start(lay: NodeLayout, comp: Component) -> int:
    """Start ``comp`` unless it runs; return its pid. Output goes to its log (appended)."""
    pid = running_pid(lay, comp.name, comp.argv[0])
    if pid:
        return pid
    lay.logs.mkdir(parents=True, exist_ok=True)
    lay.pids.mkdir(parents=True, exist_ok=True)
    logf = open(lay.log(comp.name), "ab")  # noqa: SIM115 - handed to the child
    logf.write(f"\n=== mlab node: starting {' '.join(comp.argv)}\n".encode())
    logf.flush()
    env = dict(os.environ)
    env["PATH"] = env.get("PATH", "") + ":/usr/sbin:/sbin"
    proc = subprocess.Popen(
        comp.argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
        start_new_session=True, env=env, close_fds=True,
    )
    logf.close()
    tmp = lay.pid(comp.name).with_suffix(".tmp")
    tmp.write_text(f"{proc.pid}\n")
    tmp.replace(lay.pid(comp.name))  # atomic: a reader never sees an empty pid file
    return proc.pid


def stop(lay: NodeLayout, name: str, program: str | None = None, grace: float = 15.0) -> bool:
    """SIGTERM component ``name``, SIGKILL after ``grace`` seconds. True if it was running."""
    pid = running_pid(lay, name, program)
    if not pid:
        lay.pid(name).unlink(missing_ok=True)
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and running_pid(lay, name, program):
        time.sleep(0.2)
    if running_pid(lay, name, program):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        time.sleep(0.5)
    lay.pid(name).unlink(missing_ok=True)
    return True


def wait_until(lay: NodeLayout, comp: Component, ready: Callable[[], bool],
               timeout: float, what: str = "answer") -> None:
    """Poll ``ready`` until true; fail naming the component and its log if it exits or
    the time runs out.

    Raises:
        DeployError: the process died, or did not become ready in ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            if ready():
                return
        except MlabError:  # the probe itself cannot run (a missing tool): say so now
            raise
        except Exception:  # noqa: BLE001 - any probe failure means "not yet"
            pass
        if not running_pid(lay, comp.name, comp.argv[0]) and not _still_running(lay, comp):
            raise DeployError(f"node: {comp.name} exited; last line of {lay.log(comp.name)}: "
                              f"{last_line(lay.log(comp.name))}")
        if time.monotonic() > deadline:
            raise DeployError(f"node: {comp.name} did not {what} in {timeout:g}s; see "
                              f"{lay.log(comp.name)}")
        time.sleep(0.5)


def _still_running(lay: NodeLayout, comp: Component) -> bool:
    """A second look one second later (a pid file being rewritten reads as empty)."""
    time.sleep(1.0)
    return running_pid(lay, comp.name, comp.argv[0]) is not None


def last_line(path: Path) -> str:
    """The last non-empty line of a log file (for one-line errors)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 4096))
            lines = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "(no log)"
    lines = [ln for ln in lines if not ln.startswith("=== mlab node:")]
    errors = [ln for ln in lines if re.match(r"(Error|error|[EF]\d{4} |fatal|panic)", ln)]
    pick = errors or lines
    return pick[-1][:300] if pick else "(empty log)"


def port_owner_free(host: str, port: int) -> bool:
    """True if nothing listens on ``host:port`` (TCP)."""
    import socket

    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) != 0
