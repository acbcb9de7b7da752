"""``git http-backend`` as a child process joined to the event loop (issue 18).

Invariant: each descriptor is closed exactly once, by this module, and git is reaped here.
git is started with ``subprocess.Popen`` (CPython starts it with vfork: 0.2 ms) on pipes
made by ``os.pipe()``; this side of each pipe is read or written through
``loop.add_reader``/``add_writer``, and the exit is watched through a pidfd on the loop.

Why not ``asyncio.create_subprocess_exec``: under uvloop, uvicorn's loop, it forks the whole
service, 5-10 ms a request (docs/benchmarks.md, "Session 6"). Why not
``loop.connect_read_pipe``: uvloop's pipe transport closes the descriptor and then the file
object given to it again; in the threaded service that second close hit whatever file had
just reused the number (seen: SQLite's ``-shm``, whose lock then failed for 30 s).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading

CHUNK = 256 * 1024
"""Bytes read from git's stdout at a time (the relay's chunk size)."""


def grow_pipe(fd: int) -> None:
    """Enlarge the CGI's stdout pipe to 1 MiB (Linux F_SETPIPE_SZ): fewer, larger reads
    per pack, which matters when many clones share the one event-loop thread."""
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
    except (AttributeError, OSError, ValueError):
        pass  # not Linux, or over /proc/sys/fs/pipe-max-size: the default 64 KiB works


class GitProcess:
    """A running ``git http-backend`` joined to the event loop: ``pid``, ``returncode``,
    ``wait()``, ``stdin`` (:class:`PipeOut`), ``stdout`` and ``stderr`` (StreamReaders)."""

    def __init__(self, popen: subprocess.Popen[bytes], exited: asyncio.Future[int],
                 stdin: PipeOut, stdout: asyncio.StreamReader, stderr: asyncio.StreamReader,
                 pipes: list[PipeIn]) -> None:
        self.pid = popen.pid
        self._exited = exited
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self._pipes = pipes

    @property
    def returncode(self) -> int | None:
        """The exit status once git has been reaped, else None."""
        return self._exited.result() if self._exited.done() else None

    async def wait(self) -> int:
        """Wait for git to exit; its exit status (negative: killed by that signal)."""
        return await asyncio.shield(self._exited)

    def close(self) -> None:
        """Close this side of every pipe (idempotent)."""
        self.stdin.close()
        for pipe in self._pipes:
            pipe.close()


class PipeIn:
    """Feeds a StreamReader from a pipe through ``loop.add_reader``, pausing while the
    reader holds more than twice its limit (StreamReader calls ``pause_reading``).

    Not ``loop.connect_read_pipe``: uvloop's pipe transport closes the descriptor and then
    closes the file object given to it again, which in this threaded process closed
    whatever file had just reused the number (seen: the SQLite ``-shm`` of a push's
    bookkeeping, which then waited 30 s for a lock).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int,
                 reader: asyncio.StreamReader) -> None:
        self._loop = loop
        self._fd = fd
        self._reader = reader
        self._paused = False
        os.set_blocking(fd, False)
        reader.set_transport(self)  # type: ignore[arg-type]
        loop.add_reader(fd, self._ready)

    def _ready(self) -> None:
        try:
            data = os.read(self._fd, CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._reader.set_exception(exc)
            self.close()
            return
        if data:
            self._reader.feed_data(data)
        else:
            self._reader.feed_eof()
            self.close()

    def pause_reading(self) -> None:
        """Stop reading until :meth:`resume_reading` (StreamReader's back-pressure)."""
        if not self._paused and self._fd >= 0:
            self._loop.remove_reader(self._fd)
            self._paused = True

    def resume_reading(self) -> None:
        """Read again after :meth:`pause_reading`."""
        if self._paused and self._fd >= 0:
            self._loop.add_reader(self._fd, self._ready)
            self._paused = False

    def close(self) -> None:
        """Stop reading and close the descriptor (once)."""
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1


class PipeOut:
    """Writes to a pipe through ``loop.add_writer``: ``await write(data)`` returns when
    every byte is in the pipe (back-pressure); ``BrokenPipeError`` when git has gone."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        self._loop = loop
        self._fd = fd
        os.set_blocking(fd, False)

    async def write(self, data: bytes) -> None:
        """Write all of ``data``."""
        view = memoryview(data)
        while view:
            if self._fd < 0:
                raise BrokenPipeError("git's stdin is closed")
            try:
                view = view[os.write(self._fd, view):]
                continue
            except (BlockingIOError, InterruptedError):
                pass
            ready: asyncio.Future[None] = self._loop.create_future()
            fd = self._fd

            def writable() -> None:
                if not ready.done():
                    ready.set_result(None)

            self._loop.add_writer(fd, writable)
            try:
                await ready
            finally:
                self._loop.remove_writer(fd)

    def close(self) -> None:
        """Close the descriptor (once): git reads end of file."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


async def spawn_git(env: dict[str, str]) -> GitProcess:
    """Start ``git http-backend`` in its own session with piped stdin, stdout and stderr.

    ``subprocess.Popen`` (CPython starts it with vfork) rather than
    ``asyncio.create_subprocess_exec``: under uvloop, uvicorn's loop, the latter forks the
    whole service and took 5-10 ms a request against 0.2 ms (issue 18, docs/benchmarks.md
    "Session 6"). The exit is watched through a pidfd on the loop (Linux >= 5.3), else by
    a thread that waits for the child.

    Returns:
        The running process; its stdout pipe enlarged by :func:`grow_pipe`.

    Raises:
        OSError: git could not be started.
    """
    loop = asyncio.get_running_loop()
    pipes = [os.pipe() for _ in range(3)]  # (read, write) each, close-on-exec
    child = (pipes[0][0], pipes[1][1], pipes[2][1])
    ours = [pipes[0][1], pipes[1][0], pipes[2][0]]
    try:
        popen = subprocess.Popen(["git", "http-backend"], stdin=child[0], stdout=child[1],
                                 stderr=child[2], env=env, start_new_session=True)
    except BaseException:
        for fd in ours:
            os.close(fd)
        raise
    finally:
        for fd in child:
            os.close(fd)
    grow_pipe(ours[1])
    exited: asyncio.Future[int] = loop.create_future()
    watch_exit(loop, popen, exited)
    stdout = asyncio.StreamReader(limit=4 * CHUNK, loop=loop)
    stderr = asyncio.StreamReader(limit=4 * CHUNK, loop=loop)
    readers = [PipeIn(loop, ours[1], stdout), PipeIn(loop, ours[2], stderr)]
    return GitProcess(popen, exited, PipeOut(loop, ours[0]), stdout, stderr, readers)


def watch_exit(loop: asyncio.AbstractEventLoop, popen: subprocess.Popen[bytes],
                exited: asyncio.Future[int]) -> None:
    """Resolve ``exited`` with the exit status when the child ends (it is reaped here)."""

    def done(code: int) -> None:
        if not exited.done():
            exited.set_result(code)

    try:
        pidfd = os.pidfd_open(popen.pid)
    except (AttributeError, OSError):  # not Linux >= 5.3: a thread waits
        threading.Thread(target=lambda: loop.call_soon_threadsafe(done, popen.wait()),
                         daemon=True).start()
        return

    def readable() -> None:
        code = popen.poll()
        if code is None:
            return
        loop.remove_reader(pidfd)
        os.close(pidfd)
        done(code)

    loop.add_reader(pidfd, readable)
