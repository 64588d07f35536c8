"""Chunk codec: SHA-256 naming, zero detection, zstd framing.

A chunk file holds exactly one zstd frame (with the content size in the
frame header) of the chunk's plaintext; its name is the lower-case hex
SHA-256 of that plaintext. All CPU work here is GIL-free (hashlib releases
the GIL for large buffers, python-zstandard while compressing), so the store
runs it in a thread pool and gets real parallelism.

zstd compressors are not safe to share between threads, hence one per
thread.
"""

from __future__ import annotations

import hashlib
import threading

import zstandard

from .errors import ChunkCorrupted
from .fidx import ZERO_DIGEST


def compress_bound(size: int) -> int:
    """The largest zstd frame ``size`` bytes can compress to (zstd's
    ``ZSTD_COMPRESSBOUND``): a stored chunk larger than this is damage and is
    refused before it is read."""
    return size + (size >> 8) + ((128 * 1024 - size) >> 11 if size < 128 * 1024 else 0)


class ChunkCodec:
    def __init__(self, chunk_size: int, level: int = 1):
        if not 1 <= level <= 22:
            raise ValueError(f"zstd level must be 1..22, got {level}")
        self.chunk_size = chunk_size
        self.level = level
        self._zero = bytes(chunk_size)
        self.max_blob = compress_bound(chunk_size)  # the largest chunk file read
        self._local = threading.local()

    def is_zero(self, data) -> bool:
        if not isinstance(data, bytes):
            # memoryview == bytes compares item by item (20x slower than a copy).
            data = bytes(data)
        n = len(data)
        if n == self.chunk_size:
            return data == self._zero
        return data == self._zero[:n] if n <= self.chunk_size else not any(data)

    def digest(self, data) -> bytes:
        """SHA-256 of ``data``, or ZERO_DIGEST if it is all zeros."""
        if self.is_zero(data):
            return ZERO_DIGEST
        return hashlib.sha256(data).digest()

    def compress(self, data) -> bytes:
        c = getattr(self._local, "cctx", None)
        if c is None:
            c = self._local.cctx = zstandard.ZstdCompressor(level=self.level, write_content_size=True)
        return c.compress(data)

    def decode(self, digest: bytes, blob: bytes) -> bytes:
        """Decompress and verify; raise ChunkCorrupted on any mismatch."""
        h = digest.hex()
        try:
            size = zstandard.frame_content_size(blob)
        except zstandard.ZstdError as e:
            raise ChunkCorrupted(h, f"not a zstd frame ({e})") from e
        if size < 0 or size > self.chunk_size:
            raise ChunkCorrupted(h, f"frame content size {size} is not in 0..{self.chunk_size}")
        d = getattr(self._local, "dctx", None)
        if d is None:
            d = self._local.dctx = zstandard.ZstdDecompressor()
        try:
            data = d.decompress(blob)
        except zstandard.ZstdError as e:
            raise ChunkCorrupted(h, f"zstd: {e}") from e
        if len(data) != size:
            raise ChunkCorrupted(h, f"decompressed {len(data)} bytes, frame says {size}")
        if hashlib.sha256(data).digest() != digest:
            raise ChunkCorrupted(h, "content does not match its SHA-256 name")
        return data
