"""`mlab image build` on a terminal draws its steps; with -q or without a terminal it does
not (issue 10, point 4). The image is the session's (built or reused by ``homepod_image``),
so the command only hashes the recipe and finds it."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_runner import mlab

ROOT = Path(__file__).resolve().parents[2]


def _on_a_terminal(*args: str) -> str:
    """Run `mlab ARGS` with stderr on a pseudo-terminal; return what it drew there."""
    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": "120", "TERM": "xterm"}
    proc = subprocess.Popen([sys.executable, "-m", "mlab.cli.main", *args],
                            stdout=subprocess.DEVNULL,
                            stderr=slave, stdin=subprocess.DEVNULL, env=env, cwd=ROOT)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + 300
    # Read until the command has exited and the terminal is drained (a process that inherited
    # the terminal may keep it open after the command is gone).
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    proc.wait(timeout=120)
    os.close(master)
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.e2e
def test_image_build_draws_progress_on_a_terminal_and_not_with_q(homepod_image: str) -> None:
    """The real CLI: -q on every long command; `mlab image build` (the image is cached by the
    session's other tests, so this is quick) draws its steps on a terminal, not with -q."""
    for cmd in ("up", "down", "verify"):
        help_text = mlab(cmd, "--help", env={"COLUMNS": "200"}, check=True).stdout
        assert "--quiet" in help_text and "-q" in help_text, cmd
    drawn = _on_a_terminal("image", "build", "--local")
    assert "image: hashing the recipe" in drawn or "image: done" in drawn, drawn[-2000:]
    quiet = _on_a_terminal("image", "build", "--local", "-q")
    assert "hashing the recipe" not in quiet and "image ready in" in quiet, quiet[-2000:]
