"""Writing one backup: `BackupWriter` and one `DiskWriter` per disk.

The data mover feeds a DiskWriter chunk-aligned pieces as it reads them from
ovirt-imageio::

    async with await store.begin_backup(vm_id, backup_id, parent_id=prev) as bw:
        dw = await bw.add_disk(disk_id, size)
        for offset, length, zero in extents:            # chunk-aligned
            if zero:
                await dw.write_zero(offset, length)
            else:
                await dw.write(offset, await read(offset, length))
        await dw.commit()
        await bw.publish({"ovf": ..., "consistency": ...})

Rules:

- Ranges start on a chunk boundary and end on one or at the disk's end.
- Full backup: every chunk slot must be written (data or zero) before
  commit, or commit raises `IncompleteDisk` — a hole in the index can only be
  a bug in the caller.
- Incremental (the backup has a parent that has this disk): the index starts
  as a copy of the parent's and only changed chunks need writing. If the disk
  grew, slots entirely beyond the old size start as zero (new space reads as
  zeros); a slot that was the parent's short last chunk must be re-sent.
- Bounded memory: at most ``max_inflight`` chunks are being hashed,
  compressed or written per DiskWriter; ``write()`` waits for room.
- Commit touches every chunk the index references that this writer did not
  write or touch within the chunk store's ``touch_refresh`` seconds, so gc
  treats them as young until the manifest is published. If one of them has vanished (its last
  user was deleted and gc ran), commit raises `ChunkMissing` whose
  ``offsets`` are the slots to re-send; those slots become unwritten, the
  writer stays open and commit can be retried.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .chunkstore import ChunkStore
from .errors import ChunkMissing, IncompleteDisk, InvalidRange, WriterStateError
from .fidx import ZERO_DIGEST, FixedIndex
from .ids import check_uuid
from .manifest import BackupInfo, DiskInfo, utc_now_iso
from .publish import Backups

# Slot states.
_UNSET = 0
_INHERITED = 1  # copied from the parent index; not yet touched by us
_WRITTEN = 2  # written, deduplicated or zero in this session


class DiskWriter:
    def __init__(
        self,
        backup: "BackupWriter",
        disk_id: str,
        size: int,
        parent_index: FixedIndex | None,
        *,
        max_inflight: int = 4,
    ):
        self.backup = backup
        self.chunks = backup.chunks
        self.disk_id = disk_id
        self.size = size
        self.chunk_size = self.chunks.chunk_size
        self.index = FixedIndex.empty(size, self.chunk_size)
        self._state = bytearray(self.index.count)  # _UNSET
        self.incremental = parent_index is not None
        if parent_index is not None:
            self._inherit(parent_index)
        self._sem = asyncio.Semaphore(max_inflight)
        self._tasks: set[asyncio.Task] = set()
        self._error: BaseException | None = None
        self._touched: dict[bytes, float] = {}  # digest -> monotonic time we wrote/touched it
        self.info: DiskInfo | None = None
        # Statistics of this session.
        self.new_chunks = 0
        self.new_bytes = 0
        self.dedup_chunks = 0
        self.zero_chunks_written = 0
        self.bytes_written = 0  # plaintext bytes passed to write()/write_zero()

    def _inherit(self, parent: FixedIndex) -> None:
        for i in range(self.index.count):
            start = i * self.chunk_size
            if i < parent.count and parent.chunk_len(i) == self.index.chunk_len(i):
                self.index.set(i, parent.get(i))
                self._state[i] = _INHERITED if parent.get(i) != ZERO_DIGEST else _WRITTEN
            elif start >= parent.size:
                self._state[i] = _WRITTEN  # grown space: zeros
            # else: the parent's short last chunk, or a shrunk disk's: re-send

    # -- writing -------------------------------------------------------------

    def _check_open(self) -> None:
        if self.info is not None:
            raise WriterStateError(f"disk {self.disk_id} is already committed")
        if self.backup.closed:
            raise WriterStateError(f"backup {self.backup.backup_id} is closed")
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    def _slots(self, offset: int, length: int) -> range:
        cs = self.chunk_size
        if offset < 0 or length <= 0 or offset + length > self.size:
            raise InvalidRange(offset, length, f"outside the disk (size {self.size})")
        if offset % cs:
            raise InvalidRange(offset, length, f"offset is not a multiple of the chunk size {cs}")
        end = offset + length
        if end % cs and end != self.size:
            raise InvalidRange(offset, length, f"end is neither a chunk boundary ({cs}) nor the disk end")
        return range(offset // cs, (end + cs - 1) // cs)

    async def write(self, offset: int, data: bytes) -> None:
        """Write chunk-aligned data (one or more whole chunks)."""
        self._check_open()
        if not isinstance(data, bytes):
            data = bytes(data)
        slots = self._slots(offset, len(data))
        cs = self.chunk_size
        for i in slots:
            start = i * cs - offset
            piece = data[start : start + self.index.chunk_len(i)]
            await self._sem.acquire()
            if self._error is not None:
                self._sem.release()
                self._check_open()
            task = asyncio.create_task(self._store_slot(i, piece))
            self._tasks.add(task)
            task.add_done_callback(self._done)
        self.bytes_written += len(data)

    async def write_zero(self, offset: int, length: int) -> None:
        """Mark a chunk-aligned range as zeros (nothing is stored)."""
        self._check_open()
        for i in self._slots(offset, length):
            self.index.set(i, ZERO_DIGEST)
            self._state[i] = _WRITTEN
            self.zero_chunks_written += 1
        self.bytes_written += length

    async def _store_slot(self, i: int, piece: bytes) -> None:
        try:
            res = await self.chunks.put(piece)
            if res.digest == ZERO_DIGEST:
                self.zero_chunks_written += 1
            elif res.new:
                self.new_chunks += 1
                self.new_bytes += res.stored_bytes
            else:
                self.dedup_chunks += 1
            if res.digest != ZERO_DIGEST:
                self._touched[res.digest] = time.monotonic()
            self.index.set(i, res.digest)
            self._state[i] = _WRITTEN
        finally:
            self._sem.release()

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None and self._error is None:
            self._error = task.exception()

    async def _drain(self) -> None:
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    async def cancel(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- commit --------------------------------------------------------------

    async def commit(self) -> DiskInfo:
        """Wait for pending chunks, refresh referenced chunks, write the index."""
        self._check_open()
        await self._drain()
        missing = [i for i, s in enumerate(self._state) if s == _UNSET]
        if missing:
            raise IncompleteDisk(self.disk_id, len(missing), missing[0] * self.chunk_size)

        now = time.monotonic()
        stale: dict[bytes, list[int]] = {}
        for i, s in enumerate(self._state):
            dg = self.index.get(i)
            if dg == ZERO_DIGEST:
                continue
            t = self._touched.get(dg)
            if s == _INHERITED or t is None or now - t > self.chunks.touch_refresh:
                stale.setdefault(dg, []).append(i)

        gone = await self.chunks.touch_all(stale)
        for dg in stale:
            if dg not in gone:
                self._touched[dg] = now
        if gone:
            offsets = []
            for dg in gone:
                for i in stale[dg]:
                    self._state[i] = _UNSET
                    offsets.append(i * self.chunk_size)
            raise ChunkMissing(gone[0].hex() + (f" (and {len(gone) - 1} more)" if len(gone) > 1 else ""), sorted(offsets))

        index_sha = await self.backup.backups.write_index(
            self.backup.vm_id, self.backup.backup_id, self.disk_id, self.index
        )
        zero = sum(1 for i in range(self.index.count) if self.index.get(i) == ZERO_DIGEST)
        self.info = DiskInfo(
            disk_id=self.disk_id,
            size=self.size,
            chunk_size=self.chunk_size,
            index_sha256=index_sha,
            chunks=self.index.count,
            zero_chunks=zero,
            new_chunks=self.new_chunks,
            new_bytes=self.new_bytes,
        )
        return self.info


class BackupWriter:
    """Writes one backup of one VM. Created by `Store.begin_backup`."""

    def __init__(
        self,
        chunks: ChunkStore,
        backups: Backups,
        vm_id: str,
        backup_id: str,
        parent: BackupInfo | None,
        *,
        max_inflight: int = 4,
    ):
        self.chunks = chunks
        self.backups = backups
        self.vm_id = vm_id
        self.backup_id = backup_id
        self.parent = parent
        self.max_inflight = max_inflight
        self.disks: dict[str, DiskWriter] = {}
        self.closed = False
        self.info: BackupInfo | None = None

    async def __aenter__(self) -> "BackupWriter":
        return self

    async def __aexit__(self, exc_type, exc, tb) -> None:
        if self.info is None and not self.closed:
            await self.abort()

    async def add_disk(self, disk_id: str, size: int) -> DiskWriter:
        """A writer for one disk; incremental if the parent backup has this disk."""
        if self.closed:
            raise WriterStateError(f"backup {self.backup_id} is closed")
        disk_id = check_uuid(disk_id, "disk")
        if disk_id in self.disks:
            raise WriterStateError(f"disk {disk_id} was already added to backup {self.backup_id}")
        if not isinstance(size, int) or size <= 0:
            raise InvalidRange(0, size if isinstance(size, int) else 0, "disk size must be a positive integer")
        parent_index = None
        if self.parent is not None and self.parent.disk(disk_id) is not None:
            parent_index = await self.backups.read_backup_index(self.parent, disk_id)
        dw = DiskWriter(self, disk_id, size, parent_index, max_inflight=self.max_inflight)
        self.disks[disk_id] = dw
        return dw

    async def publish(self, meta: dict[str, Any] | None = None) -> BackupInfo:
        """Write manifest.json last (atomic rename): from now on the backup exists."""
        if self.closed:
            raise WriterStateError(f"backup {self.backup_id} is closed")
        pending = [d for d, w in self.disks.items() if w.info is None]
        if pending:
            raise WriterStateError(f"disks not committed: {', '.join(pending)}")
        info = BackupInfo(
            vm_id=self.vm_id,
            backup_id=self.backup_id,
            created=utc_now_iso(),
            parent_id=self.parent.backup_id if self.parent else None,
            disks=tuple(w.info for w in self.disks.values()),
            meta=dict(meta or {}),
        )
        info.to_json()  # fail on unserialisable meta before touching the target
        await self.backups.publish_manifest(info)
        self.info = info
        self.closed = True
        return info

    async def abort(self) -> None:
        """Give up: cancel pending work and remove the unpublished directory.

        Chunks already written stay for gc (another backup may share them).
        """
        self.closed = True
        for w in self.disks.values():
            await w.cancel()
        await self.backups.discard(self.vm_id, self.backup_id)
