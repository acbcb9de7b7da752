"""Interleaved sampling for the benchmarks: several runs, median and spread, ratios pair by pair.

Each benchmark compares a measure against a baseline measured in the same run. On a shared,
noisy 2-core machine a single sample or a best-of on one side only says little, so:

- the cases run in turn (A B A B ...), after one warm-up round that is not counted, so a
  drift of the machine's speed hits both sides alike;
- every case gets the same number of samples; the median is the figure to quote and
  min..max the spread;
- a ratio is taken pair by pair (sample i of A over sample i of the baseline) and its
  median is reported, which cancels slow phases of the machine that hit one pair.

Use: ``stats = interleave({"ours": fn_a, "baseline": fn_b}, samples=5)`` then
``print(report(stats, baseline="baseline"))``. One-shot timings of whole commands:
:func:`timed_run` / :func:`timed_mlab`, printed with :func:`print_figures`. A case callable may return a float, which is
then used as its own timing (for cases that time only part of what they do, such as
excluding a setup step), or anything else (the wall time of the whole call is used).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Samples:
    """Seconds of each counted run of one case, in run order."""

    name: str
    times: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        """Median seconds."""
        return statistics.median(self.times)

    @property
    def spread(self) -> tuple[float, float]:
        """(min, max) seconds."""
        return min(self.times), max(self.times)


def _one(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    value = fn()
    elapsed = time.perf_counter() - start
    return float(value) if isinstance(value, float) else elapsed


def interleave(
    cases: Mapping[str, Callable[[], Any]], samples: int = 5, warmup: int = 1
) -> dict[str, Samples]:
    """Run ``cases`` in turn, ``warmup`` uncounted rounds then ``samples`` counted ones.

    Args:
        cases: name -> callable; a callable returning a float reports its own seconds.
        samples: counted runs of each case (>= 1).
        warmup: rounds run first and thrown away.

    Returns:
        name -> :class:`Samples`, in the order of ``cases``.
    """
    out = {name: Samples(name) for name in cases}
    for round_no in range(warmup + samples):
        # Rotate the starting case each round, so neither side always runs first.
        names = list(cases)
        shift = round_no % len(names)
        for name in names[shift:] + names[:shift]:
            seconds = _one(cases[name])
            if round_no >= warmup:
                out[name].times.append(seconds)
    return out


def ratio(stats: Mapping[str, Samples], case: str, baseline: str) -> tuple[float, float, float]:
    """(median, min, max) of the pair-by-pair ratios ``case / baseline``."""
    pairs = [a / b for a, b in zip(stats[case].times, stats[baseline].times) if b > 0]
    return statistics.median(pairs), min(pairs), max(pairs)


def report(
    stats: Mapping[str, Samples], baseline: str, goals: Mapping[str, float] | None = None,
    title: str = "",
) -> str:
    """A table: each case's median and spread in seconds, and its ratio against ``baseline``.

    Args:
        stats: from :func:`interleave`.
        baseline: the name of the baseline case.
        goals: case -> highest acceptable median ratio, printed as "goal <= X: met/MISSED".
        title: a first line.
    """
    goals = goals or {}
    n = len(next(iter(stats.values())).times)
    lines = [title] if title else []
    lines.append(f"{'case':44} {'median s':>9} {'min..max s':>17} {'ratio (median, min..max)':>28}"
                 f"   [{n} interleaved samples each]")
    for name, s in stats.items():
        lo, hi = s.spread
        row = f"{name:44} {s.median:9.3f} {lo:8.3f}..{hi:<8.3f}"
        if name == baseline:
            row += f" {'baseline':>28}"
        else:
            med, rlo, rhi = ratio(stats, name, baseline)
            row += f" {med:13.2f}x {rlo:5.2f}..{rhi:<5.2f}"
            if name in goals:
                row += f"  goal <= {goals[name]}: {'met' if med <= goals[name] else 'MISSED'}"
        lines.append(row)
    return "\n".join(lines)


def as_json(stats: Mapping[str, Samples], baseline: str) -> dict[str, Any]:
    """The same figures as a JSON-ready dict (seconds rounded to ms)."""
    out: dict[str, Any] = {}
    for name, s in stats.items():
        entry: dict[str, Any] = {"median_s": round(s.median, 3),
                                 "min_s": round(s.spread[0], 3), "max_s": round(s.spread[1], 3)}
        if name != baseline:
            med, lo, hi = ratio(stats, name, baseline)
            entry["ratio"] = round(med, 3)
            entry["ratio_min"] = round(lo, 3)
            entry["ratio_max"] = round(hi, 3)
        out[name] = entry
    return out


def dumps(obj: Any) -> str:
    """JSON text for printing."""
    return json.dumps(obj, indent=1)


def timed_run(argv: list[str], env: Mapping[str, str] | None = None) -> float:
    """Seconds ``argv`` took as one process (wall time, output captured).

    Raises:
        SystemExit: the process failed; the message ends with the tail of its stderr.
    """
    start = time.monotonic()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"bench: {' '.join(argv[:6])} failed: {proc.stderr.strip()[-500:]}")
    return seconds


def timed_mlab(*args: str, env: Mapping[str, str] | None = None) -> float:
    """Seconds ``mlab ARGS`` took (this interpreter's MLab), as :func:`timed_run`."""
    return timed_run([sys.executable, "-m", "mlab.cli.main", *args], env=env)


def print_figures(figures: Mapping[str, Any], as_json: bool, width: int = 24) -> None:
    """Print a benchmark's figures: indented JSON, or one ``name value`` line each."""
    if as_json:
        print(json.dumps(figures, indent=2))
        return
    for key, value in figures.items():
        print(f"{key:{width}} {value}")
