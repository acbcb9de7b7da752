"""SQLite files that hold secrets (password hashes) are readable by their owner alone.

Invariant: after :func:`private_db`, the database and its WAL/SHM companions are mode 0600
(issue 13, item 8: ``mlab.sqlite`` and ``requests.sqlite`` were 0644). SQLite creates the
companions with the main file's mode, so creating the main file 0600 first is enough for
new databases; existing ones are fixed in place.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def private_db(path: Path) -> None:
    """Create ``path`` if missing, mode 0600, and chmod it and its companions to 0600.

    Args:
        path: the database file.

    Raises:
        OSError: the directory is not writable.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(p, 0o600)
