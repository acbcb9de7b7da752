"""Idle culling on the real node (docs/culling.md): ``mlab cull --kubernetes`` running as the
``mlab-culler`` ServiceAccount (``mlab cull-rbac``, a token from the TokenRequest API, no
admin rights) warns alice's idle HomePod, then scales its Deployment to 0; bob's, with a
CPU-busy process of his and nobody at the keyboard, stays. ``mlab apply`` leaves the culled
Deployment at 0 replicas. ``mlab wake alice --kubernetes`` (same ServiceAccount) brings it
back with her home intact. Each cull and wake is one line of the audit file.

The site has its own namespace and two users (no Airlock); limits are short (idle after
60 s, warning 20 s before).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from nodekit import Node

pytestmark = [pytest.mark.e2e, pytest.mark.node, pytest.mark.timeout(1500)]

SITE = "t16node"
NAMESPACE = "mlab-t16"
BOB_UID = 1002


class CullSite:
    def __init__(self, node: Node, root: Path) -> None:
        self.node, self.root = node, root
        self.file = root / f"{SITE}.yaml"
        self.state = root / "state"
        self.env = {**node.env, "MLAB_STATE_DIR": str(self.state)}
        self.culler_env = dict(self.env)  # KUBECONFIG set by the fixture

    def mlab(self, *args: str, culler: bool = False, timeout: float = 900) -> Any:
        import subprocess
        import sys

        proc = subprocess.run([sys.executable, "-m", "mlab.cli.main", *args, "--site",
                               str(self.file)], capture_output=True, text=True, timeout=timeout,
                              env=self.culler_env if culler else self.env, check=False)
        assert proc.returncode == 0, f"mlab {args}: {proc.stdout[-1500:]}\n{proc.stderr[-2500:]}"
        return proc

    def cull(self) -> dict[str, dict[str, Any]]:
        rows = json.loads(self.mlab("cull", "--kubernetes", "--once", "-o", "json",
                                    culler=True).stdout)
        return {r["user"]: r for r in rows}

    def exec(self, user: str, *argv: str, check: bool = True) -> str:
        return self.node.kubectl("-n", NAMESPACE, "exec", f"deploy/homepod-{user}", "--", *argv,
                                 check=check, timeout=120).stdout

    def replicas(self, user: str) -> int:
        return int(self.node.json("-n", NAMESPACE, "get", f"deployment/homepod-{user}")
                   ["spec"].get("replicas", 1))

    def pods(self, user: str) -> list[dict[str, Any]]:
        return self.node.json("-n", NAMESPACE, "get", "pods", "-l", f"mlab.io/user={user}")["items"]

    def audit(self) -> list[dict[str, Any]]:
        path = self.state / SITE / "cull-audit.jsonl"
        return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def culler_kubeconfig(node: Node, path: Path) -> None:
    """A kubeconfig that authenticates as the mlab-culler ServiceAccount (bound token)."""
    token = node.kubectl("-n", NAMESPACE, "create", "token", "mlab-culler",
                         "--duration=1h").stdout.strip()
    admin = yaml.safe_load(node.kubeconfig.read_text())
    cluster = admin["clusters"][0]["cluster"]
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "node", "cluster": cluster}],
        "users": [{"name": "mlab-culler", "user": {"token": token}}],
        "contexts": [{"name": "culler", "context": {"cluster": "node", "user": "mlab-culler",
                                                    "namespace": NAMESPACE}}],
        "current-context": "culler",
    }))
    path.chmod(0o600)


@pytest.fixture(scope="module")
def cs(node: Node, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CullSite]:
    s = CullSite(node, tmp_path_factory.mktemp(SITE))
    s.file.write_text(yaml.safe_dump({
        "apiVersion": "mlab.io/v1", "name": SITE, "namespace": NAMESPACE,
        "image": {"repository": "localhost/mlab/homepod", "tag": "latest", "pullPolicy": "Never"},
        "access": {"bindAddress": "127.0.0.1", "officeCIDRs": ["127.0.0.0/8"]},
        "users": [{"name": "alice", "uid": 1001}, {"name": "bob", "uid": BOB_UID}],
        "airlock": {"enabled": False},
        "codeService": {"host": "code.t16.local", "reviewers": ["bob"], "clusterIP": "10.96.0.216"},
        "culling": {"idleAfter": "60s", "warnBefore": "20s", "cpuBusyPercent": 15},
    }))
    try:
        node.clear_leftovers(s.file)
        s.mlab("apply", "--timeout", "600")
        rbac = s.mlab("cull-rbac").stdout
        node.kubectl("apply", "-f", "-", stdin=rbac)
        kubeconfig = s.root / "culler.kubeconfig"
        culler_kubeconfig(node, kubeconfig)
        s.culler_env["KUBECONFIG"] = str(kubeconfig)
        # The culler has no rights beyond its Role.
        denied = node.kubectl("--kubeconfig", str(kubeconfig), "-n", NAMESPACE, "scale",
                              "deployment/code-service", "--replicas=0", check=False)
        assert denied.returncode != 0 and "forbidden" in denied.stderr.lower(), denied.stderr
        yield s
    finally:
        node.kubectl("delete", "-f", "-", "--ignore-not-found", stdin=s.mlab("cull-rbac").stdout,
                     check=False)
        node.mlab("delete", "--site", str(s.file), "--delete-data", timeout=600)


def test_idle_is_warned_and_culled_busy_stays_wake_keeps_home(cs: CullSite) -> None:
    cs.exec("alice", "sh", "-c", "echo kept > /home/alice/notes.txt")
    bob_pod = cs.pods("bob")[0]["metadata"]["uid"]
    # bob's training job: a CPU-bound process of his, nobody at his keyboard.
    cs.exec("bob", "setpriv", f"--reuid={BOB_UID}", f"--regid={BOB_UID}", "--clear-groups",
            "sh", "-c", "setsid -f python3 -c 'while True: pass' </dev/null >/dev/null 2>&1")

    seen: list[str] = []
    warned_window = False
    deadline = time.monotonic() + 420
    while time.monotonic() < deadline:
        rows = cs.cull()
        alice, bob = rows["alice"], rows["bob"]
        seen.append(alice["action"])
        if alice["action"] == "warn":
            tree = cs.exec("alice", "setpriv", "--reuid=1001", "--regid=1001", "--clear-groups",
                           "env", "DISPLAY=:1", "XAUTHORITY=/dev/null", "xwininfo", "-root",
                           "-tree")
            warned_window = warned_window or "MLab: idle desktop" in tree
        if bob["action"] not in ("keep", "unwarn"):
            raise AssertionError(f"bob's busy HomePod: {bob}")
        if alice["action"] == "cull":
            break
        time.sleep(5)
    assert seen and seen[-1] == "cull", seen
    last_warn = len(seen) - 1 - seen[::-1].index("warn")
    assert "unwarn" not in seen[last_warn:], seen
    assert warned_window, "the warning dialog was not on alice's display"
    assert bob["reason"].startswith("busy: CPU") and "python3" in bob["reason"], bob
    print(f"\nalice: {' -> '.join(seen)}; bob: {bob['reason']}")

    assert cs.replicas("alice") == 0 and cs.replicas("bob") == 1
    cs.node.kubectl("-n", NAMESPACE, "wait", "pods", "-l", "mlab.io/user=alice",
                    "--for=delete", "--timeout=180s", timeout=200)
    assert cs.pods("bob")[0]["metadata"]["uid"] == bob_pod
    assert cs.cull()["alice"]["action"] == "stopped"
    culls = [e for e in cs.audit() if e["event"] == "cull"]
    assert [(e["user"], e["engine"]) for e in culls] == [("alice", "kubernetes")], culls
    assert culls[0]["reason"].startswith("idle: no input for")
    assert cs.node.json("-n", NAMESPACE, "get", "pvc", "home-alice")["status"]["phase"] == "Bound"

    # An admin's `mlab apply` does not wake the culled desktop.
    out = cs.mlab("apply", "--timeout", "300").stderr
    assert "left homepod-alice at 0 replicas" in out, out
    assert cs.replicas("alice") == 0 and cs.pods("alice") == []

    start = time.monotonic()
    cs.mlab("wake", "alice", "--kubernetes", culler=True)
    cs.node.kubectl("-n", NAMESPACE, "rollout", "status", "deployment/homepod-alice",
                    "--timeout=300s", timeout=320)
    print(f"woken HomePod Ready after {time.monotonic() - start:.1f} s")
    assert cs.exec("alice", "cat", "/home/alice/notes.txt").strip() == "kept"
    last = cs.audit()[-1]
    assert last["event"] == "wake" and last["user"] == "alice" and last["was_culled"] is True
    state = json.loads((cs.state / SITE / "cull.json").read_text())
    assert "alice" not in state["culled"]
