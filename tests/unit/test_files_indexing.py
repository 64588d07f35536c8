"""Search's background indexing (files/indexing.py) and the search answer built from
the indexes there are (files/search.py), over a fake session manager; the real
libguestfs path is in tests/integration/files/."""
from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from orchestrator.files import indexing as ix
from orchestrator.files.indexing import INDEX_USER, DiskRef, Indexer
from orchestrator.files.search import IndexCache, search
from orchestrator.files.sessions import TooManySessions
from orchestrator.files.settings import FileRestore

VM = "vm-1"


class FakeSession:
    def __init__(self, key):
        self.backup_id, self.disk_id = key
        self.users: set = set()


class FakeManager:
    """Opens a session per disk when `gate` allows; `busy` times it answers 429 first."""

    def __init__(self, busy: int = 0):
        self.sessions: dict = {}
        self.opened: list = []
        self.released: list = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.busy = busy

    async def get(self, user, vm_id, backup_id, disk_id, digest=None):
        if self.busy:
            self.busy -= 1
            raise TooManySessions("all busy")
        await self.gate.wait()
        s = FakeSession((backup_id, disk_id))
        s.users.add(user)
        self.opened.append((user, backup_id, disk_id))
        self.sessions[(backup_id, disk_id)] = s
        return s

    async def release(self, s):
        self.released.append((s.backup_id, s.disk_id))
        self.sessions.pop((s.backup_id, s.disk_id), None)


def entries_for(s) -> dict:
    return {"entries": [[f"/sda1/etc/{s.backup_id}.conf", "file", 7, "2024-01-02T03:04:05Z"],
                        ["/sda1/etc/hostname", "file", len(s.backup_id), "2024-01-01T00:00:00Z"]],
            "truncated": False, "filesystems": ["sda1"]}


def make(tmp_path, *, per_user=2, manager=None, build=None, clock=None):
    mgr = manager or FakeManager()
    cache = IndexCache(str(tmp_path))
    settings = FileRestore(per_user=per_user)

    async def default_build(s):
        return entries_for(s)
    kw = {"clock": clock} if clock else {}
    return mgr, cache, Indexer(mgr, cache, settings, build or default_build, busy_retry=0.01, **kw), settings


def backup(n: int, disks=("d1",)):
    return SimpleNamespace(id=uuid.UUID(int=n), vm_id=VM,
                           created_at=dt.datetime(2024, 1, n, tzinfo=dt.timezone.utc),
                           disks=[SimpleNamespace(disk_id=d, alias=f"disk-{d}", index_digest=None) for d in disks])


async def settle(indexer):
    while indexer._tasks:
        await asyncio.gather(*indexer._tasks.values(), return_exceptions=True)


async def test_search_answers_at_once_then_finds_every_version_once_indexed(tmp_path):
    mgr, cache, indexer, settings = make(tmp_path)
    mgr.gate.clear()  # appliances "start" only when let go
    backups = [backup(3), backup(2, ("d1", "d2"))]
    doc = await search(cache, indexer, backups, "hostname", settings)
    assert doc["items"] == [] and doc["complete"] is False and doc["backups_searched"] == 2
    assert [(x["backup_id"], x["disk_id"], x["disk_alias"]) for x in doc["not_indexed"]] == [
        (str(uuid.UUID(int=3)), "d1", "disk-d1"), (str(uuid.UUID(int=2)), "d1", "disk-d1"),
        (str(uuid.UUID(int=2)), "d2", "disk-d2")]
    assert doc["indexing"] == {"state": "running", "done": 0, "total": 3, "failed": 0}
    # a second search while it runs starts nothing more
    doc2 = await search(cache, indexer, backups, "*.conf", settings)
    assert doc2["indexing"]["total"] == 3
    assert set(indexer.started.values()) == {1} and len(indexer.started) == 3
    # bounded by files.per_user: two hold a slot, the third is queued
    await asyncio.sleep(0.01)
    st = indexer.status(VM)
    assert sorted(p["state"] for p in st["pending"]) == ["indexing", "indexing", "queued"]
    mgr.gate.set()
    await settle(indexer)
    st = indexer.status(VM)
    assert (st["state"], st["done"], st["total"], st["failed"], st["pending"]) == ("done", 3, 3, [], [])
    assert st["finished_at"] is not None
    # every session was opened by the indexing user, once per disk, and closed after
    assert sorted(mgr.opened) == sorted((INDEX_USER, str(b.id), d.disk_id) for b in backups for d in b.disks)
    assert sorted(mgr.released) == sorted((str(b.id), d.disk_id) for b in backups for d in b.disks)
    doc = await search(cache, indexer, backups, "hostname", settings)
    assert doc["complete"] is True and doc["not_indexed"] == [] and doc["indexing"] is None
    [item1, item2] = doc["items"]
    assert (item1["disk_id"], item2["disk_id"]) == ("d1", "d2")
    assert [(v["backup_id"], v["size"], v["mtime"], v["created_at"]) for v in item1["versions"]] == [
        (str(uuid.UUID(int=3)), 36, "2024-01-01T00:00:00Z", "2024-01-03T00:00:00Z"),
        (str(uuid.UUID(int=2)), 36, "2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z")]
    # the indexes are on disk: a new cache (a restart) answers without indexing
    doc = await search(IndexCache(str(tmp_path)), indexer, backups, "*.conf", settings)
    assert doc["complete"] and len(doc["items"]) == 3


async def test_a_session_a_user_had_open_is_left_open(tmp_path):
    mgr, cache, indexer, _ = make(tmp_path)
    b = backup(1)
    mine = FakeSession((str(b.id), "d1"))
    mine.users.add("alice")
    mgr.sessions[mine.backup_id, "d1"] = mine
    mgr.get = _returning(mine)
    indexer.ensure(VM, [DiskRef(VM, str(b.id), "d1")])
    await settle(indexer)
    assert mgr.released == [] and mine.users == {"alice"}
    assert indexer.status(VM)["done"] == 1


def _returning(s):
    async def get(user, *a, **k):
        s.users.add(user)
        return s
    return get


async def test_a_failure_is_reported_and_not_retried_until_later(tmp_path):
    now = [1000.0]
    calls = []

    async def build(s):
        calls.append(s.backup_id)
        raise RuntimeError("the appliance would not start")
    mgr, cache, indexer, settings = make(tmp_path, build=build, clock=lambda: now[0])
    backups = [backup(1)]
    await search(cache, indexer, backups, "x", settings)
    await settle(indexer)
    st = indexer.status(VM)
    assert (st["state"], st["done"], st["total"]) == ("done", 0, 1)
    assert st["failed"][0]["error"] == "the appliance would not start"
    doc = await search(cache, indexer, backups, "x", settings)
    assert doc["not_indexed"][0]["state"] == "failed" and "would not start" in doc["not_indexed"][0]["error"]
    assert doc["indexing"]["failed"] == 1 and not indexer._tasks and len(calls) == 1
    now[0] += ix.RETRY_FAILED_SECONDS
    doc = await search(cache, indexer, backups, "x", settings)
    assert doc["indexing"] == {"state": "running", "done": 0, "total": 1, "failed": 0}
    await settle(indexer)
    assert len(calls) == 2


async def test_busy_sessions_are_waited_for(tmp_path):
    mgr, cache, indexer, _ = make(tmp_path, manager=FakeManager(busy=3))
    indexer.ensure(VM, [DiskRef(VM, "b1", "d1")])
    await settle(indexer)
    assert indexer.status(VM)["done"] == 1 and mgr.busy == 0


async def test_cancel_stops_the_round(tmp_path):
    mgr, cache, indexer, _ = make(tmp_path, per_user=1)
    mgr.gate.clear()
    indexer.ensure(VM, [DiskRef(VM, "b1", "d1"), DiskRef(VM, "b2", "d1")])
    await asyncio.sleep(0.01)
    assert await indexer.cancel(VM) == 2
    st = indexer.status(VM)
    assert st["state"] == "done" and sorted(f["error"] for f in st["failed"]) == ["canceled", "canceled"]
    assert indexer._tasks == {} and mgr.opened == []
    assert await indexer.cancel("other-vm") == 0 and indexer.status("other-vm") is None


@pytest.mark.parametrize("per_user,max_sessions,slots", [(2, 4, 2), (5, 3, 3), (0, 4, 1)])
def test_parallelism_follows_the_session_limits(tmp_path, per_user, max_sessions, slots):
    idx = Indexer(FakeManager(), IndexCache(str(tmp_path)),
                  FileRestore(per_user=per_user, max_sessions=max_sessions), None)
    assert idx._slots._value == slots


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
async def test_a_damaged_index_file_counts_as_missing_and_is_built_again(tmp_path, damage):
    """An index file cut short or damaged (a crash before its data reached the disk) is no
    index: search names the disk as not indexed instead of failing, and indexing rebuilds it."""
    mgr, cache, indexer, settings = make(tmp_path)
    backups = [backup(1)]
    await search(cache, indexer, backups, "hostname", settings)
    await settle(indexer)
    path = Path(cache._path(str(uuid.UUID(int=1)), "d1"))
    data = path.read_bytes()
    path.write_bytes({"truncated": data[:len(data) // 2], "garbage": data[:10] + b"\xff" * 64,
                      "empty": b""}[damage])
    # a restart: nothing in memory
    _, fresh, indexer, settings = make(tmp_path, manager=mgr)
    doc = await search(fresh, indexer, backups, "hostname", settings)
    assert doc["complete"] is False and [x["disk_id"] for x in doc["not_indexed"]] == ["d1"]
    await settle(indexer)
    doc = await search(fresh, indexer, backups, "hostname", settings)
    assert doc["complete"] is True and [i["path"] for i in doc["items"]] == ["/sda1/etc/hostname"]
    assert indexer.started[(str(uuid.UUID(int=1)), "d1")] == 1 and len(mgr.opened) == 2
