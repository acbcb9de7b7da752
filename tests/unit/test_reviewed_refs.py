"""Reviewed user branches, the pure parts: who is a HomePod, which refs an office sees, the
per-request git config, branch request validation and what the renderers give the code
service (mlab.codeservice.reviewed, issue 17)."""

from __future__ import annotations

import pytest

from mlab.codeservice.reviewed import config_text, is_inside, parse_nets, visible_refs
from mlab.render import render_site
from mlab.requests.model import InvalidRequest, validate_submission
from mlab.site import Site

NETS = parse_nets("10.244.0.0/16,10.89.3.4/32")


@pytest.mark.parametrize("address,inside", [
    ("10.244.1.7", True), ("10.89.3.4", True), ("10.89.3.5", False), ("192.168.1.10", False),
    ("::ffff:10.244.0.9", True), ("", False), (None, False), ("not-an-ip", False),
], ids=["pod", "homepod-host", "neighbour", "office", "mapped-v6", "empty", "none", "junk"])
def test_is_inside(address: str | None, inside: bool) -> None:
    assert is_inside(address, NETS) is inside


def test_parse_nets_names_the_bad_entry() -> None:
    with pytest.raises(ValueError, match="'10.0.0.0/99'"):
        parse_nets("10.244.0.0/16, 10.0.0.0/99")
    assert parse_nets(["", " 10.1.0.0/16 "]) == parse_nets("10.1.0.0/16")


def test_visible_refs() -> None:
    refs = {"refs/heads/main": "a" * 40, "refs/heads/feature_1": "b" * 40,
            "refs/heads/start": "c" * 40, "refs/heads/moved": "d" * 40,
            "refs/tags/v1": "e" * 40, "refs/tags/mine": "f" * 40}
    shown = visible_refs(
        refs, upstream={"refs/heads/main", "refs/tags/v1"},
        approved={"refs/heads/feature_1": {"b" * 40}, "refs/heads/moved": {"0" * 40}},
        contained={"refs/heads/start"})
    # upstream, contained in upstream, approved at its tip; not: moved on, never reviewed
    assert shown == ["refs/heads/feature_1", "refs/heads/main", "refs/heads/start",
                     "refs/tags/v1"]


def test_config_hides_everything_but_what_is_shown() -> None:
    text = config_text(["refs/heads/main"], ["refs/heads/secret"])
    lines = [ln.strip() for ln in text.splitlines()]
    up = lines.index("[uploadpack]")
    # The blanket rule first, the exposures after it (the last matching rule wins).
    assert lines[up + 1] == "hideRefs = refs" and lines[up + 2] == 'hideRefs = "!refs/heads/main"'
    for key in ("allowTipSHA1InWant", "allowReachableSHA1InWant", "allowAnySHA1InWant"):
        assert f"{key} = false" in lines
    rec = lines.index("[receive]")
    assert lines[rec + 1:rec + 3] == ["hideRefs = refs/mlab", 'hideRefs = "refs/heads/secret"']


@pytest.mark.parametrize("body,field", [
    ({"repo": "org", "ref": "x"}, "repo"),
    ({"repo": "org/repo", "ref": ""}, "ref"),
    ({"repo": "org/repo", "ref": "a..b"}, "ref"),
    ({"repo": "org/repo", "ref": "refs/notes/x"}, "ref"),
], ids=["repo", "empty-ref", "dots", "notes"])
def test_branch_request_validation(body: dict[str, str], field: str) -> None:
    with pytest.raises(InvalidRequest, match=f"^{field}:"):
        validate_submission({"kind": "branch", "reason": "r", **body})


def test_branch_request_names_the_full_ref() -> None:
    got = validate_submission({"kind": "branch", "reason": "r", "repo": "Org/Repo.git",
                               "ref": "feature_1"})
    assert got["payload"] == {"repo": "Org/Repo", "ref": "refs/heads/feature_1"}


def _code_objects(doc: dict[str, object]) -> tuple[dict, dict]:
    site = Site.model_validate({"apiVersion": "mlab.io/v1", "name": "s",
                                "users": [{"name": "alice"}], **doc})
    files = render_site(site).files
    objs = files["code-service.yaml"]
    dep = next(o for o in objs if o["kind"] == "Deployment")
    svc = next(o for o in objs if o["kind"] == "Service")
    return dep, svc


def test_code_service_knows_the_pod_range_and_keeps_office_addresses() -> None:
    dep, svc = _code_objects({"cluster": {"podCIDR": "10.42.0.0/16"},
                              "codeService": {"service": {"type": "NodePort"}}})
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MLAB_HOMEPOD_NETS"] == "10.42.0.0/16"
    assert svc["spec"]["externalTrafficPolicy"] == "Local"
    _dep, svc = _code_objects({})
    assert "externalTrafficPolicy" not in svc["spec"]  # ClusterIP only: no field


def test_posture_sets_user_branches() -> None:
    base = {"apiVersion": "mlab.io/v1", "name": "s"}
    assert Site.model_validate(base).user_branches() == "reviewed"
    assert Site.model_validate({**base, "posture": "open"}).user_branches() == "open"
    assert Site.model_validate({**base, "posture": "open", "egress": {
        "userBranches": "reviewed"}}).user_branches() == "reviewed"


def test_config_survives_ref_names_with_comment_and_quote_characters(tmp_path) -> None:
    """git-check-ref-format allows ; # and " in names: unquoted, `!refs/heads/x;y` would be
    read as `!refs/heads/x` and expose another (unreviewed) branch. Read back by real git."""
    import subprocess

    shown = ["refs/heads/x;y", "refs/heads/a#b", 'refs/heads/q"r', "refs/heads/back\\slash"]
    hidden = ["refs/heads/x", "refs/heads/s;t"]
    cfg = tmp_path / "outside.cfg"
    cfg.write_text(config_text(shown, hidden))

    def values(key: str) -> list[str]:
        return subprocess.run(["git", "config", "-f", str(cfg), "--get-all", key],
                              capture_output=True, text=True, check=True).stdout.splitlines()

    assert values("uploadpack.hiderefs") == ["refs", *("!" + r for r in shown)]
    assert values("receive.hiderefs") == ["refs/mlab", *hidden]
