"""plan.json: the podman engine's typed record (mlab.podman.plan_file), written and read
only through PlanFile; another version, a missing file or a wrong field is one line naming
the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_runner import mlab
from site_kit import LOCAL_SITE, fixed_passwords, translate_fixed

from mlab.errors import DeployError
from mlab.podman.plan_file import VERSION, PlanFile
from mlab.site import load_site

SITE = LOCAL_SITE


def _plan() -> PlanFile:
    return PlanFile.of(translate_fixed(load_site(SITE)), placeholder=True,
                       image="localhost/mlab:1")


def test_a_plan_reads_back_as_written(tmp_path: Path) -> None:
    plan = _plan()
    path = tmp_path / "plan.json"
    plan.write(path)
    assert (path.stat().st_mode & 0o777) == 0o600  # written atomically, owner only
    again = PlanFile.read(path)
    assert again == plan
    data = json.loads(path.read_text())
    assert data["version"] == VERSION and data["image"] == "localhost/mlab:1"
    text = path.read_text()
    assert "manifest" not in text
    assert not [pw for pw in fixed_passwords(load_site(SITE)).values() if pw in text]  # no secret
    # The derived addresses come from the subnet, as on the engine's side.
    nat = again.nat_network()
    assert (nat.gateway, nat.code_ip, nat.pod_ip) == ("10.89.250.1", "10.89.250.2", "10.89.250.3")
    code = again.first("code-service")
    assert code is not None and code.deployment == "code-service"
    assert [p.user for p in again.components("homepod")] == ["alice", "bob"]
    alice = again.components("homepod")[0]
    assert again.network(alice.networks[0][0]).user == "alice"


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d.pop("version"), "plan of no version (an older MLab's); this MLab reads "
     "version 1 (run `mlab up` again to rewrite it)"),
    (lambda d: d.update(version=7), "plan of version 7; this MLab reads version 1 (run `mlab "
     "up` again to rewrite it)"),
    (lambda d: d["pods"][0]["ports"][0].update(host_port="eighty"), "field pods.0.ports.0."
     "host_port: Input should be a valid integer, unable to parse string as an integer (run "
     "`mlab up` again to rewrite it)"),
    (lambda d: d["pods"][0].update(extra=1), "field pods.0.extra: Extra inputs are not "
     "permitted (run `mlab up` again to rewrite it)"),
])
def test_a_plan_of_another_version_or_shape_is_one_line_naming_the_file(
        tmp_path: Path, edit, message: str) -> None:
    path = tmp_path / "plan.json"
    _plan().write(path)
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(DeployError) as err:
        PlanFile.read(path)
    assert err.value.one_line() == f"{path}: {message}"


def test_a_missing_or_broken_plan_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    with pytest.raises(DeployError) as err:
        PlanFile.read(path)
    assert err.value.one_line() == f"{path}: no plan (the site is not up) (run `mlab up` first)"
    path.write_text("{")
    with pytest.raises(DeployError) as err:
        PlanFile.read(path)
    assert err.value.one_line().startswith(f"{path}: not JSON (")


def test_status_of_a_plan_from_another_version_is_one_line(tmp_path: Path) -> None:
    """The real CLI: `mlab status` and `mlab verify` on an older MLab's plan.json exit 1 with
    the one line, no traceback; `mlab up` is the fix it names."""
    state = tmp_path / "state"
    path = state / "local" / "podman" / "plan.json"
    path.parent.mkdir(parents=True)
    data = json.loads(_plan().model_dump_json())
    data.pop("version")
    path.write_text(json.dumps(data))
    for command in ("status", "verify"):
        proc = mlab(command, "--site", str(SITE), env={"MLAB_STATE_DIR": str(state)}, timeout=120)
        assert proc.returncode == 1, proc.stderr
        assert "Traceback" not in proc.stderr
        assert proc.stderr.strip().splitlines()[-1].endswith(
            f"{path}: plan of no version (an older MLab's); this MLab reads version 1 "
            "(run `mlab up` again to rewrite it)"), proc.stderr
