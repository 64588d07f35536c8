"""Writer leases and gc's cutoff (imageio_ext/store/leases.py, gc.py).

The cutoff logic is pure (`compute_cutoff`, `parse_lease`); the rest runs
against a real PathTarget in a temporary directory, in one process (the
multi-process and NFS cases are in tests/integration/store/test_store_leases.py).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time

import pytest

from imageio_ext.store import PathTarget, Store
from imageio_ext.store.fidx import ZERO_DIGEST
from imageio_ext.store.gc import collect_garbage
from imageio_ext.store.layout import chunk_path, manifest_path
from imageio_ext.store.leases import (
    WRITERS_DIR,
    LeaseInfo,
    LeaseLost,
    WriterLease,
    compute_cutoff,
    parse_lease,
    read_leases,
    writer_lease,
)
from tests.unit.store.store_suite import CS, backup, make_disk, read_all, uid, write_disk


def lease_doc(**kw) -> bytes:
    doc = {"format": "ovault-writer-lease", "version": 1, "writer_id": "w", "started": 100.0,
           "lease_seconds": 60.0}
    doc.update(kw)
    return json.dumps(doc).encode()


# -- pure: what a lease file means, and the cutoff --------------------------------


def test_parse_lease_well_formed_and_clamped():
    x = parse_lease("w", 150.0, lease_doc(vm_id="v", backup_id="b"))
    assert x.valid and x.started == 100.0 and x.lease_seconds == 60.0 and (x.vm_id, x.backup_id) == ("v", "b")
    # A start "after" its own file's mtime cannot be: the mtime wins.
    assert parse_lease("w", 90.0, lease_doc()).started == 90.0
    # Registration in progress (started not yet known): the file's mtime.
    assert parse_lease("w", 120.0, lease_doc(started=None)).started == 120.0


@pytest.mark.parametrize("data", [
    None, b"not json", b"[]", lease_doc(format="other"), lease_doc(version=2), lease_doc(lease_seconds=0.5),
    lease_doc(lease_seconds=10 ** 9), lease_doc(lease_seconds=True), lease_doc(started="yesterday"),
    lease_doc(started=float("nan")),
])
def test_untrusted_lease_protects_everything_while_fresh(data):
    x = parse_lease("w", 150.0, data)
    assert not x.valid and x.started == -math.inf
    c = compute_cutoff(150.0, 0.0, 0.0, [x])
    assert c.chunk_cutoff == -math.inf and len(c.live) == 1
    # ... and nothing once it is older than the default lease.
    c = compute_cutoff(150.0 + 10_000, 0.0, 0.0, [x])
    assert c.chunk_cutoff == 150.0 + 10_000 and c.stale == (x,)


def test_cutoff_is_min_of_grace_and_oldest_live_writer_minus_margin():
    now = 10_000.0
    live_old = LeaseInfo("a", mtime=now - 5, started=now - 3000, lease_seconds=60)
    live_new = LeaseInfo("b", mtime=now - 1, started=now - 10, lease_seconds=60)
    dead = LeaseInfo("c", mtime=now - 61, started=now - 9000, lease_seconds=60)  # heartbeat older than its lease
    assert compute_cutoff(now, 3600, 300, []).chunk_cutoff == now - 3600
    assert compute_cutoff(now, 0, 300, []).chunk_cutoff == now
    c = compute_cutoff(now, 0, 300, [live_new, live_old, dead])
    assert c.chunk_cutoff == now - 3000 - 300 and c.oldest_start == now - 3000
    assert set(c.live) == {live_old, live_new} and c.stale == (dead,)
    # The grace still bounds it when the writers are young.
    assert compute_cutoff(now, 3600, 300, [live_new]).chunk_cutoff == now - 3600
    # Exactly at the lease boundary a writer is still live.
    edge = LeaseInfo("d", mtime=now - 60, started=now - 100, lease_seconds=60)
    assert compute_cutoff(now, 0, 0, [edge]).chunk_cutoff == now - 100
    with pytest.raises(ValueError):
        compute_cutoff(now, -1, 0, [])


def test_lease_arguments_checked(tmp_path):
    t = PathTarget(str(tmp_path))
    with pytest.raises(ValueError, match="lease_seconds"):
        WriterLease(t, lease_seconds=0.1)
    with pytest.raises(ValueError, match="heartbeat"):
        WriterLease(t, lease_seconds=30, heartbeat_seconds=20)


# -- a lease on a real target ---------------------------------------------------------


@pytest.fixture
async def store(tmp_path):
    d = tmp_path / "target"
    d.mkdir()
    s = await Store.open(str(d), create=True, chunk_size=CS)
    yield s
    await s.close()


async def test_register_heartbeat_release(store):
    t = store.target
    async with writer_lease(t, purpose="test", vm_id="v", backup_id="b", lease_seconds=3,
                            heartbeat_seconds=0.2) as lease:
        st = await t.stat(lease.path)
        doc = json.loads(await t.read_file(lease.path))
        assert doc["writer_id"] == lease.writer_id and doc["pid"] == os.getpid() and doc["purpose"] == "test"
        assert doc["started"] == lease.started and abs(lease.started - time.time()) < 5
        [seen] = await read_leases(t)
        assert seen.valid and seen.started == lease.started and (seen.vm_id, seen.backup_id) == ("v", "b")
        await asyncio.sleep(0.6)
        assert (await t.stat(lease.path)).mtime > st.mtime  # heartbeats touch it
        lease.check()
    assert lease.released and await t.scandir(WRITERS_DIR) == []
    with pytest.raises(LeaseLost, match="released"):
        lease.check()


async def test_lapsed_heartbeat_is_lease_lost(store):
    now = [0.0]
    lease = WriterLease(store.target, lease_seconds=10, heartbeat_seconds=1, clock=lambda: now[0])
    await lease.register()
    try:
        lease._task.cancel()  # drive the beats by hand
        for _ in range(5):
            now[0] += 2.0
            await lease.heartbeat()
        lease.check()
        now[0] += 9.5  # a paused process: no beat for most of the lease
        with pytest.raises(LeaseLost, match="no heartbeat for 10 s"):
            lease.check()
        await lease.heartbeat()  # beating again does not undo a lapse
        with pytest.raises(LeaseLost):
            lease.check()
    finally:
        await lease.release()


async def test_lease_file_removed_by_gc_is_lease_lost(store):
    lease = await WriterLease(store.target, lease_seconds=3, heartbeat_seconds=1).register()
    try:
        await store.target.remove(lease.path)
        await lease.heartbeat()
        with pytest.raises(LeaseLost, match="removed as stale"):
            lease.check()
    finally:
        await lease.release()


# -- gc honours live writers ------------------------------------------------------------


async def test_live_writer_protects_its_new_chunks_until_commit(store):
    vm, bid, disk = uid(), uid(), uid()
    content = make_disk(1, 3)
    bw = await store.begin_backup(vm, bid, lease_seconds=5, heartbeat_seconds=0.5)
    dw = await write_disk(bw, disk, content)
    await dw._drain()
    digests = {dw.index.get(i) for i in range(dw.index.count)} - {ZERO_DIGEST}
    await asyncio.sleep(0.05)
    rep = await store.gc(grace_seconds=0)  # nothing references them yet
    assert rep.writers_live == 1 and rep.oldest_writer_start == bw.lease.started
    assert rep.chunks_removed == 0 and rep.chunks_kept_young == len(digests) == 3
    await dw.commit()
    assert bw.lease.released  # every disk committed: the index protects them now
    # Until the orchestrator publishes, it holds a lease naming the backup:
    # gc marks the committed index and keeps the directory, even at grace 0.
    async with writer_lease(store.target, purpose="publish", vm_id=vm, backup_id=bid, lease_seconds=5):
        rep = await store.gc(grace_seconds=0)
        assert rep.writers_live == 1 and rep.chunks_removed == 0 and rep.referenced == 3
        assert rep.orphans_removed == []
        info = await bw.publish()
    rep = await store.gc(grace_seconds=0)
    assert rep.writers_live == 0 and rep.chunks_removed == 0 and rep.referenced == 3
    assert await read_all(store, vm, info.backup_id, disk) == content


async def test_reused_old_unreferenced_chunk_is_touched_and_kept(store):
    """Chunk exists, unreferenced, older than the writer's start; the writer
    dedups onto it; gc runs before the writer commits: kept (the dedup hit
    touched it after the writer's start)."""
    old = make_disk(2, 1)
    d = await store.put_chunk(old)
    path = chunk_path(d)
    old_mtime = time.time() - 7200
    await _set_mtime(store, path, old_mtime)
    vm, bid, disk = uid(), uid(), uid()
    bw = await store.begin_backup(vm, bid)
    dw = await bw.add_disk(disk, CS)
    await dw.write(0, old)
    await dw._drain()
    assert dw.dedup_chunks == 1 and (await store.target.stat(path)).mtime >= bw.lease.started
    rep = await store.gc(grace_seconds=3600)
    assert rep.chunks_removed == 0 and rep.chunks_kept_young == 1
    await dw.commit()
    info = await bw.publish()
    assert (await store.verify(vm, info.backup_id)).ok


async def _set_mtime(store, rel: str, t: float) -> None:
    os.utime(os.path.join(store.target.url, rel), (t, t))


async def test_dead_writer_stops_protecting_after_its_lease(store):
    lease = await WriterLease(store.target, lease_seconds=2, heartbeat_seconds=0.5).register()
    lease._task.cancel()  # the process "died": no more heartbeats, the file stays
    d = await store.put_chunk(make_disk(3, 1))
    await asyncio.sleep(0.05)
    rep = await store.gc(grace_seconds=0)
    assert rep.writers_live == 1 and rep.chunks_removed == 0 and rep.leases_removed == 0
    await asyncio.sleep(2.2)
    rep = await store.gc(grace_seconds=0)
    assert rep.writers_live == 0 and rep.chunks_removed == 1 and rep.leases_removed == 1
    assert not await store.target.exists(chunk_path(d))
    assert await store.target.scandir(WRITERS_DIR) == []


async def test_incremental_commit_touches_nothing_it_inherits(store):
    """Commit I/O does not grow with what is inherited: no touch, one listing
    of .damaged/, one index write, one parent check."""
    vm, disk = uid(), uid()
    content = make_disk(4, 40)
    full = await backup(store, vm, uid(), {disk: content})
    calls: dict[str, int] = {}
    target = store.target
    for name in ("touch", "stat", "scandir", "read_file", "write_file"):
        orig = getattr(target, name)

        def counted(*a, _orig=orig, _name=name, **k):
            calls[_name] = calls.get(_name, 0) + 1
            return _orig(*a, **k)

        setattr(target, name, counted)
    bw = await store.begin_backup(vm, uid(), parent_id=full.backup_id)
    dw = await bw.add_disk(disk, len(content))
    changed = bytearray(content)
    changed[5 * CS] ^= 1
    await dw.write(5 * CS, bytes(changed[5 * CS: 6 * CS]))
    await dw._drain()
    calls.clear()
    await dw.commit()
    assert calls.get("touch", 0) == 0
    assert sum(calls.values()) <= 8, calls
    info = await bw.publish()
    assert await read_all(store, vm, info.backup_id, disk) == bytes(changed)


async def test_commit_after_lapsed_lease_fails(store):
    vm, bid, disk = uid(), uid(), uid()
    bw = await store.begin_backup(vm, bid)
    dw = await write_disk(bw, disk, make_disk(5, 2))
    bw.lease._last_ok -= 10_000  # as if the process had been paused for hours
    with pytest.raises(LeaseLost):
        await dw.commit()
    assert not await store.target.exists(f"vms/{vm}/{bid}/{disk}.fidx")
    await bw.abort()
    assert bw.lease.released


async def test_gc_relists_a_vm_when_a_backup_vanishes_under_it(store, monkeypatch):
    """gc listed the VM when the child was not yet published; the child then
    published and retention deleted the parent before gc read it. The chunks
    moved to the child; gc must list again and mark them."""
    vm, disk = uid(), uid()
    content = make_disk(6, 4)
    full = await backup(store, vm, uid(), {disk: content})
    idx = await store.read_index(vm, full.backup_id, disk)
    for i in range(idx.count):  # old enough for any cutoff
        await _set_mtime(store, chunk_path(idx.get(i)), time.time() - 7200)
    child_id = uid()
    bw = await store.begin_backup(vm, child_id, parent_id=full.backup_id)
    dw = await bw.add_disk(disk, len(content))
    await dw.commit()  # inherits all four, touches none
    backups = store.backups
    real_get = backups.get
    state = {"done": False}

    async def racing_get(vm_id, backup_id):
        if backup_id == full.backup_id and not state["done"]:
            state["done"] = True
            await bw.publish()
            await store.delete_backup(vm, full.backup_id)
        return await real_get(vm_id, backup_id)

    monkeypatch.setattr(backups, "get", racing_get)
    # gc's first pass sees the child unpublished, older than now - grace and
    # without a live lease (its mover released it at commit): not marked.
    rep = await collect_garbage(backups, grace_seconds=0)
    assert state["done"] and rep.mark_rounds == 1
    assert rep.chunks_removed == 0
    assert await read_all(store, vm, child_id, disk) == content
    assert (await store.verify(vm, child_id)).ok


async def test_parent_deleted_during_incremental_resends_inherited(store):
    vm, disk = uid(), uid()
    content = make_disk(7, 3)
    full = await backup(store, vm, uid(), {disk: content})
    bw = await store.begin_backup(vm, uid(), parent_id=full.backup_id)
    dw = await bw.add_disk(disk, len(content))
    await store.delete_backup(vm, full.backup_id)
    with pytest.raises(Exception) as ei:
        await dw.commit()
    assert type(ei.value).__name__ == "ChunkMissing"
    assert ei.value.offsets == [0, CS, 2 * CS] and "was deleted" in str(ei.value)
    assert not await store.target.exists(manifest_path(vm, full.backup_id))
    await dw.write(0, content)
    await dw.commit()
    info = await bw.publish()
    assert await read_all(store, vm, info.backup_id, disk) == content


async def test_writer_dropped_without_commit_releases_its_lease(store):
    """A BackupWriter lost after an error (no commit, cancel or abort) must not
    protect chunks for as long as its process lives."""
    import gc as pygc

    vm, bid, disk = uid(), uid(), uid()
    bw = await store.begin_backup(vm, bid, lease_seconds=3, heartbeat_seconds=0.2)
    await bw.add_disk(disk, CS)
    lease = bw.lease
    del bw
    pygc.collect()
    await asyncio.sleep(0.5)
    assert lease.released and await store.target.scandir(WRITERS_DIR) == []


async def test_damage_marker_lives_until_healed(store):
    """mark_bad leaves .damaged/<digest> for committing incrementals; gc drops it
    once the chunk is back."""
    from imageio_ext.store.leases import DAMAGED_DIR, damaged_markers

    vm, disk = uid(), uid()
    content = make_disk(8, 2)
    full = await backup(store, vm, uid(), {disk: content})
    d0 = (await store.read_index(vm, full.backup_id, disk)).get(0)
    path = chunk_path(d0)
    raw = bytearray(await store.target.read_file(path))
    raw[len(raw) // 2] ^= 1
    await store.target.write_file(path, bytes(raw))
    assert not (await store.verify(vm, full.backup_id)).ok
    assert [d for d, _ in await damaged_markers(store.target)] == [d0]
    rep = await store.gc(grace_seconds=0)
    assert rep.markers_removed == 0  # still damaged and referenced
    bw = await store.begin_backup(vm, uid(), parent_id=full.backup_id)
    dw = await bw.add_disk(disk, len(content))
    with pytest.raises(Exception) as ei:
        await dw.commit()
    assert ei.value.offsets == [0]
    await dw.write(0, content[:CS])
    await dw.commit()
    await bw.publish()
    assert (await store.verify(vm, full.backup_id)).ok  # healed
    await asyncio.sleep(0.05)
    rep = await store.gc(grace_seconds=0)
    assert rep.markers_removed == 1 and await store.target.scandir(DAMAGED_DIR) == []


@pytest.mark.parametrize("manifest_left", [False, True])
async def test_gc_takes_a_transport_error_on_a_deleted_backup_for_a_vanished_one(store, monkeypatch,
                                                                                  manifest_left):
    """Over NFS, reading a manifest removed under the read can fail as a transport error
    (libnfs: EFAULT). gc then looks: manifest gone -> the backup vanished (relist, go on);
    manifest still there -> the target really failed: gc stops, removing nothing."""
    from imageio_ext.store.errors import TargetUnavailable
    vm, disk = uid(), uid()
    content = make_disk(6, 4)
    victim = await backup(store, vm, uid(), {disk: content})
    keeper = await backup(store, vm, uid(), {disk: make_disk(6, 4)})
    backups = store.backups
    real_get = backups.get
    state = {"done": False}

    async def failing_get(vm_id, backup_id):
        if backup_id == victim.backup_id and not state["done"]:
            state["done"] = True
            if not manifest_left:
                await store.delete_backup(vm, victim.backup_id)
            raise TargetUnavailable("nfs://server/export", "[Errno 14] pread manifest.json: failed")
        return await real_get(vm_id, backup_id)

    monkeypatch.setattr(backups, "get", failing_get)
    if manifest_left:
        with pytest.raises(TargetUnavailable):
            await collect_garbage(backups, grace_seconds=0)
        assert (await store.verify(vm, victim.backup_id)).ok  # nothing removed
    else:
        rep = await collect_garbage(backups, grace_seconds=0)
        assert state["done"] and rep.mark_rounds == 1
    assert (await store.verify(vm, keeper.backup_id)).ok
