"""Sub-chunk incrementals: only dirty ranges are read, the rest of each touched
chunk comes from the parent's chunk in the store; restores are byte-identical."""
from __future__ import annotations

import hashlib
import os
import uuid

import pytest

from imageio_ext.copy import backup_disk, restore_disk
from imageio_ext.copy.plan import READ_GAP
from imageio_ext.store import Store

from .fakes import CLUSTER, FakeImage

KiB, MiB = 1 << 10, 1 << 20
CS = 256 * KiB
SIZE = 4 * MiB + 3 * CLUSTER  # not a multiple of the chunk size: a short last slot


@pytest.fixture
async def store(tmp_path):
    (tmp_path / "target").mkdir()
    s = await Store.open(tmp_path / "target", create=True, chunk_size=CS)
    yield s
    await s.close()


def base_image() -> FakeImage:
    img = FakeImage(SIZE)
    img.guest_write(0, os.urandom(SIZE))  # every slot holds data (the parent chunks are needed)
    img.clear_dirty()
    return img


async def backup(store, img, vm, disk, parent=None):
    bid = str(uuid.uuid4())
    r = await backup_disk(store, img, vm_id=vm, backup_id=bid, disk_id=disk, size=SIZE,
                          parent_backup_id=parent, incremental=parent is not None, read_size=4 * MiB)
    await store.publish_backup(vm, bid, [r.disk], parent_id=parent)
    return bid, r


async def restored(store, vm, bid, disk) -> bytes:
    out = FakeImage(SIZE)
    await restore_disk(store, out, vm_id=vm, backup_id=bid, disk_id=disk)
    return bytes(out.data)


WRITES = {
    "chunk edges": [(CS - CLUSTER, CLUSTER), (2 * CS, CLUSTER), (3 * CS - 4 * KiB, 4 * KiB)],
    "across chunks": [(CS - 2 * CLUSTER, 4 * CLUSTER), (2 * CS + CLUSTER, CS + CLUSTER)],
    "disk end": [(SIZE - CLUSTER, CLUSTER), (SIZE - 3 * CLUSTER, 512)],
    "zeroed ranges": [(CS + CLUSTER, 2 * CLUSTER, "zero"), (SIZE - 2 * CLUSTER, 2 * CLUSTER, "zero"),
                      (3 * CS, CLUSTER), (3 * CS + 2 * CLUSTER, CLUSTER, "zero")],
    "whole chunk": [(CS, CS)],
}


@pytest.mark.parametrize("case", list(WRITES))
async def test_sub_chunk_incremental_reads_only_dirty_clusters_and_restores_byte_identical(store, case):
    vm, disk = str(uuid.uuid4()), str(uuid.uuid4())
    img = base_image()
    b1, _ = await backup(store, img, vm, disk)
    img.reads.clear()
    dirty_clusters = set()
    for w in WRITES[case]:
        off, ln = w[0], w[1]
        if len(w) == 3:  # guest discards: the clusters read as zeros again (qemu reports them as zero)
            img.data[off:off + ln] = bytes(ln)
            for c in range(off // CLUSTER, (off + ln - 1) // CLUSTER + 1):
                img.allocated[c] = False
                img.dirty[c] = True
        else:
            img.guest_write(off, os.urandom(ln))
            dirty_clusters.update(range(off // CLUSTER, (off + ln - 1) // CLUSTER + 1))
    b2, r = await backup(store, img, vm, disk, parent=b1)
    assert r.incremental
    read = sum(ln for _, ln in img.reads)
    # Each read starts and ends in a dirty data cluster; clean data between two dirty
    # ranges is read only across a gap of at most READ_GAP (one request instead of two).
    for off, ln in img.reads:
        assert off // CLUSTER in dirty_clusters and (off + ln - 1) // CLUSTER in dirty_clusters, (off, ln)
        inside = range(off // CLUSTER, (off + ln - 1) // CLUSTER + 1)
        assert sum(1 for c in inside if c not in dirty_clusters) * CLUSTER <= READ_GAP * len(img.reads)
    dirty_bytes = sum(min(CLUSTER, SIZE - c * CLUSTER) for c in dirty_clusters)
    assert read == r.bytes_read <= dirty_bytes + READ_GAP * len(img.reads)
    assert await restored(store, vm, b2, disk) == bytes(img.data)
    assert await (await store.open_disk(vm, b2, disk)).sha256() == hashlib.sha256(img.data).hexdigest()


async def test_parent_chunk_damaged_falls_back_to_reading_the_whole_slot(store):
    vm, disk = str(uuid.uuid4()), str(uuid.uuid4())
    img = base_image()
    b1, _ = await backup(store, img, vm, disk)
    dg = (await store.read_index(vm, b1, disk)).get(1).hex()
    await store.chunks.target.write_file(f"chunks/{dg[:2]}/{dg[2:4]}/{dg}", b"rot")
    img.reads.clear()
    img.guest_write(CS + CLUSTER, os.urandom(CLUSTER))
    b2, r = await backup(store, img, vm, disk, parent=b1)
    # the dirty cluster was read while the parent chunk was fetched; that failed verification,
    # so the whole slot is read from the disk
    assert img.reads == [(CS + CLUSTER, CLUSTER), (CS, CS)]
    assert r.bytes_from_parent == 0
    assert await restored(store, vm, b2, disk) == bytes(img.data)


async def test_incremental_chain_of_sub_chunk_backups_restores_every_generation(store):
    vm, disk = str(uuid.uuid4()), str(uuid.uuid4())
    img = base_image()
    parent, _ = await backup(store, img, vm, disk)
    gens = [(parent, bytes(img.data))]
    for g in range(3):
        img.guest_write((g * 5 + 1) * CLUSTER, os.urandom(CLUSTER + 100))
        parent, r = await backup(store, img, vm, disk, parent=parent)
        assert r.bytes_from_parent > 0
        gens.append((parent, bytes(img.data)))
    for bid, data in gens:
        assert await restored(store, vm, bid, disk) == data
