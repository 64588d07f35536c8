"""Reading one disk of a published backup.

Every chunk is verified against its digest as it is read (`ChunkStore.get`),
so a restore never writes data the store cannot vouch for. Zero slots are
synthesised without I/O. Memory is bounded by ``readahead`` chunks.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import AsyncIterator, NamedTuple

from .chunkstore import ChunkStore
from .errors import InvalidRange
from .fidx import ZERO_DIGEST, FixedIndex
from .manifest import BackupInfo


class Extent(NamedTuple):
    offset: int
    length: int
    zero: bool


class DiskReader:
    def __init__(self, chunks: ChunkStore, info: BackupInfo, disk_id: str, index: FixedIndex, *, readahead: int = 4):
        self.chunks = chunks
        self.info = info
        self.disk_id = disk_id
        self.index = index
        self.size = index.size
        self.chunk_size = index.chunk_size
        self.readahead = max(1, readahead)

    def extents(self) -> list[Extent]:
        """Merged runs of data and zero chunks, for restores that skip zeros."""
        out: list[Extent] = []
        for i in range(self.index.count):
            zero = self.index.get(i) == ZERO_DIGEST
            off, ln = i * self.chunk_size, self.index.chunk_len(i)
            if out and out[-1].zero == zero:
                last = out[-1]
                out[-1] = Extent(last.offset, last.length + ln, zero)
            else:
                out.append(Extent(off, ln, zero))
        return out

    async def read_chunk(self, i: int) -> bytes:
        if not 0 <= i < self.index.count:
            raise InvalidRange(i * self.chunk_size, self.chunk_size, f"chunk {i} outside the disk")
        return await self.chunks.get(self.index.get(i), self.index.chunk_len(i))

    async def read(self, offset: int, length: int) -> bytes:
        """Any byte range inside the disk."""
        if offset < 0 or length < 0 or offset + length > self.size:
            raise InvalidRange(offset, length, f"outside the disk (size {self.size})")
        if length == 0:
            return b""
        cs = self.chunk_size
        first, last = offset // cs, (offset + length - 1) // cs
        parts = []
        async for i, data in self._chunks(first, last + 1):
            lo = max(offset - i * cs, 0)
            hi = min(offset + length - i * cs, len(data))
            parts.append(data[lo:hi])
        return b"".join(parts)

    async def iter_chunks(self, start: int = 0, end: int | None = None) -> AsyncIterator[tuple[int, bytes]]:
        """Yield (offset, data) for chunk slots [start, end) in order."""
        async for i, data in self._chunks(start, self.index.count if end is None else end):
            yield i * self.chunk_size, data

    async def _chunks(self, start: int, end: int) -> AsyncIterator[tuple[int, bytes]]:
        pending: list[tuple[int, asyncio.Task]] = []
        nxt = start
        try:
            while nxt < end or pending:
                while nxt < end and len(pending) < self.readahead:
                    pending.append((nxt, asyncio.ensure_future(self.read_chunk(nxt))))
                    nxt += 1
                i, task = pending.pop(0)
                yield i, await task
        finally:
            for _, t in pending:
                t.cancel()
            if pending:
                await asyncio.gather(*(t for _, t in pending), return_exceptions=True)

    async def sha256(self) -> str:
        """SHA-256 hex of the whole guest-visible content (zeros included)."""
        h = hashlib.sha256()
        async for _, data in self.iter_chunks():
            await self.chunks.cpu(h.update, data)
        return h.hexdigest()
