"""Restore: a backup disk in the store -> an ovirt-imageio upload transfer.

Data chunks are read with `DiskReader.read_chunk` (every chunk's digest is
verified before a byte of it is sent) and written with ``PUT`` +
``Content-Range``; zero runs become ``PATCH {"op": "zero"}`` (zeros are
never sent over the wire); one ``PATCH {"op": "flush"}`` ends the copy.
``requests`` workers each hold at most one chunk, so memory is bounded by
``requests`` chunks.
"""

from __future__ import annotations

import time
from typing import Callable, Protocol

from ..store import Store
from .errors import InvalidRequest
from .pool import run_workers
from .progress import Meter, ProgressCallback
from .result import CopyResult

ZERO_PIECE = 1 << 30  # split zero runs so progress moves on very large disks


class ImageSink(Protocol):
    async def write(self, offset: int, data: bytes) -> None: ...
    async def zero(self, offset: int, length: int) -> None: ...
    async def flush(self) -> None: ...


async def restore_disk(
    store: Store,
    sink: ImageSink,
    *,
    vm_id: str,
    backup_id: str,
    disk_id: str,
    size: int | None = None,  # the target disk's size, if known: must hold the backup
    requests: int = 4,
    progress: ProgressCallback | None = None,
    clock: Callable[[], float] = time.monotonic,
    transport: str = "",
    index_sha256: str | None = None,  # the catalog's digest of the index (refuse a replaced one)
) -> CopyResult:
    t0 = clock()
    reader = await store.open_disk(vm_id, backup_id, disk_id, catalog_sha256=index_sha256)
    if size is not None and size < reader.size:
        raise InvalidRequest(f"target disk ({size} bytes) is smaller than the backup disk ({reader.size} bytes)")
    cs = reader.chunk_size
    steps: list[tuple[str, int, int]] = []
    for ext in reader.extents():
        if ext.zero:
            for o in range(ext.offset, ext.offset + ext.length, ZERO_PIECE):
                steps.append(("zero", o, min(ZERO_PIECE, ext.offset + ext.length - o)))
        else:
            for o in range(ext.offset, ext.offset + ext.length, cs):
                steps.append(("data", o, min(cs, ext.offset + ext.length - o)))
    meter = Meter(reader.size, progress, clock=clock)
    zeroed = 0

    async def do(step: tuple[str, int, int]) -> None:
        nonlocal zeroed
        kind, offset, length = step
        if kind == "zero":
            await sink.zero(offset, length)
            zeroed += length
            meter.add(length)
        else:
            data = await reader.read_chunk(offset // cs)
            await sink.write(offset, data)
            meter.add(length, read=length, written=length)

    await run_workers(do, steps, requests)
    await sink.flush()
    meter.report()
    return CopyResult(
        op="restore", vm_id=reader.info.vm_id, backup_id=reader.info.backup_id, disk_id=disk_id.lower(),
        size=reader.size, bytes_read=meter.read, bytes_written=meter.written, bytes_zeroed=zeroed,
        index_sha256=reader.info.disk(reader.disk_id).index_sha256, transport=transport,
        seconds=round(clock() - t0, 3),
    )
