"""examples/seed-cluster.yaml reproduces, field by field, what the seed's hand-written
homepod.yaml, airlock.yaml and network.yaml set (/work/shared/seed), and fixes what they got
wrong: a plain-text password in env, RDP missing from the policy, DNS to the internet, no
policy for the airlock, and a path to the cloud metadata address."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlab.render import render_site
from mlab.secrets import password_keys
from mlab.site import load_site

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def seed():
    site = load_site(ROOT / "examples" / "seed-cluster.yaml")
    passwords = {k: f"seed-test-{k}" for k in password_keys(site)}
    rendered = render_site(site, passwords)
    objs = {(o["kind"], o["metadata"]["name"]): o for o in rendered.objects()}
    return site, rendered, objs, passwords


def _container(dep, index=0):
    return dep["spec"]["template"]["spec"]["containers"][index]


def _mounts(dep, index=0):
    pod = dep["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    out = {}
    for m in _container(dep, index)["volumeMounts"]:
        vol = volumes[m["name"]]
        source = (vol.get("persistentVolumeClaim") or {}).get("claimName") or (
            "emptyDir:" + vol["emptyDir"].get("medium", "") if "emptyDir" in vol else m["name"])
        out[m["mountPath"]] = (source, m.get("subPath"), bool(m.get("readOnly")))
    return out


def test_homepod_as_seed(seed) -> None:
    site, _, objs, _ = seed
    dep = objs[("Deployment", "homepod-gemfield")]
    assert dep["metadata"]["namespace"] == "mlab2"
    pod = dep["spec"]["template"]["spec"]
    assert pod["nodeName"] == "ai03"
    assert dep["spec"]["template"]["metadata"]["labels"]["group.mlab.io/deepvac"] == "true"
    c = _container(dep)
    assert c["image"] == "gemfield/homepod:2.0" and c["imagePullPolicy"] == "IfNotPresent"
    assert c["workingDir"] == "/home/gemfield"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["TZ"] == "Asia/Shanghai" and env["MLAB_USER"] == "gemfield"
    assert c["resources"] == {"requests": {"memory": "6Gi"}, "limits": {"memory": "24Gi"}}
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["vnc"] == 5900 and ports["novnc"] == 7030
    assert c["livenessProbe"]["httpGet"] == {"path": "/", "port": "novnc"}
    mounts = _mounts(dep)
    assert mounts["/dev/shm"] == ("emptyDir:Memory", None, False)
    assert mounts["/home/gemfield"] == ("gemfield", None, False)
    assert mounts["/gemfield/hostpv"] == ("ai3-hostpvc", None, False)
    assert mounts["/gemfield/hostpv2"] == ("ai3-hostpvc2", None, False)
    assert mounts["/opt/public"] == ("public-dataset", None, True)
    assert mounts["/opt/private"] == ("private-dataset", None, True)
    # The airlock share (public-dataset, subPath airlock) is read-only in the HomePod.
    assert mounts["/opt/public/airlock"] == ("public-dataset", "airlock", True)
    paths = [m["mountPath"] for m in c["volumeMounts"]]
    assert paths.index("/opt/public") < paths.index("/opt/public/airlock")


def test_homepod_service_as_seed(seed) -> None:
    _, _, objs, _ = seed
    svc = objs[("Service", "homepod-gemfield")]["spec"]
    assert svc["externalIPs"] == ["192.168.0.34"]
    ports = {p["name"]: (p["port"], p["targetPort"]) for p in svc["ports"]}
    assert ports["novnc"] == (27031, "novnc") and ports["vnc"] == (5901, "vnc")


def test_airlock_as_seed(seed) -> None:
    _, _, objs, _ = seed
    dep = objs[("Deployment", "airlock")]
    pod = dep["spec"]["template"]["spec"]
    assert pod["nodeName"] == "ai05"
    c = _container(dep)
    assert c["image"] == "gemfield/homepod:2.0" and c["workingDir"] == "/opt/public/airlock"
    assert c["resources"] == {"requests": {"memory": "3Gi"}, "limits": {"memory": "16Gi"}}
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["TZ"] == "Asia/Shanghai" and env["MLAB_MODE"] == "airlock"
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"vnc": 5900, "novnc": 7030, "ssh": 22}
    mounts = _mounts(dep)
    assert mounts["/opt/public/airlock"] == ("public-dataset", "airlock", False)
    assert mounts["/dev/shm"] == ("emptyDir:Memory", None, False)
    assert "/opt/outbox" not in mounts  # issue 13: only the publisher reads outboxes
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]  # no sniffing: NET_RAW gone
    assert "NET_RAW" not in c["securityContext"]["capabilities"]["add"]
    assert _container(dep, 1)["name"] == "publisher"
    publisher = _mounts(dep, 1)
    assert publisher["/opt/outbox"] == ("outbox", None, True)
    assert publisher["/opt/public/airlock/export"] == ("public-dataset", "airlock/export", False)
    assert publisher["/etc/mlab/publisher"] == ("publisher-password", None, True)
    svc = objs[("Service", "airlock")]["spec"]
    assert svc["externalIPs"] == ["192.168.0.168"]
    ports = {p["name"]: (p["port"], p["targetPort"]) for p in svc["ports"]}
    assert ports == {"novnc": (27031, "novnc"), "vnc": (5901, "vnc"), "ssh": (10022, "ssh")}


def test_office_policy_as_seed_plus_rdp(seed) -> None:
    _, _, objs, _ = seed
    pol = objs[("NetworkPolicy", "homepod-from-office")]["spec"]
    (rule,) = pol["ingress"]
    assert [p["ipBlock"]["cidr"] for p in rule["from"]] == ["192.168.0.0/16", "172.17.0.0/16"]
    ports = {p["port"] for p in rule["ports"]}
    assert {5900, 7030} <= ports and 3389 in ports and 22 in ports  # the seed forgot RDP


def test_password_not_plain_env(seed) -> None:
    _, rendered, objs, passwords = seed
    for dep in (objs[("Deployment", "homepod-gemfield")], objs[("Deployment", "airlock")]):
        env = {e["name"]: e.get("value") for e in _container(dep)["env"]}
        assert "DEEPVAC_PASSWORD" not in env and "MLAB_PASSWORD" not in env
        assert env["MLAB_PASSWORD_FILE"] == "/etc/mlab/secret/password"
        assert not set(passwords.values()) & set(env.values())
    secret = objs[("Secret", "homepod-gemfield-password")]
    assert secret["stringData"] == {"password": passwords["gemfield"]}


def test_no_dns_path_for_homepods(seed) -> None:
    site, _, objs, _ = seed
    pod = objs[("Deployment", "homepod-gemfield")]["spec"]["template"]["spec"]
    assert pod["dnsPolicy"] == "None" and pod["dnsConfig"]["nameservers"] == ["127.0.0.1"]
    assert pod["hostAliases"] == [{"ip": site.code_service_ip, "hostnames": ["ai1.gemfield.org"]}]
    homepod_egress = [o for (k, _), o in objs.items() if k == "NetworkPolicy"
                      and o["spec"]["podSelector"]["matchLabels"].get("app.kubernetes.io/component") == "homepod"
                      and "egress" in o["spec"]]
    assert [o["metadata"]["name"] for o in homepod_egress] == ["homepod-to-code-service"]
    (rule,) = homepod_egress[0]["spec"]["egress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8080}]
    assert all("ipBlock" not in peer for peer in rule["to"])


def test_airlock_has_policies_without_metadata(seed) -> None:
    _, _, objs, _ = seed
    policies = {name: o for (k, name), o in objs.items() if k == "NetworkPolicy"}
    assert {"airlock-from-office", "airlock-to-internet", "airlock-to-dns"} <= set(policies)
    (rule,) = policies["airlock-to-internet"]["spec"]["egress"]
    peer, peer6 = rule["to"]
    assert peer["ipBlock"]["cidr"] == "0.0.0.0/0"
    assert {"169.254.0.0/16", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
            "10.244.0.0/16", "10.96.0.0/12"} <= set(peer["ipBlock"]["except"])
    # On a dual-stack cluster the IPv6 internet excludes unique-local and link-local too.
    assert peer6["ipBlock"]["cidr"] == "::/0"
    assert {"fc00::/7", "fe80::/10"} <= set(peer6["ipBlock"]["except"])
    deny = policies["mlab-default-deny"]["spec"]
    assert deny["policyTypes"] == ["Ingress", "Egress"]
    assert deny["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "seed"


def test_code_service_host(seed) -> None:
    _, _, objs, _ = seed
    env = {e["name"]: e.get("value") for e in _container(objs[("Deployment", "homepod-gemfield")])["env"]}
    assert env["MLAB_CODE_HOST"] == "ai1.gemfield.org"
