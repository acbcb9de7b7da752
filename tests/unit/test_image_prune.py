"""prune_old_recipes keeps the current recipe, fresh images and non-hash tags."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from mlab.image import build, recipe


def test_prune_keeps_recent_and_current(monkeypatch: pytest.MonkeyPatch) -> None:
    now = time.time()
    old = now - build.PRUNE_GRACE_S - 60
    images = [
        {"Labels": {"mlab.recipe-hash": "a" * 64}, "Created": old,
         "Names": [f"{recipe.REPOSITORY}:{'a' * 16}", f"{recipe.REPOSITORY}:latest"]},
        {"Labels": {"mlab.recipe-hash": "b" * 64}, "Created": old,
         "Names": [f"{recipe.BASE_REPOSITORY}:{'b' * 16}", f"{recipe.REPOSITORY}:{'b' * 16}"]},
        {"Labels": {"mlab.recipe-hash": "c" * 64}, "Created": now - 60,
         "Names": [f"{recipe.REPOSITORY}:{'c' * 16}"]},
    ]
    removed_calls: list[str] = []

    def fake(args: list[str], check: bool = True, **_: object) -> subprocess.CompletedProcess:
        if args[0] == "images":
            return subprocess.CompletedProcess(args, 0, json.dumps(images), "")
        assert args[0] == "rmi"
        removed_calls.append(args[1])
        return subprocess.CompletedProcess(args, 0, "", "")

    monkeypatch.setattr(build, "podman", fake)
    removed = build.prune_old_recipes("a" * 64)
    assert removed == [f"{recipe.REPOSITORY}:{'b' * 16}", f"{recipe.BASE_REPOSITORY}:{'b' * 16}"]
    assert removed_calls == removed
