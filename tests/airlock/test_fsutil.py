"""Atomic multi-file writes and the directory swap used by the pip index."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlab.airlock import fsutil


@pytest.mark.parametrize("count", [3, fsutil.FSYNC_EACH_UP_TO + 5], ids=["fsync-each", "syncfs"])
def test_write_many_atomic(tmp_path: Path, count: int) -> None:
    (tmp_path / "f0").write_text("old")
    items = [(tmp_path / f"f{i}", f"new {i}") for i in range(count)]
    fsutil.write_many_atomic(items, mode=0o640)
    for path, text in items:
        assert path.read_text() == text
        assert path.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"f{i}" for i in range(count))


def test_write_many_atomic_failure_leaves_targets(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("old")
    with pytest.raises(OSError):
        fsutil.write_many_atomic([(tmp_path / "a", "new"), (tmp_path / "missing" / "b", "x")])
    assert (tmp_path / "a").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a"]


def test_exchange_dirs_swaps(tmp_path: Path) -> None:
    new, cur = tmp_path / "new", tmp_path / "cur"
    new.mkdir()
    (new / "x").write_text("new")
    cur.mkdir()
    (cur / "x").write_text("old")
    assert fsutil.exchange_dirs(new, cur) is True
    assert (cur / "x").read_text() == "new"
    assert (new / "x").read_text() == "old"


def test_exchange_dirs_without_current(tmp_path: Path) -> None:
    new, cur = tmp_path / "new", tmp_path / "cur"
    new.mkdir()
    assert fsutil.exchange_dirs(new, cur) is False
    assert cur.is_dir() and not new.exists()


def test_sync_filesystem_runs(tmp_path: Path) -> None:
    fsutil.sync_filesystem(tmp_path)  # raises on failure; there is nothing else to observe
    assert fsutil.load_syncfs() is not None, "libc without syncfs: the fallback is a global sync"


def test_write_many_atomic_fsyncs_pages_and_durable_files_before_renaming(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheel = tmp_path / "w.whl"
    wheel.write_bytes(b"wheel")
    synced: list[str] = []
    real_fsync = fsutil.os.fsync

    def recording_fsync(fd: int) -> None:
        path = fsutil.os.readlink(f"/proc/self/fd/{fd}")
        # a page is synced under its temporary name, before the rename makes it visible
        synced.append(Path(path).name)
        real_fsync(fd)

    monkeypatch.setattr(fsutil.os, "fsync", recording_fsync)
    fsutil.write_many_atomic([(tmp_path / "p1", "a"), (tmp_path / "p2", "b")], durable=[wheel])
    assert "w.whl" in synced
    assert sorted(n.split(".")[1] for n in synced if n != "w.whl") == ["p1", "p2"]
    assert (tmp_path / "p1").read_text() == "a" and (tmp_path / "p2").read_text() == "b"
