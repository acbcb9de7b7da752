"""Fixtures for tests on the real one-node Kubernetes (``mlab node up``).

The session fixture starts the node (building what is missing, which takes minutes only
the first time on a machine) and leaves it running afterwards, so the next run starts in
seconds; ``mlab node down`` stops it. Every test here is ``e2e``: in CI
(``MLAB_REQUIRE_E2E=1``) a skip fails the run, and nothing here skips on purpose.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from nodekit import SITE, Node


@pytest.fixture(scope="session")
def node() -> Node:
    """Start the node (or find it running) and return how to use it."""
    env = dict(os.environ)
    # MLAB_NODE_KEEP_IMAGE=1 (a developer's loop, never CI): use the HomePod image the
    # node already holds instead of building the current one.
    keep = ["--no-homepod-image"] if os.environ.get("MLAB_NODE_KEEP_IMAGE") == "1" else []
    proc = subprocess.run([sys.executable, "-m", "mlab.cli.main", "node", "up", *keep],
                          capture_output=True, text=True, env=env, timeout=5400, check=False)
    assert proc.returncode == 0, f"mlab node up failed: {proc.stderr.strip()[-2000:]}"
    line = proc.stdout.strip().splitlines()[-1]
    assert line.startswith("export KUBECONFIG="), proc.stdout
    kubeconfig = Path(line.split("=", 1)[1])
    from mlab.node.layout import default_layout
    from mlab.node.lifecycle import known_bins

    kubectl_bin = known_bins(default_layout())["kubectl"]
    env["KUBECONFIG"] = str(kubeconfig)
    env["MLAB_KUBECTL"] = str(kubectl_bin)
    env.pop("MLAB_REQUIRE_E2E", None)
    return Node(kubeconfig, kubectl_bin, env, tuple(keep))


@pytest.fixture(scope="module")
def site_up(node: Node) -> Node:
    """The local site applied to the node, every Deployment ready."""
    proc = node.mlab("apply", "--site", str(SITE), "--timeout", "600")
    assert proc.returncode == 0, proc.stderr
    return node
