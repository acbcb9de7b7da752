"""Every rendered file is valid Kubernetes: kubernetes-validate --strict for 1.28-1.31, plus
the API-server rules a JSON schema cannot express (name lengths, references, selectors)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlab.deploy import write_rendered
from mlab.render import render_site
from mlab.secrets import password_keys
from mlab.site import load_site

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
VERSIONS = ["1.28.0", "1.29.0", "1.30.0", "1.31.0"]
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
IANA_SVC_NAME = re.compile(r"^(?=.{1,15}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@pytest.fixture(scope="module")
def rendered_dirs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    dirs = []
    for path in EXAMPLES:
        site = load_site(path)
        passwords = {k: "validate-only" for k in password_keys(site)}
        out = tmp_path_factory.mktemp("k8s") / path.stem
        write_rendered(render_site(site, passwords).texts(with_secrets=True), out)
        dirs.append(out)
    return dirs


@pytest.mark.parametrize("version", VERSIONS)
def test_kubernetes_validate_strict(version: str, rendered_dirs: list[Path]) -> None:
    files = sorted(str(f) for d in rendered_dirs for f in d.glob("*.yaml"))
    portals = sum(load_site(p).portal.enabled for p in EXAMPLES)
    assert len(files) == 5 * len(EXAMPLES) + portals
    exe = Path(sys.executable).with_name("kubernetes-validate")
    proc = subprocess.run([str(exe), "--strict", "-k", version, *files],
                          capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    count = sum(len([d for d in yaml.safe_load_all(Path(f).read_text()) if d]) for f in files)
    passed = [ln for ln in lines if " passed for resource " in ln]
    assert len(passed) == count, "\n".join(ln for ln in lines if " passed " not in ln)


def _objects(path: Path) -> list[dict]:
    site = load_site(path)
    rendered = render_site(site, {k: "x" for k in password_keys(site)})
    return rendered.objects()


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_api_server_rules(path: Path) -> None:
    objs = _objects(path)
    keys = [(o["kind"], o["metadata"]["name"]) for o in objs]
    assert len(keys) == len(set(keys)), "duplicate object"
    for obj in objs:
        name = obj["metadata"]["name"]
        assert DNS_LABEL.match(name) and len(name) <= 63, name
        for value in obj["metadata"]["labels"].values():
            assert len(value) <= 63
        if obj["kind"] == "Service":
            ports = obj["spec"]["ports"]
            assert len({p["port"] for p in ports}) == len(ports)
            assert all(1 <= p["port"] <= 65535 for p in ports)
        if obj["kind"] != "Deployment":
            continue
        spec = obj["spec"]
        template = spec["template"]
        selector = spec["selector"]["matchLabels"]
        assert selector.items() <= template["metadata"]["labels"].items()
        pod = template["spec"]
        volumes = [v["name"] for v in pod["volumes"]]
        assert len(volumes) == len(set(volumes))
        assert all(DNS_LABEL.match(v) and len(v) <= 63 for v in volumes)
        for container in pod["containers"]:
            paths = [m["mountPath"] for m in container["volumeMounts"]]
            assert len(paths) == len(set(paths)), f"{name}: two mounts at one path"
            assert {m["name"] for m in container["volumeMounts"]} <= set(volumes)
            port_names = {p["name"] for p in container.get("ports", [])}
            assert all(IANA_SVC_NAME.match(p) for p in port_names)
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                if probe in container:
                    action = container[probe].get("tcpSocket") or container[probe].get("httpGet")
                    assert action is None and container[probe]["exec"]["command"] or \
                        action["port"] in port_names
            names = [e["name"] for e in container["env"]]
            assert len(names) == len(set(names))
    services = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Service"}
    deployments = [o for o in objs if o["kind"] == "Deployment"]
    for svc in services.values():
        selected = [d for d in deployments
                    if svc["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert len(selected) == 1, f"Service {svc['metadata']['name']} selects {len(selected)} pods"
