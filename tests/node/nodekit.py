"""Helpers for tests on the real one-node Kubernetes: run kubectl, mlab and Python in pods."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

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
