#!/usr/bin/python3
"""``mlab-antispoof``: a chained CNI plugin that lets a pod send only from its own address.

Why: NetworkPolicies select traffic by source address. A pod that forges another pod's
address (a raw socket under sudo) inherits that pod's egress, e.g. the Airlock's route to
the internet (issue 20). The bridge plugin and kube-router check no source addresses.

How: the node puts a chain ``MLAB-ANTISPOOF`` in the iptables ``raw`` table, jumped to from
PREROUTING for packets entering the pods' bridge, ending in DROP (br_netfilter runs bridged
IPv4 through iptables; ``physdev`` names the bridge port). On ADD this plugin inserts, for
the pod's host-side veth, one ``-m physdev --physdev-in VETH -s POD_IP/32 -j RETURN`` rule
tagged with the container id; on DEL it removes the rules with that tag. So a packet from a
veth with any other source address (or from a veth with no rule yet) is dropped before
routing, policy or NAT see it. IPv6 is off in pods (the ``tuning`` plugin before this one).

Contract: CNI spec 1.0.0 (https://www.cni.dev/docs/spec/): config with ``prevResult`` on
stdin, ``CNI_COMMAND`` and ``CNI_CONTAINERID`` in the environment; on ADD print the
prevResult unchanged. Standard library only: containerd runs it with the system python3.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

IPTABLES = ["iptables", "-w", "10", "-t", "raw"]


def _run(args: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {proc.stderr.strip()}")
    return proc


def _error(code: int, msg: str) -> None:
    print(json.dumps({"cniVersion": "1.0.0", "code": code, "msg": msg}))
    sys.exit(1)


def host_veths(result: dict) -> dict[int, str]:
    """Index -> name of the interfaces on the host side (no ``sandbox``), bridge excluded
    by the caller."""
    return {i: itf.get("name", "") for i, itf in enumerate(result.get("interfaces") or [])
            if not itf.get("sandbox")}


def rules_for(conf: dict, container_id: str) -> list[list[str]]:
    """The RETURN rules (iptables argv tails) for the pod in ``conf['prevResult']``."""
    result = conf.get("prevResult") or {}
    bridge = conf.get("bridge", "")
    veths = {i: n for i, n in host_veths(result).items() if n and n != bridge}
    rules: list[list[str]] = []
    for ip in result.get("ips") or []:
        addr = ip.get("address", "").split("/")[0]
        if ":" in addr or not addr:
            continue
        for veth in veths.values():
            rules.append(["-m", "physdev", "--physdev-in", veth, "-s", f"{addr}/32",
                          "-m", "comment", "--comment", f"mlab-antispoof {container_id}",
                          "-j", "RETURN"])
    return rules


def delete_rules(chain: str, container_id: str) -> None:
    """Remove every rule of ``chain`` tagged with ``container_id``."""
    listing = _run([*IPTABLES, "-S", chain], check=False).stdout.splitlines()
    tag = f"mlab-antispoof {container_id}"
    for line in listing:
        if tag in line and line.startswith(f"-A {chain} "):
            spec = line.split()[2:]
            # iptables -S quotes the comment: rebuild it as one argument.
            text = " ".join(spec)
            head, _, rest = text.partition('--comment "')
            comment, _, tail = rest.partition('"')
            argv = head.split() + ["--comment", comment] + tail.split()
            _run([*IPTABLES, "-D", chain, *argv], check=False)


def main() -> None:
    command = os.environ.get("CNI_COMMAND", "")
    if command == "VERSION":
        print(json.dumps({"cniVersion": "1.0.0",
                          "supportedVersions": ["0.4.0", "1.0.0"]}))
        return
    conf = json.load(sys.stdin)
    chain = conf.get("chain", "MLAB-ANTISPOOF")
    container_id = os.environ.get("CNI_CONTAINERID", "")
    if not container_id:
        _error(4, "CNI_CONTAINERID is not set")
    if command == "ADD":
        rules = rules_for(conf, container_id)
        if not rules:
            _error(100, "mlab-antispoof: prevResult has no IPv4 address and host veth")
        try:
            delete_rules(chain, container_id)
            for rule in rules:
                _run([*IPTABLES, "-I", chain, "1", *rule])
        except RuntimeError as exc:
            _error(999, f"mlab-antispoof: {exc}")
        print(json.dumps(conf.get("prevResult") or {}))
    elif command == "DEL":
        delete_rules(chain, container_id)
    elif command == "CHECK":
        listing = _run([*IPTABLES, "-S", chain], check=False).stdout
        if f"mlab-antispoof {container_id}" not in listing:
            _error(999, f"mlab-antispoof: no rule for {container_id}")
    else:
        _error(4, f"unknown CNI_COMMAND {command!r}")


if __name__ == "__main__":
    main()
