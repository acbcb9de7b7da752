"""Which code service `mlab repo` talks to when neither --server nor --site is given."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlab.codeservice.locate import find_server, local_server
from mlab.errors import DeployError
from mlab.podman.plan_file import PlanFile, PodRecord
from mlab.podman.translate import Port

ROOT = Path(__file__).resolve().parents[2]


def _write_plan(state: Path, *pods: tuple[str, str, int]) -> Path:
    """The local site's ``plan.json`` as ``mlab up`` writes it, with (component, host_ip,
    host_port) pods: one published port each."""
    plan_dir = state / "local" / "podman"
    plan_dir.mkdir(parents=True)
    records = tuple(
        PodRecord(name=f"mlab-local-{c}", component=c, user=None, deployment=c,
                  containers=(f"mlab-local-{c}-{c}",), networks=(),
                  ports=(Port("http", ip, port, 8080, "podman"),))
        for c, ip, port in pods)
    plan = PlanFile(site="local", bind_address="127.0.0.1", networks=(), pods=records)
    plan.write(plan_dir / "plan.json")
    return plan_dir / "plan.json"


def test_the_code_service_of_mlab_up_from_its_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "local.yaml"
    shutil.copy(ROOT / "examples" / "local.yaml", site)
    monkeypatch.setenv("MLAB_STATE_DIR", str(tmp_path / "state"))
    assert local_server(site) is None  # not up: no plan
    path = _write_plan(tmp_path / "state", ("homepod", "127.0.0.1", 15901),
                       ("code-service", "0.0.0.0", 80))
    assert local_server(site) == "http://127.0.0.1:80"
    assert local_server(tmp_path / "absent.yaml") is None
    # A plan of another version (or none: an older MLab's) is one line naming the file.
    for version, words in ((None, "plan of no version (an older MLab's)"),
                           (2, "plan of version 2")):
        data = json.loads(path.read_text())
        data.pop("version") if version is None else data.update(version=version)
        path.write_text(json.dumps(data))
        with pytest.raises(DeployError) as err:
            local_server(site)
        line = err.value.one_line()
        assert line == (f"{path}: {words}; this MLab reads version 1 "
                        "(run `mlab up` again to rewrite it)"), line


def test_without_server_or_site_the_error_names_the_fix(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("MLAB_SERVER", "MLAB_SITE")}
    env.update({"MLAB_STATE_DIR": str(tmp_path / "state"), "MLAB_USER": "admin",
                "MLAB_PASSWORD": "x"})
    proc = subprocess.run([sys.executable, "-m", "mlab.cli.main", "repo", "list"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert "--server" in line and "mlab status" in line, line


def test_every_client_command_finds_the_local_code_service_the_same_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`mlab request approve` on the host found no server where `mlab repo` did (issue 10):
    both use find_server, with MLAB_SERVER as the one variable."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "examples").mkdir()
    shutil.copy(ROOT / "examples" / "local.yaml", tmp_path / "examples" / "local.yaml")
    for var in ("MLAB_SERVER", "MLAB_SITE", "MLAB_CODE_HOST"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLAB_STATE_DIR", str(tmp_path / "state"))
    _write_plan(tmp_path / "state", ("code-service", "127.0.0.1", 80))
    assert find_server() == "http://127.0.0.1:80"
    from mlab.requests.client import resolve_server

    assert resolve_server(None) == "http://127.0.0.1:80"
    monkeypatch.setenv("MLAB_SERVER", "http://10.0.0.9:8080/")
    assert resolve_server(None) == find_server() == "http://10.0.0.9:8080"
    monkeypatch.delenv("MLAB_SERVER")
    monkeypatch.setenv("MLAB_CODE_HOST", "code.mlab.local")
    assert find_server() == "http://code.mlab.local"
    monkeypatch.setenv("MLAB_CODE_URL", "http://old.example")  # no longer a second name
    assert find_server() == "http://code.mlab.local"


def test_request_approve_on_the_host_reaches_the_local_code_service(tmp_path: Path) -> None:
    """The real CLI: with the local site up (its plan) and nothing else set, `mlab request
    approve` talks to the local code service: here a closed port, so the error names it."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "examples").mkdir()
    shutil.copy(ROOT / "examples" / "local.yaml", tmp_path / "examples" / "local.yaml")
    _write_plan(tmp_path / "state", ("code-service", "127.0.0.1", port))
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLAB_SERVER", "MLAB_SITE", "MLAB_CODE_HOST")}
    env.update({"MLAB_STATE_DIR": str(tmp_path / "state"), "MLAB_USER": "bob",
                "MLAB_PASSWORD": "x"})
    proc = subprocess.run([sys.executable, "-m", "mlab.cli.main", "request", "approve", "1",
                           "--comment", "ok"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    line = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1, proc.stderr
    assert f"http://127.0.0.1:{port}: cannot reach the code service" in line, line
    assert "MLAB_SERVER" in line and "MLAB_CODE_URL" not in line
