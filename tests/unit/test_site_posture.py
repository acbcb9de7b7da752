"""The egress posture (issue 17): each knob's default per posture, overrides, requesters."""

from __future__ import annotations

from typing import Any

import pytest

from mlab.errors import SiteError
from mlab.render import render_site
from mlab.site import parse_site


def _site(**extra: Any):  # type: ignore[no-untyped-def]
    return parse_site({"name": "p", "users": [{"name": "alice", "groups": ["ml"]},
                                              {"name": "bob"}], **extra})


@pytest.mark.parametrize(("doc", "expected"), [
    ({}, ("reviewed", "to-pod", "shell", "requester")),
    ({"posture": "open"}, ("open", "both", "full", "share")),
    ({"clipboard": "none"}, ("reviewed", "none", "shell", "requester")),
    ({"posture": "open", "egress": {"ssh": "shell"}}, ("open", "both", "shell", "share")),
    ({"egress": {"exportDelivery": "share"}}, ("reviewed", "to-pod", "shell", "share")),
], ids=["new-site", "open", "clipboard-set", "open-but-shell", "reviewed-share"])
def test_defaults_follow_the_posture(doc: dict[str, Any], expected: tuple[str, ...]) -> None:
    site = _site(**doc)
    assert (site.posture, site.clipboard_mode(), site.ssh_access(),
            site.export_delivery()) == expected


def test_render_follows_the_posture() -> None:
    def env(site):  # type: ignore[no-untyped-def]
        dep = next(o for o in render_site(site).files["homepod.yaml"]
                   if o["kind"] == "Deployment")
        return {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert (env(_site())["MLAB_SSH_ACCESS"], env(_site())["MLAB_CLIPBOARD"]) == ("shell", "to-pod")
    opened = env(_site(posture="open"))
    assert (opened["MLAB_SSH_ACCESS"], opened["MLAB_CLIPBOARD"]) == ("full", "both")
    claims = {o["metadata"]["name"] for o in render_site(_site()).files["airlock.yaml"]
              if o["kind"] == "PersistentVolumeClaim"}
    assert "exports" in claims
    claims = {o["metadata"]["name"] for o in render_site(_site(posture="open")).files["airlock.yaml"]
              if o["kind"] == "PersistentVolumeClaim"}
    assert "exports" not in claims


def test_export_requesters() -> None:
    assert _site().may_request_exports("bob")  # empty: everyone
    site = _site(egress={"exportRequesters": ["group:ml"]})
    assert site.may_request_exports("alice") and not site.may_request_exports("bob")
    site = _site(egress={"exportRequesters": ["bob"]})
    assert site.may_request_exports("bob") and not site.may_request_exports("alice")
    with pytest.raises(SiteError, match=r"exportRequesters\[0\]: 'carol' is not a site user"):
        _site(egress={"exportRequesters": ["carol"]})
    with pytest.raises(SiteError, match="exportRequesters"):
        _site(egress={"exportRequesters": ["group:Bad Name"]})


def test_publisher_account_is_reserved() -> None:
    with pytest.raises(SiteError, match="reserved"):
        parse_site({"name": "p", "users": [{"name": "mlab-publisher"}]})
    with pytest.raises(SiteError, match="code-service account of its own"):
        parse_site({"name": "p", "airlock": {"user": "mlab-publisher"}})
