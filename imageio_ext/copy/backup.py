"""Backup: an ovirt-imageio download transfer -> the store.

Flow for one disk (see docs/mover.md):

1. ``Store.begin_backup`` + ``add_disk``. The backup id may already have an
   unpublished directory (a rerun after an interruption): that is fine, every
   chunk the first run stored is found by digest and not sent again. If the
   backup is already *published* with this disk, the copy succeeds at once
   with ``already_published`` (idempotent rerun after a lost reply).
2. Extents: ``context=zero`` for a full copy; ``context=dirty`` for an
   incremental one whose parent holds this disk (the writer then inherits
   every untouched slot from the parent index).
3. `plan_backup` turns them into chunk-aligned steps (adjacent data chunks
   merged into reads of up to ``read_size``); ``requests`` workers read data
   spans concurrently and hand whole chunks to the `DiskWriter`, whose own
   bound (``max_inflight``) makes a slow target slow the readers. By default
   ``max_inflight`` holds ``requests`` reads' worth of chunks (4 chunks of 4
   MiB, 16 of 1 MiB), and the chunks of one read are views into its buffer,
   not copies: memory is at most ``requests`` reads plus ``max_inflight``
   chunks, the same number of bytes whatever the chunk size.
   In an incremental, a slot that is only partly dirty is rebuilt: its dirty
   ranges are read from the disk, its clean ranges are copied from the
   parent's chunk, read back through the store's `DiskReader` (which verifies
   and decodes it whatever the store's format), so only changed bytes cross
   the network. If the parent's chunk cannot be read (damaged, collected),
   the slot is read whole from the disk instead.
4. ``commit`` writes the index. If a chunk inherited from the parent is no
   longer on the target — set aside as damaged (``<digest>.<n>.bad``, see
   docs/store-format.md) or garbage-collected meanwhile — the writer names the
   slots; they are read again in full from the disk (although the change
   tracking says they did not change) and commit is retried. Same content:
   the chunk is written again, which heals every older backup sharing it;
   changed content: the new backup references the new chunk. The offsets are
   reported (``reread_offsets``).

The manifest is not published here: a VM's disks may be copied by different
movers, so the caller publishes with `Store.publish_backup` once all disks
are in.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable, Protocol

from ..store import BackupExists, ChunkCorrupted, ChunkMissing, NotFound, Store
from .errors import BadExtents, InvalidRequest
from .plan import ImageExtent, Step, plan_backup
from .pool import run_workers
from .resume import adopt_partial, save_partial, without_adopted
from .progress import Meter, ProgressCallback
from .result import CopyResult


class ImageSource(Protocol):
    async def extents(self, context: str = "zero") -> list[ImageExtent]: ...
    async def read(self, offset: int, length: int) -> bytes: ...


async def backup_disk(
    store: Store,
    source: ImageSource,
    *,
    vm_id: str,
    backup_id: str,
    disk_id: str,
    size: int | None = None,  # the disk's virtual size; None: from the extents
    parent_backup_id: str | None = None,
    incremental: bool = False,
    requests: int = 4,  # parallel reads from imageio
    max_inflight: int | None = None,  # chunks being hashed/compressed/written; default: requests reads' worth
    read_size: int = 4 * 1024 * 1024,  # smaller chunks are read together, in requests of up to this
    progress: ProgressCallback | None = None,
    clock: Callable[[], float] = time.monotonic,
    transport: str = "",
) -> CopyResult:
    t0 = clock()
    if incremental and parent_backup_id is None:
        raise InvalidRequest("an incremental backup needs parent_backup_id")
    try:
        # As many bytes in flight whatever the chunk size: smaller chunks, more of them.
        inflight = max_inflight or requests * max(1, read_size // store.chunk_size)
        bw = await store.begin_backup(vm_id, backup_id, parent_id=parent_backup_id, max_inflight=inflight)
    except BackupExists:
        return await _already_published(store, vm_id, backup_id, disk_id, size, transport, clock() - t0)
    use_dirty = incremental and bw.parent is not None and bw.parent.disk(disk_id) is not None
    extents = await source.extents("dirty" if use_dirty else "zero")
    if size is None:
        size = extents[-1].end if extents else 0
    if not isinstance(size, int) or size <= 0:
        raise InvalidRequest(f"disk size must be a positive integer, got {size!r}")
    dw = await bw.add_disk(disk_id, size)

    parent_disk = bw.parent.disk(disk_id) if use_dirty else None
    steps = plan_backup(extents, size, store.chunk_size, dirty_only=use_dirty, max_read=read_size,
                        parent_size=parent_disk.size if parent_disk is not None else None)
    parent = _ParentChunks(store, vm_id, parent_backup_id, disk_id) if use_dirty else None
    meter = Meter(size, progress, clock=clock)
    unchanged = size - sum(s.length for s in steps)
    meter.skip(unchanged)
    zeroed = 0
    from_parent = 0
    reread: list[int] = []

    async def do(step: Step) -> None:
        nonlocal zeroed, from_parent
        if step.kind == "zero":
            await dw.write_zero(step.offset, step.length)
            zeroed += step.length
            meter.add(step.length)
            return
        if step.parts:
            buf = await _patch_slot(step, source, parent)
            if buf is not None:
                before = dw.new_bytes
                await dw.write(step.offset, buf)
                from_parent += sum(e - s for s, e, how in step.parts if how == "parent")
                meter.add(step.length, read=step.read_length, written=dw.new_bytes - before)
                return
            step = Step("data", step.offset, step.length, step.read_start, step.read_end)  # parent unreadable
        data = await source.read(step.read_start, step.read_length)
        if step.read_length != step.length:
            # Known-zero edges of the slot are not read, only rebuilt.
            head = step.read_start - step.offset
            tail = step.offset + step.length - step.read_end
            data = b"".join((bytes(head), data, bytes(tail)))
        before = dw.new_bytes
        await dw.write(step.offset, data)
        meter.add(step.length, read=step.read_length, written=dw.new_bytes - before)

    try:
        # an interrupted copy of this disk into this backup stored some chunks: resume (resume.py)
        adopted = await adopt_partial(store, dw, vm_id, backup_id)
        steps, resumed = without_adopted(steps, adopted, store.chunk_size)
        meter.skip(resumed)
        await run_workers(do, steps, requests)
        for attempt in range(3):
            try:
                info = await dw.commit()
                break
            except ChunkMissing as e:
                # Inherited chunks gc removed meanwhile: read those slots again.
                if not e.offsets or attempt == 2:
                    raise
                cs = store.chunk_size
                reread.extend(e.offsets)
                resend = [Step("data", o, min(cs, size - o), o, o + min(cs, size - o)) for o in e.offsets]
                await run_workers(do, resend, requests)
    except BaseException as exc:
        try:
            if isinstance(exc, Exception):
                await dw.settle()  # chunks already read are stored, not read again by a rerun
                await save_partial(store, dw, vm_id, backup_id)
        finally:
            await dw.cancel()  # also when the copy is cancelled while settling
        raise
    meter.report()
    return CopyResult(
        op="backup", vm_id=bw.vm_id, backup_id=bw.backup_id, disk_id=dw.disk_id, size=size,
        bytes_read=meter.read, bytes_written=dw.new_bytes, bytes_zeroed=zeroed, bytes_unchanged=unchanged,
        new_chunks=dw.new_chunks, new_bytes=dw.new_bytes, dedup_chunks=dw.dedup_chunks,
        bytes_from_parent=from_parent, adopted_chunks=len(adopted), bytes_adopted=resumed,
        reread_offsets=sorted(reread), index_sha256=info.index_sha256, disk=info.to_dict(), incremental=use_dirty,
        transport=transport, seconds=round(clock() - t0, 3),
    )


class _ParentChunks:
    """The parent backup's chunks of one disk, read through the store's reader
    (opened on first use: a plan without partly dirty slots never needs it)."""

    def __init__(self, store: Store, vm_id: str, backup_id: str, disk_id: str):
        self._args = (vm_id, backup_id, disk_id)
        self._store = store
        self._reader = None
        self._lock = asyncio.Lock()

    async def chunk(self, offset: int) -> bytes | None:
        """The parent's plaintext of the slot at ``offset``; None if it cannot be read."""
        async with self._lock:
            if self._reader is None:
                self._reader = await self._store.open_disk(*self._args)
        try:
            return await self._reader.read_chunk(offset // self._reader.chunk_size)
        except (ChunkMissing, ChunkCorrupted, NotFound):
            return None


async def _patch_slot(step: Step, source: ImageSource, parent: _ParentChunks | None) -> bytes | None:
    """One slot from its parts: reads from the disk, the rest from the parent chunk
    (zeros elsewhere); the parent chunk is fetched while the disk is read. None if
    the parent chunk is unreadable."""
    if parent is None:
        return None
    fetch = asyncio.ensure_future(parent.chunk(step.offset))
    try:
        reads = [(s, e) for s, e, how in step.parts if how == "read"]
        datas = await asyncio.gather(*(source.read(s, e - s) for s, e in reads))
        base = await fetch
    finally:
        if not fetch.done():
            fetch.cancel()
            await asyncio.gather(fetch, return_exceptions=True)
    if base is None or len(base) != step.length:
        return None
    # One pass into the bytes the store keeps: parent ranges, read ranges, zeros between.
    o, pos, out = step.offset, step.offset, []
    parent_view = memoryview(base)
    got = dict(zip(reads, datas))
    for s, e, how in step.parts:
        if s > pos:
            out.append(bytes(s - pos))
        out.append(parent_view[s - o:e - o] if how == "parent" else got[(s, e)])
        pos = e
    if pos < o + step.length:
        out.append(bytes(o + step.length - pos))
    slot = b"".join(out)
    if len(slot) != step.length:  # a source returned a short read: never store a wrong slot
        raise BadExtents(f"the slot at {o} was rebuilt to {len(slot)} bytes, not {step.length}")
    return slot


async def _already_published(store: Store, vm_id, backup_id, disk_id, size, transport, seconds) -> CopyResult:
    info = await store.get_backup(vm_id, backup_id)
    d = info.disk(disk_id.lower()) if isinstance(disk_id, str) else None
    if d is None:
        raise InvalidRequest(f"backup {backup_id} is already published without disk {disk_id}")
    if size is not None and d.size != size:
        raise InvalidRequest(f"backup {backup_id} already holds disk {disk_id} with size {d.size}, not {size}")
    return CopyResult(
        op="backup", vm_id=info.vm_id, backup_id=info.backup_id, disk_id=d.disk_id, size=d.size,
        bytes_read=0, bytes_written=0, index_sha256=d.index_sha256, disk=d.to_dict(),
        incremental=info.parent_id is not None, already_published=True, transport=transport,
        seconds=round(seconds, 3),
    )


