"""Probes below the NetworkPolicy layer: IPv6 link-local paths and forged source addresses.

``mlab verify`` runs these next to the matrix of :mod:`mlab.verify.matrix` (same
:class:`~mlab.verify.matrix.Result` rows, same table and JSON). Issue 20: policy engines
that program IPv4 only leave IPv6 open (every pod's ``eth0`` has an ``fe80::`` address on
the node's bridge), and a HomePod that can open a raw socket can send datagrams with the
Airlock's address as source, which the Airlock's internet rule then admits. Each HomePod
runs :data:`LINK_PROGRAM` once (``python3`` from the standard library, as root, so a
capability the pod should not have shows):

- ``raw socket``: ``socket(AF_INET, SOCK_RAW, IPPROTO_RAW)`` and ``AF_PACKET``; expected
  refused (the pod has no CAP_NET_RAW);
- ``forged source``: a UDP datagram with the Airlock's address as source, sent by raw IP to
  a UDP listener this module opens on the host (all addresses) at the host's address, and
  by Ethernet frame to the gateway's MAC; it must never arrive;
- ``IPv6``: every IPv6 peer the pod can find (its neighbour table, the answers to an echo
  to the all-nodes group ff02::1, the gateway's EUI-64 link-local address from its ARP
  entry, and the link-local addresses of the site's other containers and of the host's
  bridge, which the engine derives from their MAC addresses) is tried with TCP on the
  desktop, SSH, code, kubelet and API server ports and on an IPv6 listener this module opens
  on the host. A connection, or a reset (the peer answered), is a reachable IPv6 edge.

This module holds the program, the jobs' shape and the rows (pure);
:mod:`mlab.probing.podman_link` and :mod:`mlab.probing.kube_link` run it.
A failing row names the edge and the fix for that kind of engine or cluster (:func:`fix_hint`,
docs/security.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlab.topology import PORT_CODE, PORT_NOVNC, PORT_RDP, PORT_SSH, PORT_VNC
from mlab.verify.matrix import Probe, Result

LINK_PORTS = (PORT_SSH, PORT_RDP, PORT_VNC, PORT_NOVNC, PORT_CODE, 6443, 10250, 10256)
"""TCP ports tried on every IPv6 peer: SSH, RDP, VNC, noVNC, code service, API server,
kubelet, kube-proxy health (the issue's list)."""

FIX_PODMAN = ("fix: the podman engine takes IPv6 off every site network (`mlab up` again; "
              "docs/security.md, IPv6 on podman)")
FIX_KUBERNETES = ("fix: a CNI `tuning` plugin with net.ipv6.conf.all.disable_ipv6=1 in the "
                  "node's chain, or that sysctl node-wide, or IPv6 NetworkPolicies on a "
                  "dual-stack cluster (a pod sysctl needs the kubelet's unsafe-sysctl "
                  "allowlist; docs/security.md, IPv6 on Kubernetes)")
FIX_CAPS = ("fix: the HomePod must run without CAP_NET_RAW (render: securityContext drops "
            "ALL; docs/security.md, capabilities)")


def fix_hint(kind: str, engine: str) -> str:
    """The one-line fix for a failing link probe.

    Args:
        kind: the probe kind (``tcp6``, ``raw``, ``forged``).
        engine: ``podman`` or ``kubernetes``.
    """
    if kind == "tcp6":
        return FIX_PODMAN if engine == "podman" else FIX_KUBERNETES
    return FIX_CAPS


def eui64_link_local(mac: str) -> str:
    """The ``fe80::`` address the kernel derives from a MAC (RFC 4291 appendix A, EUI-64).

    Args:
        mac: ``aa:bb:cc:dd:ee:ff``.

    Raises:
        ValueError: not six hex octets.
    """
    octets = [int(x, 16) for x in mac.split(":")]
    if len(octets) != 6:
        raise ValueError(f"{mac!r} is not a MAC address")
    octets[0] ^= 0x02
    eui = octets[:3] + [0xFF, 0xFE] + octets[3:]
    groups = [f"{eui[i] << 8 | eui[i + 1]:x}" for i in range(0, 8, 2)]
    return "fe80::" + ":".join(groups)


@dataclass(frozen=True)
class LinkJob:
    """What one HomePod's :data:`LINK_PROGRAM` run tries.

    Attributes:
        source: ``homepod-<user>``.
        container: where it runs.
        forged_src: the source address to forge (the Airlock's), '' for none.
        forged_dst: the host address the forged datagram goes to.
        targets6: (label, IPv6 address, port) tried with TCP; link-local addresses get the
            pod's interface as scope.
        token: marks this job's forged datagrams.
    """

    source: str
    container: str
    forged_src: str
    forged_dst: str
    targets6: tuple[tuple[str, str, int], ...]
    token: str


# Runs inside a HomePod as root: python3 standard library only. argv[1]: JSON job
# {forge: [src, dst, port, token] | null, targets: [[label, addr, port]...], ports: [...],
# timeout}. Prints one JSON object (see _parse).
LINK_PROGRAM = r"""
import json, os, socket, struct, subprocess, sys, threading, time
job = json.loads(sys.argv[1]); T = float(job["timeout"])
out = {"raw": "", "packet": "", "forged_ip": "", "forged_eth": "", "tcp6": []}
def err(e): return (type(e).__name__ + ": " + str(e))[:100]
def route():
    for line in open("/proc/net/route").read().splitlines()[1:]:
        f = line.split()
        if f[1] == "00000000":
            return f[0], socket.inet_ntoa(struct.pack("<I", int(f[2], 16)))
    return "eth0", ""
dev, gw4 = route()
def arp(ip):
    for line in open("/proc/net/arp").read().splitlines()[1:]:
        f = line.split()
        if f[0] == ip and f[3] != "00:00:00:00:00:00":
            return f[3]
    return ""
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b)); s = (s >> 16) + (s & 0xFFFF); s += s >> 16
    return ~s & 0xFFFF
def ip_udp(src, dst, port, payload):
    udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0x4d4c, 0, 64, 17, 0,
                      socket.inet_aton(src), socket.inet_aton(dst))
    hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
    return hdr + udp
try:
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW); out["raw"] = "opened"
    if job["forge"]:
        src, dst, port, tok = job["forge"]
        try:
            s.sendto(ip_udp(src, dst, port, (tok + ":ip").encode()), (dst, 0)); out["forged_ip"] = "sent"
        except OSError as e:
            out["forged_ip"] = err(e)
except OSError as e:
    out["raw"] = err(e); out["forged_ip"] = "no raw socket"
try:
    p = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); out["packet"] = "opened"
    if job["forge"]:
        src, dst, port, tok = job["forge"]
        try:
            if gw4:
                try: socket.create_connection((gw4, 9), timeout=0.5).close()
                except OSError: pass
            gmac = arp(gw4); mine = open("/sys/class/net/%s/address" % dev).read().strip()
            if not gmac: raise OSError("no ARP entry for the gateway " + gw4)
            frame = bytes.fromhex(gmac.replace(":", "")) + bytes.fromhex(mine.replace(":", "")) + b"\x08\x00"
            p.bind((dev, 0)); p.send(frame + ip_udp(src, dst, port, (tok + ":eth").encode()))
            out["forged_eth"] = "sent"
        except OSError as e:
            out["forged_eth"] = err(e)
except OSError as e:
    out["packet"] = err(e); out["forged_eth"] = "no packet socket"
def inet6():
    if not os.path.exists("/proc/net/if_inet6"): return []
    return [l.split() for l in open("/proc/net/if_inet6").read().splitlines() if l.split()[-1] != "lo"]
end = time.time() + 3  # a tentative address (duplicate detection) cannot be used yet
while any(int(f[4], 16) & 0x40 for f in inet6()) and time.time() < end:
    time.sleep(0.2)
out["addrs6"] = [f[0] for f in inet6()]
found = {}
def fmt(h): return ":".join(h[i:i + 4] for i in range(0, 32, 4))
try:
    idx = socket.if_nametoindex(dev)
    e = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM, socket.IPPROTO_ICMPV6); e.settimeout(1.0)
    e.sendto(b"\x80\x00\x00\x00\x4d\x4c\x00\x01mlab", ("ff02::1", 0, 0, idx))
    end = time.time() + 1.5
    while time.time() < end:
        try:
            data, addr = e.recvfrom(512)
            found[addr[0].split("%")[0]] = "answered ff02::1"
        except socket.timeout:
            break
    out["allnodes"] = "%d answer(s)" % len(found)
except OSError as ex:
    out["allnodes"] = err(ex)
try:
    txt = subprocess.run(["ip", "-6", "neigh", "show"], capture_output=True, text=True, timeout=5).stdout
    for line in txt.splitlines():
        a = line.split()[0]
        if a.startswith("fe80") or ":" in a:
            found.setdefault(a, "in the neighbour table")
except Exception as ex:
    out["neigh"] = err(ex)
if gw4 and arp(gw4):
    m = [int(x, 16) for x in arp(gw4).split(":")]; m[0] ^= 2
    eui = m[:3] + [0xFF, 0xFE] + m[3:]
    found.setdefault("fe80::" + ":".join("%x" % (eui[i] << 8 | eui[i + 1]) for i in range(0, 8, 2)),
                     "the gateway's link-local address")
targets = [list(t) for t in job["targets"]]
known = {t[1] for t in targets}
for a, how in sorted(found.items()):
    if a not in known:
        targets += [["IPv6 peer %s (%s)" % (a, how), a, p] for p in job["ports"]]
res = [None] * len(targets)
def one(i, label, addr, port):
    scope = socket.if_nametoindex(dev) if addr.lower().startswith("fe80") else 0
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as c:
            c.settimeout(T); c.connect((addr, port, 0, scope))
        res[i] = [label, addr, port, True, "connected"]
    except ConnectionRefusedError as ex:
        res[i] = [label, addr, port, True, "answered with a reset: " + err(ex)]
    except OSError as ex:
        res[i] = [label, addr, port, False, err(ex)]
ts = [threading.Thread(target=one, args=(i, *t)) for i, t in enumerate(targets)]
[t.start() for t in ts]; [t.join() for t in ts]
out["tcp6"] = res
print(json.dumps(out))
"""


def results(job: LinkJob, answer: dict[str, Any] | None, arrived: dict[str, str],
            engine: str = "podman") -> list[Result]:
    """Turn one job's answer into rows (pure).

    Args:
        job: the job.
        answer: :data:`LINK_PROGRAM`'s JSON, or None when it could not run.
        arrived: token suffix (``<token>:ip``/``:eth``) -> the source address the listener
            saw, for datagrams of this job that arrived.
        engine: ``podman`` or ``kubernetes`` (for the fix in the detail).

    Returns:
        Rows, all expected blocked: raw socket, packet socket, forged by IP, forged by
        Ethernet, then one per IPv6 target tried.
    """
    def row(target: str, kind: str, host: str, port: int, observed: bool, detail: str) -> Result:
        probe = Probe(job.source, job.container, target, kind, host, port, False)
        if observed:
            detail = f"{detail}; {fix_hint(kind, engine)}"
        return Result(probe, observed, detail)

    if answer is None:
        why = "could not run the link probe in the container"
        return [row("raw socket as root", "raw", "", 0, False, why)]
    out = [
        row("raw socket (AF_INET, SOCK_RAW) as root", "raw", "", 0,
            answer["raw"] == "opened", answer["raw"]),
        row("packet socket (AF_PACKET) as root", "raw", "", 0,
            answer["packet"] == "opened", answer["packet"]),
    ]
    if job.forged_src:
        for how, key in (("raw IP", "ip"), ("Ethernet frame to the gateway", "eth")):
            seen = arrived.get(f"{job.token}:{key}")
            detail = (f"arrived from {seen}" if seen
                      else f"did not arrive ({answer.get('forged_' + key) or 'not sent'})")
            out.append(row(f"forged source {job.forged_src} (the airlock's) --> "
                           f"{job.forged_dst} udp, by {how}", "forged", job.forged_dst, 0,
                           bool(seen), detail))
    for label, addr, port, reached, detail in answer.get("tcp6") or []:
        out.append(row(label, "tcp6", addr, int(port), bool(reached), detail))
    if not answer.get("tcp6"):
        out.append(row("IPv6: any peer", "tcp6", "", 0, False,
                       f"no IPv6 peer to try (addresses: {answer.get('addrs6') or 'none'}; "
                       f"ff02::1: {answer.get('allnodes', '')})"))
    return out
