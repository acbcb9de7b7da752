"""`mlab install pip|apt`: offline installs from the share, and the hint naming the Airlock command."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from mlab.airlock import pip
from mlab.errors import MlabError, UsageError
from mlab.homepod import install


@pytest.fixture
def staged(tmp_path, wheel_factory) -> Path:
    src = tmp_path / "src"
    wheel_factory(src, "mlt-app", "1.0", requires=["mlt-lib"])
    wheel_factory(src, "mlt-lib", "2.0")
    share = tmp_path / "share"
    pip.stage(share, ["mlt-app"], sources=pip.Sources(find_links=(str(src),), no_index=True))
    return share


def test_install_pip_into_venv_and_missing_hint(tmp_path, staged) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = str(env_dir / "bin" / "python")
    install.install_pip(staged, ["mlt-app"], python=py)
    out = subprocess.run([py, "-c", "import mlt_app, mlt_lib; print(mlt_lib.VERSION)"], capture_output=True, text=True)
    assert out.stdout.strip() == "'2.0'" or out.stdout.strip() == "2.0"
    with pytest.raises(MlabError) as exc:
        install.install_pip(staged, ["mlt-absent>=3"], python=py)
    assert "mlt-absent" in exc.value.message
    assert exc.value.hint == "on the Airlock run: mlab stage pip 'mlt-absent>=3'"


def test_pip_command_shape(tmp_path) -> None:
    argv = install.pip_command("/usr/bin/python3", tmp_path, ["x"], user=True)
    assert argv[argv.index("--index-url") + 1] == (tmp_path / "pip-index" / "simple").as_uri()
    assert "--isolated" in argv and "--user" in argv and argv[-1] == "x"
    assert "--break-system-packages" in argv  # Debian's Python is externally managed


def test_pip_command_in_a_virtualenv_drops_user(tmp_path) -> None:
    """pip refuses --user in a virtualenv; a HomePod user's ~/.venv is on the home volume
    already, so `mlab install pip --user NAME` installs there (issue 10)."""
    assert sys.prefix != sys.base_prefix, "the tests run in the project venv"
    argv = install.pip_command(sys.executable, tmp_path, ["x"], user=True)
    assert "--user" not in argv and "--break-system-packages" not in argv


def test_cli_without_index_names_stage_command(tmp_path) -> None:
    proc = subprocess.run([sys.executable, "-m", "mlab.cli.main", "install", "pip", "--share", str(tmp_path), "numpy"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "mlab stage pip numpy" in proc.stderr


def test_install_apt_missing_package_names_stage_command(tmp_path) -> None:
    if os.geteuid() != 0:
        pytest.skip("apt-get update with private lists needs root here")
    repo = tmp_path / "share" / "apt"
    repo.mkdir(parents=True)
    from mlab.airlock.apt import write_indexes

    write_indexes(repo)
    with pytest.raises(MlabError) as exc:
        install.install_apt(tmp_path / "share", ["mlt-not-staged"])
    assert "mlt-not-staged" in exc.value.message and exc.value.hint == "on the Airlock run: mlab stage apt mlt-not-staged"
    with pytest.raises(UsageError):
        install.install_apt(tmp_path / "nothing", ["jq"])


def test_install_apt_missing_dependency_is_named(tmp_path) -> None:
    if os.geteuid() != 0:
        pytest.skip("apt-get update with private lists needs root here")
    from mlab.airlock.apt import write_indexes

    from airlock_testlib import build_deb

    repo = tmp_path / "share" / "apt"
    repo.mkdir(parents=True)
    build_deb(repo, "mlt-app", "1.0", "mlt-missing-lib")
    write_indexes(repo)
    with pytest.raises(MlabError) as exc:
        install.install_apt(tmp_path / "share", ["mlt-app"])
    assert "mlt-missing-lib" in exc.value.message
    assert exc.value.hint == "on the Airlock run: mlab stage apt mlt-app"
