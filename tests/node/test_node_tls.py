"""A ``tls: {mode: site-ca}`` site on the real node (issue 17): `mlab verify --cluster`
passes with HomePods reaching the code service on HTTPS only (the Service's 443 and the
container's 8443 answer; plain HTTP on 80 and 8080 is blocked by the NetworkPolicies), and
alice clones and pushes over ``https://code.mlab.local`` in her HomePod with no TLS option
(the code service's CA is in the pod's system trust store).

The site is examples/local.yaml with ``tls`` added (the same name, users and Services, as
every node test applies); the module applies examples/local.yaml again at the end, so the
node is left as it was found.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml
from access_clients import shell_session
from nodekit import NAMESPACE, SITE, Node, passwords

from mlab.site import load_site
from mlab.tls import ca_path

pytestmark = [pytest.mark.e2e, pytest.mark.node]


class Lab:
    """The applied tls site: its file, the node, the passwords and the site CA."""

    def __init__(self, node: Node, site: Path) -> None:
        self.node, self.site = node, site
        self.pw = passwords()
        self.ca = ca_path(load_site(site))
        svc = node.json("-n", NAMESPACE, "get", "service", "code-service")
        ports = {p["name"]: p["port"] for p in svc["spec"]["ports"]}
        self.code_ip, self.code_ports = svc["spec"]["clusterIP"], ports

    def shell(self, user: str, command: str, timeout: float = 120) -> str:
        svc = self.node.json("-n", NAMESPACE, "get", "service", f"homepod-{user}")
        port = next(p["port"] for p in svc["spec"]["ports"] if p["name"] == "ssh")
        return shell_session(svc["spec"]["clusterIP"], port, user, self.pw[user], command,
                             timeout=timeout)

    def mlab_as(self, user: str, *args: str) -> subprocess.CompletedProcess[str]:
        """``mlab ARGS`` from the office side over HTTPS, trusting the site CA."""
        env = {**self.node.env, "MLAB_USER": user, "MLAB_PASSWORD": self.pw[user],
               "SSL_CERT_FILE": str(self.ca),
               "MLAB_SERVER": f"https://{self.code_ip}:{self.code_ports['https']}"}
        env.pop("MLAB_PASSWORD_FILE", None)
        proc = subprocess.run([sys.executable, "-m", "mlab.cli.main", *args],
                              capture_output=True, text=True, env=env, timeout=300,
                              check=False)
        assert proc.returncode == 0, (args, proc.stdout[-2000:], proc.stderr[-2000:])
        return proc


@pytest.fixture(scope="module")
def lab(node: Node, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    doc = yaml.safe_load(SITE.read_text())
    doc["tls"] = {"mode": "site-ca"}
    variant = tmp_path_factory.mktemp("tls") / "site.yaml"
    variant.write_text(yaml.safe_dump(doc))
    try:
        proc = node.mlab("apply", "--site", str(variant), "--timeout", "600")
        assert proc.returncode == 0, proc.stderr[-3000:]
        yield Lab(node, variant)
    finally:
        back = node.mlab("apply", "--site", str(SITE), "--timeout", "600")
        assert back.returncode == 0, f"could not restore examples/local.yaml: {back.stderr}"


def _desktops_answer(lab: Lab, seconds: float = 240) -> None:
    """Wait until every HomePod's noVNC answers over HTTPS (the rollout to the tls site
    restarts the desktops; websockify may come up after the pod is Ready)."""
    import ssl
    import time
    import urllib.request

    ctx = ssl.create_default_context(cafile=str(lab.ca))
    ctx.check_hostname = False  # a ClusterIP is in no certificate; the chain is checked
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                         urllib.request.HTTPSHandler(context=ctx))
    for user in (u.name for u in load_site(lab.site).users):
        svc = lab.node.json("-n", NAMESPACE, "get", "service", f"homepod-{user}")
        port = next(p["port"] for p in svc["spec"]["ports"] if p["name"] == "novnc")
        url = f"https://{svc['spec']['clusterIP']}:{port}/vnc.html"
        deadline = time.monotonic() + seconds
        while True:
            try:
                with opener.open(url, timeout=10) as page:
                    if page.status == 200:
                        break
            except OSError as exc:
                assert time.monotonic() < deadline, f"{url}: {exc}"
            time.sleep(3)


def test_verify_passes_with_homepods_on_https_only(lab: Lab, tmp_path: Path) -> None:
    _desktops_answer(lab)
    proc = lab.node.mlab("verify", "--site", str(lab.site), "--cluster", "-o", "json", "-q",
                         timeout=600)
    rows = json.loads(proc.stdout) if proc.stdout.strip().startswith("[") else []
    bad = [r for r in rows if not r["ok"]]
    assert proc.returncode == 0 and rows and not bad, (proc.stderr[-3000:], bad)
    edges = {r["edge"]: r for r in rows}
    print(f"mlab verify --cluster (tls): {len(rows)} probes")
    for src in ("probe-homepod", "homepod-alice"):
        https = edges[f"{src} --> code service https://code.mlab.local/"]
        assert https["expected"] != "blocked" and https["detail"].startswith("HTTP "), https
        plain = edges[f"{src} --> code service http://code.mlab.local/"]
        assert plain["expected"] == "blocked", plain
    checks = {r["check"] for r in rows}
    assert {"homepod --> code-service :8443", "homepod --> code-service :8080",
            "office --> code-service :8443"} <= checks, checks
    assert all(r["expected"] == "blocked" for r in rows
               if r["check"] == "homepod --> code-service :8080")


def test_alice_clones_and_pushes_over_https_in_her_homepod(lab: Lab, tmp_path: Path) -> None:
    name = f"tls-{secrets.token_hex(3)}"
    upstream = f"/var/lib/mlab/code/upstream-{name}"
    lab.node.kubectl("-n", NAMESPACE, "exec", "deploy/code-service", "--", "sh", "-c",
                     f"git init -q -b main {upstream} && cd {upstream} && "
                     "git -c user.name=T -c user.email=t@example.org commit -q --allow-empty "
                     "-m 'tls first'")
    lab.mlab_as("admin", "repo", "approve", f"file://{upstream}", "--as", f"demo/{name}")
    out = lab.shell("alice", (
        "echo SERVER=$MLAB_SERVER; rm -rf /tmp/tlsclone; git config --global credential.helper "
        "'!f() { echo username=alice; echo password=\"$(cat $MLAB_PASSWORD_FILE)\"; }; f'; "
        f"git clone -q https://code.mlab.local/demo/{name} /tmp/tlsclone && cd /tmp/tlsclone && "
        "git --no-pager log --format=%s && "
        "git -c user.name=alice -c user.email=alice@example.org commit -q --allow-empty "
        "-m 'alice over https' && git push -q origin HEAD:refs/heads/alice/tls 2>&1; "
        "echo PUSHED=$?; curl -sS --max-time 8 -o /dev/null http://code.mlab.local/ 2>&1; "
        "echo PLAIN=$?"), timeout=180)
    lines = out.splitlines()
    assert "SERVER=https://code.mlab.local" in lines, out
    assert "tls first" in lines and "PUSHED=0" in lines, out
    assert "PLAIN=0" not in lines and any(ln.startswith("PLAIN=") for ln in lines), out
    # The pushed branch is on the code service, seen from the office over HTTPS (bob).
    # (No proxy from the environment: the ClusterIP is reached directly from the node.)
    refs = subprocess.run(
        ["git", "ls-remote",
         f"https://bob:{quote(lab.pw['bob'], safe='')}@{lab.code_ip}/demo/{name}"],
        capture_output=True, text=True, timeout=60, check=False,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), "GIT_TERMINAL_PROMPT": "0",
             "GIT_CONFIG_NOSYSTEM": "1", "GIT_SSL_CAINFO": str(lab.ca)})
    assert refs.returncode == 0 and "refs/heads/alice/tls" in refs.stdout, refs
