"""The staged wheels read while pip still runs: each one hashed, inspected and flushed once.

:mod:`mlab.airlock.pip` hands each wheel to :class:`Inspector` as soon as ``pip download``
reports it saved (or when a round ends); threads read it once
(:func:`mlab.airlock.pipindex.inspect_wheel`: sha256, ``Requires-Python``,
``Requires-Dist``) and ``fsync`` it, while pip copies the others and exits (issue 18).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mlab.airlock.pipindex_pages import WheelFile

INSPECT_THREADS = 4
"""Wheels read and hashed at once: the reads and sha256 release the GIL, so on the
Airlock's cores 80 MB of wheels hash in about half the time (issue 18)."""

_SAVED = re.compile(r"^\s*Saved (\S+\.whl)$")
"""pip download's line for each file it has copied into ``--dest`` (after resolving)."""


def _inspect_durably(path: Path, sha256: str | None) -> tuple[WheelFile, list[str]]:
    """:func:`inspect_wheel`, then ``fsync`` the wheel: publishing fsyncs it again before
    its pages are renamed, which then finds nothing left to write."""
    from mlab.airlock.pipindex import inspect_wheel

    info = inspect_wheel(path, sha256)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return info


class Inspector:
    """Reads each wheel once (:func:`inspect_wheel`) and flushes it, several at once, in
    threads: while pip still runs for the wheels it reports saved, the rest at the end.

    ``inspected`` (path -> what :func:`inspect_wheel` returned) gets every result.
    """

    def __init__(self, inspected: dict[Path, tuple[WheelFile, list[str]]]) -> None:
        self.inspected = inspected
        self._pool: Any = None
        self._pending: dict[Path, Any] = {}

    def submit(self, path: Path, sha256: str | None = None) -> None:
        """Start on ``path`` unless it is done or under way (``sha256``: already verified)."""
        if path in self.inspected or path in self._pending:
            return
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(INSPECT_THREADS, thread_name_prefix="mlab-inspect")
        self._pending[path] = self._pool.submit(_inspect_durably, path, sha256)

    def saved_line(self, dest: Path) -> Callable[[str], None]:
        """A ``each_line`` hook for :func:`_run_pip` that submits each wheel pip saved in ``dest``."""
        def each(line: str) -> None:
            if (m := _SAVED.match(line)):
                self.submit(dest / Path(m.group(1)).name)
        return each

    def collect(self, paths: Sequence[Path], hashes: Mapping[str, str] = {}) -> None:
        """Finish every path (``hashes``: file name -> sha256 verified while downloading).

        Raises:
            MlabError: a wheel is unreadable.
        """
        for path in paths:
            self.submit(path, hashes.get(path.name))
        pending, self._pending = self._pending, {}
        for path, future in pending.items():
            self.inspected[path] = future.result()

    def forget(self) -> None:
        """Drop every result and the work under way (the files are about to be replaced)."""
        pending, self._pending = self._pending, {}
        for future in pending.values():
            future.cancel()
        for future in pending.values():
            if not future.cancelled():
                future.exception()  # wait; its error, if any, no longer matters
        self.inspected.clear()

    def close(self) -> None:
        """Stop the threads (work not collected is dropped)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
