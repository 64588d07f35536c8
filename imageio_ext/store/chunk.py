"""Chunk codec: SHA-256 naming, zero detection, zstd framing.

A chunk file holds exactly one zstd frame (with the content size in the
frame header) of the chunk's plaintext; its name is the lower-case hex
SHA-256 of that plaintext. All CPU work here is GIL-free (hashlib releases
the GIL for large buffers, python-zstandard while compressing), so the store
runs it in a thread pool and gets real parallelism.

zstd compressors are not safe to share between threads, hence one per
thread.

Incompressible chunks (already compressed or encrypted guest data) are not
run through the compressor: `worth_compressing` compresses a small sample
first, and a chunk whose sample does not shrink is stored as a zstd frame
of *raw blocks* (`raw_frame`) — still exactly one valid zstd frame, so every
version-1 reader decodes it, at the cost of a memory copy.
"""

from __future__ import annotations

import hashlib
import struct
import threading

import zstandard

from .errors import ChunkCorrupted
from .fidx import ZERO_DIGEST


def compress_bound(size: int) -> int:
    """The largest zstd frame ``size`` bytes can compress to (zstd's
    ``ZSTD_COMPRESSBOUND``): a stored chunk larger than this is damage and is
    refused before it is read."""
    return size + (size >> 8) + ((128 * 1024 - size) >> 11 if size < 128 * 1024 else 0)


ZSTD_MAGIC = 0xFD2FB528
_RAW_BLOCK = 128 * 1024  # zstd's largest block
SAMPLE_PIECES = 4  # pieces of the chunk compressed to decide
SAMPLE_PIECE = 4 * 1024
SAMPLE_MIN_SAVING = 0.03  # compress only if the sample shrinks by at least 3 %
_ZERO_HEAD = 64  # bytes looked at before a buffer that is not bytes is copied to test for zeros


def raw_frame(data) -> bytes:
    """One zstd frame (RFC 8878) holding ``data`` in raw blocks: single
    segment, 4-byte content size, no checksum."""
    n = len(data)
    out = bytearray(struct.pack("<IBI", ZSTD_MAGIC, 0xA0, n))
    if n == 0:
        out += (1).to_bytes(3, "little")  # last block, raw, size 0
    view = memoryview(data)
    for off in range(0, n, _RAW_BLOCK):
        piece = view[off : off + _RAW_BLOCK]
        out += ((len(piece) << 3) | int(off + _RAW_BLOCK >= n)).to_bytes(3, "little")
        out += piece
    return bytes(out)


def worth_compressing(data, compress) -> bool:
    """Decide from a sample of ``SAMPLE_PIECES`` pieces spread over the chunk
    whether compressing it pays; ``compress`` is the compressor to try."""
    n = len(data)
    if n < 4 * SAMPLE_PIECES * SAMPLE_PIECE:
        return True  # under 64 KiB: just compress it
    step = (n - SAMPLE_PIECE) // (SAMPLE_PIECES - 1)
    sample = b"".join(bytes(data[i * step : i * step + SAMPLE_PIECE]) for i in range(SAMPLE_PIECES))
    return len(compress(sample)) <= len(sample) * (1 - SAMPLE_MIN_SAVING)


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
            # memoryview == bytes compares item by item (20x slower than a copy), so a
            # view is copied, but only when its head is zero: a data chunk rarely is.
            if len(data) and bytes(memoryview(data)[:_ZERO_HEAD]) != bytes(min(len(data), _ZERO_HEAD)):
                return False
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

    def encode(self, digest: bytes, data) -> bytes:
        """The chunk file for ``data``: a zstd frame, compressed when the
        sample says it pays, else raw blocks."""
        if worth_compressing(data, self.compress):
            return self.compress(data)
        return raw_frame(data)

    def encode_parts(self, digest: bytes, data) -> list:
        """`encode` as a list of buffers written one after the other."""
        return [self.encode(digest, data)]

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
