"""The target is hostile input: run against every Target implementation.

Someone with write access to the target plants symbolic links, oversized
files, absurdly nested manifests, or swaps a backup's manifest and index for
another's. Each is refused or reported as corrupt: nothing is read from or
written outside the target, and the process stays up. A subclass provides
``store_url`` (a directory here, an ``nfs://`` URL in tests/integration).
Links are planted the way an attacker would on each backend: with
``symlink(2)`` in the directory, or with NFS SYMLINK through libnfs.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import uuid

import pytest

from imageio_ext.copy.restore import restore_disk
from imageio_ext.store import (
    ChunkCorrupted,
    IncompatibleStore,
    IndexCorrupted,
    ManifestCorrupted,
    NfsTarget,
    PathTarget,
    Store,
    open_target,
)
from imageio_ext.store import _libnfs
from imageio_ext.store.chunk import compress_bound
from imageio_ext.store.errors import UnsafeTargetEntry
from imageio_ext.store.manifest import MAX_DOCUMENT
from tests.unit.mover.fakes import FakeImage
from tests.unit.store.store_suite import CS, backup, make_disk, read_all, uid


def cpath(h: str) -> str:
    return f"chunks/{h[:2]}/{h[2:4]}/{h}"


async def plant_symlink(store: Store, link_target: str, rel: str) -> None:
    """Make ``rel`` (target-relative) a symbolic link to ``link_target``."""
    t = store.target
    if isinstance(t, PathTarget):
        os.symlink(link_target, os.path.join(t.root, rel))
        return
    assert isinstance(t, NfsTarget)
    await t.stat("")  # resolves the mount point
    export, prefix = t._mount

    def do() -> None:
        ctx = _libnfs.Context(t.server, export)
        try:
            ctx.symlink(link_target, "/" + "/".join(p for p in (prefix, rel) if p))
        finally:
            ctx.close()

    await asyncio.to_thread(do)


class HostileTargetBehaviour:
    @pytest.fixture
    async def store(self, store_url):
        s = await Store.open(store_url, create=True, chunk_size=CS, version=1)  # the version-1 format (test_store_v2 covers 2)
        yield s
        await s.close()

    @pytest.fixture
    async def outside(self, store_url):
        """A sibling directory of the store, with one file in it; yields
        (its name, a target on the parent). Links point there."""
        parent, _, name = store_url.rstrip("/").rpartition("/")
        name = f"{name}-outside-{uuid.uuid4().hex[:6]}"
        t = open_target(parent)
        await t.makedirs(name)
        await t.write_file(f"{name}/secret", b"not the store's")
        yield name, t
        await t.close()

    @staticmethod
    async def outside_files(outside) -> list[str]:
        name, t = outside
        return sorted(e.name for e in await t.scandir(name))

    # -- symbolic links --------------------------------------------------------------

    async def test_symlinked_chunk_dir_refused_for_writes_and_reads(self, store, outside):
        data = make_disk(71, 1)
        h = hashlib.sha256(data).hexdigest()
        # chunks/<xx> -> a directory outside the store
        await plant_symlink(store, f"../../{outside[0]}", f"chunks/{h[:2]}")
        with pytest.raises(UnsafeTargetEntry, match="symbolic link"):
            await store.put_chunk(data)
        assert await self.outside_files(outside) == ["secret"]  # nothing written there
        # a chunk file planted outside is never read through the link
        name, parent = outside
        blob = store.chunks.codec.compress(data)
        await parent.write_file(f"{name}/{h[2:4]}/{h}", blob)
        with pytest.raises(ChunkCorrupted, match="symbolic link"):
            await store.get_chunk(bytes.fromhex(h), len(data))

    async def test_symlinked_chunk_file_refused(self, store, outside):
        vm, bid, disk = uid(), uid(), uid()
        content = make_disk(72, 2)
        await backup(store, vm, bid, {disk: content})
        h = hashlib.sha256(content[:CS]).hexdigest()
        good = await store.target.read_file(cpath(h))
        await store.target.remove(cpath(h))
        name, parent = outside
        await parent.write_file(f"{name}/{h}", good)  # the right bytes, but outside the store
        await plant_symlink(store, f"../../../../{name}/{h}", cpath(h))
        with pytest.raises(ChunkCorrupted, match="symbolic link"):
            await read_all(store, vm, bid, disk)
        assert await self.outside_files(outside) == sorted(["secret", h])

    async def test_symlinked_vm_dir_refused(self, store, outside):
        vm, bid, disk = uid(), uid(), uid()
        await backup(store, vm, bid, {disk: make_disk(73, 1)})
        other = uid()
        # vms/<other> -> outside: neither read, nor listed, nor written through
        await plant_symlink(store, f"../../{outside[0]}", f"vms/{other}")
        with pytest.raises(ManifestCorrupted, match="symbolic link"):
            await store.get_backup(other, bid)
        assert [b.backup_id for b in await store.list_backups()] == [bid]
        with pytest.raises(UnsafeTargetEntry, match="symbolic link"):
            bw = await store.begin_backup(other, uid())
            await (await bw.add_disk(uid(), CS)).write(0, make_disk(74, 1))
        assert await self.outside_files(outside) == ["secret"]

    async def test_symlinked_manifest_refused(self, store, outside):
        vm, a, b, disk = uid(), uid(), uid(), uid()
        await backup(store, vm, a, {disk: make_disk(75, 1)})
        await store.target.makedirs(f"vms/{vm}/{b}")
        await plant_symlink(store, f"../{a}/manifest.json", f"vms/{vm}/{b}/manifest.json")
        with pytest.raises(ManifestCorrupted, match="symbolic link"):
            await store.get_backup(vm, b)
        assert [x.backup_id for x in await store.list_backups()] == [a]
        # a manifest replaced by a link to a file outside is refused just the same
        await store.target.remove(f"vms/{vm}/{a}/manifest.json")
        await plant_symlink(store, f"../../../../{outside[0]}/secret", f"vms/{vm}/{a}/manifest.json")
        with pytest.raises(ManifestCorrupted, match="symbolic link"):
            await store.get_backup(vm, a)

    # -- bounded reads ---------------------------------------------------------------

    async def test_oversized_manifest_index_chunk_are_corrupt(self, store):
        vm, bid, disk = uid(), uid(), uid()
        content = make_disk(76, 2)
        await backup(store, vm, bid, {disk: content})
        mpath = f"vms/{vm}/{bid}/manifest.json"
        good = await store.target.read_file(mpath)
        # Valid JSON, just padded past the bound: refused before it is read.
        await store.target.write_file(mpath, good.rstrip() + b" " * MAX_DOCUMENT + b"\n")
        with pytest.raises(ManifestCorrupted, match="more than the 1048576 allowed"):
            await store.get_backup(vm, bid)
        await store.target.write_file(mpath, good)
        # An index one byte longer than its disk needs.
        ipath = f"vms/{vm}/{bid}/{disk}.fidx"
        idx = await store.target.read_file(ipath)
        await store.target.write_file(ipath, idx + b"\0")
        with pytest.raises(IndexCorrupted, match="more than"):
            await store.open_disk(vm, bid, disk)
        report = await store.verify(vm, bid)
        assert not report.ok and "more than" in report.bad_indexes[disk]
        await store.target.write_file(ipath, idx)
        # A chunk larger than any zstd frame of a chunk can be.
        h = hashlib.sha256(content[:CS]).hexdigest()
        await store.target.write_file(cpath(h), bytes(compress_bound(CS) + 1))
        with pytest.raises(ChunkCorrupted, match="more than"):
            await store.get_chunk(bytes.fromhex(h), CS)
        # The store config too.
        await store.target.write_file("ovault-store.json", b" " * (MAX_DOCUMENT + 1))
        with pytest.raises(IncompatibleStore, match="more than"):
            await Store.open(store.target.url)

    async def test_deeply_nested_manifest_and_config_are_corrupt(self, store, store_url):
        vm, bid, disk = uid(), uid(), uid()
        await backup(store, vm, bid, {disk: make_disk(77, 1)})
        deep = b"[" * 100_000 + b"]" * 100_000  # 200 kB: under the size bound
        await store.target.write_file(f"vms/{vm}/{bid}/manifest.json", deep)
        with pytest.raises(ManifestCorrupted, match="nested too deeply"):
            await store.get_backup(vm, bid)
        assert await store.list_backups() == []  # skipped with a warning, not a crash
        with pytest.raises(ManifestCorrupted):
            await store.verify(vm, bid)
        await store.target.write_file("ovault-store.json", b'{"a":' * 100_000 + b"1" + b"}" * 100_000)
        with pytest.raises(IncompatibleStore, match="nested too deeply"):
            await Store.open(store_url)

    # -- the catalog's index digest ---------------------------------------------------

    async def test_swapped_manifest_and_index_detected_by_catalog_digest(self, store):
        vm, old, new, disk = uid(), uid(), uid(), uid()
        old_content, new_content = make_disk(78, 2), make_disk(79, 2)
        await backup(store, vm, old, {disk: old_content})
        info = await backup(store, vm, new, {disk: new_content})
        published = info.disk(disk).index_sha256  # what the catalog recorded
        # The attacker makes "new" restore old data: its index replaced by old's,
        # and its manifest rewritten to carry the matching digest.
        old_idx = await store.target.read_file(f"vms/{vm}/{old}/{disk}.fidx")
        await store.target.write_file(f"vms/{vm}/{new}/{disk}.fidx", old_idx)
        doc = json.loads(await store.target.read_file(f"vms/{vm}/{new}/manifest.json"))
        doc["disks"][0]["index_sha256"] = hashlib.sha256(old_idx).hexdigest()
        await store.target.write_file(f"vms/{vm}/{new}/manifest.json", json.dumps(doc).encode())
        # Self-consistent on the target: without the catalog it would pass.
        assert await read_all(store, vm, new, disk) == old_content
        with pytest.raises(IndexCorrupted, match="the catalog recorded when the backup was published"):
            await store.open_disk(vm, new, disk, catalog_sha256=published)
        image = FakeImage(len(new_content))
        with pytest.raises(IndexCorrupted, match="replaced on the target"):
            await restore_disk(store, image, vm_id=vm, backup_id=new, disk_id=disk, index_sha256=published)
        assert image.writes == [] and image.zeros == [] and bytes(image.data) == bytes(len(new_content))
        report = await store.verify(vm, new, catalog_digests={disk: published})
        assert not report.ok and "the catalog recorded" in report.bad_indexes[disk]
        assert report.chunks_checked == 0
        # the genuine digest still restores and verifies
        r = await store.open_disk(vm, old, disk, catalog_sha256=hashlib.sha256(old_idx).hexdigest())
        assert await r.read(0, r.size) == old_content
