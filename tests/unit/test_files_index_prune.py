"""The file-restore search's index cache removes the indexes of backups that are gone."""
from __future__ import annotations

import asyncio
import os

from orchestrator.files.search import IndexCache
from orchestrator.files.service import FileService
from orchestrator.files.settings import FileRestore


async def _index(cache: IndexCache, backup: str, disk: str, path: str) -> dict:
    async def build():
        return {"entries": [[path, "file", 3, 0]], "truncated": False, "filesystems": []}
    return await cache.get((backup, disk), build)


async def test_prune_removes_only_the_indexes_of_backups_no_longer_held(tmp_path):
    cache = IndexCache(str(tmp_path))
    for b in ("b-kept", "b-gone"):
        await _index(cache, b, "d1", f"/sda1/etc/{b}")
        await _index(cache, b, "d2", f"/sda1/var/{b}")
    asked = []

    async def live(ids):
        asked.append(sorted(ids))
        return ["b-kept"]

    assert await cache.prune(live) == 1
    assert asked == [["b-gone", "b-kept"]]
    assert sorted(os.listdir(tmp_path / "index")) == ["b-kept"]
    assert sorted(os.listdir(tmp_path / "index" / "b-kept")) == ["d1.json.gz", "d2.json.gz"]
    # the memory copy went too: asking again builds it anew
    built = []

    async def rebuild():
        built.append(1)
        return {"entries": [], "truncated": False, "filesystems": []}
    assert (await cache.get(("b-gone", "d1"), rebuild))["entries"] == [] and built == [1]
    # and the kept one still answers from its index
    assert (await _index(cache, "b-kept", "d1", "/other"))["entries"][0][0] == "/sda1/etc/b-kept"


async def test_prune_with_nothing_indexed_asks_nothing(tmp_path):
    async def live(ids):
        raise AssertionError("not asked")
    assert await IndexCache(str(tmp_path)).prune(live) == 0


async def test_the_service_prunes_on_its_own_and_survives_a_catalog_error(tmp_path):
    svc = FileService(None, FileRestore(cache_dir=str(tmp_path)), str(tmp_path), live_backups=None)
    await _index(svc.index, "b1", "d1", "/x")
    calls = []

    async def live(ids):
        calls.append(list(ids))
        if len(calls) == 1:
            raise ConnectionError("catalog away")
        return []
    svc._live = live
    task = asyncio.create_task(svc._prune_loop(first=0, every=0.01))
    for _ in range(200):
        if not (tmp_path / "index" / "b1").exists():
            break
        await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert len(calls) >= 2 and not (tmp_path / "index" / "b1").exists()
