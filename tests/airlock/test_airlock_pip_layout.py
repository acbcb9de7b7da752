"""The pip index lives in ``pip-index/``, apart from the seed's ``pip/`` folder; older shares migrate.

The seed's commands are ``pip download PKG`` in ``/opt/public/airlock/pip`` on the Airlock and
``pip install *`` there in a HomePod: the shell passes every entry of ``pip/`` to pip, so
MLab's own ``files/`` and ``simple/`` there made pip look for projects named ``files`` and
``simple``. These tests run that verbatim glob with the real pip, offline.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
from pathlib import Path

from airlock_testlib import make_wheel, pip_install_target

from mlab.airlock import pip, pipindex
from mlab.topology import PIP_INDEX_DIR, PIP_INDEX_URL, SHARE_FOLDERS, SHARE_PATH


def _stage(share: Path, src: Path, *specs: str) -> None:
    pip.stage(share, list(specs), sources=pip.Sources(find_links=(str(src),), no_index=True))


def _seed_install(share: Path, target: Path) -> subprocess.CompletedProcess[str]:
    """``cd <share>/pip && pip install *`` as a HomePod's pip.conf makes it: the share's index only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    folder = share / "pip"
    entries = sorted(os.path.basename(p) for p in glob.glob(str(folder / "*")))  # the shell's `*`
    return subprocess.run(
        [sys.executable, "-m", "pip", "--isolated", "--disable-pip-version-check", "install", "--no-cache-dir",
         "--index-url", pipindex.simple_dir(share).as_uri(), "--target", str(target), *entries],
        cwd=folder, capture_output=True, text=True, env=env, check=False,
    )


def _old_layout(share: Path) -> None:
    """Move the tree to where MLab 0.1 kept it (``pip/files``, ``pip/simple``)."""
    (share / "pip").mkdir(exist_ok=True)
    for name in ("files", "simple"):
        os.rename(pipindex.index_dir(share) / name, share / "pip" / name)


def test_one_name_for_the_folder() -> None:
    assert PIP_INDEX_DIR in SHARE_FOLDERS and "pip" in SHARE_FOLDERS
    assert PIP_INDEX_URL == f"file://{SHARE_PATH}/{PIP_INDEX_DIR}/simple"
    assert pipindex.simple_dir(Path(SHARE_PATH)).as_uri() == PIP_INDEX_URL


def test_seed_pip_install_star_works_after_mlab_stage(tmp_path) -> None:
    share, src = tmp_path / "share", tmp_path / "src"
    make_wheel(src, "staged", "1.0")
    make_wheel(src, "dep", "2.0")
    make_wheel(tmp_path / "seed", "downloaded", "1.0", requires=["dep"])
    _stage(share, src, "staged", "dep")
    # the seed's `pip download downloaded` on the Airlock put its wheel in pip/
    (share / "pip").mkdir()
    os.rename(next((tmp_path / "seed").glob("*.whl")), share / "pip" / "downloaded-1.0-py3-none-any.whl")
    assert sorted(os.listdir(share / "pip")) == ["downloaded-1.0-py3-none-any.whl"]
    proc = _seed_install(share, tmp_path / "t")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "t" / "downloaded").is_dir() and (tmp_path / "t" / "dep").is_dir()


def test_old_tree_in_pip_breaks_the_seed_and_stage_moves_it(tmp_path) -> None:
    share, src = tmp_path / "share", tmp_path / "src"
    make_wheel(src, "old", "1.0")
    make_wheel(src, "new", "1.0")
    _stage(share, src, "old")
    _old_layout(share)
    make_wheel(share / "pip", "mine", "1.0")  # a user's own download next to the old tree
    broken = _seed_install(share, tmp_path / "t0")
    assert broken.returncode != 0 and "No matching distribution found for" in broken.stderr  # the bug moved away
    inode = (share / "pip" / "files" / "old-1.0-py3-none-any.whl").stat().st_ino
    _stage(share, src, "new")  # mlab stage pip migrates under its lock, then publishes
    assert sorted(os.listdir(share / "pip")) == ["mine-1.0-py3-none-any.whl"]
    moved = pipindex.index_dir(share) / "files" / "old-1.0-py3-none-any.whl"
    assert moved.stat().st_ino == inode  # renamed, not copied
    assert sorted(pipindex.published(share)) == ["new", "old"]
    assert pip_install_target(pipindex.simple_dir(share), tmp_path / "t1", "old", "new").returncode == 0
    assert _seed_install(share, tmp_path / "t2").returncode == 0


def test_migrate_merges_two_trees_and_is_idempotent(tmp_path) -> None:
    share, src = tmp_path / "share", tmp_path / "src"
    make_wheel(src, "a", "1.0")
    make_wheel(src, "b", "1.0")
    _stage(share, src, "a", "b")
    _old_layout(share)
    make_wheel(src, "c", "1.0")
    _stage(share, src, "c")  # an old tree and a new one at once (simulated: stage moves it)
    _old_layout(share)
    (pipindex.index_dir(share) / "files").mkdir()
    make_wheel(pipindex.index_dir(share) / "files", "d", "1.0")
    moved = pipindex.migrate(share)
    assert moved == ["pip/files -> pip-index/files", "pip/simple -> pip-index/simple"]
    assert not (share / "pip" / "files").exists() and not (share / "pip" / "simple").exists()
    assert sorted(pipindex.published(share)) == ["a", "b", "c", "d"]
    assert pip_install_target(pipindex.simple_dir(share), tmp_path / "t", "a", "c", "d").returncode == 0
    assert pipindex.migrate(share) == []


def test_cli_migrate_and_reindex(tmp_path) -> None:
    share, src = tmp_path / "share", tmp_path / "src"
    make_wheel(src, "a", "1.0")
    _stage(share, src, "a")
    _old_layout(share)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}

    def mlab(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mlab.cli.main", *args, "--share", str(share)],
                              capture_output=True, text=True, env=env, check=False)

    proc = mlab("airlock", "migrate")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["pip/files -> pip-index/files", "pip/simple -> pip-index/simple"]
    assert mlab("airlock", "migrate").stdout.strip() == f"{share}: nothing to migrate"
    _old_layout(share)
    proc = mlab("airlock", "reindex")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"1 wheels indexed in {pipindex.simple_dir(share)}"
    assert os.listdir(share / "pip") == []
