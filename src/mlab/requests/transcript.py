"""Run an install script on the Airlock and keep a transcript of the run.

Invariant: the transcript records what a reviewer needs to trust the test run: the exact
output (stdout and stderr interleaved as written), exit status, duration, start time and the
image it ran on. Output is streamed to the caller as it comes and kept whole up to
:data:`KEEP` characters; beyond that the head and the tail are kept with a marker between.

Scripts are run with ``bash SCRIPT``, as the image build runs them, from the script's
directory, with the caller's environment.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from mlab.errors import UsageError

KEEP = 256 * 1024
"""Characters of output kept in a transcript (head and tail halves when longer)."""

IMAGE_FILE = Path("/etc/mlab/image")
"""File in the MLab image holding its reference (``repository:tag``), if the build wrote one."""


def image_tag() -> str:
    """The image this process runs in: ``$MLAB_IMAGE``, else :data:`IMAGE_FILE`, else ``unknown``."""
    env = os.environ.get("MLAB_IMAGE")
    if env:
        return env
    try:
        return IMAGE_FILE.read_text(encoding="utf-8").strip() or "unknown"
    except OSError:
        return "unknown"


class _Tail:
    """Keeps the first and last KEEP/2 characters of a stream."""

    def __init__(self, keep: int) -> None:
        self.half = keep // 2
        self.head: list[str] = []
        self.head_len = 0
        self.tail = ""
        self.dropped = 0

    def add(self, text: str) -> None:
        room = self.half - self.head_len
        if room > 0:
            self.head.append(text[:room])
            self.head_len += len(text[:room])
            text = text[room:]
        if not text:
            return
        self.tail += text
        if len(self.tail) > self.half:
            cut = len(self.tail) - self.half
            self.dropped += cut
            self.tail = self.tail[cut:]

    def result(self) -> tuple[str, bool]:
        head = "".join(self.head)
        if self.dropped:
            return f"{head}\n[... {self.dropped} characters omitted ...]\n{self.tail}", True
        return head + self.tail, False


def run_script(
    script: Path,
    *,
    timeout: float | None = 3600,
    echo: Callable[[str], None] | None = None,
    keep: int = KEEP,
) -> dict[str, object]:
    """Run ``bash SCRIPT`` and return its transcript.

    Args:
        script: the install script (a bash script).
        timeout: seconds before the script is killed (exit status 124 is recorded, as
            coreutils ``timeout`` does). None: no limit.
        echo: called with each piece of output as it arrives (e.g. write to the terminal).
        keep: characters of output kept.

    Returns:
        ``{"exit_status": int, "duration_s": float, "image": str, "started_at": ISO 8601 UTC,
        "output": str, "truncated": bool}`` (the API's transcript shape).

    Raises:
        UsageError: the script does not exist or is not a file.
    """
    if not script.is_file():
        raise UsageError(f"SCRIPT: {script} is not a file")
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    t0 = time.monotonic()
    buf = _Tail(keep)
    proc = subprocess.Popen(
        ["bash", str(script.resolve())],
        cwd=script.resolve().parent,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    assert proc.stdout is not None
    deadline = None if timeout is None else t0 + timeout
    timed_out = False
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    decoder_rest = b""
    while True:
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        if wait == 0.0:
            timed_out = True
            break
        if not sel.select(timeout=min(wait, 1.0) if wait is not None else 1.0):
            continue
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            break
        data = decoder_rest + chunk
        try:
            text = data.decode("utf-8")
            decoder_rest = b""
        except UnicodeDecodeError as exc:
            if exc.start >= len(data) - 3 and exc.reason == "unexpected end of data":
                text, decoder_rest = data[: exc.start].decode("utf-8"), data[exc.start:]
            else:
                text, decoder_rest = data.decode("utf-8", "replace"), b""
        buf.add(text)
        if echo:
            echo(text)
    sel.close()
    if timed_out:
        try:
            os.killpg(proc.pid, 9)
        except ProcessLookupError:
            pass
        proc.wait()
        status = 124
        note = f"\n[mlab: killed after {timeout} s]\n"
        buf.add(note)
        if echo:
            echo(note)
    else:
        status = proc.wait()
        if status < 0:  # killed by a signal: the shell's convention 128 + N
            status = 128 - status
    proc.stdout.close()
    if decoder_rest:
        buf.add(decoder_rest.decode("utf-8", "replace"))
    output, truncated = buf.result()
    return {
        "exit_status": status,
        "duration_s": round(time.monotonic() - t0, 3),
        "image": image_tag(),
        "started_at": started,
        "output": output,
        "truncated": truncated,
    }
