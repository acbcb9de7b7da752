"""The pre-receive hook's blob-size check reads only the push's quarantine (real git)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from mlab.codeservice import hook


def _git(*args: str, env: dict[str, str], data: bytes | None = None) -> str:
    return subprocess.run(["git", *args], env=env, input=data, capture_output=True,
                          check=True).stdout.decode()


def test_quarantine_check_sees_loose_and_packed_blobs_but_not_the_repository(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "r.git"
    subprocess.run(["git", "init", "-q", "--bare", str(repo)], check=True)
    base = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    base["GIT_DIR"] = str(repo)
    # a large blob already in the repository is not part of the push
    _git("hash-object", "-w", "--stdin", env=base, data=b"r" * 5000)
    quarantine = tmp_path / "incoming"
    (quarantine / "pack").mkdir(parents=True)
    qenv = {**base, "GIT_OBJECT_DIRECTORY": str(quarantine),
            "GIT_ALTERNATE_OBJECT_DIRECTORIES": str(repo / "objects")}
    _git("hash-object", "-w", "--stdin", env=qenv, data=b"small\n")
    for key in ("GIT_DIR", "GIT_OBJECT_DIRECTORY", "GIT_ALTERNATE_OBJECT_DIRECTORIES"):
        monkeypatch.setenv(key, qenv[key])
    monkeypatch.setenv("GIT_QUARANTINE_PATH", str(quarantine))
    assert not hook._quarantine_has_blob_over(1000)

    big = _git("hash-object", "-w", "--stdin", env=qenv, data=b"b" * 3000).strip()
    assert hook._quarantine_has_blob_over(1000)  # loose
    assert not hook._quarantine_has_blob_over(3000)  # the limit itself is allowed
    _git("pack-objects", "-q", str(quarantine / "pack" / "pack"), env=qenv,
         data=f"{big}\n".encode())
    _git("prune-packed", env=qenv)
    assert not (quarantine / big[:2] / big[2:]).exists()
    assert hook._quarantine_has_blob_over(1000)  # packed

    monkeypatch.delenv("GIT_QUARANTINE_PATH")
    assert hook._quarantine_has_blob_over(10**9)  # no quarantine: walk the history
