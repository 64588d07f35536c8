"""The fixed index (``<disk-id>.fidx``): one 32-byte digest per disk chunk.

Layout (all integers little-endian; see docs/store-format.md):

    offset size  field
    0      8     magic b"OVLTFIDX"
    8      4     version (u32) = the store's version (1 or 2; same layout)
    12     4     flags (u32) = 0, reserved
    16     16    index uuid (RFC 4122 bytes), random per index file
    32     8     disk size in bytes (u64)
    40     8     chunk size in bytes (u64)
    48     8     created, Unix seconds (i64)
    56     32    SHA-256 over the digest array as stored
    88     4008  zero (reserved; readers ignore)
    4096   32*n  digests, n = ceil(size / chunk_size); 32 zero bytes = zero chunk

The header is padded to 4096 bytes as in Proxmox Backup Server's fixed index,
so the digest array is page-aligned and the header can grow in later versions.
"""

from __future__ import annotations

import hashlib
import struct
import time
import uuid as _uuid
from dataclasses import dataclass, field

from .errors import IndexCorrupted

MAGIC = b"OVLTFIDX"
VERSION = 1  # of a version-1 store's indexes; a version-2 store writes 2
HEADER_SIZE = 4096
DIGEST_SIZE = 32
ZERO_DIGEST = bytes(DIGEST_SIZE)

_HEADER = struct.Struct("<8sII16sQQq32s")


def chunk_count(size: int, chunk_size: int) -> int:
    return (size + chunk_size - 1) // chunk_size


@dataclass
class FixedIndex:
    size: int
    chunk_size: int
    digests: bytearray
    uuid: _uuid.UUID = field(default_factory=_uuid.uuid4)
    created: int = field(default_factory=lambda: int(time.time()))
    version: int = VERSION  # 1 or 2, the store's version (digests are SHA-256 or BLAKE3)

    @classmethod
    def empty(cls, size: int, chunk_size: int) -> "FixedIndex":
        """An index whose every slot is the zero digest."""
        if size < 0 or chunk_size <= 0:
            raise ValueError(f"bad size {size} / chunk size {chunk_size}")
        return cls(size=size, chunk_size=chunk_size, digests=bytearray(chunk_count(size, chunk_size) * DIGEST_SIZE))

    @property
    def count(self) -> int:
        return len(self.digests) // DIGEST_SIZE

    def get(self, i: int) -> bytes:
        return bytes(self.digests[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE])

    def set(self, i: int, digest: bytes) -> None:
        if len(digest) != DIGEST_SIZE:
            raise ValueError("digest must be 32 bytes")
        self.digests[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE] = digest

    def __iter__(self):
        for i in range(self.count):
            yield self.get(i)

    def chunk_len(self, i: int) -> int:
        """Length of slot ``i``: chunk_size except a shorter last chunk."""
        start = i * self.chunk_size
        return min(self.chunk_size, self.size - start)

    def csum(self) -> bytes:
        return hashlib.sha256(self.digests).digest()

    def referenced(self) -> set[bytes]:
        """Distinct non-zero digests."""
        out = {self.get(i) for i in range(self.count)}
        out.discard(ZERO_DIGEST)
        return out

    def encode(self) -> bytes:
        head = _HEADER.pack(
            MAGIC, self.version, 0, self.uuid.bytes, self.size, self.chunk_size, self.created, self.csum()
        )
        return head + bytes(HEADER_SIZE - len(head)) + bytes(self.digests)

    @classmethod
    def decode(cls, data: bytes, path: str = "<index>", version: int = VERSION) -> "FixedIndex":
        if len(data) < HEADER_SIZE:
            raise IndexCorrupted(path, f"file is {len(data)} bytes, shorter than the {HEADER_SIZE}-byte header")
        expect = version
        magic, version, _flags, uid, size, chunk_size, created, csum = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise IndexCorrupted(path, f"bad magic {magic!r}")
        if version != expect:
            raise IndexCorrupted(path, f"unsupported index version {version} in a version-{expect} store")
        if chunk_size <= 0:
            raise IndexCorrupted(path, f"bad chunk size {chunk_size}")
        n = chunk_count(size, chunk_size)
        expected = HEADER_SIZE + n * DIGEST_SIZE
        if len(data) != expected:
            raise IndexCorrupted(path, f"file is {len(data)} bytes, expected {expected} for {n} chunks")
        digests = bytearray(data[HEADER_SIZE:])
        if hashlib.sha256(digests).digest() != csum:
            raise IndexCorrupted(path, "checksum over the digests does not match the header")
        return cls(size=size, chunk_size=chunk_size, digests=digests, uuid=_uuid.UUID(bytes=uid), created=created,
                   version=version)
