"""Behaviour of the store, run against every Target implementation.

Subclasses provide one fixture, ``store_url``: a fresh, empty location
(a tmp_path for PathTarget in tests/unit/store, an nfs:// URL on a real
nfs-ganesha in tests/integration/store). Every check goes through the
store's own Target API so the same test means the same thing on both.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import subprocess
import uuid

import pytest
import zstandard

from imageio_ext.store import (
    ZERO_DIGEST,
    BackupExists,
    BackupNotFound,
    ChunkCorrupted,
    ChunkMissing,
    FixedIndex,
    IncompatibleStore,
    IncompleteDisk,
    IndexCorrupted,
    InvalidId,
    InvalidPath,
    InvalidRange,
    ManifestCorrupted,
    Store,
    StoreNotInitialized,
)

CS = 64 * 1024  # small chunks keep the suite fast


def uid() -> str:
    return str(uuid.uuid4())


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_disk(seed: int, chunks: float, zero_slots=(), text_slots=()) -> bytes:
    """Random chunks, with some all-zero and some compressible ones."""
    rnd = random.Random(seed)
    size = int(chunks * CS)
    out = bytearray(rnd.randbytes(size))
    for i in zero_slots:
        out[i * CS : (i + 1) * CS] = bytes(len(out[i * CS : (i + 1) * CS]))
    for i in text_slots:
        n = len(out[i * CS : (i + 1) * CS])
        out[i * CS : (i + 1) * CS] = (b"ovault text line %d\n" % i * n)[:n]
    return bytes(out)


def slots(size: int) -> int:
    return (size + CS - 1) // CS


async def write_disk(bw, disk_id: str, content: bytes, only=None):
    """Feed a DiskWriter: zero chunks as write_zero, data in 2-chunk pieces."""
    dw = await bw.add_disk(disk_id, len(content))
    todo = range(slots(len(content))) if only is None else sorted(only)
    run: list[int] = []

    async def flush():
        if run:
            off = run[0] * CS
            end = min((run[-1] + 1) * CS, len(content))
            await dw.write(off, content[off:end])
            run.clear()

    for i in todo:
        piece = content[i * CS : (i + 1) * CS]
        if piece == bytes(len(piece)):
            await flush()
            await dw.write_zero(i * CS, len(piece))
            continue
        if run and (run[-1] != i - 1 or len(run) == 2):
            await flush()
        run.append(i)
    await flush()
    return dw


async def backup(store, vm, bid, disks: dict, parent=None, only=None, meta=None):
    bw = await store.begin_backup(vm, bid, parent_id=parent)
    for disk_id, content in disks.items():
        dw = await write_disk(bw, disk_id, content, None if only is None else only.get(disk_id, ()))
        await dw.commit()
    return await bw.publish(meta or {"note": "test"})


async def read_all(store, vm, bid, disk) -> bytes:
    r = await store.open_disk(vm, bid, disk)
    return await r.read(0, r.size)


async def chunk_names(store) -> set[str]:
    out = set()
    for a in await store.target.scandir("chunks"):
        for b in await store.target.scandir(f"chunks/{a.name}"):
            for c in await store.target.scandir(f"chunks/{a.name}/{b.name}"):
                out.add(c.name)
    return out


class StoreBehaviour:
    @pytest.fixture
    async def store(self, store_url):
        s = await Store.open(store_url, create=True, chunk_size=CS, version=1)  # the version-1 format (test_store_v2 covers 2)
        yield s
        await s.close()

    # -- store config --------------------------------------------------------

    async def test_init_writes_config_and_refuses_mismatch(self, store, store_url):
        doc = json.loads(await store.target.read_file("ovault-store.json"))
        assert doc["format"] == "ovault-store" and doc["version"] == 1
        assert doc["chunk_size"] == CS and doc["digest"] == "sha256" and doc["compression"] == "zstd"
        assert doc["created"].endswith("Z")
        # Re-init with the same parameters is accepted, another chunk size is not.
        again = await Store.open(store_url, create=True, chunk_size=CS)
        assert again.config.created == doc["created"]
        await again.close()
        with pytest.raises(IncompatibleStore, match="chunk_size"):
            await Store.open(store_url, create=True, chunk_size=2 * CS)
        doc["version"] = 2
        await store.target.write_file("ovault-store.json", json.dumps(doc).encode())
        with pytest.raises(IncompatibleStore, match="version 2"):
            await Store.open(store_url)
        await store.target.remove("ovault-store.json")
        with pytest.raises(StoreNotInitialized):
            await Store.open(store_url)

    async def test_space_of_the_target_file_system(self, store):
        """statvfs of a directory, FSSTAT of an NFS export: what the capacity gauges show."""
        sp = await store.target.space()
        assert sp is not None and sp.capacity > 0
        assert 0 <= sp.used <= sp.capacity and 0 < sp.free <= sp.capacity
        # the export of the lab's NFS server is a directory of this machine: the same file system
        root = getattr(store.target, "root", None)
        if root is not None:
            import os
            st = os.statvfs(root)
            assert sp.capacity == st.f_blocks * st.f_frsize

    # -- chunks --------------------------------------------------------------

    async def test_chunk_roundtrip_dedup_and_zero(self, store):
        data = random.Random(1).randbytes(CS)
        d1 = await store.put_chunk(data)
        d2 = await store.put_chunk(data)
        assert d1 == d2 == hashlib.sha256(data).digest()
        assert await store.get_chunk(d1) == data
        assert await store.put_chunk(bytes(CS)) == ZERO_DIGEST
        assert await store.get_chunk(ZERO_DIGEST, 100) == bytes(100)
        assert await chunk_names(store) == {d1.hex()}
        # The file on the target is one zstd frame of the plaintext.
        blob = await store.target.read_file(f"chunks/{d1.hex()[:2]}/{d1.hex()[2:4]}/{d1.hex()}")
        assert zstandard.ZstdDecompressor().decompress(blob) == data

    # -- full backups --------------------------------------------------------

    async def test_full_backup_roundtrip(self, store):
        vm, bid, disk = uid(), uid(), uid()
        content = make_disk(2, 6.5, zero_slots=(1, 2), text_slots=(4,))
        info = await backup(store, vm, bid, {disk: content}, meta={"ovf": "<ovf/>", "consistency": "crash"})
        assert info.disks[0].chunks == 7 and info.disks[0].zero_chunks == 2
        assert info.disks[0].new_chunks == 5
        listed = await store.list_backups()
        assert [(b.vm_id, b.backup_id) for b in listed] == [(vm, bid)]
        assert listed[0].meta == {"ovf": "<ovf/>", "consistency": "crash"}
        assert listed[0].parent_id is None
        r = await store.open_disk(vm, bid, disk)
        assert r.size == len(content)
        assert await r.sha256() == sha(content)
        # Unaligned reads spanning chunks, and the short tail.
        for off, ln in [(0, 1), (CS - 7, 20), (3 * CS + 5, 2 * CS), (len(content) - 10, 10)]:
            assert await r.read(off, ln) == content[off : off + ln]
        assert [e.zero for e in r.extents()] == [False, True, False]
        # The index itself: zero slots are the zero digest, others the SHA-256.
        index = await store.read_index(vm, bid, disk)
        for i in range(7):
            piece = content[i * CS : (i + 1) * CS]
            want = ZERO_DIGEST if i in (1, 2) else hashlib.sha256(piece).digest()
            assert index.get(i) == want

    async def test_dedup_across_disks_and_vms(self, store):
        base = make_disk(3, 8)
        vm1, vm2 = uid(), uid()
        d1, d2, d3 = uid(), uid(), uid()
        a = await backup(store, vm1, uid(), {d1: base, d2: base})
        b = await backup(store, vm2, uid(), {d3: base})
        assert a.disks[0].new_chunks + a.disks[1].new_chunks == 8
        assert b.disks[0].new_chunks == 0
        st = await store.stats()
        assert st.chunks == 8 and st.unique_referenced == 8
        assert st.logical_bytes == 3 * len(base)
        assert st.dedup_ratio > 2.9  # random data: the ratio is all dedup
        assert len(await chunk_names(store)) == 8

    async def test_incomplete_and_unaligned_writes_refused(self, store):
        bw = await store.begin_backup(uid(), uid())
        dw = await bw.add_disk(uid(), 3 * CS + 100)
        with pytest.raises(InvalidRange, match="offset"):
            await dw.write(100, b"x" * CS)
        with pytest.raises(InvalidRange, match="end"):
            await dw.write(0, b"x" * (CS + 1))
        with pytest.raises(InvalidRange, match="outside"):
            await dw.write_zero(3 * CS, CS)
        await dw.write(0, b"y" * CS)
        await dw.write(3 * CS, b"z" * 100)  # the short tail ends at the disk end
        with pytest.raises(IncompleteDisk) as ei:
            await dw.commit()
        assert ei.value.missing == 2 and ei.value.first_offset == CS
        await dw.write_zero(CS, 2 * CS)
        info = await dw.commit()
        assert info.chunks == 4 and info.zero_chunks == 2
        await bw.publish()

    # -- incrementals --------------------------------------------------------

    async def test_incremental_copies_parent_and_replaces_changed(self, store):
        vm, disk = uid(), uid()
        full_id, inc_id = uid(), uid()
        v1 = make_disk(4, 10, zero_slots=(7,))
        await backup(store, vm, full_id, {disk: v1})
        v2 = bytearray(v1)
        v2[3 * CS : 4 * CS] = random.Random(5).randbytes(CS)
        v2[7 * CS : 7 * CS + 10] = b"now data.."
        v2 = bytes(v2)
        inc = await backup(store, vm, inc_id, {disk: v2}, parent=full_id, only={disk: {3, 7}})
        assert inc.parent_id == full_id
        assert inc.disks[0].new_chunks == 2
        p = await store.read_index(vm, full_id, disk)
        c = await store.read_index(vm, inc_id, disk)
        changed = [i for i in range(p.count) if p.get(i) != c.get(i)]
        assert changed == [3, 7]
        assert c.get(3) == hashlib.sha256(v2[3 * CS : 4 * CS]).digest()
        assert await read_all(store, vm, inc_id, disk) == v2
        assert await read_all(store, vm, full_id, disk) == v1
        # Every index is complete: deleting the parent breaks nothing.
        await store.delete_backup(vm, full_id)
        await asyncio.sleep(0.05)
        rep = await store.gc(grace_seconds=0)
        assert rep.chunks_removed == 1  # old slot 3: the only chunk just the parent used
        assert await read_all(store, vm, inc_id, disk) == v2
        assert (await store.verify(vm, inc_id)).ok

    async def test_incremental_of_grown_disk(self, store):
        vm, disk = uid(), uid()
        full_id = uid()
        v1 = make_disk(6, 2.5)
        await backup(store, vm, full_id, {disk: v1})
        v2 = v1[: 2 * CS] + random.Random(7).randbytes(CS) + bytes(CS)  # 4 chunks
        bw = await store.begin_backup(vm, uid(), parent_id=full_id)
        dw = await bw.add_disk(disk, len(v2))
        with pytest.raises(IncompleteDisk) as ei:
            await dw.commit()
        assert ei.value.missing == 1 and ei.value.first_offset == 2 * CS  # the old short tail
        await dw.write(2 * CS, v2[2 * CS : 3 * CS])
        await dw.commit()
        info = await bw.publish()
        assert await read_all(store, vm, info.backup_id, disk) == v2

    async def test_commit_reports_vanished_parent_chunks(self, store):
        vm, disk = uid(), uid()
        full_id = uid()
        v1 = make_disk(8, 4)
        await backup(store, vm, full_id, {disk: v1})
        await asyncio.sleep(1.3)
        bw = await store.begin_backup(vm, uid(), parent_id=full_id)
        dw = await bw.add_disk(disk, len(v1))
        await dw.write(0, v1[:CS])  # re-sends chunk 0 only (a dedup hit: touched)
        # Meanwhile the parent is deleted and gc runs.
        await store.delete_backup(vm, full_id)
        rep = await store.gc(grace_seconds=1.0)
        assert rep.chunks_removed == 3 and rep.chunks_kept_young == 1
        with pytest.raises(ChunkMissing) as ei:
            await dw.commit()
        assert ei.value.offsets == [CS, 2 * CS, 3 * CS]
        with pytest.raises(IncompleteDisk) as ei2:  # those slots must be re-sent
            await dw.commit()
        assert ei2.value.missing == 3 and ei2.value.first_offset == CS
        await dw.write(CS, v1[CS:])
        await dw.commit()
        info = await bw.publish()
        assert await read_all(store, vm, info.backup_id, disk) == v1

    async def test_commit_leaves_inherited_chunks_alone(self, store):
        """Commit touches nothing it inherited (the parent's index protects it);
        the chunks survive the parent's deletion after commit (the committed index does)."""
        vm, disk = uid(), uid()
        full_id = uid()
        v1 = make_disk(20, 3)
        await backup(store, vm, full_id, {disk: v1})
        paths = [
            f"chunks/{h[:2]}/{h[2:4]}/{h}"
            for h in (hashlib.sha256(v1[i * CS : (i + 1) * CS]).hexdigest() for i in range(3))
        ]
        before = [(await store.target.stat(p)).mtime for p in paths]
        await asyncio.sleep(1.3)
        bw = await store.begin_backup(vm, uid(), parent_id=full_id)
        dw = await bw.add_disk(disk, len(v1))
        await dw.commit()  # nothing changed
        after = [(await store.target.stat(p)).mtime for p in paths]
        assert after == before
        await store.delete_backup(vm, full_id)
        rep = await store.gc(grace_seconds=1.0)
        assert rep.chunks_removed == 0 and rep.referenced == 3
        info = await bw.publish()
        assert await read_all(store, vm, info.backup_id, disk) == v1

    # -- damage ----------------------------------------------------------------

    async def test_corrupted_and_missing_chunks_detected(self, store):
        vm, bid, d1, d2 = uid(), uid(), uid(), uid()
        content = make_disk(9, 4)
        await backup(store, vm, bid, {d1: content, d2: content[: 2 * CS]})
        assert (await store.verify(vm, bid)).ok
        h0 = hashlib.sha256(content[:CS]).hexdigest()
        h1 = hashlib.sha256(content[CS : 2 * CS]).hexdigest()
        h2 = hashlib.sha256(content[2 * CS : 3 * CS]).hexdigest()
        path = lambda h: f"chunks/{h[:2]}/{h[2:4]}/{h}"  # noqa: E731
        # Valid zstd of other data; not zstd at all; gone.
        await store.target.write_file(path(h0), zstandard.ZstdCompressor().compress(b"evil" * 100))
        await store.target.write_file(path(h1), b"garbage")
        await store.target.remove(path(h2))
        rep = await store.verify(vm, bid)
        assert not rep.ok
        damaged = {d.digest: d for d in rep.damaged}
        assert set(damaged) == {h0, h1, h2}
        assert "SHA-256" in damaged[h0].reason
        assert "zstd" in damaged[h1].reason
        assert damaged[h2].reason == "missing"
        assert damaged[h0].disk_offsets == {d1: [0], d2: [0]}
        assert rep.chunks_checked == 1  # only chunk 3 is intact
        r = await store.open_disk(vm, bid, d1)
        with pytest.raises(ChunkCorrupted, match=h0):
            await r.read(0, 10)
        with pytest.raises(ChunkMissing, match=h2):
            await r.read(2 * CS, 10)
        assert await r.read(3 * CS, CS) == content[3 * CS :]

    async def test_fidx_checksum_mismatch_detected(self, store):
        vm, bid, disk = uid(), uid(), uid()
        content = make_disk(10, 3)
        await backup(store, vm, bid, {disk: content})
        path = f"vms/{vm}/{bid}/{disk}.fidx"
        raw = bytearray(await store.target.read_file(path))
        raw[4096 + 5] ^= 0xFF  # one bit of digest 0
        await store.target.write_file(path, bytes(raw))
        with pytest.raises(IndexCorrupted, match="checksum over the digests"):
            await store.read_index(vm, bid, disk)
        with pytest.raises(IndexCorrupted, match="SHA-256 differs from the one recorded"):
            await store.open_disk(vm, bid, disk)
        rep = await store.verify(vm, bid)
        assert not rep.ok and disk in rep.bad_indexes
        # gc must refuse to sweep when it cannot read what is referenced.
        await store.put_chunk(b"orphan" * 100)
        await asyncio.sleep(0.05)
        with pytest.raises(IndexCorrupted):
            await store.gc(grace_seconds=0)
        assert hashlib.sha256(b"orphan" * 100).hexdigest() in await chunk_names(store)

    # -- gc and crashes ----------------------------------------------------------

    async def test_gc_keeps_referenced_and_young_removes_old_orphans(self, store):
        old = random.Random(11).randbytes(CS)
        d_old = await store.put_chunk(old)
        vm, bid, disk = uid(), uid(), uid()
        content = make_disk(12, 2)
        await backup(store, vm, bid, {disk: content})
        await asyncio.sleep(1.3)
        d_young = await store.put_chunk(random.Random(13).randbytes(CS))
        rep = await store.gc(grace_seconds=1.0)
        names = await chunk_names(store)
        assert d_old.hex() not in names
        assert d_young.hex() in names
        for i in range(2):
            assert hashlib.sha256(content[i * CS : (i + 1) * CS]).hexdigest() in names
        assert rep.chunks_removed == 1 and rep.chunks_kept_young == 1 and rep.referenced == 2
        assert rep.bytes_removed > CS  # random data does not compress
        assert await read_all(store, vm, bid, disk) == content

    async def test_dedup_touch_protects_old_chunk(self, store):
        data = random.Random(14).randbytes(CS)
        d = await store.put_chunk(data)
        await asyncio.sleep(1.3)
        assert await store.put_chunk(data) == d  # dedup hit refreshes its age
        rep = await store.gc(grace_seconds=1.0)
        assert rep.chunks_removed == 0 and d.hex() in await chunk_names(store)

    async def test_abandoned_backup_invisible_and_collected(self, store):
        vm, bid, disk = uid(), uid(), uid()
        content = make_disk(15, 3)
        bw = await store.begin_backup(vm, bid)
        dw = await write_disk(bw, disk, content)
        await dw.commit()  # the index is on the target, the manifest is not
        # ... and the writer "crashes" here: no publish, no abort.
        assert await store.list_backups() == []
        with pytest.raises(BackupNotFound):
            await store.get_backup(vm, bid)
        rep = await store.gc(grace_seconds=3600)
        assert rep.chunks_removed == 0 and rep.orphans_removed == []
        assert len(await chunk_names(store)) == 3
        await asyncio.sleep(1.3)
        rep = await store.gc(grace_seconds=1.0)
        assert rep.orphans_removed == [f"{vm}/{bid}"]
        assert rep.chunks_removed == 3
        assert await chunk_names(store) == set()
        assert [e.name for e in await store.target.scandir("vms")] == []

    async def test_abort_and_delete(self, store):
        vm, bid, disk = uid(), uid(), uid()
        async with await store.begin_backup(vm, bid) as bw:
            await write_disk(bw, disk, make_disk(16, 2))
            # leaving the block without publish aborts
        assert not await store.target.exists(f"vms/{vm}/{bid}")
        content = make_disk(17, 2)
        await backup(store, vm, bid, {disk: content})
        with pytest.raises(BackupExists):
            await store.begin_backup(vm, bid)
        await store.delete_backup(vm, bid)
        assert await store.list_backups() == []
        with pytest.raises(BackupNotFound):
            await store.delete_backup(vm, bid)
        with pytest.raises(BackupNotFound):
            await store.open_disk(vm, bid, disk)

    # -- ids and paths -------------------------------------------------------------

    async def test_path_traversal_ids_rejected(self, store):
        good = uid()
        for bad in ["../../etc", "a/b", "", "..", good + "/..", good.upper() + "x", None, 5]:
            with pytest.raises(InvalidId):
                await store.begin_backup(bad, good)
            with pytest.raises(InvalidId):
                await store.get_backup(good, bad)
        bw = await store.begin_backup(good, uid())
        with pytest.raises(InvalidId):
            await bw.add_disk("../x", CS)
        await bw.abort()
        with pytest.raises(InvalidPath):
            await store.target.read_file("../outside")
        with pytest.raises(InvalidPath):
            await store.target.write_file("/etc/passwd", b"x")
        with pytest.raises(InvalidPath):
            await store.target.stat("chunks/../../x")
        # Upper-case UUIDs are normalised, not rejected.
        info = await backup(store, good.upper(), good.upper(), {good: make_disk(18, 1)})
        assert info.vm_id == good and info.backup_id == good
        # A manifest moved to another backup's directory does not pass as it.
        other = uid()
        data = await store.target.read_file(f"vms/{good}/{good}/manifest.json")
        await store.target.write_file(f"vms/{good}/{other}/manifest.json", data)
        with pytest.raises(ManifestCorrupted, match="do not match"):
            await store.get_backup(good, other)
        assert [b.backup_id for b in await store.list_backups()] == [good]

    # -- export ----------------------------------------------------------------------

    async def test_export_raw(self, store, tmp_path):
        tmp_path = tmp_path / "out"
        tmp_path.mkdir()
        vm, bid, disk = uid(), uid(), uid()
        content = make_disk(19, 5.5, zero_slots=(2,), text_slots=(3,))
        await backup(store, vm, bid, {disk: content})
        raw = await store.export_disk(vm, bid, disk, tmp_path / "d.raw", "raw")
        assert raw.sha256 == sha(content)
        assert sha((tmp_path / "d.raw").read_bytes()) == sha(content)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["d.raw"]  # no temp left

    @pytest.mark.integration  # runs qemu-img
    async def test_export_raw_and_qcow2(self, store, tmp_path):
        tmp_path = tmp_path / "out"
        tmp_path.mkdir()
        vm, bid, disk = uid(), uid(), uid()
        content = make_disk(19, 5.5, zero_slots=(2,), text_slots=(3,))
        await backup(store, vm, bid, {disk: content})
        raw = await store.export_disk(vm, bid, disk, tmp_path / "d.raw", "raw")
        assert raw.sha256 == sha(content)
        assert sha((tmp_path / "d.raw").read_bytes()) == sha(content)
        q = await store.export_disk(vm, bid, disk, tmp_path / "d.qcow2", "qcow2")
        assert q.sha256 == sha(content)
        info = json.loads(
            subprocess.run(["qemu-img", "info", "--output=json", str(tmp_path / "d.qcow2")],
                           check=True, capture_output=True).stdout
        )
        assert info["format"] == "qcow2" and info["virtual-size"] == len(content)
        subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(tmp_path / "d.qcow2"),
                        str(tmp_path / "back.raw")], check=True)
        assert sha((tmp_path / "back.raw").read_bytes()) == sha(content)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["back.raw", "d.qcow2", "d.raw"]  # no temp left


# Re-exported for modules that only need the helpers.
__all__ = ["StoreBehaviour", "CS", "uid", "make_disk", "backup", "FixedIndex"]
