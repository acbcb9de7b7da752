"""Make rendered text parts in forked worker processes (the CLI's side of ``mlab render``).

Rendering is pure (:mod:`mlab.render`): each :class:`mlab.render.TextPart` is a call that
only reads the validated site, so forked copies of this process can make parts side by side
and send back their text; this process makes a share too. Invariant: the texts come back in the parts' order and are the
bytes :func:`mlab.render.run_serially` gives; a part that fails in a worker (or a worker
that dies) is made again in this process, so its error reaches the user exactly as it
would without workers (one line, from :func:`mlab.cli.main.main`).

Why: on a 10,000-user site the per-user parts are about half of ``mlab render``'s time,
and the machines it runs on have two cores or more (issue 18).
"""

from __future__ import annotations

import os
import signal
import struct
import threading
from collections.abc import Sequence

from mlab.render import TextPart, run_serially

MIN_COST = 2000
"""Below this total cost (about users) forking costs more than it saves: run serially."""


def worker_count() -> int:
    """The CPUs this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def share(costs: Sequence[int], bins: int) -> list[list[int]]:
    """Part indices in ``bins`` bins of about equal total cost (costliest first, each to the
    lightest bin so far); each bin in index order. Deterministic."""
    out: list[list[int]] = [[] for _ in range(bins)]
    load = [0] * bins
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        lightest = min(range(bins), key=lambda b: (load[b], b))
        out[lightest].append(i)
        load[lightest] += max(costs[i], 1)
    return [sorted(b) for b in out]


def run_in_workers(parts: Sequence[TextPart], workers: int | None = None) -> list[str]:
    """Each part's text, made by ``workers`` processes (this one and forked ones), in order.

    The parts are shared by cost (:func:`share`); each forked worker sends its texts back
    through a pipe as UTF-8 and exits; this process makes its own share meanwhile.

    Args:
        parts: pure parts (:func:`mlab.render.text_parts`).
        workers: processes to use, this one included; None: :func:`worker_count`. 1, a
            total cost below :data:`MIN_COST`, or a platform without ``fork``: this process
            alone.

    Returns:
        The texts, ``[part.make() for part in parts]``.

    Raises:
        Exception: what a part raises when made in this process (a failed worker's parts
            are made again here).
    """
    workers = worker_count() if workers is None else workers
    if workers < 2 or sum(p.cost for p in parts) < MIN_COST or not hasattr(os, "fork"):
        return run_serially(parts)
    bins = share([p.cost for p in parts], workers)
    texts: list[str | None] = [None] * len(parts)
    children: list[tuple[int, int, list[int]]] = []  # (pid, read end, part indices)
    readers: list[tuple[threading.Thread, list[bytes]]] = []
    try:
        for indices in bins[1:]:
            if indices:
                children.append(_fork(parts, indices))
        # Drain every pipe while this process makes its own share: a worker blocked on a
        # full pipe (64 KiB) would otherwise wait for this share to finish.
        for _, fd, _ in children:
            sink: list[bytes] = []
            reader = threading.Thread(target=_drain, args=(fd, sink), daemon=True)
            reader.start()
            readers.append((reader, sink))
        for i in bins[0]:
            texts[i] = parts[i].make()
        for (pid, _, indices), (reader, sink) in zip(children, readers, strict=True):
            reader.join()
            got = _collect(pid, b"".join(sink), len(indices))
            if got is not None:
                for i, text in zip(indices, got, strict=True):
                    texts[i] = text
    finally:
        for i, (pid, fd, _) in enumerate(children):
            _reap(pid, fd, readers[i][0] if i < len(readers) else None)
    # A failed worker's parts, again here: the part's own error is raised from here.
    return [parts[i].make() if text is None else text for i, text in enumerate(texts)]


_HEAD = struct.Struct("<Q")


def _fork(parts: Sequence[TextPart], indices: list[int]) -> tuple[int, int, list[int]]:
    """A forked worker making ``parts[i]`` for ``i`` in ``indices``: (pid, read end, indices).

    It writes each text as an 8-byte little-endian length and the UTF-8 bytes, then exits
    0; on any error it exits 1 at once (the parent makes its parts again).
    """
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the worker: never returns
        status = 1
        try:
            os.close(read)
            with open(write, "wb", buffering=0) as out:
                for i in indices:
                    data = parts[i].make().encode("utf-8")
                    out.write(_HEAD.pack(len(data)))
                    out.write(data)
            status = 0
        except BaseException:  # noqa: BLE001 - reported by the exit status only
            pass
        finally:
            os._exit(status)
    os.close(write)
    return pid, read, indices


def _drain(fd: int, sink: list[bytes]) -> None:
    """Read the pipe ``fd`` to its end into ``sink`` (a reader thread; the read releases
    the GIL)."""
    with open(fd, "rb", closefd=False) as stream:
        sink.append(stream.read())


def _collect(pid: int, data: bytes, count: int) -> list[str] | None:
    """The ``count`` texts worker ``pid`` sent (``data``, all it wrote); None when it failed."""
    texts: list[str] = []
    at = 0
    while at + _HEAD.size <= len(data) and len(texts) < count:
        (size,) = _HEAD.unpack_from(data, at)
        at += _HEAD.size
        if at + size > len(data):
            return None
        texts.append(data[at:at + size].decode("utf-8"))
        at += size
    _, status = os.waitpid(pid, 0)
    return texts if status == 0 and len(texts) == count and at == len(data) else None


def _reap(pid: int, fd: int, reader: threading.Thread | None) -> None:
    """End worker ``pid``: when its pipe is still being read (this process failed first),
    stop the worker so the reader sees the end; then close the pipe and wait for it."""
    if reader is not None and reader.is_alive():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        reader.join()
    try:
        os.close(fd)
    except OSError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass  # already waited for by _collect
