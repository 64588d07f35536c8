"""The chunk store: put, get and touch content-addressed chunks on a target.

- A chunk is named by the digest of its plaintext (`layout.chunk_path`;
  SHA-256 in a version-1 store, BLAKE3 — keyed when encrypted — in version 2,
  see `format`) and
  written through `Target.write_file` (temp name + fsync + rename), so a chunk
  file is either absent or complete. Zero chunks are never stored; their
  digest is `ZERO_DIGEST`.
- Putting a chunk that exists is skipped (dedup) but *touches* it (mtime =
  target clock), like Proxmox Backup Server's insert_chunk: a touched chunk
  counts as young for gc, which is what keeps in-flight backups safe.
- Reading decompresses and re-hashes: a chunk that does not match its name is
  `ChunkCorrupted`, never returned. Whoever finds it (verify, a restore, an
  export) also *sets it aside* on the target (`mark_bad`: renamed to
  ``<digest>.<n>.bad``, like Proxmox Backup Server's bad chunks), so every
  mover and every later backup sees it: to a writer the chunk is now absent,
  so the next put of that content writes it again, and a writer inheriting it
  from a parent index is told to re-read those ranges (`DiskWriter.commit`).
  That rewrite heals every backup that references the digest.
- Hashing, zstd and AES-GCM run in a thread pool (`cpu`); all release the GIL.
- `read_chunk(digest, length)` is the one way to read a chunk back, whatever
  the version: it reads, authenticates/decrypts, decompresses and verifies.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Awaitable, Callable, Iterable, TypeVar

from .chunk import ChunkCodec
from .format import ChunkCodecV2, StoreFormat
from .errors import ChunkCorrupted, ChunkMissing, Damaged, NotFound, StoreNotInitialized
from .fidx import ZERO_DIGEST
from .layout import MAX_BAD_COPIES, bad_chunk_path, chunk_path
from .leases import mark_damaged
from .target import Target

T = TypeVar("T")
R = TypeVar("R")


async def bounded_map(fn: Callable[[T], Awaitable[R]], items: Iterable[T], limit: int) -> list[R]:
    """Run ``fn`` over ``items`` with at most ``limit`` in flight; keep order."""
    sem = asyncio.Semaphore(limit)

    async def one(x: T) -> R:
        async with sem:
            return await fn(x)

    return list(await asyncio.gather(*(one(x) for x in items)))


@dataclass(frozen=True)
class PutResult:
    digest: bytes
    new: bool  # False: deduplicated (or zero)
    stored_bytes: int  # compressed bytes written, 0 if not new


class ChunkStore:
    """The ``chunks/`` tree of one target. `configure` it with the store's chunk size."""

    def __init__(
        self,
        target: Target,
        *,
        cpu_workers: int | None = None,  # threads for SHA-256 and zstd
        compression_level: int = 1,  # zstd 1..3 is the useful range for disks
        io_concurrency: int = 8,  # chunk I/O in flight for verify, gc, touches
        touch_refresh: float = 3600.0,  # writers re-touch chunks touched longer ago
    ):
        self.target = target
        self.compression_level = compression_level
        self.io_concurrency = io_concurrency
        self.touch_refresh = touch_refresh
        self._pool = ThreadPoolExecutor(
            max_workers=cpu_workers or min(4, os.cpu_count() or 1), thread_name_prefix="ovault-cpu"
        )
        self._codec: ChunkCodec | ChunkCodecV2 | None = None
        self.format: StoreFormat | None = None
        self._inflight: dict[bytes, asyncio.Future] = {}  # digest -> first put in progress

    def configure(self, fmt: StoreFormat) -> None:
        """Use the codecs of the store's format (version, digest, encryption)."""
        self.format = fmt
        self._codec = fmt.chunks

    @property
    def codec(self) -> ChunkCodec | ChunkCodecV2:
        if self._codec is None:
            raise StoreNotInitialized(self.target.url)
        return self._codec

    @property
    def chunk_size(self) -> int:
        return self.codec.chunk_size

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    async def cpu(self, fn: Callable[..., R], *args) -> R:
        """Run CPU-bound ``fn`` in the store's thread pool."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def map(self, fn: Callable[[T], Awaitable[R]], items: Iterable[T]) -> list[R]:
        """`bounded_map` at this store's I/O concurrency."""
        return await bounded_map(fn, items, self.io_concurrency)

    # -- writing -------------------------------------------------------------

    async def put(self, data: bytes) -> PutResult:
        """Hash and store one chunk (zeros are only hashed)."""
        if len(data) > self.chunk_size:
            raise ValueError(f"chunk of {len(data)} bytes exceeds chunk size {self.chunk_size}")
        digest = await self.cpu(self.codec.digest, data)
        if digest == ZERO_DIGEST:
            return PutResult(digest, False, 0)
        return await self.put_hashed(digest, data)

    async def put_hashed(self, digest: bytes, data: bytes) -> PutResult:
        """Store ``data`` known to hash to ``digest`` unless already present.

        Concurrent puts of one digest in this process (a disk with repeated
        content, two disks cloned from one template) share one write: the
        later ones wait for the first and count as deduplicated.
        """
        pending = self._inflight.get(digest)
        if pending is not None:
            await asyncio.shield(pending)
            return await self.put_hashed(digest, data)  # touches it, or writes it if the first failed
        fut = asyncio.get_running_loop().create_future()
        self._inflight[digest] = fut
        try:
            if await self.touch(digest):
                return PutResult(digest, False, 0)
            parts = await self.cpu(self.codec.encode_parts, digest, data)
            await self.target.write_file(chunk_path(digest), parts if len(parts) > 1 else parts[0])
            return PutResult(digest, True, sum(len(p) for p in parts))
        finally:
            del self._inflight[digest]
            fut.set_result(None)

    async def touch(self, digest: bytes) -> bool:
        """Mark a chunk as recently used; False if it does not exist."""
        path = chunk_path(digest)
        try:
            # Over NFS a touch resolves the name, then sets the time on the file handle,
            # so it can land on a chunk gc has just renamed aside to remove it. Confirm
            # the chunk is still under its name *after* the touch: gc renames, then
            # stats, then removes, so it sees either the new time (and puts the chunk
            # back) or this writer finds the chunk gone and writes it again.
            await self.target.touch_checked(path)
        except NotFound:
            return False
        return True

    async def touch_all(self, digests: Iterable[bytes]) -> list[bytes]:
        """Touch every chunk; return the digests of those that no longer exist."""

        async def one(dg: bytes) -> bytes | None:
            return None if await self.touch(dg) else dg

        return [dg for dg in await self.map(one, list(digests)) if dg is not None]

    # -- damage ----------------------------------------------------------------

    async def mark_bad(self, digest: bytes) -> str | None:
        """Set a damaged chunk aside as ``<digest>.<n>.bad``; return that path.

        Returns None if there was nothing to set aside (already moved by
        someone else) or if what was moved turns out to be intact — a writer
        re-wrote the chunk between our read and our rename — in which case it
        is put back.
        """
        if digest == ZERO_DIGEST:
            return None
        path = chunk_path(digest)
        bad = bad_chunk_path(digest, MAX_BAD_COPIES - 1)
        for n in range(MAX_BAD_COPIES):
            if not await self.target.exists(bad_chunk_path(digest, n)):
                bad = bad_chunk_path(digest, n)
                break
        await mark_damaged(self.target, digest)  # before the rename: committing incrementals look (leases.py)
        try:
            await self.target.rename(path, bad)
        except NotFound:
            return None
        try:
            await self.cpu(self.codec.decode, digest, await self.target.read_file(bad, max_size=self.codec.max_blob))
        except Damaged:  # corrupted, too large, or not a plain file
            return bad
        except NotFound:
            return None
        await self.target.rename(bad, path)  # intact after all (re-written meanwhile)
        return None

    async def bad_copies(self, digest: bytes) -> list[str]:
        """Paths of the damaged copies of a chunk set aside so far."""
        out = []
        for n in range(MAX_BAD_COPIES):
            p = bad_chunk_path(digest, n)
            if not await self.target.exists(p):
                break
            out.append(p)
        return out

    # -- reading -------------------------------------------------------------

    async def read_chunk(self, digest: bytes, length: int | None = None) -> bytes:
        """The plaintext of one chunk, verified (decrypted when the store is
        encrypted); see `get`."""
        return await self.get(digest, length)

    async def get(self, digest: bytes, length: int | None = None) -> bytes:
        """Read, decrypt, decompress and verify one chunk.

        ZERO_DIGEST needs ``length`` (zero chunks are not stored). When
        ``length`` is given, a chunk of another length is reported corrupted.
        """
        if digest == ZERO_DIGEST:
            if length is None:
                raise ValueError("the zero digest needs a length")
            return bytes(length)
        try:
            blob = await self.target.read_file(chunk_path(digest), max_size=self.codec.max_blob)
        except Damaged as e:  # larger than any zstd frame of a chunk, or a symlink: never read
            try:
                await self.mark_bad(digest)
            except Damaged:
                pass  # a symlinked directory on the way: refused, left for the operator
            raise ChunkCorrupted(digest.hex(), e.reason) from None
        except NotFound:
            if await self.target.exists(bad_chunk_path(digest, 0)):
                raise ChunkCorrupted(
                    digest.hex(), "it was found damaged and set aside (.bad); the next backup of its VM rewrites it"
                ) from None
            raise ChunkMissing(digest.hex()) from None
        try:
            data = await self.cpu(self.codec.decode, digest, blob)
        except ChunkCorrupted:
            await self.mark_bad(digest)
            raise
        if length is not None and len(data) != length:
            raise ChunkCorrupted(digest.hex(), f"is {len(data)} bytes, index slot needs {length}")
        return data
