"""Below-policy probes on a cluster: raw sockets, forged sources and IPv6 (issue 20).

The same :data:`mlab.verify.link.LINK_PROGRAM` and row builder as the podman verify,
run by ``kubectl exec`` in every HomePod source (probe pod and real pods). A forged datagram
carries the Airlock's address as source and goes to a UDP listener this module runs in the
outsider probe pod (a pod no policy selects, so only the node's anti-spoofing or the missing
capability can stop it); IPv6 targets are what each pod finds itself (neighbours, ff02::1,
the gateway's EUI-64 link-local address). Every row is expected blocked.
"""

from __future__ import annotations

import json
import secrets
import time
from concurrent.futures import ThreadPoolExecutor

from mlab.deploy.kubernetes import Kubectl
from mlab.errors import MlabError
from mlab.verify import kube_matrix as km
from mlab.verify.link import LINK_PORTS, LINK_PROGRAM, LinkJob, results
from mlab.verify.matrix import TCP_TIMEOUT, Result

LISTEN_SECONDS = 12.0
"""How long the outsider's UDP listener collects forged datagrams."""
LISTEN_PORT = 40999

_LISTEN = r"""
import json, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", int(sys.argv[1])))
end = time.time() + float(sys.argv[2]); got = {}
while time.time() < end:
    s.settimeout(max(0.05, end - time.time()))
    try:
        data, addr = s.recvfrom(2048); got[data.decode("ascii", "replace").strip()] = addr[0]
    except socket.timeout:
        pass
print(json.dumps(got))
"""


def run(kubectl: Kubectl, ns: str, sources: list[km.Source], airlock_ip: str,
        outsider: km.Source) -> list[Result]:
    """Run the link program in every HomePod source; rows as :func:`mlab.verify.link.results`."""
    token = "mlab-forged-" + secrets.token_hex(6)
    homes = [s for s in sources if s.role == "homepod"]
    jobs = [LinkJob(s.name, s.pod, airlock_ip, outsider.endpoint.ip, (), f"{token}-{i}")
            for i, s in enumerate(homes)]

    def listen() -> dict[str, str]:
        try:
            out = kubectl.run(["exec", "-n", ns, outsider.pod, "-c", outsider.container, "--",
                               "python3", "-c", _LISTEN, str(LISTEN_PORT),
                               str(LISTEN_SECONDS)], timeout=LISTEN_SECONDS + 60)
            return dict(json.loads(out))
        except (MlabError, ValueError):
            return {}

    def one(job: LinkJob, src: km.Source) -> dict | None:
        arg = json.dumps({"forge": [job.forged_src, job.forged_dst, LISTEN_PORT, job.token]
                          if job.forged_src else None, "targets": [],
                          "ports": [*LINK_PORTS], "timeout": TCP_TIMEOUT})
        try:
            out = kubectl.run(["exec", "-n", ns, src.pod, "-c", src.container, "--",
                               "python3", "-c", LINK_PROGRAM, arg], timeout=120)
            return dict(json.loads(out))
        except (MlabError, ValueError):
            return None

    with ThreadPoolExecutor(max_workers=len(jobs) + 1) as pool:
        heard = pool.submit(listen)
        time.sleep(2)  # the listener binds first
        answers = [pool.submit(one, j, s) for j, s in zip(jobs, homes, strict=True)]
        got = [a.result() for a in answers]
        arrived = heard.result()
    rows: list[Result] = []
    for job, answer in zip(jobs, got, strict=True):
        mine = {k: v for k, v in arrived.items() if k.startswith(job.token + ":")}
        rows += results(job, answer, mine, engine="kubernetes")
    return rows
