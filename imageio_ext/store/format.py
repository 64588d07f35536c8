"""Store format versions and their codecs (docs/store-format.md).

`store_format(config, key)` returns the codec set of one store:

- version 1: SHA-256 names, each chunk one zstd frame, plain indexes (index
  version 1) and manifests (manifest version 1);
- version 2: BLAKE3 names (keyed with a key derived from the store key when
  the store is encrypted), each chunk a small header plus a zstd frame or the
  raw bytes, optionally sealed with AES-256-GCM; indexes (index version 2)
  and manifests (manifest version 2) sealed too when encrypted.

A reader never mixes versions: each object carries its version and a store
of one version refuses objects of another (`sniff_chunk` tells them apart).
"""

from __future__ import annotations

import secrets
import struct
import threading

import blake3
import zstandard

from .chunk import ZSTD_MAGIC, ChunkCodec, compress_bound, worth_compressing
from .crypto import NONCE_SIZE, TAG_SIZE, StoreKey, seal, unseal
from .errors import ChunkCorrupted, IncompatibleStore, StoreKeyMissing
from .fidx import ZERO_DIGEST

CHUNK_MAGIC_V2 = b"OVC2"
FLAG_COMPRESSED = 0x01
FLAG_ENCRYPTED = 0x02
CHUNK_HEADER = struct.Struct("<4sB3sI")  # magic, flags, reserved (zero), plaintext length
SEAL_MAGIC = b"OVLTSEAL"
SEAL_OVERHEAD = len(SEAL_MAGIC) + NONCE_SIZE + TAG_SIZE
ENCRYPTION = "aes-256-gcm"


def chunk_ad(store_id: bytes, digest: bytes, header: bytes) -> bytes:
    return b"ovault-chunk\0" + store_id + digest + header


def meta_ad(store_id: bytes, kind: str, path: str) -> bytes:
    return b"ovault-meta\0" + store_id + kind.encode() + b"\0" + path.encode()


def sniff_chunk(head: bytes) -> int | None:
    """The format version a chunk file's first bytes belong to, or None."""
    if head[:4] == CHUNK_MAGIC_V2:
        return 2
    if len(head) >= 4 and struct.unpack_from("<I", head)[0] == ZSTD_MAGIC:
        return 1
    return None


class ChunkCodecV2:
    """Chunks of a version-2 store; ``key`` None on an encrypted store means
    the key is missing: every use that needs it raises `StoreKeyMissing`."""

    def __init__(self, chunk_size: int, level: int, *, store_id: bytes, encrypted: bool,
                 key: StoreKey | None, url: str, fingerprint: str | None):
        self._v1 = ChunkCodec(chunk_size, level)  # zero test, zstd contexts
        self.chunk_size = chunk_size
        self.level = level
        self.store_id = store_id
        self.encrypted = encrypted
        self.key = key
        self._url, self._fp = url, fingerprint
        extra = NONCE_SIZE + TAG_SIZE if encrypted else 0
        self.max_blob = CHUNK_HEADER.size + extra + max(compress_bound(chunk_size), chunk_size)
        self._local = threading.local()

    def _need_key(self, what: str) -> StoreKey:
        if self.key is None:
            raise StoreKeyMissing(self._url, self._fp or "?", what)
        return self.key

    def is_zero(self, data) -> bool:
        return self._v1.is_zero(data)

    def digest(self, data) -> bytes:
        if self.is_zero(data):
            return ZERO_DIGEST
        if self.encrypted:
            return blake3.blake3(data, key=self._need_key("writing a chunk").digest_key).digest()
        return blake3.blake3(data).digest()

    def compress(self, data) -> bytes:
        return self._v1.compress(data)

    def encode(self, digest: bytes, data) -> bytes | bytearray:
        parts = self.encode_parts(digest, data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def encode_parts(self, digest: bytes, data) -> list:
        """The chunk file as buffers to write one after the other: an unencrypted
        chunk stored raw is its header and ``data`` itself (no copy of it)."""
        compressed = worth_compressing(data, self.compress)
        payload = self.compress(data) if compressed else data
        flags = (FLAG_COMPRESSED if compressed else 0) | (FLAG_ENCRYPTED if self.encrypted else 0)
        header = CHUNK_HEADER.pack(CHUNK_MAGIC_V2, flags, b"\0\0\0", len(data))
        if self.encrypted:
            key = self._need_key("writing a chunk")
            # One buffer, encrypted in place behind the header and nonce: no copy
            # of the chunk besides the encryption itself.
            nonce = secrets.token_bytes(NONCE_SIZE)
            h, n = CHUNK_HEADER.size, NONCE_SIZE
            out = bytearray(h + n + len(payload) + TAG_SIZE)
            out[:h], out[h : h + n] = header, nonce
            key.chunk_aead.encrypt_into(nonce, payload, chunk_ad(self.store_id, digest, header),
                                        memoryview(out)[h + n :])
            return [out]
        return [header, payload]

    def decode(self, digest: bytes, blob: bytes) -> bytes:
        h = digest.hex()
        if len(blob) < CHUNK_HEADER.size:
            raise ChunkCorrupted(h, f"file is {len(blob)} bytes, shorter than the chunk header")
        magic, flags, reserved, size = CHUNK_HEADER.unpack_from(blob)
        if magic != CHUNK_MAGIC_V2:
            v = sniff_chunk(blob)
            raise ChunkCorrupted(h, "a version-1 chunk in a version-2 store" if v == 1 else f"bad magic {magic!r}")
        if flags & ~(FLAG_COMPRESSED | FLAG_ENCRYPTED) or reserved != b"\0\0\0":
            raise ChunkCorrupted(h, f"unknown flags {flags:#x} or reserved bytes set")
        if bool(flags & FLAG_ENCRYPTED) != self.encrypted:
            raise ChunkCorrupted(h, "encrypted chunk in a plain store" if self.encrypted is False
                                 else "unencrypted chunk in an encrypted store")
        if size > self.chunk_size:
            raise ChunkCorrupted(h, f"plaintext length {size} exceeds the chunk size {self.chunk_size}")
        header, payload = bytes(blob[: CHUNK_HEADER.size]), memoryview(blob)[CHUNK_HEADER.size :]
        if self.encrypted:
            key = self._need_key("reading a chunk")
            try:
                payload = unseal(key.chunk_aead, payload, chunk_ad(self.store_id, digest, header))
            except ValueError as e:
                raise ChunkCorrupted(h, str(e)) from None
        if flags & FLAG_COMPRESSED:
            d = getattr(self._local, "dctx", None)
            if d is None:
                d = self._local.dctx = zstandard.ZstdDecompressor()
            try:
                if zstandard.frame_content_size(bytes(payload[:18])) != size:
                    raise ChunkCorrupted(h, "zstd frame size differs from the header's plaintext length")
                data = d.decompress(payload)
            except zstandard.ZstdError as e:
                raise ChunkCorrupted(h, f"zstd: {e}") from e
        else:
            data = payload if isinstance(payload, bytes) else bytes(payload)
        if len(data) != size:
            raise ChunkCorrupted(h, f"holds {len(data)} bytes, header says {size}")
        if self.digest(data) != digest:
            raise ChunkCorrupted(h, "content does not match its BLAKE3 name")
        return data


class StoreFormat:
    """Everything version-specific about one store: chunk codec, index and
    manifest versions, and the sealing of indexes and manifests."""

    def __init__(self, config, key: StoreKey | None, url: str, level: int = 1):
        self.version = config.version
        self.url = url
        self.encrypted = config.encryption == ENCRYPTION
        self.fingerprint = config.key_fingerprint
        self.key = key
        self.store_id = config.store_id.bytes if config.store_id else b""
        if self.version == 1:
            self.chunks = ChunkCodec(config.chunk_size, level)
        elif self.version == 2:
            self.chunks = ChunkCodecV2(config.chunk_size, level, store_id=self.store_id, encrypted=self.encrypted,
                                       key=key, url=url, fingerprint=self.fingerprint)
        else:  # StoreConfig refuses these first
            raise IncompatibleStore(url, f"store version {self.version}")

    @property
    def index_version(self) -> int:
        return self.version

    @property
    def manifest_version(self) -> int:
        return self.version

    @property
    def meta_overhead(self) -> int:
        """Bytes a sealed index or manifest adds to its plaintext."""
        return SEAL_OVERHEAD if self.encrypted else 0

    def require_key(self, what: str) -> StoreKey:
        if self.key is None:
            raise StoreKeyMissing(self.url, self.fingerprint or "?", what)
        return self.key

    def seal_meta(self, kind: str, path: str, data: bytes) -> bytes:
        """The file for an index or manifest at ``path`` (sealed if encrypted)."""
        if not self.encrypted:
            return data
        key = self.require_key(f"writing the {kind} {path}")
        return SEAL_MAGIC + seal(key.meta_aead, data, meta_ad(self.store_id, kind, path))

    def open_meta(self, kind: str, path: str, blob: bytes) -> bytes:
        """Inverse of `seal_meta`; ValueError (with the reason) when it fails."""
        if not self.encrypted:
            if blob[: len(SEAL_MAGIC)] == SEAL_MAGIC:
                raise ValueError("an encrypted object in a plain store")
            return blob
        key = self.require_key(f"reading the {kind} {path}")
        if blob[: len(SEAL_MAGIC)] != SEAL_MAGIC:
            raise ValueError("not sealed (an unencrypted object in an encrypted store)")
        return unseal(key.meta_aead, blob[len(SEAL_MAGIC) :], meta_ad(self.store_id, kind, path))
