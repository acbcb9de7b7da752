"""Transcripts of real bash runs: output, exit status, duration, timeout, truncation."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlab.errors import UsageError
from mlab.requests.transcript import run_script


def _script(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "install.sh"
    path.write_text(text)
    return path


def test_success_keeps_interleaved_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLAB_IMAGE", "localhost/mlab/homepod:test")
    echoed: list[str] = []
    tr = run_script(_script(tmp_path, "echo out\necho err >&2\necho 'héllo'\n"), echo=echoed.append)
    assert tr["exit_status"] == 0
    assert tr["output"] == "out\nerr\nhéllo\n"
    assert "".join(echoed) == tr["output"]
    assert tr["image"] == "localhost/mlab/homepod:test"
    assert isinstance(tr["duration_s"], float) and tr["started_at"].endswith("Z")  # type: ignore[union-attr]
    assert tr["truncated"] is False


def test_failure_status(tmp_path: Path) -> None:
    tr = run_script(_script(tmp_path, "echo trying\nexit 3\n"))
    assert tr["exit_status"] == 3 and "trying" in tr["output"]  # type: ignore[operator]


def test_timeout_kills_the_process_group(tmp_path: Path) -> None:
    tr = run_script(_script(tmp_path, "echo start\nsleep 30 &\nsleep 30\n"), timeout=1)
    assert tr["exit_status"] == 124
    assert "killed after 1 s" in tr["output"]  # type: ignore[operator]
    assert tr["duration_s"] < 10  # type: ignore[operator]


def test_long_output_keeps_head_and_tail(tmp_path: Path) -> None:
    tr = run_script(_script(tmp_path, "echo FIRST\nseq 1 200000\necho LAST\n"), keep=10000)
    out = tr["output"]
    assert tr["truncated"] is True
    assert out.startswith("FIRST") and out.rstrip().endswith("LAST")  # type: ignore[union-attr]
    assert "characters omitted" in out and len(out) < 10200  # type: ignore[arg-type,operator]


def test_missing_script(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="SCRIPT"):
        run_script(tmp_path / "nope.sh")
