"""The code service Deployment has CPU and memory requests and limits by default (issue 13,
item 1: a flood of git processes must not take the node), and a site may change them."""

from __future__ import annotations

from pathlib import Path

from mlab.render import render_site
from mlab.site import load_site, parse_site

ROOT = Path(__file__).resolve().parents[2]


def _container(site):  # type: ignore[no-untyped-def]
    objs = render_site(site).files["code-service.yaml"]
    dep = next(o for o in objs if o["kind"] == "Deployment")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    return c


def test_default_requests_and_limits() -> None:
    c = _container(load_site(ROOT / "examples" / "local.yaml"))
    assert c["resources"] == {"requests": {"cpu": "250m", "memory": "256Mi"},
                              "limits": {"cpu": "2", "memory": "4Gi"}}


def test_site_overrides_them() -> None:
    site = parse_site({"name": "t", "users": [{"name": "alice"}], "codeService": {
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"},
                      "limits": {"memory": "8Gi"}}}})
    assert _container(site)["resources"] == {"requests": {"cpu": "1", "memory": "1Gi"},
                                             "limits": {"memory": "8Gi"}}
