"""Everything MLab does with podman, in one package.

- :mod:`mlab.podman.runner`: the one way MLab runs podman (runtime flag, containers.conf);
  the image build, the culler and the tests use it too.
- :mod:`mlab.podman.translate` (pure): rendered Kubernetes objects to the plan podman runs.
- :mod:`mlab.podman.plan_file`: that plan as written to ``plan.json``.
- :mod:`mlab.podman.objects`, :mod:`mlab.podman.firewall`, :mod:`mlab.podman.rollout`:
  the site's pods, networks and volumes; its nftables tables; which HomePods keep their image.
- :mod:`mlab.podman.engine`: ``mlab up`` / ``down`` / ``status`` with all of the above.

The layers (engine on top; runner and translation at the bottom; translation imports no
side-effect code) are import contracts in pyproject.toml. This face imports nothing at
import time, so importing the pure translation runs no side-effect code.
"""

from __future__ import annotations

import importlib
from typing import Any


def __getattr__(name: str) -> Any:
    """``from mlab.podman import podman`` (the spelling before the package): the runner's
    names, loaded only when asked for. Kept for one release; import
    :mod:`mlab.podman.runner` in new code."""
    if name.startswith("_") or name == "runner":
        raise AttributeError(name)
    runner = importlib.import_module("mlab.podman.runner")
    try:
        return getattr(runner, name)
    except AttributeError:
        raise AttributeError(f"module 'mlab.podman' has no attribute {name!r}") from None
