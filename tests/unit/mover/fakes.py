"""In-memory stand-ins for an imageio transfer (same interface as ImageioClient)."""
from __future__ import annotations

import asyncio

from imageio_ext.copy import ImageExtent

CLUSTER = 64 * 1024


class FakeImage:
    """A disk image with qcow2-like allocation (64 KiB clusters) and a dirty bitmap."""

    def __init__(self, size: int):
        self.data = bytearray(size)
        self.allocated = [False] * (size // CLUSTER)
        self.dirty = [False] * (size // CLUSTER)
        self.reads: list[tuple[int, int]] = []
        self.writes: list[tuple[int, int]] = []
        self.zeros: list[tuple[int, int]] = []
        self.flushes = 0
        self.fail_after_reads: int | None = None
        self.read_delay = 0.0

    @property
    def size(self) -> int:
        return len(self.data)

    def guest_write(self, offset: int, data: bytes) -> None:
        self.data[offset:offset + len(data)] = data
        for c in range(offset // CLUSTER, (offset + len(data) - 1) // CLUSTER + 1):
            self.allocated[c] = True
            self.dirty[c] = True

    def clear_dirty(self) -> None:
        self.dirty = [False] * len(self.dirty)

    def _runs(self, key) -> list[tuple[int, int, tuple]]:
        out = []
        for c in range(len(self.allocated)):
            k = key(c)
            if out and out[-1][2] == k:
                s, l, _ = out[-1]
                out[-1] = (s, l + CLUSTER, k)
            else:
                out.append((c * CLUSTER, CLUSTER, k))
        return out

    def _zero(self, c: int) -> bool:
        # like qemu: unallocated clusters read as zeros; allocated are data
        return not self.allocated[c]

    async def extents(self, context: str = "zero") -> list[ImageExtent]:
        if context == "zero":
            return [ImageExtent(s, l, k[0]) for s, l, k in self._runs(lambda c: (self._zero(c),))]
        return [ImageExtent(s, l, k[0], k[1]) for s, l, k in self._runs(lambda c: (self._zero(c), self.dirty[c]))]

    async def read(self, offset: int, length: int) -> bytes:
        if self.fail_after_reads is not None and len(self.reads) >= self.fail_after_reads:
            from imageio_ext.copy import ImageioUnavailable
            raise ImageioUnavailable("fake://", "daemon killed")
        if self.read_delay:
            await asyncio.sleep(self.read_delay)
        self.reads.append((offset, length))
        return bytes(self.data[offset:offset + length])

    # sink
    async def write(self, offset: int, data: bytes) -> None:
        self.writes.append((offset, len(data)))
        self.data[offset:offset + len(data)] = data

    async def zero(self, offset: int, length: int) -> None:
        self.zeros.append((offset, length))
        self.data[offset:offset + length] = bytes(length)

    async def flush(self) -> None:
        self.flushes += 1
