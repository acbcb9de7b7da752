"""The podman translation (pure): rendered objects in, a plan for `podman kube play` out.

Each test names the rule of ``mlab.podman.translate`` it checks. The inputs are the
real renderer's output for examples/local.yaml (plus variations), so a change in the
rendered manifests that podman cannot run shows up here, not only in the e2e run.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml
from site_kit import LOCAL_SITE, local_data, local_site, render_fixed, translate_fixed

from mlab.errors import DeployError
from mlab.podman import firewall
from mlab.podman.translate import (
    LABEL_SPEC,
    Plan,
    translate,
)
from mlab.site import Site, load_site, parse_site

STATE = "/state/site/podman"


_site = local_site


def _plan(site: Site, host_ca: bytes | None = b"CA", placeholder: bool = False) -> Plan:
    return translate_fixed(site, STATE, host_ca=host_ca, placeholder_code_service=placeholder)


def _with_user(site: Site, name: str, uid: int, base: int) -> Site:
    data = site.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    data["users"].append({"name": name, "uid": uid, "service": {"ports": {
        "vnc": base, "rdp": base + 1, "novnc": base + 2, "ssh": base + 3}}})
    return parse_site(data)


def test_one_pod_per_deployment_with_rendered_labels() -> None:
    plan = _plan(load_site(LOCAL_SITE))
    names = [p.name for p in plan.pods]
    assert names == ["mlab-local-code-service", "mlab-local-airlock",
                     "mlab-local-homepod-alice", "mlab-local-homepod-bob"]
    alice = plan.pod("homepod", "alice")
    assert alice is not None
    labels = alice.manifest["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "homepod"
    assert labels["mlab.io/user"] == "alice"
    assert labels["app.kubernetes.io/instance"] == "local"
    assert labels[LABEL_SPEC] == alice.spec_hash
    assert alice.manifest["kind"] == "Pod"


def test_claims_become_site_prefixed_volumes() -> None:
    plan = _plan(_site())
    assert set(plan.volumes) == {
        "mlab-local-home-alice", "mlab-local-home-bob", "mlab-local-airlock-share",
        "mlab-local-outbox", "mlab-local-code-service-data", "mlab-local-exports"}
    alice = plan.pod("homepod", "alice")
    assert alice is not None
    claims = {v["persistentVolumeClaim"]["claimName"]
              for v in alice.manifest["spec"]["volumes"] if "persistentVolumeClaim" in v}
    assert claims == {"mlab-local-home-alice", "mlab-local-airlock-share", "mlab-local-outbox"}


def test_secrets_become_root_only_files_never_manifest_text() -> None:
    plan = _plan(_site())
    for pod in plan.pods:
        text = yaml.safe_dump(pod.manifest)
        assert "pw-" not in text, f"{pod.name}: a password leaked into the manifest"
        for vol in pod.manifest["spec"]["volumes"]:
            assert not {"secret", "configMap", "projected"} & set(vol), (pod.name, vol)
    alice = plan.pod("homepod", "alice")
    assert alice is not None
    files = {f.path: f for f in alice.files}
    spec = files["files/homepod-alice/password/password"]
    assert spec.content == b"pw-alice-0123456789" and spec.mode == 0o444
    mounts = {m["mountPath"]: m for m in alice.manifest["spec"]["containers"][0]["volumeMounts"]}
    assert mounts["/etc/mlab/secret"]["readOnly"] is True
    code = plan.pod("code-service")
    assert code is not None
    paths = {f.path for f in code.files}
    assert "files/code-service/user-passwords/alice/password" in paths
    # The Airlock's publisher logs in to the code service with the Airlock password.
    airlock_pw = next(f for f in code.files
                      if f.path == "files/code-service/user-passwords/airlock/password")
    assert airlock_pw.content == b"pw-airlock-0123456789" and airlock_pw.mode == 0o400
    assert "files/code-service/site/site.yaml" in paths
    site_mount = next(m for m in code.manifest["spec"]["containers"][0]["volumeMounts"]
                      if m["mountPath"] == "/etc/mlab/site.yaml")
    vol = next(v for v in code.manifest["spec"]["volumes"] if v["name"] == site_mount["name"])
    assert vol["hostPath"] == {"path": f"{STATE}/files/code-service/site/site.yaml", "type": "File"}


def test_share_read_only_in_homepods_read_write_in_airlock() -> None:
    plan = _plan(_site())
    for pod in plan.pods:
        mounts = {m["mountPath"]: m for m in pod.manifest["spec"]["containers"][0]["volumeMounts"]}
        if pod.component == "homepod":
            assert mounts["/opt/public/airlock"].get("readOnly") is True
        if pod.component == "airlock":
            assert not mounts["/opt/public/airlock"].get("readOnly")


def test_networks_homepod_internal_code_service_shared_airlock_nat() -> None:
    plan = _plan(_site())
    nets = {n.name: n for n in plan.networks}
    assert not nets["mlab-local"].internal
    assert nets["mlab-local-hp-alice"].internal and nets["mlab-local-hp-bob"].internal
    by_pod = {p.name: [n for n, _ip in p.networks] for p in plan.pods}
    assert by_pod["mlab-local-homepod-alice"] == ["mlab-local-hp-alice"]
    assert by_pod["mlab-local-homepod-bob"] == ["mlab-local-hp-bob"]
    assert by_pod["mlab-local-airlock"] == ["mlab-local"]
    assert by_pod["mlab-local-code-service"] == ["mlab-local", "mlab-local-hp-alice",
                                                 "mlab-local-hp-bob"]
    for pod in plan.pods:
        for name, ip in pod.networks:
            assert ipaddress.ip_address(ip) in ipaddress.ip_network(nets[name].subnet)


def test_code_service_host_alias_points_at_its_address_on_each_network() -> None:
    plan = _plan(_site())
    for pod in plan.pods:
        aliases = pod.manifest["spec"].get("hostAliases", [])
        if pod.component == "code-service":
            continue
        net = next(n for n in plan.networks if n.name == pod.networks[0][0])
        assert aliases == [{"ip": net.code_ip, "hostnames": ["code.mlab.local"]}], pod.name
    alice = plan.pod("homepod", "alice")
    assert alice is not None
    assert alice.manifest["spec"]["dnsPolicy"] == "None"
    assert alice.manifest["spec"]["dnsConfig"]["nameservers"] == ["127.0.0.1"]


def test_services_become_ports_on_the_bind_address() -> None:
    plan = _plan(_site(access={"bindAddress": "127.0.4.7"}))
    alice = plan.pod("homepod", "alice")
    assert alice is not None
    assert {(p.name, p.host_ip, p.host_port, p.container_port, p.via) for p in alice.ports} == {
        ("vnc", "127.0.4.7", 15901, 5900, "nft"), ("rdp", "127.0.4.7", 13389, 3389, "nft"),
        ("novnc", "127.0.4.7", 17031, 7030, "nft"), ("ssh", "127.0.4.7", 12201, 22, "nft")}
    # podman 4.3 would publish a bare containerPort on the same host port: none may remain.
    assert "ports" not in alice.manifest["spec"]["containers"][0]
    code = plan.pod("code-service")
    assert code is not None
    assert code.manifest["spec"]["containers"][0]["ports"] == [
        {"name": "http", "containerPort": 8080, "protocol": "TCP", "hostPort": 80,
         "hostIP": "127.0.4.7"}]
    airlock = plan.pod("airlock")
    assert airlock is not None
    assert sorted(p["hostPort"] for p in airlock.manifest["spec"]["containers"][0]["ports"]) == [
        10022, 15900, 17030]


def test_bind_to_every_address_leaves_host_ip_out() -> None:
    """podman 4.3 passes hostIP 0.0.0.0 to netavark verbatim, which then matches nothing."""
    plan = _plan(_site(access={"bindAddress": "0.0.0.0"}))
    code = plan.pod("code-service")
    assert code is not None
    port = code.manifest["spec"]["containers"][0]["ports"][0]
    assert port["hostPort"] == 80 and "hostIP" not in port
    assert all(p.host_ip == "0.0.0.0" for p in code.ports)


def test_probes_placement_and_gpus_dropped() -> None:
    data = local_data()
    data["users"][0]["resources"] = {"gpus": 1, "limits": {"memory": "4Gi"}}
    data["users"][0]["placement"] = {"nodeName": "gpu1"}
    plan = _plan(parse_site(data))
    alice = plan.pod("homepod", "alice")
    assert alice is not None
    spec = alice.manifest["spec"]
    container = spec["containers"][0]
    assert "nodeName" not in spec and "automountServiceAccountToken" not in spec
    assert not {"startupProbe", "readinessProbe", "livenessProbe"} & set(container)
    assert container["resources"] == {"limits": {"memory": "4Gi"}}


def test_airlock_trusts_the_host_ca_bundle() -> None:
    plan = _plan(_site(), host_ca=b"HOST CA")
    airlock = plan.pod("airlock")
    assert airlock is not None
    container = airlock.manifest["spec"]["containers"][0]
    mount = next(m for m in container["volumeMounts"]
                 if m["mountPath"] == "/etc/ssl/certs/ca-certificates.crt")
    assert mount["readOnly"] is True
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["SSL_CERT_FILE"] == "/etc/ssl/certs/ca-certificates.crt"
    assert any(f.content == b"HOST CA" for f in airlock.files)


def test_placeholder_code_service_only_changes_the_command() -> None:
    real, fake = _plan(_site()), _plan(_site(), placeholder=True)
    a, b = real.pod("code-service"), fake.pod("code-service")
    assert a is not None and b is not None
    assert a.manifest["spec"]["containers"][0]["command"][:3] == ["mlab", "code-service", "serve"]
    assert b.manifest["spec"]["containers"][0]["command"][0] == "python3"
    assert a.networks == b.networks and a.ports == b.ports


def test_same_input_same_hash_and_a_new_user_leaves_others_alone() -> None:
    site = _site()
    first, again = _plan(site), _plan(site)
    assert [p.spec_hash for p in first.pods] == [p.spec_hash for p in again.pods]
    bigger = _with_user(site, "carol", 1003, 15910)
    subnets = {n.name: n.subnet for n in first.networks}
    subnets["mlab-local-hp-carol"] = "10.89.200.0/24"
    rendered = render_fixed(bigger)
    plan = translate(bigger, rendered.files, rendered.secrets, subnets, STATE, host_ca=b"CA")
    before = {p.name: p.spec_hash for p in first.pods}
    after = {p.name: p.spec_hash for p in plan.pods}
    assert after["mlab-local-homepod-alice"] == before["mlab-local-homepod-alice"]
    assert after["mlab-local-homepod-bob"] == before["mlab-local-homepod-bob"]
    assert after["mlab-local-airlock"] == before["mlab-local-airlock"]
    assert "mlab-local-homepod-carol" in after


def test_two_services_on_one_port_is_an_error_naming_it() -> None:
    data = local_data()
    data["users"][1]["service"]["ports"]["ssh"] = 12201
    with pytest.raises(DeployError, match="port 12201 on 127.0.0.1 is wanted twice"):
        _plan(parse_site(data))


def test_an_existing_secret_podman_cannot_read_is_an_error() -> None:
    data = local_data()
    data["users"][0]["passwordSecret"] = "corp-alice"
    with pytest.raises(DeployError, match="Secret 'corp-alice' is not rendered by MLab"):
        _plan(parse_site(data))


def _ruleset(plan: Plan, **kwargs: Any) -> str:
    homepods = [firewall.HomepodNet(n.user or "", n.subnet, n.code_ip, n.pod_ip)
                for n in plan.homepod_networks()]
    dnats = [firewall.Dnat(p.host_ip, p.host_port, pod.networks[0][1], p.container_port, pod.name)
             for pod in plan.pods for p in pod.ports if p.via == "nft"]
    return firewall.ruleset(plan.site, homepods, dnats, plan.nat_network().subnet,
                            offices=["127.0.0.0/8"], **kwargs)


def test_firewall_rules_cover_each_homepod_edge() -> None:
    plan = _plan(_site())
    text = _ruleset(plan)
    assert text.startswith("table inet mlab_local\ndelete table inet mlab_local\n")
    for net in plan.homepod_networks():
        assert f"ip saddr {net.subnet} drop comment \"homepod-{net.user} --> host: denied\"" in text
        assert (f"ip saddr {net.subnet} ip daddr {net.code_ip} tcp dport 8080 accept "
                f"comment \"homepod-{net.user} --> code-service :8080\"") in text
        assert f"ip daddr {net.subnet} ip saddr != {net.subnet} drop" in text
        # The Service's port 80 -> targetPort 8080, as kube-proxy would do on a cluster.
        assert (f"ip saddr {net.subnet} ip daddr {net.code_ip} tcp dport 80 "
                f"dnat ip to {net.code_ip}:8080") in text
    nat = plan.nat_network()
    assert f"ip saddr {nat.subnet} ip daddr {nat.code_ip} tcp dport 80 dnat ip to {nat.code_ip}:8080" in text
    # The bridge filter still admits only :8080 (it sees packets after the DNAT).
    assert "tcp dport 80 accept" not in text.split("table bridge")[-1]
    assert "ip daddr 127.0.0.1 tcp dport 15901 dnat ip to 10.89.249.3:5900" in text
    assert "169.254.0.0/16" in text
    assert firewall.table_name("t4-up") == "mlab_t4_up"


def test_firewall_lets_the_airlock_reach_its_proxy_in_a_private_range() -> None:
    plan = _plan(_site())
    text = firewall.ruleset(plan.site, [], [], plan.nat_network().subnet,
                            proxies=[("10.1.2.3", 3128)])
    allow = f"ip saddr {plan.nat_network().subnet} ip daddr 10.1.2.3 tcp dport 3128 accept"
    assert allow in text
    assert text.index(allow) < text.index("private and link-local ranges: denied")


def test_firewall_published_ports_only_from_office_cidrs() -> None:
    """NetworkPolicy edges `office --> homepod`/`office --> airlock`: other hosts reach the
    published ports only from access.officeCIDRs; the Airlock never reaches a HomePod."""
    plan = _plan(_site())
    nat = plan.nat_network().subnet
    alice = next(n for n in plan.homepod_networks() if n.user == "alice")
    text = firewall.ruleset(plan.site, [firewall.HomepodNet("alice", alice.subnet,
                            alice.code_ip, alice.pod_ip)], [], nat, offices=["192.168.0.0/16"])
    assert (f"ip daddr {alice.pod_ip} ct status dnat ip saddr {{ 192.168.0.0/16 }} accept"
            in text)
    assert f"ip daddr {nat} ct status dnat ip saddr != {{ 192.168.0.0/16 }} drop" in text
    airlock_drop = f"ip saddr {nat} ip daddr {alice.subnet} drop"
    assert text.index(airlock_drop) < text.index("ct status dnat ip saddr { 192.168.0.0/16 } accept")
    closed = firewall.ruleset(plan.site, [], [], nat, offices=[])
    assert f"ip daddr {nat} ct status dnat drop" in closed


@pytest.mark.skipif(shutil.which("nft") is None, reason="nft not installed")
def test_firewall_ruleset_parses() -> None:
    """``nft -c`` checks the script without loading it."""
    text = _ruleset(_plan(_site(access={"bindAddress": "0.0.0.0"})))
    proc = subprocess.run(["nft", "-c", "-f", "-"], input=text, text=True, capture_output=True,
                          check=False)
    if proc.returncode != 0 and "Operation not permitted" in proc.stderr:
        pytest.skip("nft -c needs CAP_NET_ADMIN")
    assert proc.returncode == 0, proc.stderr


def test_claim_sub_path_becomes_a_host_path_inside_the_volume() -> None:
    """4.3.1's kube play ignores subPath on a volume: alice's outbox would be everyone's."""
    plan = _plan(_site())
    alice = plan.pod("homepod", "alice")
    assert alice is not None
    spec = alice.manifest["spec"]
    mount = next(m for m in spec["containers"][0]["volumeMounts"]
                 if m["mountPath"] == "/opt/outbox")
    assert "subPath" not in mount
    vol = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    assert vol["hostPath"] == {
        "path": "/var/lib/containers/storage/volumes/mlab-local-outbox/_data/alice",
        "type": "DirectoryOrCreate"}
    airlock = plan.pod("airlock")
    assert airlock is not None
    login, publisher = airlock.manifest["spec"]["containers"]
    assert "/opt/outbox" not in {m["mountPath"] for m in login["volumeMounts"]}  # issue 13
    mounts = {m["mountPath"]: m for m in publisher["volumeMounts"]}
    assert mounts["/opt/outbox"]["readOnly"] is True and "subPath" not in mounts["/opt/outbox"]
    export = next(v for v in airlock.manifest["spec"]["volumes"]
                  if v["name"] == mounts["/opt/public/airlock/export"]["name"])
    # posture reviewed: the publisher writes to the exports claim, never to the share
    assert export["persistentVolumeClaim"]["claimName"] == "mlab-local-exports"
    assert "/opt/public/airlock" not in mounts
    shared = _plan(_site(egress={"exportDelivery": "share"})).pod("airlock")
    assert shared is not None
    mounts = {m["mountPath"]: m for m in shared.manifest["spec"]["containers"][1]["volumeMounts"]}
    export = next(v for v in shared.manifest["spec"]["volumes"]
                  if v["name"] == mounts["/opt/public/airlock/export"]["name"])
    assert export["hostPath"]["path"].endswith("/mlab-local-airlock-share/_data/export")
    for pod in plan.pods:
        for container in pod.manifest["spec"]["containers"]:
            for m in container["volumeMounts"]:
                assert "subPath" not in m, (pod.name, m)


def test_a_sub_path_leaving_the_volume_is_an_error() -> None:
    site = _site(airlock={"outbox": {"subPath": "../x"}})
    with pytest.raises(DeployError, match="subPath"):
        _plan(site)


def test_code_service_sees_the_local_upstreams_read_only() -> None:
    """`mlab repo approve file:///srv/mlab/upstreams/X.git` under `mlab up`: the admin's
    bare repositories under $MLAB_STATE_DIR/<site>/upstreams, mounted read-only."""
    from mlab.podman.translate import UPSTREAMS_MOUNT

    pod = _plan(_site()).pod("code-service")
    assert pod is not None
    spec = pod.manifest["spec"]
    vol = next(v for v in spec["volumes"] if v["name"] == "local-upstreams")
    assert vol["hostPath"]["path"] == "/state/site/upstreams"  # STATE is <root>/site/podman
    mount = next(m for m in spec["containers"][0]["volumeMounts"]
                 if m["name"] == "local-upstreams")
    assert mount == {"name": "local-upstreams", "mountPath": UPSTREAMS_MOUNT, "readOnly": True}
    closed = _plan(_site(codeService={"allowLocalUpstreams": False})).pod("code-service")
    assert closed is not None
    assert all(v["name"] != "local-upstreams" for v in closed.manifest["spec"]["volumes"])


def test_the_firewall_carries_every_edge_podman_can_have() -> None:
    """The podman firewall's edges are rows of mlab.topology.EDGES: every edge that can be
    active on a podman site (offices, Airlock, proxy; no portal, no HomePod resolver) is
    one the ruleset carries, and the rules take their ports from the table."""
    from mlab.topology import EDGES, edge_active

    podman_words = {"office", "direct-desktops", "airlock", "proxy"}
    want = {e for tls in ("tls", "plain-http") for e in EDGES
            if edge_active(e, podman_words | {tls})}
    assert set(firewall.RULE_EDGES) == want
    for words in ({"plain-http"}, {"tls"}):
        port = firewall.homepod_code_port(words)
        assert port == next(e.ports[0] for e in EDGES if (e.source, e.destination)
                            == ("homepod", "code-service") and edge_active(e, words))
        text = _ruleset(_plan(_site()), code_port=port)
        bridge = text.split("table bridge")[-1]
        assert f"tcp dport {port} accept comment" in bridge
        assert len({int(w) for w in re.findall(r"dport (\d+) accept comment \"homepod", bridge)}) == 1
    assert f"udp dport {firewall.NAT_TO_DNS[0].ports[0]} accept" in text


def test_networks_join_only_pods_that_share_an_edge() -> None:
    """The network attachment is the edge table's: two pods share a network only where
    mlab.topology.EDGES has an edge between their components (a HomePod and the code
    service on the user's internal network; the Airlock and the code service on the NAT
    network), and every such edge between site pods has a shared network."""
    from itertools import combinations

    from mlab.topology import EDGES

    plan = _plan(_site())
    edges = {frozenset((e.source, e.destination)) for e in EDGES}
    pods = {p.name: p for p in plan.pods}
    shared = set()
    for a, b in combinations(pods.values(), 2):
        if {n for n, _ in a.networks} & {n for n, _ in b.networks}:
            pair = frozenset((a.component, b.component))
            assert pair in edges, (a.name, b.name)
            shared.add(pair)
    present = {p.component for p in plan.pods}
    want = {pair for pair in edges if pair <= present and len(pair) == 2}
    assert shared == want


def test_portal_asks_the_host_for_wakes_through_the_spool_and_holds_no_podman() -> None:
    plan = _plan(local_site(portal={"enabled": True, "url": "http://127.0.0.1:8443"}))
    portal = plan.pod("portal")
    assert portal is not None
    spec = portal.manifest["spec"]
    command = spec["containers"][0]["command"]
    assert command.count("--wake") == 1
    assert command[command.index("--wake") + 1] == "host"
    assert command[command.index("--wake-dir") + 1] == "/var/lib/mlab/wake"
    paths = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v}
    mounts = {m["name"]: m for m in spec["containers"][0]["volumeMounts"]}
    assert paths["wake-requests"] == f"{STATE}/wake/requests"
    assert paths["wake-host"] == f"{STATE}/wake/host"
    assert mounts["wake-requests"]["mountPath"] == "/var/lib/mlab/wake/requests"
    assert mounts["wake-requests"]["readOnly"] is False
    assert mounts["wake-host"]["readOnly"] is True  # it cannot forge replies or the heartbeat
    # No way to podman: no socket, no container storage mounted into the portal.
    assert not [p for p in paths.values() if "podman.sock" in p or "containers" in p], paths
