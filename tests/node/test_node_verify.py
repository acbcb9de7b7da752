"""``mlab verify --cluster`` on the real node: all edges hold, a deleted policy fails exactly
its edges, and a node without its NetworkPolicy implementation is caught by the canary."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from nodekit import NAMESPACE, SITE, Node

from mlab.render import render_site
from mlab.site import load_site
from mlab.verify.kube_matrix import VERIFY_LABEL

pytestmark = [pytest.mark.e2e, pytest.mark.node]

REMOVED = "code-service-from-homepods"


def verify(node: Node, tmp_path: Path) -> tuple[int, list[dict], str, float]:
    junit = tmp_path / "verify.xml"
    start = time.monotonic()
    proc = node.mlab("verify", "--site", str(SITE), "--cluster", "-o", "json", "-q",
                     "--junit", str(junit), timeout=600)
    seconds = time.monotonic() - start
    rows = json.loads(proc.stdout) if proc.stdout.strip().startswith("[") else []
    if rows:
        assert junit.read_text().startswith("<testsuite")
    return proc.returncode, rows, proc.stderr, seconds


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def no_probe_left(node: Node) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        pods = node.json("-n", NAMESPACE, "get", "pods", "-l", VERIFY_LABEL)["items"]
        pols = node.json("-n", NAMESPACE, "get", "networkpolicies", "-l", VERIFY_LABEL)["items"]
        if not pods and not pols:
            return
        time.sleep(2)
    raise AssertionError(f"probe pods left: {[p['metadata']['name'] for p in pods]}")


def test_every_edge_holds(site_up: Node, tmp_path: Path) -> None:
    code, rows, err, seconds = verify(site_up, tmp_path)
    bad = [r for r in rows if not r["ok"]]
    assert code == 0 and not bad, (err, bad)
    print(f"mlab verify --cluster: {len(rows)} probes in {seconds:.1f} s")
    edges = {r["edge"]: r for r in rows}
    # Allowed edges count only when the service answered (an HTTP status here).
    for src in ("probe-homepod", "homepod-alice", "probe-airlock", "airlock"):
        assert edges[f"{src} --> code service http://code.mlab.local/"]["detail"].startswith(
            "HTTP "), src
    for needed in ("probe-homepod --> internet by name (pypi.org)",
                   "probe-homepod --> metadata 169.254.169.254:80",
                   "probe-homepod --> airlock :22", "probe-homepod --> homepod-bob :5900",
                   "probe-homepod --> code service :9418 (other port)",
                   "probe-airlock --> homepod-alice :22",
                   "probe-outsider --> homepod-alice :5900"):
        assert edges[needed]["expected"] == "blocked", needed
    assert any(e.startswith("probe-homepod --> kubernetes.default") for e in edges)
    assert any(e.startswith("probe-homepod --> node ") for e in edges)
    # The office PC (this machine) reaches every exposed port, each in its own protocol.
    office = [r for r in rows if r["source"] == "office"]
    alice = {r["target"].split()[1]: r["detail"] for r in office
             if r["target"].startswith("homepod-alice ")}
    assert alice["ssh"].startswith("SSH-2.0-") and alice["vnc"].startswith("RFB 003."), alice
    assert alice["novnc"] == "HTTP 200 noVNC page" and alice["rdp"].startswith("X.224"), alice
    assert any(r["target"].startswith("code-service http ") and r["detail"].startswith("HTTP ")
               for r in office), office
    assert any(r["target"].startswith("airlock ssh ") for r in office), office
    # One matrix: rows name the check of mlab.topology.checks they stand for.
    assert {"homepod --> code-service :8080", "office --> homepod :22",
            "homepod --> node :10250", "outsider --> code-service :8080",
            "code-service --> homepod :22"} <= {r["check"] for r in rows}
    no_probe_left(site_up)


def test_deleted_policy_fails_exactly_its_edges(site_up: Node, tmp_path: Path) -> None:
    site_up.kubectl("-n", NAMESPACE, "delete", "networkpolicy", REMOVED)
    try:
        code, rows, err, _ = verify(site_up, tmp_path)
    finally:
        policy = next(p for p in render_site(load_site(SITE)).files["network.yaml"]
                      if p["metadata"]["name"] == REMOVED)
        site_up.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(policy))
    assert code == 1, err
    failed = {r["edge"] for r in rows if not r["ok"]}
    code_ip = next(r["target"] for r in rows if r["target"].endswith(":8080")
                   and r["target"].startswith("code service "))
    homepods = ("probe-homepod", "homepod-alice", "homepod-bob")
    # Exactly the HomePods' edges to the code service :8080, by name and by pod address.
    want = {f"{src} --> {target}" for src in homepods
            for target in ("code service http://code.mlab.local/", code_ip)}
    assert failed == want, (want ^ failed)
    assert "MISMATCH" in err
    no_probe_left(site_up)


def test_canary_reports_a_node_without_policy_enforcement(site_up: Node,
                                                          tmp_path: Path) -> None:
    from mlab.node import supervisor
    from mlab.node.layout import default_layout

    assert supervisor.stop(default_layout(), "kube-router")
    try:
        code, rows, err, _ = verify(site_up, tmp_path)
    finally:
        proc = site_up.mlab("node", "up", *site_up.up_args, timeout=1800)
        assert proc.returncode == 0, proc.stderr
    assert code == 1 and not rows
    assert "mlab verify: the CNI does not enforce NetworkPolicies" in err.splitlines()
    no_probe_left(site_up)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_run_removes_its_probe_pods(site_up: Node, signum: int) -> None:
    # The tests before this one delete their probe pods without waiting: wait until they are
    # gone, so the pods seen below are this run's.
    no_probe_left(site_up)
    # SIGINT at its default in the child: a shell without job control starts background
    # jobs (a CI runner's `cmd &`) with SIGINT ignored, and the child would inherit that and
    # run to the end, exit 0 (seen here). Python then installs its KeyboardInterrupt handler.
    proc = subprocess.Popen([sys.executable, "-m", "mlab.cli.main", "verify", "--site",
                             str(SITE), "--cluster", "-q"], env=site_up.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint)
    try:
        deadline = time.monotonic() + 180
        while not site_up.json("-n", NAMESPACE, "get", "pods", "-l", VERIFY_LABEL)["items"]:
            assert time.monotonic() < deadline and proc.poll() is None, "no probe pod appeared"
            time.sleep(0.5)
        proc.send_signal(signum)
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0
    no_probe_left(site_up)
