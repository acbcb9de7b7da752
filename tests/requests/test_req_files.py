"""Checksums, outbox staging and the Airlock publisher, on real files."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from mlab.errors import UsageError
from mlab.requests.checksums import collect_sources, copy_hashed, sha256_file, stage_export
from mlab.requests.publish import publish_one, sync_exports


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_copy_hashed_matches_hashlib(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    src = _write(tmp_path / "src.bin", data)
    seen: list[int] = []
    size, digest = copy_hashed(src, tmp_path / "dst.bin", seen.append)
    assert (size, digest) == (len(data), hashlib.sha256(data).hexdigest())
    assert (tmp_path / "dst.bin").read_bytes() == data
    assert sum(seen) == len(data) and len(seen) == 4
    assert sha256_file(tmp_path / "dst.bin") == (size, digest)
    assert not list(tmp_path.glob(".*part"))


def test_collect_sources(tmp_path: Path) -> None:
    _write(tmp_path / "a.txt", b"a")
    _write(tmp_path / "run" / "x" / "m.pt", b"m")
    _write(tmp_path / "run" / "log.txt", b"l")
    (tmp_path / "link.txt").symlink_to(tmp_path / "a.txt")
    sources = collect_sources([tmp_path / "a.txt", tmp_path / "run", tmp_path / "link.txt"])
    assert [s.relpath for s in sources] == ["a.txt", "run/log.txt", "run/x/m.pt", "link.txt"]
    with pytest.raises(UsageError, match="no such file"):
        collect_sources([tmp_path / "missing"])
    _write(tmp_path / "other" / "a.txt", b"b")
    with pytest.raises(UsageError, match="also that of"):
        collect_sources([tmp_path / "a.txt", tmp_path / "other" / "a.txt"])
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(UsageError, match="not a regular file"):
        collect_sources([tmp_path / "fifo"])


def _staged(tmp_path: Path) -> tuple[dict, Path, Path]:
    """An export of alice staged in an outbox, as the API would hold it."""
    home = tmp_path / "home"
    _write(home / "model.bin", os.urandom(2 * 1024 * 1024))
    _write(home / "res" / "metrics.json", b"{}")
    _write(home / "res" / "plots" / "a.png", b"png")
    outboxes = tmp_path / "outbox"
    (outboxes / "alice").mkdir(parents=True)
    files = stage_export(collect_sources([home / "model.bin", home / "res"]),
                         outboxes / "alice", "exp-1")
    request = {"id": 5, "kind": "export", "state": "approved", "owner": "alice",
               "outbox": "exp-1", "files": files}
    return request, outboxes, tmp_path / "share" / "export"


def test_publish_verifies_and_publishes(tmp_path: Path) -> None:
    request, outboxes, export = _staged(tmp_path)
    outcome = publish_one(request, outboxes, export)
    assert outcome.action == "published", outcome.detail
    for entry in request["files"]:
        assert sha256_file(export / "5" / entry["path"])[1] == entry["sha256"]
    sums = (export / "5" / "SHA256SUMS").read_text()
    assert sums.count("\n") == 3 and "res/plots/a.png" in sums
    assert publish_one(request, outboxes, export).action == "unchanged"


def test_mismatch_blocks_publication(tmp_path: Path) -> None:
    request, outboxes, export = _staged(tmp_path)
    target = outboxes / "alice" / "exp-1" / "res" / "metrics.json"
    target.write_bytes(b"[]")  # same size, other bytes: changed after approval
    outcome = publish_one(request, outboxes, export)
    assert outcome.action == "blocked" and "sha256" in outcome.detail
    assert not (export / "5").exists() and list(export.iterdir()) == []


def test_symlink_in_outbox_blocks_publication(tmp_path: Path) -> None:
    request, outboxes, export = _staged(tmp_path)
    secret = _write(tmp_path / "secret", b"{}")
    target = outboxes / "alice" / "exp-1" / "res" / "metrics.json"
    target.unlink()
    target.symlink_to(secret)  # same bytes as recorded, but a link: refused
    outcome = publish_one(request, outboxes, export)
    assert outcome.action == "blocked" and "symbolic link" in outcome.detail
    # A linked directory on the path is refused too.
    request2, outboxes2, export2 = _staged(tmp_path / "two")
    res = outboxes2 / "alice" / "exp-1" / "res"
    os.rename(res, tmp_path / "elsewhere")
    res.symlink_to(tmp_path / "elsewhere")
    assert publish_one(request2, outboxes2, export2).action == "blocked"


def test_outbox_swapped_for_a_link_mid_publication_is_not_followed(tmp_path: Path) -> None:
    """Issue 13 item 8: the outbox directory is opened once; swapping it for a link to
    another user's outbox while the first file is being copied changes nothing: every later
    file is read through the descriptor of the directory opened first."""
    request, outboxes, export = _staged(tmp_path)
    mine = outboxes / "alice" / "exp-1"
    theirs = outboxes / "bob" / "exp-9"
    theirs.mkdir(parents=True)
    swapped: list[bool] = []

    def swap(_n: int) -> None:
        if not swapped:
            os.rename(mine, outboxes / "alice" / ".real")
            mine.symlink_to(Path("..") / ".." / "bob" / "exp-9")
            swapped.append(True)

    outcome = publish_one(request, outboxes, export, swap)
    assert swapped and mine.is_symlink()
    assert outcome.action == "published", outcome.detail
    for entry in request["files"]:
        assert sha256_file(export / "5" / entry["path"])[1] == entry["sha256"]


def test_link_planted_in_the_publication_directory_is_not_followed(tmp_path: Path) -> None:
    """The export root is in the share, which the Airlock's root can change: a directory
    of a publication in progress swapped for a link must not redirect a write."""
    request, outboxes, export = _staged(tmp_path)
    outside = tmp_path / "publisher-files"
    outside.mkdir()
    planted: list[Path] = []

    def plant(_n: int) -> None:
        if not planted:
            (tmp,) = export.glob(".tmp-5-*")
            (tmp / "res").symlink_to(outside)
            planted.append(tmp)

    outcome = publish_one(request, outboxes, export, plant)
    assert planted
    assert outcome.action == "blocked" and "res/metrics.json" in outcome.detail, outcome
    assert list(outside.iterdir()) == []
    assert list(export.iterdir()) == []


def test_missing_outbox_blocks(tmp_path: Path) -> None:
    request, outboxes, export = _staged(tmp_path)
    request = {**request, "owner": "bob"}
    outcome = publish_one(request, outboxes, export)
    assert outcome.action == "blocked" and "outbox bob/exp-1" in outcome.detail


def test_sync_publishes_approved_and_removes_the_rest(tmp_path: Path) -> None:
    request, outboxes, export = _staged(tmp_path)
    outcomes = sync_exports([request], outboxes, export)
    assert [(o.id, o.action) for o in outcomes] == [(5, "published")]
    (export / ".tmp-9-1").mkdir()
    outcomes = sync_exports([{**request, "state": "revoked"}], outboxes, export)
    assert [(o.id, o.action) for o in outcomes] == [(5, "unpublished")]
    assert list(export.iterdir()) == []


def test_stage_export_cleans_up_on_failure(tmp_path: Path) -> None:
    src = _write(tmp_path / "a.txt", b"a")
    sources = collect_sources([src])
    src.unlink()  # vanishes between listing and copying
    (tmp_path / "outbox").mkdir()
    with pytest.raises(Exception, match="copy into the outbox failed"):
        stage_export(sources, tmp_path / "outbox", "exp-2")
    assert list((tmp_path / "outbox").iterdir()) == []
