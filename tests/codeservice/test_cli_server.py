"""Which code service `mlab repo` talks to when neither --server nor --site is given."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlab.cli.codeservice_cmd import local_server

ROOT = Path(__file__).resolve().parents[2]


def test_the_code_service_of_mlab_up_from_its_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "local.yaml"
    shutil.copy(ROOT / "examples" / "local.yaml", site)
    monkeypatch.setenv("MLAB_STATE_DIR", str(tmp_path / "state"))
    assert local_server(site) is None  # not up: no plan
    plan_dir = tmp_path / "state" / "local" / "podman"
    plan_dir.mkdir(parents=True)
    (plan_dir / "plan.json").write_text(json.dumps({"pods": [
        {"component": "homepod", "ports": [{"host_ip": "127.0.0.1", "host_port": 15901}]},
        {"component": "code-service", "ports": [{"host_ip": "0.0.0.0", "host_port": 80}]},
    ]}))
    assert local_server(site) == "http://127.0.0.1:80"
    assert local_server(tmp_path / "absent.yaml") is None


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
