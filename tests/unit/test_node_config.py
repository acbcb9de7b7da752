"""Pure parts of `mlab node`: the CNI chain, command lines, build recipes, certificates,
and the anti-spoofing plugin's rules (its process side runs on the real node in tests/node)."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from mlab.node import addons, antispoof_cni, build, config, layout, pki
from mlab.node.layout import NodeLayout

LAY = NodeLayout(Path("/state/node"))
BINS = {n: Path(f"/bin/{n}") for n in (
    "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "containerd",
    "kubelet", "kube-proxy", "kube-router")}


def test_cni_chain_turns_ipv6_off_and_checks_sources_before_portmap() -> None:
    chain = json.loads(config.cni_conflist())["plugins"]
    assert [p["type"] for p in chain] == ["bridge", "tuning", "mlab-antispoof", "portmap"]
    assert chain[1]["sysctl"] == {"net.ipv6.conf.all.disable_ipv6": "1",
                                  "net.ipv6.conf.default.disable_ipv6": "1"}
    assert chain[0]["bridge"] == chain[2]["bridge"] == layout.BRIDGE
    assert chain[0]["ipam"]["ranges"][0][0]["subnet"] == layout.POD_CIDR


@pytest.mark.parametrize("comp", config.components(LAY, BINS), ids=lambda c: c.name)
def test_no_boolean_flag_takes_a_separate_value(comp: config.Component) -> None:
    # Kubernetes' flag parser reads `--flag true` as `--flag` plus a stray argument.
    assert "true" not in comp.argv and "false" not in comp.argv


def test_start_order_and_addresses() -> None:
    names = [c.name for c in config.components(LAY, BINS)]
    assert names == ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
                     "containerd", "kubelet", "kube-proxy", "kube-router"]
    router = config.components(LAY, BINS)[-1].argv
    assert {"--run-firewall=true", "--run-router=false", "--run-service-proxy=false",
            "--enable-cni=false"} <= set(router)
    kubelet = config.kubelet_config(LAY)
    assert "cgroupDriver: cgroupfs" in kubelet and "imageGCHighThresholdPercent: 100" in kubelet
    assert "restrict_oom_score_adj = true" in config.containerd_config(LAY)
    assert f'sandbox_image = "{layout.PAUSE_IMAGE}"' in config.containerd_config(LAY)


def test_kubernetes_version_is_named_once_in_go_mod() -> None:
    version = build.kubernetes_version()
    assert version.startswith("v1.")
    flags = build.version_ldflags(version)
    assert f"-X k8s.io/component-base/version.gitVersion={version}" in flags
    assert f"-X k8s.io/client-go/pkg/version.gitVersion={version}" in flags
    with pytest.raises(Exception, match="MAJOR.MINOR.PATCH"):
        build.version_ldflags("latest")


@pytest.mark.parametrize("package,name", [
    ("k8s.io/kubernetes/cmd/kubelet", "kubelet"),
    ("github.com/cloudnativelabs/kube-router/v2/cmd/kube-router", "kube-router"),
    ("github.com/coredns/coredns", "coredns"),
    ("example.com/tool/v3", "tool"),
])
def test_binary_name(package: str, name: str) -> None:
    assert build.binary_name(package) == name


def test_certificates_carry_the_kubernetes_identity() -> None:
    ca_pem, ca_key = pki.make_ca()
    by_name = {i.name: i for i in pki.identities()}
    cert_pem, _ = pki.make_cert(by_name["kubelet"], ca_pem, ca_key)
    cert = x509.load_pem_x509_certificate(cert_pem)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == \
        f"system:node:{layout.NODE_NAME}"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == \
        "system:nodes"
    server, _ = pki.make_cert(by_name["apiserver"], ca_pem, ca_key)
    sans = x509.load_pem_x509_certificate(server).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert ipaddress.ip_address(layout.KUBERNETES_SERVICE_IP) in sans.get_values_for_type(
        x509.IPAddress)


def test_antispoof_rule_binds_the_host_veth_to_the_pod_address() -> None:
    conf = {"bridge": layout.BRIDGE, "prevResult": {
        "interfaces": [{"name": layout.BRIDGE}, {"name": "veth1234"},
                       {"name": "eth0", "sandbox": "/var/run/netns/cni-1"}],
        "ips": [{"address": "10.244.0.7/24", "interface": 2},
                {"address": "fd00::7/64", "interface": 2}],
    }}
    rules = antispoof_cni.rules_for(conf, "abc")
    assert rules == [["-m", "physdev", "--physdev-in", "veth1234", "-s", "10.244.0.7/32",
                      "-m", "comment", "--comment", "mlab-antispoof abc", "-j", "RETURN"]]
    assert antispoof_cni.rules_for({"prevResult": {}}, "abc") == []


def test_coredns_matches_the_airlock_dns_policy_selector() -> None:
    objs = {(o["kind"], o["metadata"]["name"]): o for o in addons.objects()}
    dep = objs[("Deployment", "coredns")]
    assert dep["metadata"]["namespace"] == "kube-system"
    assert dep["spec"]["template"]["metadata"]["labels"] == {"k8s-app": "kube-dns"}
    assert objs[("Service", "kube-dns")]["spec"]["clusterIP"] == layout.DNS_SERVICE_IP


def test_containerd_reads_registry_hosts_files() -> None:
    text = config.containerd_config(LAY)
    assert f'config_path = "{LAY.registry_hosts}"' in text
    assert "mirrors" not in text  # containerd refuses config_path together with mirrors


@pytest.mark.parametrize(("repository", "host"), [
    ("registry.example.com:5000/mlab/homepod", "registry.example.com:5000"),
    ("192.0.2.2:5000/mlab/homepod", "192.0.2.2:5000"),
    ("reg.example/homepod", "reg.example"),
])
def test_registry_host(repository: str, host: str) -> None:
    assert config.registry_host(repository) == host


@pytest.mark.parametrize("repository", ["localhost/mlab/homepod", "mlab/homepod", "homepod"])
def test_registry_host_refuses_names_without_a_registry(repository: str) -> None:
    with pytest.raises(Exception, match="image.repository.*names no registry"):
        config.registry_host(repository)


def test_hosts_toml_is_plain_http_only_when_declared() -> None:
    import tomllib

    plain = tomllib.loads(config.hosts_toml("192.0.2.2:5000", plain_http=True))
    assert plain["server"] == "http://192.0.2.2:5000"
    assert plain["host"]["http://192.0.2.2:5000"]["capabilities"] == ["pull", "resolve"]
    tls = tomllib.loads(config.hosts_toml("reg.example", plain_http=False))
    assert tls["server"] == "https://reg.example" and "skip_verify" not in str(tls)
    assert "ca" not in tls["host"]["https://reg.example"]
    own = tomllib.loads(config.hosts_toml("192.0.2.2:5443", plain_http=False, ca="/n/certs.d/192.0.2.2:5443/ca.crt"))
    assert own["server"] == "https://192.0.2.2:5443" and "skip_verify" not in str(own)
    assert own["host"]["https://192.0.2.2:5443"]["ca"] == "/n/certs.d/192.0.2.2:5443/ca.crt"
