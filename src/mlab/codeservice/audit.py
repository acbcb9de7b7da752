"""The audit log: one JSON object a line, appended, never rewritten.

Invariant: each record is written with a single ``write`` on a descriptor opened with
``O_APPEND``, so concurrent writers (request handlers, git hooks in other processes) never
interleave inside a line. Records carry ``time`` (UTC, ISO 8601) and ``event``; they never
carry passwords or Authorization headers.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any


def append(path: Path, event: str, **fields: Any) -> None:
    """Append one audit record.

    Args:
        path: the log file (created mode 0600).
        event: what happened, e.g. ``fetch``, ``push``, ``sync``, ``approve``.
        **fields: JSON-serialisable details (user, repo, refs, bytes...).
    """
    record = {"time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "event": event, **fields}
    line = (json.dumps(record, sort_keys=False, default=str) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
