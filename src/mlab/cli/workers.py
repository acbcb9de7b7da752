"""Make rendered text parts in forked worker processes (the CLI's side of ``mlab render``).

Rendering is pure (:mod:`mlab.render`): each :class:`mlab.render.TextPart` is a call that
only reads the validated site, so forked copies of this process can make parts side by side
and send back their text. Invariant: the texts come back in the parts' order and are the
bytes :func:`mlab.render.run_serially` gives; a part that fails in a worker (or a worker
that dies) is made again in this process, so its error reaches the user exactly as it
would without workers (one line, from :func:`mlab.cli.main.main`).

Why: on a 10,000-user site the per-user parts are about half of ``mlab render``'s time,
and the machines it runs on have two cores or more (issue 18).
"""

from __future__ import annotations

import os
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


_PARTS: Sequence[TextPart] = ()
"""The parts being made; a forked worker inherits them (nothing is pickled but an index)."""


def _make(index: int) -> str:
    return _PARTS[index].make()


def run_in_workers(parts: Sequence[TextPart], workers: int | None = None) -> list[str]:
    """Each part's text, made by up to ``workers`` forked processes, in the parts' order.

    Args:
        parts: pure parts (:func:`mlab.render.text_parts`).
        workers: processes to use; None: :func:`worker_count`. 1, a total cost below
            :data:`MIN_COST`, or a platform without ``fork``: in this process.

    Returns:
        The texts, ``[part.make() for part in parts]``.

    Raises:
        Exception: what a part raises when made in this process (a failed worker's parts
            are made again here).
    """
    global _PARTS
    workers = worker_count() if workers is None else workers
    total = sum(part.cost for part in parts)
    if workers < 2 or total < MIN_COST or not hasattr(os, "fork"):
        return run_serially(parts)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # Costliest first, so the small parts fill in at the end (the pool takes them in order).
    order = sorted(range(len(parts)), key=lambda i: -parts[i].cost)
    texts: list[str | None] = [None] * len(parts)
    _PARTS = parts
    try:
        with ProcessPoolExecutor(max_workers=workers,
                                 mp_context=multiprocessing.get_context("fork")) as pool:
            futures = {i: pool.submit(_make, i) for i in order}
            for i, future in futures.items():
                try:
                    texts[i] = future.result()
                except Exception:  # noqa: BLE001 - made again below, raising here as usual
                    texts[i] = None
    finally:
        _PARTS = ()
    return [parts[i].make() if text is None else text for i, text in enumerate(texts)]
