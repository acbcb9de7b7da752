"""A non-editable install works (issue 10, point 3): the wheel ships every file MLab reads.

Builds the wheel from a copy of the source (``python -m build``, as a user or a packager
would), installs it with pip into a fresh virtualenv (its dependencies come from the project
venv through a path file, so nothing is downloaded but the build backend), and runs the
commands that read package data from there: the image recipe (packages.txt, provision.sh,
rootfs/), ``mlab init``, the containers.conf lookup and the rootfs listing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "mlab"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _data_files() -> set[str]:
    """Every file of the package that is not Python source (what the code reads at run time)."""
    return {f"mlab/{p.relative_to(PKG).as_posix()}" for p in PKG.rglob("*")
            if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(PKG, src / "src" / "mlab",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out),
                           str(src)], capture_output=True, text=True, timeout=500, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (built,) = out.glob("mlab-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
    purelib = Path(subprocess.run(
        [str(root / "bin" / "python"), "-c",
         "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True).stdout.strip())
    subprocess.run([str(root / "bin" / "pip"), "install", "-q", "--no-deps",
                    "--disable-pip-version-check", str(wheel)], check=True, capture_output=True)
    # Then the dependencies (pydantic, typer, ...) from the project venv, after pip ran (pip
    # would otherwise see the project's mlab there and uninstall it). The editable mlab of
    # the project venv is not importable this way (its .pth files are not read), so
    # `import mlab` finds only the wheel.
    (purelib / "zz-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return root


def test_the_wheel_ships_every_data_file(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        modes = {i.filename: (i.external_attr >> 16) & 0o111 for i in zf.infolist()}
    missing = sorted(_data_files() - names)
    assert not missing, f"not in the wheel (pyproject.toml package-data): {missing}"
    for name in _data_files():
        executable = bool((ROOT / "src" / name).stat().st_mode & 0o111)
        assert bool(modes[name]) == executable, f"{name}: executable bit lost"


def _run(venv: Path, *argv: str, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, f"{argv} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr
    return proc.stdout


def test_commands_that_read_package_data_work_from_the_wheel(venv: Path, tmp_path: Path) -> None:
    py = str(venv / "bin" / "python")
    where = _run(venv, py, "-c", "import mlab; print(mlab.__file__)", cwd=tmp_path)
    assert where.startswith(str(venv)), f"mlab imported from {where}, not the wheel"
    # The image recipe: package list, provisioning script and rootfs hashed, wheel made.
    out = _run(venv, py, "-c", (
        "from mlab.image import recipe\n"
        "print(len(recipe.packages()), recipe.base_hash()[:16])\n"
        "print(sorted(p.relative_to(recipe.image_dir() / 'rootfs').as_posix()\n"
        "             for p in recipe._files(recipe.image_dir() / 'rootfs')))\n"
        "print(recipe.make_wheel().name)\n"
        "from mlab.podman.runner import containers_conf\n"
        "print(containers_conf().read_text().count('network_backend'))\n"), cwd=tmp_path)
    count, _hash = out.splitlines()[0].split()
    assert int(count) > 10
    rootfs = sorted(p.relative_to(PKG / "image" / "rootfs").as_posix()
                    for p in (PKG / "image" / "rootfs").rglob("*") if p.is_file())
    assert out.splitlines()[1] == str(rootfs)
    assert out.splitlines()[2].startswith("mlab-0")
    assert out.splitlines()[3] == "1"
    # `mlab init` writes the commented site file, and it validates.
    _run(venv, str(venv / "bin" / "mlab"), "init", "--out-file", "site.yaml", cwd=tmp_path)
    assert "users:" in (tmp_path / "site.yaml").read_text()
    _run(venv, str(venv / "bin" / "mlab"), "site", "check", "--site", "site.yaml", cwd=tmp_path)
