"""A store that heals: damaged chunks are set aside on the target and rewritten.

Run against every Target implementation like `store_suite` (a subclass
provides ``store_url``). Damage is made the way an operator meets it: one
byte of a chunk file flipped on the target.
"""

from __future__ import annotations

import asyncio

import pytest

from imageio_ext.store import ChunkCorrupted, ChunkMissing, Store
from tests.unit.store.store_suite import CS, backup, chunk_names, make_disk, read_all, sha, uid, write_disk


def cpath(h: str) -> str:
    return f"chunks/{h[:2]}/{h[2:4]}/{h}"


async def flip_byte(store: Store, h: str) -> None:
    raw = bytearray(await store.target.read_file(cpath(h)))
    raw[len(raw) // 2] ^= 0x01
    await store.target.write_file(cpath(h), bytes(raw))


class StoreHealBehaviour:
    @pytest.fixture
    async def store(self, store_url):
        s = await Store.open(store_url, create=True, chunk_size=CS, version=1)  # the version-1 format (test_store_v2 covers 2)
        yield s
        await s.close()

    async def test_verify_sets_damaged_chunk_aside_and_names_ranges(self, store):
        vm, bid, d1, d2 = uid(), uid(), uid(), uid()
        content = make_disk(31, 3)
        # d2 holds chunk 1 of d1 at its offset 0 (shared digest).
        await backup(store, vm, bid, {d1: content, d2: content[CS : 2 * CS]})
        h1 = sha(content[CS : 2 * CS])
        await flip_byte(store, h1)
        rep = await store.verify(vm, bid)
        assert not rep.ok and [d.digest for d in rep.damaged] == [h1]
        dc = rep.damaged[0]
        assert dc.ranges() == sorted([(d1, CS, CS), (d2, 0, CS)])
        assert "SHA-256" in dc.reason
        assert dc.set_aside == [cpath(h1) + ".0.bad"]
        assert rep.to_dict()["damaged"][0]["ranges"][0]["length"] == CS
        names = await chunk_names(store)
        assert h1 not in names and f"{h1}.0.bad" in names
        # Seen again: still reported, as set aside; a reader says so too.
        rep2 = await store.verify(vm, bid)
        assert [d.digest for d in rep2.damaged] == [h1] and "set aside" in rep2.damaged[0].reason
        r = await store.open_disk(vm, bid, d1)
        with pytest.raises(ChunkCorrupted, match="set aside"):
            await r.read(CS, 10)
        assert await r.read(0, CS) == content[:CS]

    async def test_restore_read_sets_damaged_chunk_aside(self, store):
        vm, bid, disk = uid(), uid(), uid()
        content = make_disk(32, 2)
        await backup(store, vm, bid, {disk: content})
        h0 = sha(content[:CS])
        await flip_byte(store, h0)
        r = await store.open_disk(vm, bid, disk)
        with pytest.raises(ChunkCorrupted, match=h0):
            await r.read(0, CS)
        assert f"{h0}.0.bad" in await chunk_names(store)
        # A second damaged copy (rewritten, damaged again) gets the next number.
        await store.put_chunk(content[:CS])
        await flip_byte(store, h0)
        with pytest.raises(ChunkCorrupted):
            await r.read(0, CS)
        assert {f"{h0}.0.bad", f"{h0}.1.bad"} <= await chunk_names(store)

    async def test_mark_bad_puts_an_intact_chunk_back(self, store):
        d = await store.put_chunk(make_disk(33, 1))
        assert await store.chunks.mark_bad(d) is None
        assert await chunk_names(store) == {d.hex()}

    async def test_full_backup_rewrites_damaged_chunk_and_heals_older(self, store):
        vm, disk = uid(), uid()
        content = make_disk(34, 3)
        old = await backup(store, vm, uid(), {disk: content})
        h2 = sha(content[2 * CS :])
        await flip_byte(store, h2)
        assert not (await store.verify(vm, old.backup_id)).ok
        bw = await store.begin_backup(vm, uid())
        dw = await write_disk(bw, disk, content)
        await dw.commit()
        new = await bw.publish()
        assert dw.new_chunks == 1 and dw.dedup_chunks == 2  # only the damaged one is written again
        assert (await store.verify(vm, new.backup_id)).ok
        assert (await store.verify(vm, old.backup_id)).ok  # healed: it shares the digest
        assert await read_all(store, vm, old.backup_id, disk) == content
        rep = await store.gc(grace_seconds=3600)
        assert rep.bad_removed == 1 and rep.chunks_removed == 0
        assert f"{h2}.0.bad" not in await chunk_names(store)

    async def test_incremental_rereads_unchanged_damaged_range(self, store):
        """The damaged chunk is inherited from the parent: commit names its range,
        the caller re-reads it from the disk, the chunk is written again."""
        vm, disk = uid(), uid()
        content = make_disk(35, 4)
        full = await backup(store, vm, uid(), {disk: content})
        h1 = sha(content[CS : 2 * CS])
        await flip_byte(store, h1)
        await store.verify(vm, full.backup_id)
        bw = await store.begin_backup(vm, uid(), parent_id=full.backup_id)
        dw = await bw.add_disk(disk, len(content))
        changed = bytearray(content)
        changed[3 * CS] ^= 0xFF  # slot 3 changed, slot 1 did not
        await dw.write(3 * CS, bytes(changed[3 * CS :]))
        with pytest.raises(ChunkMissing) as ei:
            await dw.commit()
        assert ei.value.offsets == [CS]
        await dw.write(CS, bytes(changed[CS : 2 * CS]))
        await dw.commit()
        inc = await bw.publish()
        assert await read_all(store, vm, inc.backup_id, disk) == bytes(changed)
        assert (await store.verify(vm, inc.backup_id)).ok
        assert (await store.verify(vm, full.backup_id)).ok
        assert await read_all(store, vm, full.backup_id, disk) == content

    async def test_changed_range_never_references_damaged_chunk(self, store):
        """The range changed since: the new backup takes the new content; the
        old backup stays damaged (nothing can rewrite its chunk)."""
        vm, disk = uid(), uid()
        content = make_disk(36, 2)
        full = await backup(store, vm, uid(), {disk: content})
        h0 = sha(content[:CS])
        await flip_byte(store, h0)
        await store.verify(vm, full.backup_id)
        bw = await store.begin_backup(vm, uid(), parent_id=full.backup_id)
        dw = await bw.add_disk(disk, len(content))
        with pytest.raises(ChunkMissing) as ei:
            await dw.commit()
        assert ei.value.offsets == [0]
        now = make_disk(37, 1)
        await dw.write(0, now)
        await dw.commit()
        inc = await bw.publish()
        index = await store.read_index(vm, inc.backup_id, disk)
        assert bytes.fromhex(h0) not in index.referenced()
        assert await read_all(store, vm, inc.backup_id, disk) == now + content[CS:]
        assert (await store.verify(vm, inc.backup_id)).ok
        rep = await store.verify(vm, full.backup_id)
        assert [d.digest for d in rep.damaged] == [h0]
        g = await store.gc(grace_seconds=3600)
        assert g.bad_kept == 1 and f"{h0}.0.bad" in await chunk_names(store)

    async def test_concurrent_verifies_set_aside_once(self, store):
        vm, bid, disk = uid(), uid(), uid()
        content = make_disk(38, 1)
        await backup(store, vm, bid, {disk: content})
        h0 = sha(content)
        await flip_byte(store, h0)
        reps = await asyncio.gather(*(store.verify(vm, bid) for _ in range(3)))
        assert all(not r.ok for r in reps)
        assert {n for n in await chunk_names(store) if n.startswith(h0)} == {f"{h0}.0.bad"}
