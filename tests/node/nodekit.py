"""Helpers for tests on the real one-node Kubernetes: run kubectl, mlab and Python in pods."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "examples" / "local.yaml"
NAMESPACE = "mlab"
SELECTOR = "app.kubernetes.io/instance=local,app.kubernetes.io/managed-by=mlab"


@dataclass
class Node:
    """A running node: its kubeconfig, kubectl and the environment for ``mlab`` commands."""

    kubeconfig: Path
    kubectl_bin: Path
    env: dict[str, str]
    up_args: tuple[str, ...] = ()

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True,
                timeout: float = 180) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(self.kubectl_bin), *args], input=stdin, capture_output=True,
                              text=True, env=self.env, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
        return proc

    def json(self, *args: str) -> dict:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def mlab(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mlab.cli.main", *args],
                              capture_output=True, text=True, env=self.env, timeout=timeout,
                              check=False)

    def clear_leftovers(self, site_file: Path) -> None:
        """Delete what an earlier run that was killed mid-module left of this site (its
        objects and data), so the module starts from nothing: ``mlab delete --delete-data``,
        which is quick when nothing is there. A portal left running with another run's site
        and certificate once failed a whole module (CI, session 7)."""
        proc = self.mlab("delete", "--site", str(site_file), "--delete-data", timeout=600)
        assert proc.returncode == 0, f"clearing an earlier run's {site_file.name}: {proc.stderr[-2000:]}"

    def pod_ip(self, namespace: str, selector: str) -> str:
        pods = self.json("-n", namespace, "get", "pods", "-l", selector)["items"]
        running = [p for p in pods if p["status"].get("phase") == "Running"
                   and not p["metadata"].get("deletionTimestamp")]
        assert running, f"no running pod for {selector} in {namespace}"
        return running[0]["status"]["podIP"]

    def exec_py(self, target: str, code: str, *args: str, namespace: str = NAMESPACE,
                timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``python3 -c CODE ARGS`` in ``target`` (``deploy/NAME`` or ``pod/NAME``)."""
        return self.kubectl("-n", namespace, "exec", target, "--", "python3", "-c", code, *args,
                            timeout=timeout, check=check)


CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
CA_SECRET = "site-ca"


def apply_with_machine_ca(node: Node, directory: Path) -> Path:
    """Apply examples/local.yaml with ``airlock.caBundleSecret`` naming the machine's CA
    bundle and return the variant's path.

    These machines reach PyPI through a TLS-intercepting proxy: the Airlock trusts the
    machine's CA bundle the way a site behind such a proxy does. Nothing else changes
    (same users, Services and ports).
    """
    secret = {"apiVersion": "v1", "kind": "Secret",
              "metadata": {"name": CA_SECRET, "namespace": NAMESPACE},
              "data": {"ca.crt": base64.b64encode(CA_BUNDLE.read_bytes()).decode()}}
    node.kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(secret))
    doc = yaml.safe_load(SITE.read_text())
    doc["airlock"]["caBundleSecret"] = CA_SECRET
    variant = directory / "site.yaml"
    variant.write_text(yaml.safe_dump(doc))
    proc = node.mlab("apply", "--site", str(variant), "--timeout", "600")
    assert proc.returncode == 0, proc.stderr
    return variant


def passwords() -> dict[str, str]:
    """The local site's generated passwords (user -> password), as ``mlab passwords``."""
    from mlab.secrets import passwords_path
    from mlab.site import load_site

    return json.loads(passwords_path(load_site(SITE)).read_text())
