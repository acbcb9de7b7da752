"""The background sync loop: due mirrors are synced one at a time, failures do not stop it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from mlab.codeservice.app import _sync_loop
from mlab.codeservice.store import Store


def test_sync_loop_syncs_due_mirrors_and_survives_errors(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite")
    store.add_repo("a/due", "file:///x", "admin")
    store.add_repo("b/broken", "file:///y", "admin")
    store.add_repo("c/fresh", "file:///z", "admin")
    store.record_sync("c/fresh", True, "ok", "[]")
    calls: list[str] = []

    async def run_sync(name: str, wait: float = 600) -> dict[str, object]:
        calls.append(name)
        if name == "b/broken":
            raise RuntimeError("boom")
        return {"name": name, "ok": True}

    async def main() -> None:
        task = asyncio.create_task(_sync_loop(store, 1000, run_sync, tick=0.01))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and calls.count("a/due") < 2:
            await asyncio.sleep(0.01)
        task.cancel()

    asyncio.run(main())
    assert calls.count("a/due") >= 2 and "b/broken" in calls
    assert "c/fresh" not in calls  # synced just now, not due for syncInterval
