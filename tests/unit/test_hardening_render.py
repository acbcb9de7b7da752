"""Issue 20 and issue 13 (items 3, 8) in the pure layers: capabilities, IPv6, the start gate.

Rendered manifests (the real renderer on the example sites), the podman translation, the
firewall ruleset (checked by ``nft -c``), the link probes' rows, and the start gate against
real sockets on loopback.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from site_kit import local_site, render_fixed, translate_fixed

from mlab.homepod import startgate
from mlab.podman import firewall
from mlab.podman.runner import KEEP_IPV6_ENV, containers_conf
from mlab.probing import podman_link
from mlab.render.common import SESSION_CAPABILITIES
from mlab.site import Site, load_site
from mlab.verify import link as probes_link

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN_CAPS = {"NET_RAW", "NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE", "SYS_MODULE", "SETFCAP",
                  "MKNOD", "ALL"}


_site = local_site


def _deployments(site: Site) -> dict[str, dict[str, Any]]:
    rendered = render_fixed(site)
    return {o["metadata"]["name"]: o for objs in rendered.files.values() for o in objs
            if o["kind"] == "Deployment"}


@pytest.mark.parametrize("example", sorted(p.name for p in (ROOT / "examples").glob("*.yaml")))
def test_every_container_drops_all_and_adds_back_only_named_capabilities(example: str) -> None:
    site = load_site(ROOT / "examples" / example)
    deps = _deployments(site)
    assert deps, example
    for name, dep in deps.items():
        spec = dep["spec"]["template"]["spec"]
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["capabilities"]["drop"] == ["ALL"], name
            added = set(sc["capabilities"].get("add", []))
            assert not added & FORBIDDEN_CAPS, (name, added & FORBIDDEN_CAPS)
            assert added <= set(SESSION_CAPABILITIES), name
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, name
            # No pod-level sysctl in Kubernetes manifests: net.ipv6.* is "unsafe" there.
            assert "sysctls" not in spec.get("securityContext", {}), name


def test_escalation_only_where_the_user_has_sudo() -> None:
    site = _site(users=[{"name": "alice", "uid": 1001, "sudo": True},
                        {"name": "bob", "uid": 1002, "sudo": False}])
    deps = _deployments(site)
    sc = {n: d["spec"]["template"]["spec"]["containers"][0]["securityContext"]
          for n, d in deps.items()}
    assert sc["homepod-alice"]["allowPrivilegeEscalation"] is True
    assert sc["homepod-bob"]["allowPrivilegeEscalation"] is False
    assert sc["airlock"]["allowPrivilegeEscalation"] is True  # the Airlock user has sudo
    assert sc["code-service"]["allowPrivilegeEscalation"] is False
    assert "add" not in sc["code-service"]["capabilities"]


def _plan(site: Site):  # noqa: ANN202
    return translate_fixed(site)


def test_podman_pods_keep_the_security_context_and_homepods_check_the_airlock() -> None:
    plan = _plan(_site())
    for pod in plan.pods:
        spec = pod.manifest["spec"]
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["containers"][0]["securityContext"]["capabilities"]["drop"] == ["ALL"]
    homepods = [p for p in plan.pods if p.component == "homepod"]
    env = {e["name"]: e["value"] for e in homepods[0].manifest["spec"]["containers"][0]["env"]}
    assert env["MLAB_EGRESS_CHECK"] == f"airlock={plan.nat_network().pod_ip}:22"
    assert "MLAB_NODE_IP" not in env  # a downward-API field podman has no node for


def test_podman_containers_get_ipv6_off_unless_the_test_switch_is_on(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """kube play 4.3.1 ignores pod sysctls: MLab's containers.conf sets them for every
    container; the test switch picks the file without them."""
    monkeypatch.delenv(KEEP_IPV6_ENV, raising=False)
    text = containers_conf().read_text()
    for sysctl in ("net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1",
                   "net.ipv4.ping_group_range=0 0"):
        assert f'"{sysctl}"' in text
    monkeypatch.setenv(KEEP_IPV6_ENV, "1")
    assert "disable_ipv6" not in containers_conf().read_text().split("[containers]")[1]


def test_the_test_switchs_containers_conf_differs_only_by_the_sysctls(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Everything but ``default_sysctls`` is the same, the netavark backend above all: the
    switch's file once lacked it, podman used a recorded ``cni`` and the IPv6 e2e tests
    failed (session 8's CI trial)."""
    import tomllib

    monkeypatch.delenv(KEEP_IPV6_ENV, raising=False)
    real = tomllib.loads(containers_conf().read_text())
    monkeypatch.setenv(KEEP_IPV6_ENV, "1")
    switch = tomllib.loads(containers_conf().read_text())
    assert real["containers"].pop("default_sysctls")
    assert switch == real
    assert switch["network"]["network_backend"] == "netavark"


def _ruleset(block: bool = True) -> str:
    homepods = [firewall.HomepodNet("alice", "10.89.1.0/24", "10.89.1.2", "10.89.1.3", "podman7")]
    return firewall.ruleset("t", homepods, [], "10.89.2.0/24", nat_bridge="podman6",
                            macs=["02:00:00:00:00:01", "02:00:00:00:00:02"], block_ipv6=block)


def test_firewall_drops_ipv6_on_every_site_bridge_before_anything_accepts() -> None:
    text = _ruleset()
    inet, bridge = text.split(f"table bridge {firewall.table_name('t')} {{")[-2:]
    for chain in ("input", "forward"):
        body = inet.split(f"chain {chain} {{")[1].split("policy accept;")[1]
        drop = body.index('iifname { "podman6", "podman7" } meta nfproto ipv6 drop')
        assert drop < body.index("accept"), chain
    assert 'oifname { "podman6", "podman7" } meta nfproto ipv6 drop' in inet
    assert "ether saddr { 02:00:00:00:00:01, 02:00:00:00:00:02 } ether type ip6 drop" in bridge
    assert "ether daddr { 02:00:00:00:00:01, 02:00:00:00:00:02 } ether type ip6 drop" in bridge
    rules = bridge.split("policy accept;")[1]
    assert rules.index("ether type ip6 drop") < rules.index("accept")
    assert "ipv6" not in _ruleset(block=False) and "ip6" not in _ruleset(block=False)


@pytest.mark.skipif(shutil.which("nft") is None, reason="nft not installed")
def test_ipv6_ruleset_parses() -> None:
    proc = subprocess.run(["nft", "-c", "-f", "-"], input=_ruleset(), text=True,
                          capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(("mac", "ll"), [
    ("02:42:ac:11:00:02", "fe80::42:acff:fe11:2"),
    ("00:16:3e:00:00:01", "fe80::216:3eff:fe00:1"),
], ids=["local", "universal"])
def test_eui64_link_local(mac: str, ll: str) -> None:
    assert probes_link.eui64_link_local(mac) == ll


def _job() -> probes_link.LinkJob:
    return probes_link.LinkJob("homepod-alice", "c", "10.89.2.3", "192.0.2.2",
                               (("IPv6 bob [fe80::1]:22", "fe80::1", 22),), "tok-alice")


def test_link_rows_fail_on_raw_socket_forged_arrival_and_ipv6_edge_naming_the_fix() -> None:
    answer = {"raw": "opened", "packet": "PermissionError: [Errno 1]", "forged_ip": "sent",
              "forged_eth": "no packet socket",
              "tcp6": [["IPv6 bob [fe80::1]:22", "fe80::1", 22, True, "connected"]]}
    rows = probes_link.results(_job(), answer, {"tok-alice:ip": "10.89.2.3"}, "kubernetes")
    bad = {r.probe.target: r.detail for r in rows if not r.ok}
    assert set(bad) == {"raw socket (AF_INET, SOCK_RAW) as root",
                        "forged source 10.89.2.3 (the airlock's) --> 192.0.2.2 udp, by raw IP",
                        "IPv6 bob [fe80::1]:22"}
    assert "CAP_NET_RAW" in bad["raw socket (AF_INET, SOCK_RAW) as root"]
    assert "unsafe-sysctl allowlist" in bad["IPv6 bob [fe80::1]:22"]
    assert "tuning" in bad["IPv6 bob [fe80::1]:22"]


def test_link_rows_all_ok_when_everything_is_refused() -> None:
    answer = {"raw": "PermissionError", "packet": "PermissionError", "forged_ip": "no raw socket",
              "forged_eth": "no packet socket", "addrs6": [], "allnodes": "OSError",
              "tcp6": [["IPv6 bob [fe80::1]:22", "fe80::1", 22, False, "OSError: [Errno 99]"]]}
    rows = probes_link.results(_job(), answer, {})
    assert rows and all(r.ok for r in rows)
    assert probes_link.results(_job(), None, {})[0].ok  # could not run: reported, not passed
    assert "could not run" in probes_link.results(_job(), None, {})[0].detail


@pytest.fixture
def listener() -> Any:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield s.getsockname()[1]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_start_gate_waits_while_forbidden_egress_answers_then_gives_up(listener: int) -> None:
    lines: list[str] = []
    now = [0.0]

    def sleep(sec: float) -> None:
        now[0] += sec

    ok = startgate.wait({"MLAB_EGRESS_CHECK": f"127.0.0.1:{listener}",
                         "MLAB_START_GATE_SECONDS": "5"}, lines.append, clock=lambda: now[0],
                        sleep=sleep)
    assert ok is False
    assert "no user session is started" in lines[-1]
    assert f"127.0.0.1:{listener}" in lines[-1]


def test_start_gate_opens_when_every_target_is_refused() -> None:
    lines: list[str] = []
    port = _closed_port()
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(port),
           "MLAB_EGRESS_CHECK": f"[::1]:{port}"}
    assert startgate.wait(env, lines.append) is True
    assert "forbidden egress refused" in lines[-1] and "starting user sessions" in lines[-1]
    assert f"API server 127.0.0.1:{port}" in lines[-1]


def test_start_gate_labels_its_targets() -> None:
    env = {"MLAB_EGRESS_CHECK": "airlock=10.96.0.201:10022, 192.0.2.2:10250,node-kubelet=[::1]:1"}
    assert startgate.targets(env) == [("airlock", "10.96.0.201", 10022),
                                      ("forbidden", "192.0.2.2", 10250),
                                      ("node-kubelet", "::1", 1)]


def test_homepod_gate_env_names_airlock_and_node_kubelet(local_rendered) -> None:
    """On Kubernetes the gate is given the Airlock (fixed clusterIP, its SSH Service port)
    and the kubelet on the pod's node (downward API, expanded by the kubelet)."""
    objs = local_rendered[1].files
    dep = next(o for o in objs["homepod.yaml"] if o["kind"] == "Deployment")
    env = dep["spec"]["template"]["spec"]["containers"][0]["env"]
    names = [e["name"] for e in env]
    assert names.index("MLAB_NODE_IP") < names.index("MLAB_EGRESS_CHECK")  # $(VAR) order
    node_ip = next(e for e in env if e["name"] == "MLAB_NODE_IP")
    assert node_ip["valueFrom"] == {"fieldRef": {"fieldPath": "status.hostIP"}}
    check = next(e["value"] for e in env if e["name"] == "MLAB_EGRESS_CHECK")
    air = next(o for o in objs["airlock.yaml"] if o["kind"] == "Service")
    ssh = next(p["port"] for p in air["spec"]["ports"] if p["name"] == "ssh")
    assert check == f"airlock={air['spec']['clusterIP']}:{ssh},node-kubelet=$(MLAB_NODE_IP):10250"
    assert air["spec"]["clusterIP"] == "10.96.0.201"
    expanded = {**{e["name"]: e.get("value", "") for e in env}, "MLAB_NODE_IP": "192.0.2.2"}
    expanded["MLAB_EGRESS_CHECK"] = check.replace("$(MLAB_NODE_IP)", "192.0.2.2")
    assert [t[0] for t in startgate.targets(expanded)] == ["airlock", "node-kubelet"]


def test_start_gate_without_targets_starts_and_says_so() -> None:
    lines: list[str] = []
    assert startgate.wait({}, lines.append) is True
    assert "no forbidden egress to check" in lines[0]


@pytest.mark.parametrize("bad", ["nohost", "h:0", "h:x", "[::1]"])
def test_start_gate_rejects_a_malformed_target(bad: str) -> None:
    with pytest.raises(ValueError, match="MLAB_EGRESS_CHECK"):
        startgate.targets({"MLAB_EGRESS_CHECK": bad})


def test_link_local_of_reads_the_interface_address_not_its_mac(tmp_path: Path) -> None:
    """A bridge keeps the fe80:: address of the MAC it came up with (measured)."""
    inet6 = tmp_path / "if_inet6"
    inet6.write_text("fe80000000000000e057b7fffe2e8c97 6f 40 20 80  podman5\n"
                     "00000000000000000000000000000001 01 80 10 80       lo\n")
    assert podman_link.link_local_of("podman5", str(inet6)) == ["fe80::e057:b7ff:fe2e:8c97"]
    assert podman_link.link_local_of("no-such-bridge-x", str(inet6)) == []
