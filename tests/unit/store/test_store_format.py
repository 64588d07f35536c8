"""Format-level and race details that need a local directory to provoke."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import struct
import time
import uuid

import pytest
import zstandard

from imageio_ext.store import (
    ZERO_DIGEST,
    ChunkCorrupted,
    FixedIndex,
    IndexCorrupted,
    InvalidId,
    InvalidPath,
    PathTarget,
    Store,
    open_target,
)
from imageio_ext.store.chunk import ChunkCodec
from imageio_ext.store.ids import check_digest_hex, check_uuid
from imageio_ext.store.nfs_target import NfsTarget, parse_nfs_url
from imageio_ext.store.target import check_rel
from tests.unit.store.store_suite import CS, backup, make_disk, uid


def test_fidx_layout_is_as_documented():
    idx = FixedIndex.empty(5 * CS + 1, CS)
    d = hashlib.sha256(b"a").digest()
    idx.set(2, d)
    raw = idx.encode()
    assert len(raw) == 4096 + 6 * 32
    magic, version, flags, u, size, cs, created, csum = struct.unpack_from("<8sII16sQQq32s", raw)
    assert (magic, version, flags) == (b"OVLTFIDX", 1, 0)
    assert uuid.UUID(bytes=u) == idx.uuid
    assert (size, cs) == (5 * CS + 1, CS)
    assert abs(created - time.time()) < 5
    assert csum == hashlib.sha256(raw[4096:]).digest()
    assert raw[88:4096] == bytes(4096 - 88)
    assert raw[4096 + 64 : 4096 + 96] == d
    back = FixedIndex.decode(raw)
    assert back.get(2) == d and back.get(0) == ZERO_DIGEST and back.chunk_len(5) == 1
    assert back.referenced() == {d}


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda r: r[:100], "shorter than the 4096-byte header"),
        (lambda r: b"NOTFIDX!" + r[8:], "bad magic"),
        (lambda r: r[:8] + struct.pack("<I", 2) + r[12:], "unsupported index version 2"),
        (lambda r: r + bytes(32), "expected"),
        (lambda r: r[:60] + bytes([r[60] ^ 1]) + r[61:], "checksum"),
    ],
)
def test_fidx_damage_detected(mutate, reason):
    idx = FixedIndex.empty(3 * CS, CS)
    idx.set(0, hashlib.sha256(b"x").digest())
    with pytest.raises(IndexCorrupted, match=reason):
        FixedIndex.decode(mutate(idx.encode()), "d.fidx")


def test_ids_and_paths():
    u = str(uuid.uuid4())
    assert check_uuid(u.upper()) == u
    for bad in ["", "../" + u, u + "\n", u[:-1], "x" * 36, u.replace("-", "")]:
        with pytest.raises(InvalidId):
            check_uuid(bad)
    with pytest.raises(InvalidId):
        check_digest_hex("A" * 64)
    assert check_rel("chunks/ab/cd/x") == "chunks/ab/cd/x"
    for bad in ["/abs", "a//b", "a/../b", "..", "a/./b", "a\0b", "a/"]:
        with pytest.raises(InvalidPath):
            check_rel(bad)


def test_nfs_urls():
    assert parse_nfs_url("nfs://127.0.0.1/srv/target/") == ("127.0.0.1", "/srv/target")
    for bad in ["http://x/y", "nfs:///x", "nfs://h:2049/x", "nfs://h/x?version=4", "nfs://h/a/../b"]:
        with pytest.raises(ValueError):
            parse_nfs_url(bad)
    assert isinstance(open_target("nfs://127.0.0.1/x"), NfsTarget)
    assert isinstance(open_target("/tmp"), PathTarget)
    assert open_target("file:///tmp/x").url == "/tmp/x"
    with pytest.raises(InvalidPath, match="unsupported URL scheme 's3'"):
        open_target("s3://bucket/x")


def test_codec_refuses_oversized_frames():
    codec = ChunkCodec(CS)
    big = b"\1" * (2 * CS)
    blob = zstandard.ZstdCompressor().compress(big)
    with pytest.raises(ChunkCorrupted, match="frame content size"):
        codec.decode(hashlib.sha256(big).digest(), blob)
    assert codec.is_zero(memoryview(bytes(CS))) and not codec.is_zero(b"\0" * 10 + b"\1")


@pytest.fixture
async def store(store_url):
    s = await Store.open(store_url, create=True, chunk_size=CS, version=1)  # the version-1 format (test_store_v2 covers 2)
    yield s
    await s.close()


async def test_gc_removes_only_stale_temp_files(store, store_url):
    stale = os.path.join(store_url, "chunks", "ab", "cd")
    os.makedirs(stale)
    old = os.path.join(stale, ".abcd.tmp.111111")
    young = os.path.join(stale, ".abcd.tmp.222222")
    for p in (old, young):
        with open(p, "wb") as f:
            f.write(b"half a chunk")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    rep = await store.gc(grace_seconds=3600)
    assert rep.tmp_removed == 1
    assert sorted(os.listdir(stale)) == [".abcd.tmp.222222"]


async def test_gc_puts_back_a_chunk_touched_during_sweep(store_url):
    """A writer's dedup touch landing between gc's scan and its rename wins."""

    class RacyTarget(PathTarget):
        async def rename(self, src, dst):
            if src.startswith("chunks/") and ".tmp." in dst:
                await self.touch(src)  # the writer, just in time
            await super().rename(src, dst)

    store = Store(RacyTarget(store_url))
    await store.init(CS)
    try:
        data = random.Random(1).randbytes(CS)
        d = await store.put_chunk(data)
        path = os.path.join(store_url, "chunks", d.hex()[:2], d.hex()[2:4], d.hex())
        os.utime(path, (time.time() - 7200, time.time() - 7200))
        rep = await store.gc(grace_seconds=3600)
        assert rep.chunks_removed == 0 and rep.chunks_kept_young == 1
        assert await store.get_chunk(d) == data
    finally:
        await store.close()


async def test_writer_memory_is_bounded(store_url):
    """At most max_inflight chunks of one DiskWriter are in the store's hands."""
    inflight = 0
    peak = 0

    class SlowTarget(PathTarget):
        async def write_file(self, path, data, **kw):
            nonlocal inflight, peak
            if path.startswith("chunks/"):
                inflight += 1
                peak = max(peak, inflight)
                await asyncio.sleep(0.01)
                inflight -= 1
            await super().write_file(path, data, **kw)

    store = Store(SlowTarget(store_url))
    await store.init(CS)
    try:
        content = make_disk(3, 16)
        bw = await store.begin_backup(uid(), uid(), max_inflight=3)
        dw = await bw.add_disk(uid(), len(content))
        await dw.write(0, content)  # 16 chunks in one call
        await dw.commit()
        info = await bw.publish()
        assert peak == 3
        assert info.disks[0].new_chunks == 16
    finally:
        await store.close()


async def test_manifest_lists_disks_with_index_digests(store):
    vm, bid, disk = uid(), uid(), uid()
    content = make_disk(5, 2)
    info = await backup(store, vm, bid, {disk: content}, meta={"job_id": "j1"})
    import json

    doc = json.loads(await store.target.read_file(f"vms/{vm}/{bid}/manifest.json"))
    fidx = await store.target.read_file(f"vms/{vm}/{bid}/{disk}.fidx")
    assert doc["format"] == "ovault-manifest" and doc["version"] == 1
    assert doc["vm_id"] == vm and doc["backup_id"] == bid and doc["parent_id"] is None
    assert doc["meta"] == {"job_id": "j1"}
    assert doc["disks"] == [
        {
            "disk_id": disk,
            "size": len(content),
            "chunk_size": CS,
            "index": f"{disk}.fidx",
            "index_sha256": hashlib.sha256(fidx).hexdigest(),
            "chunks": 2,
            "zero_chunks": 0,
            "new_chunks": 2,
            "new_bytes": info.disks[0].new_bytes,
        }
    ]
    assert info.disks[0].new_bytes > 2 * CS  # random data: zstd adds a little


async def test_verify_gc_and_export_report_progress(store, tmp_path):
    vm, bid, disk = uid(), uid(), uid()
    content = make_disk(7, 5.5, zero_slots=(1,))  # 6 slots, one of them zero, the last short
    await backup(store, vm, bid, {disk: content})
    seen = {"verify": [], "gc": [], "export": []}
    rep = await store.verify(vm, bid, progress=lambda d, t: seen["verify"].append((d, t)))
    assert rep.ok and seen["verify"][0] == (0, rep.bytes_checked) and seen["verify"][-1] == (rep.bytes_checked,) * 2
    assert rep.bytes_checked == len(content) - CS  # every non-zero byte, once
    await store.gc(grace_seconds=0, progress=lambda d, t: seen["gc"].append((d, t)))
    done, total = seen["gc"][-1]
    assert done == total == 1 + len({p.parent for p in (tmp_path / "target" / "chunks").rglob("*") if p.is_file()})
    r = await store.export_disk(vm, bid, disk, tmp_path / "d.raw", "raw",
                                progress=lambda d, t: seen["export"].append((d, t)))
    assert r.sha256 == hashlib.sha256(content).hexdigest()
    assert seen["export"][-1] == (len(content), len(content))
    assert [d for d, _ in seen["export"]] == sorted(d for d, _ in seen["export"])
