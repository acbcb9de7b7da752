"""glibc malloc settings for the desktop relay's data path.

Why: every read from a VNC server gives a new ``bytes`` object of up to 256 KiB (uvloop's
read size), freed a moment later. With glibc's defaults the free space at the top of the
heap is given back to the kernel (``brk``) once it exceeds the trim threshold, and the next
read's allocation takes fresh pages, which the kernel must fault in and zero: measured here
(benchmarks/bench_portal.py, strace) about 0.4 ``brk`` calls per MB relayed and a third more
system CPU per byte than websockify, and 0.73 to 0.77 of its frame rate. Keeping up to
64 MiB of freed heap, and serving allocations up to 16 MiB from the heap instead of
``mmap``, removed the ``brk`` calls; the relay then used the same CPU per byte as websockify
and matched its frame rate (1.36x in that run).

Source of the parameters: mallopt(3) (``M_TRIM_THRESHOLD`` = -1, ``M_MMAP_THRESHOLD`` = -3;
setting either turns off glibc's dynamic adjustment of both).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
TRIM_THRESHOLD = 64 * 1024 * 1024
"""Freed heap kept before giving memory back to the kernel (bytes)."""
MMAP_THRESHOLD = 16 * 1024 * 1024
"""Allocations at least this large get their own mapping (bytes; glibc's maximum is 32 MiB
on 64-bit)."""


def keep_freed_heap() -> bool:
    """Set :data:`TRIM_THRESHOLD` and :data:`MMAP_THRESHOLD` with mallopt(3).

    Returns:
        True when set; False on a C library without ``mallopt`` (musl), where nothing
        changes (the relay works, with more system CPU per byte).
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        log.info("[mlab/portal] no mallopt in the C library: malloc defaults kept")
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
                and mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
