"""mlab.atomic.write_atomic: content, mode, and no trace left on failure."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from mlab.atomic import write_atomic


def test_writes_content_with_mode_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "passwords.json"
    target.write_text("old", encoding="utf-8")
    write_atomic(target, "new ✓\n", 0o600)
    assert target.read_text(encoding="utf-8") == "new ✓\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    write_atomic(target, b"\x00bytes", 0o755, fsync=False)
    assert target.read_bytes() == b"\x00bytes"
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    assert os.listdir(tmp_path) == ["passwords.json"]


def test_writes_pieces_in_order(tmp_path: Path) -> None:
    """A sequence of byte strings and views (mlab render's parts) is the file, in order."""
    target = tmp_path / "homepod.yaml"
    view = memoryview(b"xx---\nb: 2\nyy")[2:-2]
    write_atomic(target, [b"# head\n", b"---\na: 1\n", view, b""], 0o644, fsync=False)
    assert target.read_bytes() == b"# head\n---\na: 1\n---\nb: 2\n"
    write_atomic(target, [], 0o644, fsync=False)
    assert target.read_bytes() == b""


def test_failure_leaves_target_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "plan.json"
    target.write_text("kept", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    with pytest.raises(IsADirectoryError):
        write_atomic(tmp_path / "sub", "x")  # rename onto a directory fails
    with pytest.raises(TypeError):
        write_atomic(target, 42)  # type: ignore[arg-type]
    assert target.read_text(encoding="utf-8") == "kept"
    assert sorted(os.listdir(tmp_path)) == ["plan.json", "sub"]
