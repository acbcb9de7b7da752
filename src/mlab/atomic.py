"""Atomic file writes: a reader sees the old content or the new, never a partial file.

The content goes to a temporary file in the target's directory (same file system), gets its
mode before any byte is written (a secret is never readable by others, not even briefly), is
flushed and fsync'd, then renamed over the target with ``os.replace`` (rename(2), atomic on
POSIX). On any failure the temporary file is removed and the target is left as it was.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path


def write_atomic(path: str | Path, data: bytes | str | Sequence[bytes | memoryview],
                 mode: int = 0o644, *, fsync: bool = True) -> None:
    """Replace the file at ``path`` with ``data`` in one step.

    Args:
        path: the target; its parent directory must exist.
        data: the whole new content; ``str`` is written as UTF-8; a sequence of byte
            strings (or views) is written piece after piece, never joined.
        mode: permission bits of the new file (e.g. ``0o600`` for secrets).
        fsync: flush the content to disk before the rename (durable across a crash).

    Raises:
        OSError: the directory is missing or not writable, or the disk is full; the target
            is then unchanged and no temporary file is left behind.
    """
    path = Path(path)
    pieces = ([data.encode("utf-8")] if isinstance(data, str)
              else [data] if isinstance(data, (bytes, bytearray, memoryview)) else data)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            for piece in pieces:
                fh.write(piece)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
