"""`mlab cull --kubernetes` and `mlab wake --kubernetes` against a fake kubectl at the process
boundary (no API server runs here): the script answers `get deployment` with the replicas
in a file, `exec ... activity` with the reading in a file, and records every argv."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from cli_runner import Run, mlab

FAKE = r"""#!/usr/bin/env python3
import json, os, sys
d = os.environ["FAKE_DIR"]
args = [a for a in sys.argv[1:] if not a.startswith("--request-timeout")]
with open(os.path.join(d, "calls.jsonl"), "a") as f:
    f.write(json.dumps(args) + "\n")
if "get" in args and "deployment" in args:
    print(open(os.path.join(d, "replicas")).read().strip())
elif "exec" in args and args[-1].endswith("activity"):
    print(open(os.path.join(d, "reading.json")).read().strip())
elif "exec" in args:
    print(json.dumps({"warned": 1}))
"""


def _run(tmp: Path, *args: str) -> Run:
    """``mlab ARGS --site tmp/site.yaml`` against the fake kubectl in ``tmp``."""
    return mlab(*args, "--site", str(tmp / "site.yaml"), timeout=120,
                env={"MLAB_KUBECTL": str(tmp / "kubectl"), "FAKE_DIR": str(tmp),
                     "MLAB_STATE_DIR": str(tmp / "state")})


def _fake_cluster(tmp: Path) -> None:
    """The fake kubectl and a one-user site (``k16``, namespace ``lab``) in ``tmp``."""
    (tmp / "kubectl").write_text(FAKE)
    (tmp / "kubectl").chmod(0o755)
    (tmp / "site.yaml").write_text(yaml.safe_dump({
        "name": "k16", "namespace": "lab", "users": [{"name": "alice"}],
        "culling": {"idleAfter": "1h", "warnBefore": "1m"}}))


def _calls(tmp: Path) -> list[list[str]]:
    return [json.loads(x) for x in (tmp / "calls.jsonl").read_text().splitlines()]


def test_kubernetes_warn_scale_to_zero_and_wake(tmp_path: Path) -> None:
    _fake_cluster(tmp_path)
    (tmp_path / "replicas").write_text("1")
    (tmp_path / "reading.json").write_text(json.dumps(
        {"input_idle_s": 7200, "uptime_s": 9000, "cpu_percent": 0.5, "cpu_top": None,
         "gpu": None, "sessions": {"vnc": 1}}))
    first = _run(tmp_path, "cull", "--kubernetes", "--once", "-o", "json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)[0]["action"] == "warn"
    assert ["-n", "lab", "exec", "deploy/homepod-alice", "--", "/usr/local/lib/mlab/activity",
            "warn", "60"] in _calls(tmp_path)
    # A minute later, still idle: scaled to 0 (not deleted).
    state = tmp_path / "state" / "k16" / "cull.json"
    data = json.loads(state.read_text())
    data["warned"]["alice"] -= 61
    state.write_text(json.dumps(data))
    second = _run(tmp_path, "cull", "--kubernetes", "--once", "-o", "json")
    assert json.loads(second.stdout)[0]["action"] == "cull", second.stdout
    assert ["-n", "lab", "scale", "deployment/homepod-alice", "--replicas=0"] in _calls(tmp_path)
    assert not any("delete" in c for c in _calls(tmp_path))
    (tmp_path / "replicas").write_text("0")
    third = _run(tmp_path, "cull", "--kubernetes", "--once", "-o", "json")
    assert json.loads(third.stdout)[0]["action"] == "stopped"
    woke = _run(tmp_path, "wake", "alice", "--kubernetes")
    assert woke.returncode == 0, woke.stderr
    assert ["-n", "lab", "scale", "deployment/homepod-alice", "--replicas=1"] in _calls(tmp_path)
    audit = [json.loads(x) for x in
             (tmp_path / "state" / "k16" / "cull-audit.jsonl").read_text().splitlines()]
    assert [(a["event"], a["engine"]) for a in audit] == [("cull", "kubernetes"),
                                                           ("wake", "kubernetes")]
    assert audit[0]["sessions"] == {"vnc": 1} and audit[1]["was_culled"] is True


def test_a_desktop_woken_elsewhere_leaves_the_culled_record(tmp_path: Path) -> None:
    """The rendered portal wakes with its own ServiceAccount, not through this state file:
    the next pass finds alice's Deployment scaled up, drops her cull record and audits it."""
    _fake_cluster(tmp_path)
    state = tmp_path / "state" / "k16" / "cull.json"
    state.parent.mkdir(parents=True)
    state.write_text(json.dumps({"warned": {}, "culled": {"alice": {"at": 1, "reason": "idle"}}}))
    (tmp_path / "replicas").write_text("1")
    (tmp_path / "reading.json").write_text(json.dumps(
        {"input_idle_s": 5, "uptime_s": 30, "cpu_percent": 0.5, "cpu_top": None,
         "gpu": None, "sessions": {"vnc": 1}}))
    proc = _run(tmp_path, "cull", "--kubernetes", "--once", "-o", "json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["action"] == "keep"
    assert json.loads(state.read_text())["culled"] == {}
    audit = [json.loads(x) for x in
             (tmp_path / "state" / "k16" / "cull-audit.jsonl").read_text().splitlines()]
    assert [(a["event"], a["user"], a["replicas"]) for a in audit] == [("wake-seen", "alice", 1)]


def test_wake_unknown_user_is_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "site.yaml").write_text(yaml.safe_dump({"name": "k16", "users": [{"name": "alice"}]}))
    proc = _run(tmp_path, "wake", "mallory", "--kubernetes")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "mlab: error: wake: 'mallory' is not a user of site k16"]


def test_apply_leaves_culled_deployments_at_zero() -> None:
    from mlab.cull.kube import keep_culled

    def dep(name: str, replicas: int | None) -> dict:
        spec = {"template": {"spec": {"containers": [{"image": "i"}]}}}
        if replicas is not None:
            spec["replicas"] = replicas
        return {"kind": "Deployment", "metadata": {"name": name}, "spec": spec}

    rendered = [dep("homepod-alice", 1), dep("homepod-bob", 1),
                {"kind": "Service", "metadata": {"name": "homepod-alice"}, "spec": {}}]
    live = [dep("homepod-alice", 0), dep("homepod-bob", 1), dep("homepod-gone", 0)]
    assert keep_culled(rendered, live) == ["homepod-alice"]
    assert [o["spec"].get("replicas") for o in rendered] == [0, 1, None]
    fresh = [dep("homepod-alice", 1)]
    assert keep_culled(fresh, [dep("homepod-alice", None)]) == []  # default 1: running
    assert fresh[0]["spec"]["replicas"] == 1


def test_up_leaves_culled_podman_pods_stopped() -> None:
    from mlab.podman.engine import left_culled

    def pod(status: str, user: str) -> dict:
        return {"Status": status, "Labels": {"mlab.io/user": user}}

    current = {"hp-alice": pod("Exited", "alice"), "hp-bob": pod("Exited", "bob"),
               "hp-carol": pod("Running", "carol")}
    # alice culled and stopped: left; bob stopped but not culled (crashed): started;
    # carol culled in the state but running (woken another way): replaced as usual;
    # dave new: created.
    assert left_culled(["hp-alice", "hp-bob", "hp-carol", "hp-dave"], current,
                       {"alice", "carol", "dave"}) == ["hp-alice"]
