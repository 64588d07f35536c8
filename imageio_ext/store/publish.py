"""Indexes and manifests: how a backup comes to exist on a target, and goes.

- Each disk's fixed index (``<disk>.fidx``) is written atomically before the
  manifest; its SHA-256 is recorded in the manifest.
- A backup exists only once ``manifest.json`` is renamed into place. Before
  publishing, every index it names is read back and checked against its
  recorded SHA-256: a dangling backup is never published.
- In an encrypted store (format version 2) indexes and manifests are sealed
  (`StoreFormat.seal_meta`: AES-256-GCM, bound to their path); the SHA-256
  recorded in the manifest and the catalog is that of the file as stored.
- Deleting unpublishes first (removes the manifest, atomic), then removes the
  indexes. Chunks are left for gc. A crash in between leaves an orphan
  directory that gc removes after the grace period.
"""

from __future__ import annotations

import hashlib
from typing import Any, Iterable

import structlog

from .chunkstore import ChunkStore
from .errors import (BackupExists, BackupNotFound, Damaged, DiskNotFound, IndexCorrupted, ManifestCorrupted,
                     NotFound)
from .fidx import DIGEST_SIZE, HEADER_SIZE, FixedIndex, chunk_count
from .ids import check_uuid
from .layout import backup_dir, index_path, manifest_path, remove_dir, scan_backup_dirs
from .manifest import MAX_DOCUMENT, BackupInfo, DiskInfo, utc_now_iso
from .target import MAX_READ, Target

log = structlog.get_logger(__name__)


class Backups:
    """The published (and being written) backups of one target."""

    def __init__(self, target: Target, chunks: ChunkStore):
        self.target = target
        self.chunks = chunks  # indexes must match its chunk size

    # -- indexes -------------------------------------------------------------

    @property
    def format(self):
        return self.chunks.format

    async def write_index(self, vm_id: str, backup_id: str, disk_id: str, index: FixedIndex) -> str:
        """Write ``<disk>.fidx`` atomically; return the file's SHA-256 hex."""
        path = index_path(vm_id, backup_id, disk_id)
        index.version = self.format.index_version
        data = self.format.seal_meta("index", path, index.encode())
        await self.target.write_file(path, data)
        return hashlib.sha256(data).hexdigest()

    async def read_index(
        self, vm_id: str, backup_id: str, disk_id: str, *, expect_sha256: str | None = None,
        expect_size: int | None = None, catalog_sha256: str | None = None,
    ) -> FixedIndex:
        """Read and check one index. ``expect_size`` (the disk size the manifest
        gives) fixes the file's exact length before it is read; ``catalog_sha256``
        is the digest the catalog recorded when the backup was published: an
        index (and manifest) replaced on the target since is refused."""
        path = index_path(vm_id, backup_id, disk_id)
        limit = MAX_READ
        if expect_size is not None:
            limit = (HEADER_SIZE + chunk_count(expect_size, self.chunks.chunk_size) * DIGEST_SIZE
                     + self.format.meta_overhead)
        try:
            data = await self.target.read_file(path, max_size=limit)
        except NotFound:
            raise IndexCorrupted(path, "index file is missing") from None
        except Damaged as e:  # too large, or a symlink
            raise IndexCorrupted(path, e.reason) from None
        if expect_size is not None and len(data) != limit:
            raise IndexCorrupted(path, f"file is {len(data)} bytes, expected {limit} for a disk of {expect_size}")
        digest = hashlib.sha256(data).hexdigest()
        if catalog_sha256 is not None and digest != catalog_sha256.lower():
            raise IndexCorrupted(
                path, f"file SHA-256 {digest} differs from {catalog_sha256.lower()}, the one the catalog recorded "
                "when the backup was published: the index (and its manifest) were replaced on the target")
        if expect_sha256 is not None and digest != expect_sha256:
            raise IndexCorrupted(path, "file SHA-256 differs from the one recorded in the manifest")
        try:
            plain = self.format.open_meta("index", path, data)
        except ValueError as e:
            raise IndexCorrupted(path, str(e)) from None
        index = FixedIndex.decode(plain, path, self.format.index_version)
        cs = self.chunks.chunk_size
        if index.chunk_size != cs:
            raise IndexCorrupted(path, f"chunk size {index.chunk_size} differs from the store's {cs}")
        return index

    async def read_backup_index(
        self, info: BackupInfo, disk_id: str, *, catalog_sha256: str | None = None
    ) -> FixedIndex:
        """The index of one disk of a published backup, checked against its manifest
        (and against the catalog's digest ``catalog_sha256`` when given)."""
        disk = info.disk(disk_id)
        if disk is None:
            raise DiskNotFound(info.backup_id, disk_id)
        if disk.size < 0 or disk.size > MAX_READ // DIGEST_SIZE * self.chunks.chunk_size:
            raise IndexCorrupted(f"{disk_id}.fidx", f"manifest gives an impossible disk size {disk.size}")
        index = await self.read_index(info.vm_id, info.backup_id, disk_id, expect_sha256=disk.index_sha256,
                                      expect_size=disk.size, catalog_sha256=catalog_sha256)
        if index.size != disk.size:
            raise IndexCorrupted(f"{disk_id}.fidx", f"size {index.size} differs from manifest {disk.size}")
        return index

    # -- manifests -----------------------------------------------------------

    async def prepare(self, vm_id: str, backup_id: str) -> None:
        """Create the directory of a backup about to be written."""
        if await self.target.exists(manifest_path(vm_id, backup_id)):
            raise BackupExists(vm_id, backup_id)
        await self.target.makedirs(backup_dir(vm_id, backup_id))

    async def publish_manifest(self, info: BackupInfo) -> None:
        """Publish a backup: check its indexes are in place, then rename the manifest in."""
        mpath = manifest_path(info.vm_id, info.backup_id)
        if await self.target.exists(mpath):
            raise BackupExists(info.vm_id, info.backup_id)
        for d in info.disks:
            # Cheap insurance against an index removed by a misconfigured gc
            # (grace shorter than the backup): never publish a dangling backup.
            await self.read_index(info.vm_id, info.backup_id, d.disk_id, expect_sha256=d.index_sha256,
                                  expect_size=d.size)
        await self.target.write_file(
            mpath, self.format.seal_meta("manifest", mpath, info.to_json(self.format.manifest_version)))

    async def publish_disks(
        self,
        vm_id: str,
        backup_id: str,
        disks: Iterable[DiskInfo | dict],
        *,
        parent_id: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> BackupInfo:
        """Publish a backup whose disks were committed by separate writers."""
        vm_id = check_uuid(vm_id, "VM")
        backup_id = check_uuid(backup_id, "backup")
        if parent_id is not None:
            parent_id = check_uuid(parent_id, "backup")
        infos = tuple(d if isinstance(d, DiskInfo) else DiskInfo.from_dict(d, "publish_backup") for d in disks)
        if not infos:
            raise ValueError("a backup needs at least one disk")
        if len({d.disk_id for d in infos}) != len(infos):
            raise ValueError("duplicate disk ids")
        info = BackupInfo(vm_id=vm_id, backup_id=backup_id, created=utc_now_iso(), parent_id=parent_id,
                          disks=infos, meta=dict(meta or {}))
        info.to_json()  # fail on unserialisable meta before touching the target
        await self.publish_manifest(info)
        return info

    async def get(self, vm_id: str, backup_id: str) -> BackupInfo:
        vm_id = check_uuid(vm_id, "VM")
        backup_id = check_uuid(backup_id, "backup")
        mpath = manifest_path(vm_id, backup_id)
        try:
            data = await self.target.read_file(mpath, max_size=MAX_DOCUMENT)
        except NotFound:
            raise BackupNotFound(vm_id, backup_id) from None
        except Damaged as e:  # larger than any manifest, or a symlink
            raise ManifestCorrupted(mpath, e.reason) from None
        try:
            data = self.format.open_meta("manifest", mpath, data)
        except ValueError as e:
            raise ManifestCorrupted(mpath, str(e)) from None
        return BackupInfo.from_json(data, mpath, vm_id=vm_id, backup_id=backup_id,
                                    version=self.format.manifest_version)

    async def published(self, vm_id: str | None = None, *, strict: bool = False) -> list[BackupInfo]:
        """Every published backup, from the manifests alone (catalog import).

        A damaged manifest is skipped with a warning, or raised if ``strict``.
        Sorted by (vm_id, created, backup_id).
        """
        found = []
        for d in await scan_backup_dirs(self.target, vm_id):
            if not d.published:
                continue
            try:
                found.append(await self.get(d.vm_id, d.backup_id))
            except BackupNotFound:
                continue  # deleted meanwhile
            except ManifestCorrupted as e:
                if strict:
                    raise
                log.warning("store.manifest_corrupted", vm_id=d.vm_id, backup_id=d.backup_id, error=str(e))
        found.sort(key=lambda b: (b.vm_id, b.created, b.backup_id))
        return found

    async def delete(self, vm_id: str, backup_id: str) -> None:
        """Unpublish (remove manifest.json: atomic), then remove the indexes."""
        try:
            await self.target.remove(manifest_path(vm_id, backup_id))
        except NotFound:
            raise BackupNotFound(vm_id, backup_id) from None
        await remove_dir(self.target, backup_dir(vm_id, backup_id))

    async def discard(self, vm_id: str, backup_id: str) -> None:
        """Remove the directory of a backup that was never published.

        A directory that has a manifest (published by someone else with the
        same id) is left alone.
        """
        if await self.target.exists(manifest_path(vm_id, backup_id)):
            return
        await remove_dir(self.target, backup_dir(vm_id, backup_id))
