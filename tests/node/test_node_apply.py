"""`mlab node` and `mlab apply` against the real API server of the one-node Kubernetes."""

from __future__ import annotations

import json

import pytest
import yaml
from nodekit import NAMESPACE, SELECTOR, SITE, Node

pytestmark = [pytest.mark.e2e, pytest.mark.node]


def test_node_status_says_ready(node: Node) -> None:
    proc = node.mlab("node", "status", "-o", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    state = json.loads(proc.stdout)
    assert state.pop("node") == "Ready"
    assert all(v.startswith("running (pid ") for v in state.values()), state
    version = node.kubectl("version", "-o", "json").stdout
    assert json.loads(version)["serverVersion"]["gitVersion"] == "v1.34.4"


def test_second_up_is_quick_and_changes_nothing(node: Node) -> None:
    before = node.mlab("node", "status", "-o", "json").stdout
    proc = node.mlab("node", "up", "-q", *node.up_args, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"export KUBECONFIG={node.kubeconfig}"
    assert node.mlab("node", "status", "-o", "json").stdout == before  # same pids


def test_apply_brings_every_pod_ready(site_up: Node) -> None:
    pods = site_up.json("-n", NAMESPACE, "get", "pods", "-l", SELECTOR)["items"]
    ready = {p["metadata"]["labels"]["app.kubernetes.io/component"] for p in pods
             if all(c.get("ready") for c in p["status"].get("containerStatuses", []))}
    assert ready == {"homepod", "airlock", "code-service"}
    assert len(pods) == 4
    claims = site_up.json("-n", NAMESPACE, "get", "pvc")["items"]
    assert claims and all(c["status"]["phase"] == "Bound" for c in claims)


def _versions(node: Node) -> dict[str, str]:
    kinds = "deployments,services,secrets,configmaps,networkpolicies,persistentvolumeclaims"
    items = node.json("-n", NAMESPACE, "get", kinds, "-l", SELECTOR)["items"]
    return {f"{i['kind']}/{i['metadata']['name']}":
            str(i["metadata"].get("generation", i["metadata"]["resourceVersion"]))
            for i in items if i["kind"] != "Deployment"} | {
        f"Deployment/{i['metadata']['name']}": str(i["metadata"]["generation"])
        for i in items if i["kind"] == "Deployment"}


def test_reapply_changes_nothing(site_up: Node) -> None:
    before = _versions(site_up)
    proc = site_up.mlab("apply", "--site", str(SITE), "--timeout", "300")
    assert proc.returncode == 0, proc.stderr
    assert "pruned" not in proc.stderr
    assert _versions(site_up) == before


def test_server_side_apply_takes_back_a_field_changed_by_kubectl(site_up: Node) -> None:
    site_up.kubectl("-n", NAMESPACE, "patch", "configmap", "mlab-site", "--type", "merge",
                    "-p", json.dumps({"data": {"site.yaml": "tampered: true\n"}}))
    cm = site_up.json("-n", NAMESPACE, "get", "configmap", "mlab-site")
    # The same apply without --force-conflicts is refused: the field has two managers.
    mine = {k: cm[k] for k in ("apiVersion", "kind")} | {
        "metadata": {"name": "mlab-site", "namespace": NAMESPACE},
        "data": {"site.yaml": "other: 1\n"}}
    refused = site_up.kubectl("apply", "--server-side", "--field-manager=mlab", "-f", "-",
                              stdin=yaml.safe_dump(mine), check=False)
    assert refused.returncode != 0 and "conflict" in refused.stderr.lower()
    proc = site_up.mlab("apply", "--site", str(SITE), "--timeout", "300")
    assert proc.returncode == 0, proc.stderr
    cm = site_up.json("-n", NAMESPACE, "get", "configmap", "mlab-site", "--show-managed-fields")
    assert "tampered" not in cm["data"]["site.yaml"] and "alice" in cm["data"]["site.yaml"]
    owners = {m["manager"] for m in cm["metadata"]["managedFields"]
              if "f:site.yaml" in json.dumps(m.get("fieldsV1", {}))}
    assert owners == {"mlab"}


def test_prune_of_a_removed_user(site_up: Node, tmp_path) -> None:
    doc = yaml.safe_load(SITE.read_text())
    doc["users"] = [u for u in doc["users"] if u["name"] != "bob"]
    doc["codeService"]["reviewers"] = ["alice"]
    small = tmp_path / "site.yaml"
    small.write_text(yaml.safe_dump(doc))
    proc = site_up.mlab("apply", "--site", str(small), "--timeout", "300")
    assert proc.returncode == 0, proc.stderr
    assert "pruned deployment/homepod-bob" in proc.stderr
    assert "kept persistentvolumeclaim/home-bob" in proc.stderr
    # The pods went before the command returned (they are waited for, not just deleted).
    left = site_up.json("-n", NAMESPACE, "get", "pods", "-l", "mlab.io/user=bob")["items"]
    assert left == []
    gone = site_up.kubectl("-n", NAMESPACE, "get", "deployment/homepod-bob", "service/homepod-bob",
                           check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr
    assert site_up.json("-n", NAMESPACE, "get", "pvc", "home-bob")["status"]["phase"] == "Bound"
    proc = site_up.mlab("apply", "--site", str(SITE), "--timeout", "600")
    assert proc.returncode == 0, proc.stderr
    assert site_up.pod_ip(NAMESPACE, "mlab.io/user=bob")
