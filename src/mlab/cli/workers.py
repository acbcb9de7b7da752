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

import mmap
import os
import signal
import struct
import tempfile
from collections.abc import Sequence

from mlab.render import TextPart

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


Encoded = bytes | memoryview
"""A part's UTF-8 text: bytes, or a view of a worker's file (both write like bytes)."""


def run_in_workers(parts: Sequence[TextPart], workers: int | None = None) -> list[str]:
    """Each part's text, made by ``workers`` processes (this one and forked ones), in order.

    :func:`encode_in_workers`, decoded: the same texts :func:`mlab.render.run_serially`
    gives. ``mlab render`` itself keeps the bytes (no decode and encode of 60 MB).

    Args:
        parts: pure parts (:func:`mlab.render.text_parts`).
        workers: as for :func:`encode_in_workers`.

    Returns:
        The texts, ``[part.make() for part in parts]``.

    Raises:
        Exception: what a part raises when made in this process.
    """
    return [str(data, "utf-8") for data in encode_in_workers(parts, workers)]


def encode_in_workers(parts: Sequence[TextPart], workers: int | None = None) -> list[Encoded]:
    """Each part's text as UTF-8, made by ``workers`` processes (this one and forked ones),
    in order.

    The parts are shared by cost (:func:`share`); each forked worker writes its texts into
    an anonymous in-memory file (``memfd_create``; no pipe, so it never waits for this
    process to read, and this process needs no reader thread competing for the GIL while it
    makes its own share) and exits; this process makes and encodes its own share meanwhile,
    then waits for the workers and maps their files.

    Args:
        parts: pure parts (:func:`mlab.render.text_parts`).
        workers: processes to use, this one included; None: :func:`worker_count`. 1, a
            total cost below :data:`MIN_COST`, or a platform without ``fork``: this process
            alone.

    Returns:
        The texts' UTF-8 bytes (``bytes`` or a ``memoryview`` of a worker's file), in the
        parts' order.

    Raises:
        Exception: what a part raises when made in this process (a failed worker's parts
            are made again here).
    """
    workers = worker_count() if workers is None else workers
    if workers < 2 or sum(p.cost for p in parts) < MIN_COST or not hasattr(os, "fork"):
        return [part.make().encode("utf-8") for part in parts]
    bins = share([p.cost for p in parts], workers)
    texts: list[Encoded | None] = [None] * len(parts)
    children: list[tuple[int, int, list[int]]] = []  # (pid, file, part indices)
    waited: set[int] = set()
    try:
        for indices in bins[1:]:
            if indices:
                children.append(_fork(parts, indices))
        for i in bins[0]:
            texts[i] = parts[i].make().encode("utf-8")
        for pid, fd, indices in children:
            _, status = os.waitpid(pid, 0)
            waited.add(pid)
            got = _collect(status, fd, len(indices))
            if got is not None:
                for i, data in zip(indices, got, strict=True):
                    texts[i] = data
    finally:
        for pid, fd, _ in children:
            _reap(pid, fd, pid in waited)
    # A failed worker's parts, again here: the part's own error is raised from here.
    return [parts[i].make().encode("utf-8") if data is None else data
            for i, data in enumerate(texts)]


_HEAD = struct.Struct("<Q")


def _scratch_file() -> int:
    """An anonymous read-write file for a worker's texts: in memory (``memfd_create``)
    where there is one, else an unnamed temporary file."""
    if hasattr(os, "memfd_create"):
        try:
            return os.memfd_create("mlab-render-part", os.MFD_CLOEXEC)
        except OSError:
            pass
    return os.dup(tempfile.TemporaryFile().fileno())


def _fork(parts: Sequence[TextPart], indices: list[int]) -> tuple[int, int, list[int]]:
    """A forked worker making ``parts[i]`` for ``i`` in ``indices``: (pid, file, indices).

    It writes each text into the file as an 8-byte little-endian length and the UTF-8
    bytes, then exits 0; on any error it exits 1 at once (the parent makes its parts again).
    """
    fd = _scratch_file()
    try:
        pid = os.fork()
    except BaseException:
        os.close(fd)
        raise
    if pid == 0:  # the worker: never returns
        status = 1
        try:
            with open(fd, "wb", closefd=False) as out:  # buffered: writes whole
                for i in indices:
                    data = parts[i].make().encode("utf-8")
                    out.write(_HEAD.pack(len(data)))
                    out.write(data)
            status = 0
        except BaseException:  # noqa: BLE001 - reported by the exit status only
            pass
        finally:
            os._exit(status)
    return pid, fd, indices


def _collect(status: int, fd: int, count: int) -> list[Encoded] | None:
    """The ``count`` texts a worker that exited with wait ``status`` wrote into file
    ``fd``; None when it failed."""
    if status != 0:
        return None
    size = os.fstat(fd).st_size
    if not size:
        return [] if count == 0 else None
    # Mapped, not read: the texts go from the worker's pages to the files without a copy
    # in this process (43 MB at 10,000 users). The mapping lives as long as a view of it.
    data = memoryview(mmap.mmap(fd, size, prot=mmap.PROT_READ))
    texts: list[Encoded] = []
    at = 0
    while at + _HEAD.size <= size and len(texts) < count:
        (length,) = _HEAD.unpack_from(data, at)
        at += _HEAD.size
        if at + length > size:
            return None
        texts.append(data[at:at + length])
        at += length
    return texts if len(texts) == count and at == size else None


def _reap(pid: int, fd: int, waited: bool) -> None:
    """Close worker ``pid``'s file; unless it was ``waited`` for already (this process
    failed first), stop the worker and wait for it."""
    try:
        os.close(fd)
    except OSError:
        pass
    if waited:
        return
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass
