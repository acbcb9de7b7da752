"""network-config-analyzer proves the allowed and forbidden edges of every example site.

nca runs from its own virtualenv (.venv-nca, made by scripts/setup.d/20-nca.sh), once per
site with every query batched in one scheme; ``KUBECONFIG=/nonexistent`` and explicit
namespace, pod and policy lists keep it from ever calling kubectl. A control run with a
deliberately wrong selector shows the queries can fail.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
from pathlib import Path

import pytest

from mlab.render import Rendered, render_site
from mlab.site import Site, load_site, parse_site

from nca_scheme import write_scheme  # type: ignore[import-not-found]

ROOT = Path(__file__).resolve().parents[2]
NCA = ROOT / ".venv-nca" / "bin" / "nca"
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def _run_nca(site: Site, rendered: Rendered, workdir: Path) -> tuple[dict[str, str], set[str], str]:
    if not NCA.exists():
        pytest.fail(f"{NCA} is missing: run scripts/setup.d/20-nca.sh")
    scheme, kinds = write_scheme(site, rendered, workdir)
    env = {**os.environ, "KUBECONFIG": "/nonexistent"}
    proc = subprocess.run([str(NCA), "--scheme", str(scheme)], capture_output=True, text=True,
                          env=env, cwd=workdir, timeout=300, check=False)
    output = proc.stdout + proc.stderr
    failed = set(re.findall(r"Unexpected result for query (\S+):", output))
    ran = set(re.findall(r"^Running query (\S+)$", proc.stdout, re.M))
    assert ran == set(kinds), f"nca did not run every query:\n{output[-3000:]}"
    assert proc.returncode == len(failed), output[-3000:]
    return kinds, failed, output


def _sites() -> list[tuple[str, Site]]:
    out = [(p.name, load_site(p)) for p in EXAMPLES]
    seed = load_site(ROOT / "examples" / "seed-cluster.yaml")
    data = seed.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    out.append(("seed-cluster.yaml+dns-cluster", parse_site({**data, "dns": "cluster"})))
    return out


@pytest.mark.parametrize("name,site", _sites(), ids=[n for n, _ in _sites()])
def test_edges(name: str, site: Site, tmp_path: Path) -> None:
    kinds, failed, output = _run_nca(site, render_site(site), tmp_path)
    assert "permits" in kinds.values() and "forbids" in kinds.values()
    assert not failed, f"{name}: queries that do not hold: {sorted(failed)}"


def test_wrong_selector_is_caught(tmp_path: Path) -> None:
    """Control: an empty namespaceSelector (any namespace) lets the decoys through."""
    site = load_site(ROOT / "examples" / "local.yaml")
    rendered = render_site(site)
    network = copy.deepcopy(rendered.files["network.yaml"])
    for policy in network:
        for rule in policy["spec"].get("egress", []):
            for peer in rule.get("to", []):
                if "namespaceSelector" in peer:
                    peer["namespaceSelector"] = {}
    broken = Rendered(files={**rendered.files, "network.yaml": network})
    _, failed, _ = _run_nca(site, broken, tmp_path)
    assert {"homepod-to-decoy-namespace", "airlock-to-decoy-namespace"} <= failed


def test_missing_default_deny_is_caught(tmp_path: Path) -> None:
    """Control: without default deny the airlock reaches HomePods and HomePods the internet."""
    site = load_site(ROOT / "examples" / "seed-cluster.yaml")
    rendered = render_site(site)
    network = [p for p in rendered.files["network.yaml"]
               if p["metadata"]["name"] not in ("mlab-default-deny", "homepod-to-code-service")]
    broken = Rendered(files={**rendered.files, "network.yaml": network})
    _, failed, _ = _run_nca(site, broken, tmp_path)
    assert {"homepod-to-internet", "homepod-to-metadata-169.254.169.254"} <= failed
