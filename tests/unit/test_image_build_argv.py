"""The base build's mmdebstrap command and its scratch place (mlab.image.build), run for
real where they are shell: the hooks are executed with sh against a temporary tree."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mlab.image import build, recipe


def _argv(tmp_path: Path) -> list[str]:
    return build.mmdebstrap_argv(tmp_path / "ctx", ["A=1"], tmp_path / "out.tar")


def _run_hook(option: str, root: Path) -> None:
    """Run a ``--*-hook=CMD`` the way mmdebstrap does: ``sh -c CMD exec ROOT``."""
    subprocess.run(["sh", "-c", option.split("=", 1)[1], "exec", str(root)], check=True)


def test_extract_hook_writes_the_dpkg_path_rules_before_dpkg_runs(tmp_path: Path) -> None:
    argv = _argv(tmp_path)
    hooks = [a for a in argv if a.startswith("--extract-hook=")]
    assert len(hooks) == 1
    root = tmp_path / "root"
    (root / "etc/dpkg/dpkg.cfg.d").mkdir(parents=True)
    _run_hook(hooks[0], root)
    written = (root / build.DPKG_RULES_FILE.lstrip("/")).read_text().splitlines()
    assert written == list(recipe.DPKG_PATH_RULES)
    # Rules given as --dpkgopt make mmdebstrap filter every essential package through
    # mmtarfilter (four times slower for that phase): they must come only from the file.
    assert not [a for a in argv if a.startswith("--dpkgopt=path-")]


def test_unsafe_io_is_used_while_building_and_removed_from_the_image(tmp_path: Path) -> None:
    argv = _argv(tmp_path)
    assert "--dpkgopt=force-unsafe-io" in argv
    customize = [a for a in argv if a.startswith("--customize-hook=")]
    cfg = tmp_path / "root/etc/dpkg/dpkg.cfg.d/99mmdebstrap"
    cfg.parent.mkdir(parents=True)
    cfg.write_text("force-unsafe-io\nforce-confold\n")
    _run_hook(customize[-1], tmp_path / "root")
    assert cfg.read_text() == "force-confold\n"
    # provision.sh runs before it, and the output and mirrors close the command.
    assert any("provision.sh" in a for a in customize[:-1])
    assert argv[-1 - len(recipe.MIRRORS):] == [str(tmp_path / "out.tar"), *recipe.MIRRORS]


def test_scratch_is_the_environment_choice_when_set(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLAB_IMAGE_SCRATCH", str(tmp_path / "s"))
    assert build.scratch_dir(tmp_path / "cache") == tmp_path / "s"
    assert (tmp_path / "s").is_dir()


def test_scratch_is_dev_shm_only_when_it_is_a_tmpfs_with_room(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLAB_IMAGE_SCRATCH", raising=False)
    cache = tmp_path / "cache"
    mounts = Path("/proc/mounts").read_text().split("\n")
    assert any(line.split()[1:3] == ["/dev/shm", "tmpfs"] for line in mounts if line)
    monkeypatch.setattr(build, "SCRATCH_NEEDS", 1)
    assert build.scratch_dir(cache) == Path("/dev/shm")
    monkeypatch.setattr(build, "_mem_available", lambda: 0)
    assert build.scratch_dir(cache) == cache  # not enough memory
    monkeypatch.undo()
    monkeypatch.delenv("MLAB_IMAGE_SCRATCH", raising=False)
    monkeypatch.setattr(build, "SCRATCH_NEEDS", 1)
    monkeypatch.setattr(build, "SCRATCH_TMPFS", tmp_path)  # a directory on disk
    assert build.scratch_dir(cache) == cache
    monkeypatch.setattr(build, "SCRATCH_TMPFS", Path("/dev/shm"))
    monkeypatch.setattr(build, "SCRATCH_NEEDS", 2**62)  # more than any tmpfs has free
    assert build.scratch_dir(cache) == cache


def test_waiting_on_another_build_shows_its_last_log_line(tmp_path: Path) -> None:
    import time

    from filelock import FileLock

    from mlab.errors import TemporaryError

    log = tmp_path / "mmdebstrap.log"
    log.write_text("I: downloading packages with apt...\nUnpacking xrdp (0.9.21) ...\n")
    lock_path = tmp_path / "build.lock"
    # Another process holds the lock (flock(1) and filelock both use flock(2)) for 4 s.
    other = subprocess.Popen(["flock", str(lock_path), "sleep", "4"])
    try:
        while not lock_path.exists():
            time.sleep(0.05)
        time.sleep(0.3)
        said: list[str] = []
        with pytest.raises(TemporaryError, match="another image build held"):
            build._acquire_showing_progress(FileLock(str(lock_path)), log, said.append,
                                            timeout=1.5)
        assert said and said[-1].startswith("waiting for another image build (")
        assert said[-1].endswith(": Unpacking xrdp (0.9.21) ...")
        mine = FileLock(str(lock_path))
        build._acquire_showing_progress(mine, log, said.append, timeout=30)
        assert mine.is_locked and other.poll() == 0
        mine.release()
    finally:
        other.kill()
        other.wait()
