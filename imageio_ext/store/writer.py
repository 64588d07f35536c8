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
- gc safety without touching what is inherited (docs/store-format.md,
  *Writers and garbage collection*): while any of its disks is open the
  backup holds a writer lease (`leases.WriterLease`, registered before the
  parent index is read or a chunk stored, released when every disk is
  committed or cancelled, or on publish/abort). Commit checks the lease
  never lapsed, and that no inherited chunk was set aside as damaged
  (one listing of ``.damaged/``), writes the index, then checks the parent
  is still published. Commit time does not depend on how much is inherited.
- If an inherited chunk is damaged, or the parent was deleted meanwhile
  (gc may then collect what only it referenced), commit raises
  `ChunkMissing` whose ``offsets`` are the slots to re-send; those slots
  become unwritten, the writer stays open and commit can be retried.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from .chunkstore import ChunkStore
from .errors import ChunkMissing, IncompleteDisk, InvalidRange, WriterStateError
from .fidx import ZERO_DIGEST, FixedIndex
from .ids import check_uuid
from .layout import chunk_path, manifest_path
from .leases import DEFAULT_LEASE_SECONDS, WriterLease, damaged_markers
from .manifest import BackupInfo, DiskInfo, utc_now_iso
from .publish import Backups

# Slot states.
_UNSET = 0
_INHERITED = 1  # copied from the parent index (protected by it, not touched)
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
        self.cancelled = False
        self.info: DiskInfo | None = None
        # Statistics of this session.
        self.new_chunks = 0
        self.new_bytes = 0
        self.dedup_chunks = 0
        self.zero_chunks_written = 0
        self.bytes_written = 0  # plaintext bytes passed to write()/write_zero()

    def _inherit(self, parent: FixedIndex) -> None:
        if parent.size == self.size:  # the common case, without a Python step per slot
            self.index.digests[:] = parent.digests
            self._state = bytearray(_WRITTEN if d == ZERO_DIGEST else _INHERITED
                                    for (d,) in struct.iter_unpack("32s", parent.digests))
            return
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
        """Write chunk-aligned data (one or more whole chunks).

        The chunks of a larger write are views into ``data``, not copies
        (``data`` that is not ``bytes`` is copied to ``bytes`` first, so the
        caller may reuse its buffer)."""
        self._check_open()
        if not isinstance(data, bytes):
            data = bytes(data)
        slots = self._slots(offset, len(data))
        cs = self.chunk_size
        view = memoryview(data) if len(slots) > 1 else None
        for i in slots:
            start = i * cs - offset
            piece = data if view is None else view[start : start + self.index.chunk_len(i)]
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

    def stored_slots(self) -> dict[int, bytes]:
        """Slot -> digest of every data chunk this session has stored so far
        (its write finished; zero and inherited slots are not included)."""
        return {i: self.index.get(i) for i, st in enumerate(self._state)
                if st == _WRITTEN and self.index.get(i) != ZERO_DIGEST}

    def adopt(self, i: int, digest: bytes) -> None:
        """Take slot ``i`` as written with ``digest``, a chunk an interrupted copy
        of this same disk content stored (the caller checked it exists)."""
        self._check_open()
        self.index.set(i, digest)
        self._state[i] = _WRITTEN

    async def _store_slot(self, i: int, piece: bytes | memoryview) -> None:
        try:
            res = await self.chunks.put(piece)
            if res.digest == ZERO_DIGEST:
                self.zero_chunks_written += 1
            elif res.new:
                self.new_chunks += 1
                self.new_bytes += res.stored_bytes
            else:
                self.dedup_chunks += 1
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

    async def settle(self) -> None:
        """Let the chunks already handed to `write` finish (errors are kept for
        the next call): a failed copy then records them in its partial index."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def cancel(self) -> None:
        self.cancelled = True
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self.backup.release_lease_if_idle()

    # -- commit --------------------------------------------------------------

    async def commit(self) -> DiskInfo:
        """Wait for pending chunks, check what is inherited, write the index."""
        self._check_open()
        await self._drain()
        first = self._state.find(_UNSET)
        if first >= 0:
            raise IncompleteDisk(self.disk_id, self._state.count(_UNSET), first * self.chunk_size)
        self.backup.check_lease()
        await self._check_damaged()

        index_sha = await self.backup.backups.write_index(
            self.backup.vm_id, self.backup.backup_id, self.disk_id, self.index
        )
        await self._check_parent()  # after the index is on the target: see docs/store-format.md
        self.backup.check_lease()  # protected without a gap until the index was there
        zero = list(struct.iter_unpack("32s", self.index.digests)).count((ZERO_DIGEST,))
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
        await self.backup.release_lease_if_idle()
        return self.info

    def _inherited_slots(self, digest: bytes) -> list[int]:
        out, buf = [], self.index.digests
        pos = buf.find(digest)
        while pos >= 0:
            if pos % 32 == 0 and self._state[pos // 32] == _INHERITED:
                out.append(pos // 32)
            pos = buf.find(digest, pos + 1)
        return out

    def _resend(self, slots: dict[bytes, list[int]], why: str) -> ChunkMissing:
        offsets = []
        for idx in slots.values():
            for i in idx:
                self._state[i] = _UNSET
                offsets.append(i * self.chunk_size)
        first = next(iter(slots)).hex()
        return ChunkMissing(first + (f" (and {len(slots) - 1} more)" if len(slots) > 1 else "") + why,
                            sorted(offsets))

    async def _check_damaged(self) -> None:
        """Inherited chunks set aside as damaged (and not rewritten since) must be re-sent."""
        if self._state.find(_INHERITED) < 0:
            return
        target = self.chunks.target
        gone: dict[bytes, list[int]] = {}
        for dg, _ in await damaged_markers(target):
            slots = self._inherited_slots(dg)
            if slots and not await target.exists(chunk_path(dg)):
                gone[dg] = slots
        if gone:
            raise self._resend(gone, "")

    async def _check_parent(self) -> None:
        """The parent's published index protected what we inherited; if it was
        deleted meanwhile, gc may have collected those chunks: re-send them."""
        parent = self.backup.parent
        if parent is None or self._state.find(_INHERITED) < 0:
            return
        if await self.chunks.target.exists(manifest_path(parent.vm_id, parent.backup_id)):
            return
        slots: dict[bytes, list[int]] = {}
        for i in range(self.index.count):
            if self._state[i] == _INHERITED:
                slots.setdefault(self.index.get(i), []).append(i)
        raise self._resend(slots, f" (parent backup {parent.backup_id} was deleted while this incremental was written)")


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
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        heartbeat_seconds: float | None = None,
    ):
        self.chunks = chunks
        self.backups = backups
        self._lease_options = {"lease_seconds": lease_seconds, "heartbeat_seconds": heartbeat_seconds}
        self.lease: WriterLease | None = None
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
        if self.lease is None or self.lease.released:  # before the parent index is read, or a chunk stored
            self.lease = await WriterLease(self.chunks.target, purpose="backup", vm_id=self.vm_id,
                                           backup_id=self.backup_id, owner=self, **self._lease_options).register()
        try:
            parent_index = None
            if self.parent is not None and self.parent.disk(disk_id) is not None:
                parent_index = await self.backups.read_backup_index(self.parent, disk_id)
            dw = DiskWriter(self, disk_id, size, parent_index, max_inflight=self.max_inflight)
        except BaseException:
            await self.release_lease_if_idle()
            raise
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
        await self.release_lease()
        return info

    def check_lease(self) -> None:
        """Raise `LeaseLost` if this backup's writer lease ever lapsed."""
        if self.lease is not None:
            self.lease.check()

    async def release_lease(self) -> None:
        if self.lease is not None:
            await self.lease.release()

    async def release_lease_if_idle(self) -> None:
        """Release once every disk is committed or cancelled (the committed
        indexes protect their chunks from then on, see `gc`)."""
        if all(w.info is not None or w.cancelled for w in self.disks.values()):
            await self.release_lease()

    async def abort(self) -> None:
        """Give up: cancel pending work and remove the unpublished directory.

        Chunks already written stay for gc (another backup may share them).
        """
        self.closed = True
        for w in self.disks.values():
            await w.cancel()
        await self.release_lease()
        await self.backups.discard(self.vm_id, self.backup_id)
