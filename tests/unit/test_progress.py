"""Long commands show their steps on stderr, quiet when not a terminal or with -q
(issue 10, point 4: the first `mlab up` printed nothing for 4.5 minutes)."""

from __future__ import annotations

import io
import pytest
from rich.console import Console

from mlab.cli.progress import Steps, progress_console, step_of


@pytest.mark.parametrize(
    ("message", "step"),
    [
        ("image: hashing the recipe", "image: hashing the"),
        ("image: bootstrapping Debian (mmdebstrap): I: extracting",
         "image: bootstrapping Debian (mmdebstrap)"),
        ("image: bootstrapping Debian (mmdebstrap): starting",
         "image: bootstrapping Debian (mmdebstrap)"),
        ("image: installing MLab into the image (podman build)", "image: installing MLab"),
        ("volume mlab-t-home-alice", "volume mlab-t-home-alice"),
        ("waiting for every port", "waiting for"),
        ("waiting for 3 port(s)", "waiting for"),
    ],
)
def test_step_of(message: str, step: str) -> None:
    assert step_of(message) == step


def _draw(messages: list[str]) -> tuple[list[str], str]:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120, color_system=None)
    with Steps("mlab up", console) as steps:
        for m in messages:
            steps.say(m)
    return steps.steps, out.getvalue()


def test_each_long_step_of_up_gets_its_line_with_a_clock() -> None:
    messages = [
        "image: checking (building if missing)",
        "image: bootstrapping Debian (mmdebstrap): I: downloading",
        "image: bootstrapping Debian (mmdebstrap): I: extracting",
        "image: importing the root filesystem (podman import)",
        "image: installing MLab into the image (podman build)",
        "volume mlab-t-home-alice",
        "starting mlab-t-homepod-alice",
        "waiting for every port",
        "waiting for 3 port(s)",
    ]
    steps, text = _draw(messages)
    assert steps == ["image: checking (building", "image: bootstrapping Debian (mmdebstrap)",
                     "image: importing the", "image: installing MLab",
                     "volume mlab-t-home-alice", "starting mlab-t-homepod-alice", "waiting for"]
    for shown in ("mmdebstrap): I: extracting", "podman import", "podman build",
                  "volume mlab-t-home-alice", "waiting for 3 port(s)"):
        assert shown in text
    assert "0:00:0" in text  # the elapsed-time column


def test_quiet_when_stderr_is_not_a_terminal_or_with_q() -> None:
    # pytest captures stderr: not a terminal.
    assert progress_console().quiet
    out = io.StringIO()
    quiet = Console(file=out, force_terminal=True, quiet=True)
    with Steps("mlab up", quiet) as steps:
        steps.say("image: hashing the recipe")
    assert out.getvalue() == ""
