"""The node's footprint on the machine's network: its address, sysctls, the anti-spoofing
chain, and their removal.

Invariant: everything added here is removed by :func:`teardown` (and by each component's
own clean-up mode for its rules: ``kube-proxy --cleanup``, ``kube-router
--cleanup-config``), so ``mlab node down`` leaves the machine's network as it found it
(podman's networks and rules are never touched: every rule here names the node's bridge
or chain).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from mlab.errors import DeployError
from mlab.node import layout

IPT_RAW = ["iptables", "-w", "10", "-t", "raw"]
JUMP = ["PREROUTING", "-i", layout.BRIDGE, "-m", "physdev", "--physdev-is-in",
        "-m", "comment", "--comment", "mlab-node anti-spoofing", "-j", layout.ANTISPOOF_CHAIN]
FINAL_DROP = [layout.ANTISPOOF_CHAIN, "-m", "comment", "--comment",
              "mlab-node: source is not the pod address", "-j", "DROP"]


def _run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise DeployError(f"node: {' '.join(argv[:4])} failed: {proc.stderr.strip()[:300]}")
    return proc


def _sysctl(path: str, value: str) -> None:
    p = Path("/proc/sys") / path
    if not p.exists():
        raise DeployError(f"node: {p} is missing (kernel without {path.split('/')[1]}: "
                          "br_netfilter is needed for NetworkPolicies on a bridge)")
    if p.read_text().strip() != value:
        try:
            p.write_text(value)
        except OSError as exc:
            raise DeployError(f"node: cannot set {path}={value}: {exc}") from None


def setup() -> None:
    """Forwarding and bridge netfilter on, the node address on ``lo``, the anti-spoofing
    chain (idempotent).

    Raises:
        DeployError: a sysctl or rule cannot be set (names which).
    """
    _sysctl("net/ipv4/ip_forward", "1")
    _sysctl("net/bridge/bridge-nf-call-iptables", "1")
    addrs = _run(["ip", "-4", "-o", "addr", "show", "dev", "lo"]).stdout
    if f" {layout.NODE_IP}/32 " not in addrs:
        _run(["ip", "addr", "add", f"{layout.NODE_IP}/32", "dev", "lo"])
    if _run([*IPT_RAW, "-n", "-L", layout.ANTISPOOF_CHAIN], check=False).returncode != 0:
        _run([*IPT_RAW, "-N", layout.ANTISPOOF_CHAIN])
    if _run([*IPT_RAW, "-C", *FINAL_DROP], check=False).returncode != 0:
        _run([*IPT_RAW, "-A", *FINAL_DROP])
    if _run([*IPT_RAW, "-C", *JUMP], check=False).returncode != 0:
        _run([*IPT_RAW, "-I", *JUMP[:1], "1", *JUMP[1:]])


def teardown() -> list[str]:
    """Remove what :func:`setup` and the CNI chain added. Returns what failed (not fatal)."""
    problems: list[str] = []
    while _run([*IPT_RAW, "-C", *JUMP], check=False).returncode == 0:
        _run([*IPT_RAW, "-D", *JUMP], check=False)
    if _run([*IPT_RAW, "-n", "-L", layout.ANTISPOOF_CHAIN], check=False).returncode == 0:
        _run([*IPT_RAW, "-F", layout.ANTISPOOF_CHAIN], check=False)
        if _run([*IPT_RAW, "-X", layout.ANTISPOOF_CHAIN], check=False).returncode != 0:
            problems.append(f"iptables raw chain {layout.ANTISPOOF_CHAIN}")
    if _run(["ip", "link", "show", layout.BRIDGE], check=False).returncode == 0:
        if _run(["ip", "link", "del", layout.BRIDGE], check=False).returncode != 0:
            problems.append(f"bridge {layout.BRIDGE}")
    _run(["ip", "addr", "del", f"{layout.NODE_IP}/32", "dev", "lo"], check=False)
    return problems
