"""When an idle HomePod is warned and stopped: pure code, no podman, no clock of its own.

Rule (docs/culling.md, issue 16): a HomePod is *busy* while its users' processes use at least
``culling.cpuBusyPercent`` of one core, or one of them wants (runs or waits to run) at least
:data:`DEMAND_BUSY_PERCENT` of one or its busiest GPU at least ``gpuBusyPercent``; else it
is idle for ``input_idle_s`` (the activity sampler's smallest keyboard/mouse idle time of all
its X displays and terminals; an open but untouched VNC, RDP or SSH connection does not
count). With a limit L (the user's override, else ``gpuIdleAfter`` for a pod with GPUs, else
``idleAfter``) and a warning lead W: idle >= L - W shows the warning; idle >= L, after a
warning shown at least W ago, stops the pod (W is at most L / 2, so a short limit still
leaves time before the warning); any input or a busy reading
cancels a pending warning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from mlab.site import Site, duration_seconds

DEMAND_BUSY_PERCENT = 80.0
"""A process whose threads ran or waited to run this share of the time (percent of one core)
is a busy job, however little CPU the node gives it."""

Action = Literal["keep", "warn", "unwarn", "cull", "never"]


@dataclass(frozen=True)
class Limits:
    """The thresholds for one user's HomePod, in seconds and percent."""

    idle_after: int | None
    """Seconds of idleness before the stop; None: never."""
    warn_before: int
    cpu_busy_percent: float
    gpu_busy_percent: float


def limits_for(site: Site, user: str, has_gpu: bool) -> Limits:
    """The culling limits of ``user``'s HomePod.

    Args:
        site: the site (``culling`` and the user's ``culling.idleAfter`` override).
        user: the user's name (must be in the site).
        has_gpu: the pod has GPUs (``resources.gpus > 0`` or nvidia-smi lists one).

    Raises:
        KeyError: no such user.
    """
    c = site.culling
    override = site.user(user).culling.idle_after
    if not c.enabled:
        idle = None
    elif override is not None:
        idle = duration_seconds(override)
    else:
        idle = duration_seconds(c.gpu_idle_after if has_gpu else c.idle_after)
    warn = duration_seconds(c.warn_before) or 0
    return Limits(idle, warn, c.cpu_busy_percent, c.gpu_busy_percent)


@dataclass(frozen=True)
class Decision:
    """What to do with one HomePod now, and why (shown by ``mlab status``, audited)."""

    action: Action
    reason: str
    idle_s: float | None


def busy_reason(sample: dict[str, Any], limits: Limits) -> str | None:
    """Why the sample counts as busy (CPU or GPU over the threshold), or None."""
    cpu = float(sample.get("cpu_percent") or 0.0)
    top = sample.get("cpu_top") or {}
    who = f" ({top.get('comm')} {top.get('percent')} %)" if top else ""
    if cpu >= limits.cpu_busy_percent:
        return f"busy: CPU {cpu:g} % of a core >= {limits.cpu_busy_percent:g} %{who}"
    # On a crowded node a CPU-bound job gets little CPU but waits for it all the time:
    # its demand (schedstat run + wait) stays near a whole core.
    if float(top.get("percent") or 0.0) >= DEMAND_BUSY_PERCENT:
        return f"busy: CPU {top.get('comm')} wants {top.get('percent')} % of a core (uses {top.get('used_percent')} %)"
    gpu = sample.get("gpu") or {}
    util = gpu.get("util_percent")
    if util is not None and float(util) >= limits.gpu_busy_percent:
        return f"busy: GPU {float(util):g} % >= {limits.gpu_busy_percent:g} %"
    return None


def decide(sample: dict[str, Any], limits: Limits, warned_at: float | None, now: float) -> Decision:
    """The action for one HomePod given its latest activity sample.

    Args:
        sample: the sampler's JSON reading (``input_idle_s``, ``uptime_s``, ``cpu_percent``,
            ``cpu_top``, ``gpu``).
        limits: from :func:`limits_for`.
        warned_at: epoch seconds when the current warning was shown; None: no warning.
        now: epoch seconds.

    Returns:
        keep (nothing to do), warn (show the warning), unwarn (input or work came back:
        close the warning), cull (stop the pod) or never (culling is off for it).
    """
    if limits.idle_after is None:
        return Decision("unwarn" if warned_at else "never", "culling: never", None)
    busy = busy_reason(sample, limits)
    idle = sample.get("input_idle_s")
    if idle is None:  # no display and no terminal: idle since the container started
        idle = sample.get("uptime_s") or 0.0
    idle = float(idle)
    if busy:
        return Decision("unwarn" if warned_at else "keep", busy, idle)
    lead = warn_lead(limits)
    warn_at = limits.idle_after - lead
    limit_text = f"no input for {_human(idle)} (limit {_human(limits.idle_after)})"
    if idle < warn_at:
        return Decision("unwarn" if warned_at else "keep", f"active: {limit_text}", idle)
    if warned_at is None:
        return Decision("warn", f"idle: {limit_text}; warned", idle)
    if idle < now - warned_at:  # input since the warning was shown
        return Decision("unwarn", f"active: input after the warning; {limit_text}", idle)
    if idle >= limits.idle_after and now - warned_at >= lead:
        return Decision("cull", f"idle: {limit_text}", idle)
    return Decision("keep", f"idle: {limit_text}; warned", idle)


def warn_lead(limits: Limits) -> int:
    """Seconds between the warning and the stop: ``warnBefore``, at most half the limit."""
    return min(limits.warn_before, (limits.idle_after or 0) // 2)


def _human(seconds: float) -> str:
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"
