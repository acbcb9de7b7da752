"""`mlab apply` / `mlab delete` against a fake kubectl at the process boundary.

No API server can run here, so a script named ``kubectl`` on PATH records each argv and
stdin and answers ``get`` from JSON files the test writes. Everything above it is real:
the CLI, rendering, password state, pruning and the rollout wait.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "examples" / "local.yaml"

FAKE = """#!{python}
import json, os, sys
d = os.environ["FAKE_KUBECTL_DIR"]
args = sys.argv[1:]
stdin = sys.stdin.read() if "-" in args else ""
with open(os.path.join(d, "calls.jsonl"), "a") as f:
    f.write(json.dumps({{"argv": args, "stdin": stdin}}) + "\\n")
rest = [a for a in args if not a.startswith("--request-timeout")]
if rest[:1] == ["--context"]:
    rest = rest[2:]
verb = rest[0]
if verb == "apply" and os.environ.get("FAKE_APPLY_FAIL"):
    sys.stderr.write("Error from server (Forbidden): secrets is forbidden\\n")
    sys.exit(1)
if verb == "get":
    if rest[1] == "deployments":
        counter = os.path.join(d, "polls")
        n = int(open(counter).read()) if os.path.exists(counter) else 0
        open(counter, "w").write(str(n + 1))
        steps = sorted(p for p in os.listdir(d) if p.startswith("deployments."))
        name = steps[min(n, len(steps) - 1)]
        sys.stdout.write(open(os.path.join(d, name)).read())
    else:
        path = os.path.join(d, "objects.json")
        sys.stdout.write(open(path).read() if os.path.exists(path) else '{{"items": []}}')
"""


def _deployment(name: str, ready: bool, failed: bool = False) -> dict:
    status = {"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1,
              "availableReplicas": 1 if ready else 0}
    if failed:
        status["conditions"] = [{"type": "Progressing", "reason": "ProgressDeadlineExceeded"}]
    return {"kind": "Deployment", "metadata": {"name": name, "generation": 2},
            "spec": {"replicas": 1}, "status": status}


ALL = ["homepod-alice", "homepod-bob", "airlock", "code-service"]


@pytest.fixture()
def fake(tmp_path: Path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "kubectl"
    script.write_text(FAKE.format(python=sys.executable))
    script.chmod(0o755)
    state = tmp_path / "kube"
    state.mkdir()

    class Fake:
        dir = state

        def steps(self, *steps: list[dict]) -> None:
            for i, items in enumerate(steps):
                (state / f"deployments.{i:02d}.json").write_text(json.dumps({"items": items}))

        def objects(self, items: list[dict]) -> None:
            (state / "objects.json").write_text(json.dumps({"items": items}))

        def calls(self) -> list[dict]:
            path = state / "calls.jsonl"
            if not path.exists():
                return []
            return [json.loads(line) for line in path.read_text().splitlines()]

        def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
            full = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}",
                    "FAKE_KUBECTL_DIR": str(state), "MLAB_STATE_DIR": str(tmp_path / "st"),
                    **env}
            full.pop("MLAB_KUBECTL", None)
            return subprocess.run([sys.executable, "-m", "mlab.cli.main", *args],
                                  capture_output=True, text=True, env=full, timeout=60)

    return Fake()


def _verbs(calls: list[dict]) -> list[str]:
    out = []
    for call in calls:
        argv = call["argv"][2:] if call["argv"][0] == "--context" else call["argv"]
        out.append(next(a for a in argv if not a.startswith("--")))
    return out


def test_apply_applies_prunes_and_waits(fake) -> None:
    fake.steps([_deployment(n, ready=False) for n in ALL], [_deployment(n, True) for n in ALL])
    fake.objects([
        {"kind": "Deployment", "metadata": {"name": "homepod-carol"}},
        {"kind": "Service", "metadata": {"name": "homepod-carol"}},
        {"kind": "Secret", "metadata": {"name": "homepod-carol-password"}},
        {"kind": "PersistentVolumeClaim", "metadata": {"name": "home-carol"}},
        {"kind": "Deployment", "metadata": {"name": "homepod-alice"}},
        {"kind": "NetworkPolicy", "metadata": {"name": "homepod-to-dns"}},
    ])
    proc = fake.run("apply", "--site", str(SITE), "--interval", "0.05", "--context", "prod")
    assert proc.returncode == 0, proc.stderr
    calls = fake.calls()
    # the first get reads the live HomePod Deployments (their images are kept, docs/image.md)
    assert "app.kubernetes.io/component=homepod" in calls[0]["argv"][-3]
    calls = calls[1:]
    # Prune: the removed user's Deployment first (foreground, waited), policies after.
    # The second get lists the portal's rights (ServiceAccount, Role, RoleBinding).
    assert _verbs(calls) == ["apply", "get", "get", "get", "delete", "delete", "get", "get"]
    assert any("app.kubernetes.io/component=portal" in a for a in calls[2]["argv"])
    apply = calls[0]["argv"]
    assert apply[:3] == ["--context", "prod", "--request-timeout=60s"]
    assert {"--server-side", "--field-manager=mlab", "-f", "-"} <= set(apply)
    docs = list(yaml.safe_load_all(calls[0]["stdin"]))
    assert docs[0]["kind"] == "Namespace" and docs[0]["metadata"]["name"] == "mlab"
    assert docs[1]["metadata"]["name"] == "mlab-default-deny"
    assert {"homepod-alice-password", "code-service-admin"} <= {
        d["metadata"]["name"] for d in docs if d["kind"] == "Secret"}
    get = calls[1]["argv"]
    assert "app.kubernetes.io/instance=local,app.kubernetes.io/managed-by=mlab" in get
    first, then = calls[4]["argv"], calls[5]["argv"]
    assert [a for a in first if "/" in a] == ["deployment/homepod-carol"]
    assert "--cascade=foreground" in first and "--wait=true" in first
    assert sorted(a for a in then if "/" in a) == [
        "networkpolicy/homepod-to-dns", "secret/homepod-carol-password",
        "service/homepod-carol"]
    assert "kept persistentvolumeclaim/home-carol" in proc.stderr
    assert "all 4 deployments ready" in proc.stderr
    passwords = json.loads((fake.dir.parent / "st" / "local" / "passwords.json").read_text())
    assert not any(pw in proc.stderr + proc.stdout for pw in passwords.values())


def test_apply_dry_run_does_not_wait(fake) -> None:
    fake.objects([{"kind": "Service", "metadata": {"name": "homepod-carol"}}])
    proc = fake.run("apply", "--site", str(SITE), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    calls = fake.calls()
    assert _verbs(calls) == ["get", "apply", "get", "get", "delete"]
    assert "--dry-run=server" in calls[1]["argv"] and "--dry-run=server" in calls[4]["argv"]
    assert "would prune service/homepod-carol" in proc.stderr


def _live_homepod(name: str, image: str, ready: int = 1) -> dict:
    return {"kind": "Deployment", "metadata": {"name": name},
            "spec": {"template": {"spec": {"containers": [{"name": "homepod", "image": image}]}}},
            "status": {"readyReplicas": ready}}


def _applied_images(call: dict) -> dict[str, tuple[str, str]]:
    out = {}
    for doc in yaml.safe_load_all(call["stdin"]):
        if doc and doc["kind"] == "Deployment":
            c = doc["spec"]["template"]["spec"]["containers"][0]
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            out[doc["metadata"]["name"]] = (c["image"], env.get("MLAB_IMAGE", ""))
    return out


def test_apply_keeps_running_homepods_on_their_image(fake) -> None:
    """A new image in the site does not restart a working user's HomePod; --restart-user does."""
    old = "registry.example.com:5000/mlab/homepod:pkg-0123456789abcdef"
    fake.steps([_deployment(n, True) for n in ALL])
    fake.objects([_live_homepod("homepod-alice", old), _live_homepod("homepod-bob", old, 0)])
    proc = fake.run("apply", "--site", str(SITE), "--interval", "0.05")
    assert proc.returncode == 0, proc.stderr
    images = _applied_images(fake.calls()[1])
    site_image = images["airlock"][0]
    assert images["homepod-alice"] == (old, old)  # held: image and MLAB_IMAGE
    assert images["homepod-bob"][0] == site_image  # not ready: nobody is working there
    assert f"kept homepod-alice on {old}" in proc.stderr

    proc = fake.run("apply", "--site", str(SITE), "--interval", "0.05", "--restart-user", "alice")
    assert proc.returncode == 0, proc.stderr
    applies = [c for c in fake.calls() if c["argv"][0] == "apply" or "apply" in c["argv"][:3]]
    assert _applied_images(applies[-1])["homepod-alice"][0] == site_image



def test_apply_restart_user_restarts_a_deployment_on_the_same_reference(fake) -> None:
    """``--restart-user`` moves a HomePod whose Deployment already names the site's image
    (a rebuilt ``:latest``): apply alone would leave its pod on the old image."""
    fake.steps([_deployment(n, True) for n in ALL])
    proc = fake.run("apply", "--site", str(SITE), "--dry-run")
    site_image = _applied_images(fake.calls()[1])["airlock"][0]
    same = [_live_homepod(n, site_image) for n in ("homepod-alice", "homepod-bob")]
    for dep, user in zip(same, ("alice", "bob")):
        dep["metadata"]["labels"] = {"mlab.io/user": user}
    fake.objects(same)
    proc = fake.run("apply", "--site", str(SITE), "--interval", "0.05", "--restart-user", "alice")
    assert proc.returncode == 0, proc.stderr
    restarts = [[a for a in c["argv"] if not a.startswith("--request-timeout")]
                for c in fake.calls() if "rollout" in c["argv"]]
    assert restarts == [["rollout", "restart", "-n", "mlab", "deployment/homepod-alice"]], restarts
    assert f"restarted homepod-alice on {site_image}" in proc.stderr
    assert "homepod-bob" not in " ".join(" ".join(r) for r in restarts)

def test_apply_times_out_naming_deployments(fake) -> None:
    fake.steps([_deployment(n, ready=n != "homepod-bob") for n in ALL])
    start = time.monotonic()
    proc = fake.run("apply", "--site", str(SITE), "--timeout", "0.5", "--interval", "0.1")
    assert time.monotonic() - start < 30
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("mlab: error: rollout not finished after 0.5s: homepod-bob")
    assert "Traceback" not in proc.stderr


def test_apply_stops_on_progress_deadline(fake) -> None:
    fake.steps([_deployment(n, ready=False, failed=n == "airlock") for n in ALL])
    proc = fake.run("apply", "--site", str(SITE), "--interval", "0.05")
    assert proc.returncode == 1
    assert "rollout of airlock exceeded its progress deadline" in proc.stderr


def test_apply_error_is_one_line_without_secrets(fake) -> None:
    proc = fake.run("apply", "--site", str(SITE), FAKE_APPLY_FAIL="1")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "mlab: error: kubectl apply failed: Error from server (Forbidden): secrets is forbidden"]


def test_delete_keeps_claims_unless_asked(fake) -> None:
    proc = fake.run("delete", "--site", str(SITE))
    assert proc.returncode == 0, proc.stderr
    first, wait, second, rights = (c["argv"] for c in fake.calls())
    # The portal's rights go by its component label (the culler's RBAC is the admin's).
    assert any("app.kubernetes.io/component=portal" in a for a in rights)
    assert "deployments.apps" in first and "--wait=true" in first
    assert "--cascade=foreground" in first
    # The pods themselves must be gone before any NetworkPolicy goes (CVE-2024-7598).
    assert "wait" in wait
    assert "--for=delete" in wait and "pods" in wait
    assert "persistentvolumeclaims" not in second[second.index("-n") + 2]
    proc = fake.run("delete", "--site", str(SITE), "--delete-data")
    assert "persistentvolumeclaims" in fake.calls()[-2]["argv"][-5]


def test_kubectl_missing(fake, tmp_path: Path) -> None:
    proc = fake.run("delete", "--site", str(SITE), PATH=str(tmp_path / "empty"))
    assert proc.returncode == 1
    assert "kubectl" in proc.stderr and "not found" in proc.stderr


def test_apply_names_a_service_whose_fixed_cluster_ip_would_change() -> None:
    """The Airlock's clusterIP is fixed (docs/security.md); a Service made before keeps
    another one, which Kubernetes never changes: one line naming the Service and the fix."""
    from mlab.deploy.kubernetes import Kubectl, apply_objects
    from mlab.errors import DeployError
    from mlab.render import render_site
    from mlab.site import load_site

    class Refusing(Kubectl):
        def run(self, args, stdin=None, timeout=None):  # the kubectl process boundary
            raise DeployError('kubectl apply failed: The Service "airlock" is invalid: '
                              'spec.clusterIPs[0]: Invalid value: []string{"10.96.0.201"}: '
                              "may not change once set")

    site = load_site(SITE)
    with pytest.raises(DeployError) as err:
        apply_objects(Refusing(), site, render_site(site), dry_run=False)
    assert err.value.one_line() == (
        "Service mlab/airlock has another clusterIP than the site's fixed one (a clusterIP "
        "never changes once set) (delete it once: kubectl -n mlab delete service airlock, "
        "then apply again)")
