"""The copy engine against in-memory imageio fakes and a real store on a local path."""
from __future__ import annotations

import asyncio
import hashlib
import os
import uuid

import pytest

from imageio_ext.copy import (
    CorruptedBackup,
    ImageioUnavailable,
    InvalidRequest,
    Progress,
    backup_disk,
    restore_disk,
)
from imageio_ext.store import Store

from .fakes import CLUSTER, FakeImage

KiB, MiB = 1 << 10, 1 << 20
CS = 256 * KiB
SIZE = 8 * MiB
VM, DISK = str(uuid.uuid4()), str(uuid.uuid4())


@pytest.fixture
async def store(tmp_path):
    (tmp_path / "target").mkdir()
    s = await Store.open(tmp_path / "target", create=True, chunk_size=CS)
    yield s
    await s.close()


def mixed_image() -> FakeImage:
    img = FakeImage(SIZE)
    rnd = os.urandom(512 * KiB)
    img.guest_write(0, rnd)  # 2 chunks of random data
    img.guest_write(2 * MiB, rnd)  # the same content again: dedups
    img.guest_write(5 * MiB + 3 * CLUSTER, b"x" * CLUSTER)  # one cluster inside a chunk
    img.guest_write(6 * MiB, bytes(CLUSTER))  # allocated zeros: read, but stored as a zero chunk
    img.clear_dirty()
    return img


def sha(b) -> str:
    return hashlib.sha256(b).hexdigest()


async def do_backup(store, img, bid, **kw):
    return await backup_disk(store, img, vm_id=VM, backup_id=bid, disk_id=DISK, size=SIZE, **kw)


async def test_full_backup_reads_only_data_and_stores_each_chunk_once(store):
    img = mixed_image()
    seen: list[Progress] = []
    b1 = str(uuid.uuid4())
    r = await do_backup(store, img, b1, progress=seen.append)
    # read: 2 x 512 KiB of random data, one cluster, one allocated-zero cluster
    assert r.bytes_read == 2 * 512 * KiB + 2 * CLUSTER
    assert sum(l for _, l in img.reads) == r.bytes_read
    assert len(img.reads) == 4  # each 2-chunk random run in one request, each cluster in one
    assert r.new_chunks == 3 and r.dedup_chunks == 2  # 2 random chunks + the 'x' chunk; second copy dedups
    assert r.bytes_zeroed == SIZE - 5 * CS - CS  # everything else (incl. the allocated-zero slot read)
    assert seen and seen[-1].bytes_done == SIZE == seen[-1].bytes_total
    await store.publish_backup(VM, b1, [r.disk])
    reader = await store.open_disk(VM, b1, DISK)
    assert await reader.sha256() == sha(img.data)


async def test_incremental_reads_dirty_slots_only_and_writes_only_new_chunks(store):
    img = mixed_image()
    b1, b2 = str(uuid.uuid4()), str(uuid.uuid4())
    await store.publish_backup(VM, b1, [(await do_backup(store, img, b1)).disk])
    img.reads.clear()
    img.guest_write(7 * MiB + CLUSTER, os.urandom(CLUSTER))  # dirty: one slot, data
    img.guest_write(2 * MiB, os.urandom(4 * KiB))  # one slot that was a dedup copy
    r = await do_backup(store, img, b2, parent_backup_id=b1, incremental=True)
    assert r.incremental
    # only the dirty clusters: the rest of the slot at 2 MiB comes from the parent's chunk
    assert sorted(img.reads) == sorted([(2 * MiB, CLUSTER), (7 * MiB + CLUSTER, CLUSTER)])
    assert r.bytes_read == 2 * CLUSTER and r.bytes_from_parent == CS - CLUSTER
    assert r.bytes_unchanged == SIZE - 2 * CS
    assert r.new_chunks == 2
    await store.publish_backup(VM, b2, [r.disk], parent_id=b1)
    assert await (await store.open_disk(VM, b2, DISK)).sha256() == sha(img.data)


async def test_incremental_rereads_an_unchanged_slot_whose_chunk_was_set_aside(store):
    """A chunk the parent references was found damaged (set aside as .bad): the
    incremental reads that slot again although it is not dirty, and rewrites it."""
    img = mixed_image()
    b1, b2 = str(uuid.uuid4()), str(uuid.uuid4())
    await store.publish_backup(VM, b1, [(await do_backup(store, img, b1)).disk])
    index = await store.read_index(VM, b1, DISK)
    damaged = index.get(1)  # the second random chunk (offset CS)
    assert await store.chunks.target.exists(f"chunks/{damaged.hex()[:2]}/{damaged.hex()[2:4]}/{damaged.hex()}")
    await store.chunks.target.write_file(f"chunks/{damaged.hex()[:2]}/{damaged.hex()[2:4]}/{damaged.hex()}", b"rot")
    assert not (await store.verify(VM, b1)).ok  # sets it aside
    img.reads.clear()
    img.guest_write(7 * MiB, os.urandom(CLUSTER))  # the only dirty slot
    r = await do_backup(store, img, b2, parent_backup_id=b1, incremental=True)
    assert r.reread_offsets == [CS, 2 * MiB + CS]  # every slot using it (the copy at 2 MiB too)
    assert sorted(img.reads) == sorted([(7 * MiB, CLUSTER), (CS, CS), (2 * MiB + CS, CS)])
    await store.publish_backup(VM, b2, [r.disk], parent_id=b1)
    assert await (await store.open_disk(VM, b2, DISK)).sha256() == sha(img.data)
    assert (await store.verify(VM, b1)).ok  # healed


async def test_incremental_without_parent_is_refused(store):
    with pytest.raises(InvalidRequest):
        await do_backup(store, mixed_image(), str(uuid.uuid4()), incremental=True)


async def test_rerun_after_interruption_sends_no_chunk_twice(store):
    img = mixed_image()
    for i in range(8):  # many distinct chunks
        img.guest_write(3 * MiB + i * CS // 2, os.urandom(CS // 2))
    ref = FakeImage(SIZE)
    ref.data[:], ref.allocated, ref.dirty = img.data, list(img.allocated), list(img.dirty)
    b = str(uuid.uuid4())
    img.fail_after_reads = 4
    with pytest.raises(ImageioUnavailable):
        await do_backup(store, img, b, requests=1)
    first = sum(1 for _ in (store.target.root / "chunks").rglob("*") if _.is_file())
    img.fail_after_reads = None
    img.reads.clear()
    r = await do_backup(store, img, b)
    # what the first run stored is neither sent nor read again: the interrupted run left a
    # partial index that the rerun adopts (imageio_ext/copy/resume.py)
    assert first > 0 and r.bytes_read == sum(l for _, l in img.reads)
    assert r.adopted_chunks + r.dedup_chunks >= first and r.adopted_chunks > 0
    assert r.bytes_adopted == r.adopted_chunks * CS  # whole slots of this disk
    # the union of both runs wrote each distinct chunk exactly once
    total_files = sum(1 for _ in (store.target.root / "chunks").rglob("*") if _.is_file())
    assert first + r.new_chunks == total_files
    await store.publish_backup(VM, b, [r.disk])
    assert await (await store.open_disk(VM, b, DISK)).sha256() == sha(img.data)
    # and a rerun once published is idempotent: nothing read, same index
    again = await do_backup(store, img, b)
    assert again.already_published and again.index_sha256 == r.index_sha256 and again.bytes_read == 0
    # the rerun read at least the first run's chunks less than a whole backup reads
    whole = await do_backup(store, ref, str(uuid.uuid4()))
    assert 0 < r.bytes_read <= whole.bytes_read - first * CS, (r.bytes_read, whole.bytes_read, first)


async def test_restore_puts_data_patches_zeros_and_flushes(store):
    img = mixed_image()
    b = str(uuid.uuid4())
    await store.publish_backup(VM, b, [(await do_backup(store, img, b)).disk])
    target = FakeImage(SIZE)
    target.data[:] = os.urandom(SIZE)  # garbage that must be overwritten or zeroed
    r = await restore_disk(store, target, vm_id=VM, backup_id=b, disk_id=DISK)
    assert target.data == img.data
    assert r.bytes_written == sum(l for _, l in target.writes) == 5 * CS  # zero chunks never sent
    assert sum(l for _, l in target.zeros) == SIZE - 5 * CS == r.bytes_zeroed
    assert target.flushes == 1


async def test_restore_refuses_corrupted_chunk(store):
    img = mixed_image()
    b = str(uuid.uuid4())
    await store.publish_backup(VM, b, [(await do_backup(store, img, b)).disk])
    victim = next(p for p in (store.target.root / "chunks").rglob("*") if p.is_file())
    import zstandard
    victim.write_bytes(zstandard.ZstdCompressor().compress(b"evil" * 1000))
    target = FakeImage(SIZE)
    with pytest.raises(CorruptedBackup, match=victim.name):
        await restore_disk(store, target, vm_id=VM, backup_id=b, disk_id=DISK)
    assert target.flushes == 0


async def test_restore_into_smaller_disk_is_refused(store):
    img = mixed_image()
    b = str(uuid.uuid4())
    await store.publish_backup(VM, b, [(await do_backup(store, img, b)).disk])
    with pytest.raises(InvalidRequest):
        await restore_disk(store, FakeImage(SIZE), vm_id=VM, backup_id=b, disk_id=DISK, size=SIZE - CS)


async def test_cancel_stops_reading_and_leaves_backup_unpublished(store):
    img = mixed_image()
    for i in range(16):
        img.guest_write(i * CS // 2, os.urandom(1024))
    img.read_delay = 0.05
    b = str(uuid.uuid4())
    task = asyncio.create_task(do_backup(store, img, b, requests=2))
    while len(img.reads) < 2:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    n = len(img.reads)
    await asyncio.sleep(0.2)
    assert len(img.reads) == n < 16  # nothing keeps reading after cancel
    assert await store.list_backups() == []
