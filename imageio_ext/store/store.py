"""The content-addressed store on a backup target.

Design notes (the full on-target format is in docs/store-format.md):

- Chunks are named by the SHA-256 of their plaintext and written with
  temp name + fsync + rename, so a chunk file is either absent or complete.
  Writing a chunk that exists is skipped (dedup) but *touches* it (mtime =
  target clock), exactly like Proxmox Backup Server's insert_chunk: a touched
  chunk counts as young for gc.
- A backup exists only once ``manifest.json`` is renamed into place; indexes
  are written before it. A crash leaves either no manifest (garbage, removed
  by gc after the grace period) or a complete backup.
- gc is mark-and-sweep. Mark: every digest of every published index, plus
  indexes already committed by in-flight backups. Sweep: a chunk is removed
  only if unmarked *and* its mtime is older than ``now - grace`` on the
  target's own clock. To close the window between gc's stat and its unlink,
  gc first renames the chunk to a temp name, stats it again, and renames it
  back if a writer touched it in between. A writer whose touch finds the
  chunk gone re-sends it (dedup miss) or, for chunks it inherited from the
  parent index, is told which ranges to re-send (`ChunkMissing.offsets`).
- Rules that keep in-flight backups safe: grace must be longer than the
  longest backup (default one day); a writer touches, at commit, every chunk
  it references that it did not write or touch itself recently.

Which operation is safe against which (no locks on the target):

================  ======================================================
backup write      concurrent with everything, including gc and deletes
delete_backup     unpublishes first (removes manifest.json), then cleans
gc                concurrent with writers and readers; one gc at a time
                  is expected (two are safe but do double work)
verify / read     concurrent with everything; a chunk gc removes can only
                  be one no published index references
================  ======================================================
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable, TypeVar

import structlog

from .chunk import ChunkCodec, chunk_path
from .errors import (
    BackupExists,
    BackupNotFound,
    ChunkCorrupted,
    ChunkMissing,
    DiskNotFound,
    IncompatibleStore,
    IndexCorrupted,
    ManifestCorrupted,
    NotFound,
    StoreNotInitialized,
)
from .fidx import ZERO_DIGEST, FixedIndex
from .ids import check_uuid, is_digest_hex, is_uuid
from .manifest import DEFAULT_CHUNK_SIZE, BackupInfo, DiskInfo, StoreConfig, utc_now_iso
from .target import Target, is_tmp_name, join, open_target, tmp_name

log = structlog.get_logger(__name__)

CONFIG_NAME = "ovault-store.json"
MANIFEST_NAME = "manifest.json"
DEFAULT_GC_GRACE = 24 * 3600

T = TypeVar("T")
R = TypeVar("R")


async def bounded_map(fn: Callable[[T], Awaitable[R]], items: Iterable[T], limit: int) -> list[R]:
    """Run ``fn`` over ``items`` with at most ``limit`` in flight; keep order."""
    sem = asyncio.Semaphore(limit)

    async def one(x: T) -> R:
        async with sem:
            return await fn(x)

    return list(await asyncio.gather(*(one(x) for x in items)))


def backup_dir(vm_id: str, backup_id: str) -> str:
    return f"vms/{check_uuid(vm_id, 'VM')}/{check_uuid(backup_id, 'backup')}"


@dataclass(frozen=True)
class PutResult:
    digest: bytes
    new: bool  # False: deduplicated (or zero)
    stored_bytes: int  # compressed bytes written, 0 if not new


@dataclass
class DamagedChunk:
    digest: str
    reason: str
    disk_offsets: dict[str, list[int]] = field(default_factory=dict)  # disk_id -> offsets


@dataclass
class VerifyReport:
    vm_id: str
    backup_id: str
    chunks_checked: int = 0
    bytes_checked: int = 0  # plaintext bytes re-hashed
    damaged: list[DamagedChunk] = field(default_factory=list)
    bad_indexes: dict[str, str] = field(default_factory=dict)  # disk_id -> reason

    @property
    def ok(self) -> bool:
        return not self.damaged and not self.bad_indexes


@dataclass
class GcReport:
    now: float = 0.0  # target clock at start
    cutoff: float = 0.0
    indexes: int = 0
    referenced: int = 0
    chunks_seen: int = 0
    chunks_removed: int = 0
    bytes_removed: int = 0
    chunks_kept_young: int = 0
    tmp_removed: int = 0
    orphans_removed: list[str] = field(default_factory=list)  # "vm/backup"


@dataclass(frozen=True)
class StoreStats:
    backups: int
    chunks: int
    stored_bytes: int  # sum of chunk file sizes (compressed)
    logical_bytes: int  # sum over all backups of non-zero chunk bytes
    unique_referenced: int  # distinct non-zero digests referenced

    @property
    def dedup_ratio(self) -> float:
        """Logical bytes per stored byte (dedup and compression together)."""
        return self.logical_bytes / self.stored_bytes if self.stored_bytes else 0.0


class Store:
    """One store on one target. Use ``async with await Store.open(url) as store``."""

    def __init__(
        self,
        target: Target,
        *,
        cpu_workers: int | None = None,  # threads for SHA-256 and zstd
        compression_level: int = 1,  # zstd 1..3 is the useful range for disks
        io_concurrency: int = 8,  # chunk I/O in flight for verify/gc/readers
        touch_refresh: float = 3600.0,  # writers re-touch chunks touched longer ago
    ):
        self.target = target
        self.compression_level = compression_level
        self.io_concurrency = io_concurrency
        self.touch_refresh = touch_refresh
        self._cpu = ThreadPoolExecutor(
            max_workers=cpu_workers or min(4, os.cpu_count() or 1), thread_name_prefix="ovault-cpu"
        )
        self._config: StoreConfig | None = None
        self._codec: ChunkCodec | None = None
        self._inflight: dict[bytes, asyncio.Future] = {}  # digest -> first put in progress

    # -- lifecycle ---------------------------------------------------------

    @classmethod
    async def open(
        cls,
        url_or_path: str | os.PathLike,
        *,
        create: bool = False,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        target_options: dict[str, Any] | None = None,
        **options,
    ) -> "Store":
        """Open (and with ``create=True`` initialise) the store at a URL or path."""
        target = open_target(os.fspath(url_or_path), **(target_options or {}))
        store = cls(target, **options)
        try:
            await target.connect()
            if create:
                await store.init(chunk_size)
            else:
                await store.load()
        except BaseException:
            await store.close()
            raise
        return store

    async def close(self) -> None:
        self._cpu.shutdown(wait=True)
        await self.target.close()

    async def __aenter__(self) -> "Store":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    @property
    def config(self) -> StoreConfig:
        if self._config is None:
            raise StoreNotInitialized(self.target.url)
        return self._config

    @property
    def chunk_size(self) -> int:
        return self.config.chunk_size

    @property
    def codec(self) -> ChunkCodec:
        if self._codec is None:
            self._codec = ChunkCodec(self.config.chunk_size, self.compression_level)
        return self._codec

    async def init(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> StoreConfig:
        """Create ovault-store.json, or accept an existing identical store.

        An existing store with another format, version or chunk size is
        refused rather than silently reused.
        """
        try:
            existing = await self.target.read_file(CONFIG_NAME)
        except NotFound:
            existing = None
        if existing is not None:
            cfg = StoreConfig.from_json(existing, self.target.url)
            if cfg.chunk_size != chunk_size:
                raise IncompatibleStore(
                    self.target.url, f"existing store has chunk_size {cfg.chunk_size}, asked for {chunk_size}"
                )
        else:
            cfg = StoreConfig(chunk_size=chunk_size)
            # Validate our own document the way a reader would.
            StoreConfig.from_json(cfg.to_json(), self.target.url)
            await self.target.makedirs("chunks")
            await self.target.makedirs("vms")
            await self.target.write_file(CONFIG_NAME, cfg.to_json())
        self._config = cfg
        self._codec = None
        return cfg

    async def load(self) -> StoreConfig:
        try:
            data = await self.target.read_file(CONFIG_NAME)
        except NotFound:
            raise StoreNotInitialized(self.target.url) from None
        self._config = StoreConfig.from_json(data, self.target.url)
        self._codec = None
        return self._config

    async def cpu(self, fn: Callable[..., R], *args) -> R:
        return await asyncio.get_running_loop().run_in_executor(self._cpu, fn, *args)

    # -- chunks ------------------------------------------------------------

    async def put_chunk(self, data: bytes) -> bytes:
        """Store one chunk; return its 32-byte digest (ZERO_DIGEST for zeros)."""
        return (await self.put_chunk_ex(data)).digest

    async def put_chunk_ex(self, data: bytes) -> PutResult:
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
            path = chunk_path(digest)
            if await self.touch_chunk(digest):
                return PutResult(digest, False, 0)
            blob = await self.cpu(self.codec.compress, data)
            await self.target.write_file(path, blob)
            return PutResult(digest, True, len(blob))
        finally:
            del self._inflight[digest]
            fut.set_result(None)

    async def touch_chunk(self, digest: bytes) -> bool:
        """Mark a chunk as recently used; False if it does not exist."""
        try:
            await self.target.touch(chunk_path(digest))
        except NotFound:
            return False
        return True

    async def has_chunk(self, digest: bytes) -> bool:
        return await self.target.exists(chunk_path(digest))

    async def get_chunk(self, digest: bytes, length: int | None = None) -> bytes:
        """Read, decompress and verify one chunk.

        ZERO_DIGEST needs ``length`` (zero chunks are not stored). When
        ``length`` is given, a chunk of another length is reported corrupted.
        """
        if digest == ZERO_DIGEST:
            if length is None:
                raise ValueError("the zero digest needs a length")
            return bytes(length)
        try:
            blob = await self.target.read_file(chunk_path(digest))
        except NotFound:
            raise ChunkMissing(digest.hex()) from None
        data = await self.cpu(self.codec.decode, digest, blob)
        if length is not None and len(data) != length:
            raise ChunkCorrupted(digest.hex(), f"is {len(data)} bytes, index slot needs {length}")
        return data

    # -- indexes and manifests --------------------------------------------

    async def write_index(self, vm_id: str, backup_id: str, disk_id: str, index: FixedIndex) -> str:
        """Write ``<disk>.fidx`` atomically; return the file's SHA-256 hex."""
        path = join(backup_dir(vm_id, backup_id), f"{check_uuid(disk_id, 'disk')}.fidx")
        data = index.encode()
        await self.target.write_file(path, data)
        return hashlib.sha256(data).hexdigest()

    async def read_index(
        self, vm_id: str, backup_id: str, disk_id: str, *, expect_sha256: str | None = None
    ) -> FixedIndex:
        path = join(backup_dir(vm_id, backup_id), f"{check_uuid(disk_id, 'disk')}.fidx")
        try:
            data = await self.target.read_file(path)
        except NotFound:
            raise IndexCorrupted(path, "index file is missing") from None
        if expect_sha256 is not None and hashlib.sha256(data).hexdigest() != expect_sha256:
            raise IndexCorrupted(path, "file SHA-256 differs from the one recorded in the manifest")
        index = FixedIndex.decode(data, path)
        if index.chunk_size != self.chunk_size:
            raise IndexCorrupted(path, f"chunk size {index.chunk_size} differs from the store's {self.chunk_size}")
        return index

    async def read_backup_index(self, info: BackupInfo, disk_id: str) -> FixedIndex:
        disk = info.disk(disk_id)
        if disk is None:
            raise DiskNotFound(info.backup_id, disk_id)
        index = await self.read_index(info.vm_id, info.backup_id, disk_id, expect_sha256=disk.index_sha256)
        if index.size != disk.size:
            raise IndexCorrupted(f"{disk_id}.fidx", f"size {index.size} differs from manifest {disk.size}")
        return index

    async def publish_manifest(self, info: BackupInfo) -> None:
        """Publish a backup: check its indexes are in place, then rename the manifest in."""
        bdir = backup_dir(info.vm_id, info.backup_id)
        mpath = join(bdir, MANIFEST_NAME)
        if await self.target.exists(mpath):
            raise BackupExists(info.vm_id, info.backup_id)
        for d in info.disks:
            # Cheap insurance against an index removed by a misconfigured gc
            # (grace shorter than the backup): never publish a dangling backup.
            await self.read_index(info.vm_id, info.backup_id, d.disk_id, expect_sha256=d.index_sha256)
        await self.target.write_file(mpath, info.to_json())

    async def get_backup(self, vm_id: str, backup_id: str) -> BackupInfo:
        vm_id = check_uuid(vm_id, "VM")
        backup_id = check_uuid(backup_id, "backup")
        mpath = join(backup_dir(vm_id, backup_id), MANIFEST_NAME)
        try:
            data = await self.target.read_file(mpath)
        except NotFound:
            raise BackupNotFound(vm_id, backup_id) from None
        return BackupInfo.from_json(data, mpath, vm_id=vm_id, backup_id=backup_id)

    async def _scan_backup_dirs(self, vm_id: str | None = None) -> list[tuple[str, str, bool, float]]:
        """(vm_id, backup_id, has_manifest, newest mtime) of every backup dir."""
        out = []
        try:
            vms = [e.name for e in await self.target.scandir("vms") if e.is_dir and is_uuid(e.name)]
        except NotFound:
            return out
        if vm_id is not None:
            vm_id = check_uuid(vm_id, "VM")
            vms = [v for v in vms if v == vm_id]
        for vm in sorted(vms):
            try:
                entries = await self.target.scandir(f"vms/{vm}")
            except NotFound:
                continue
            for e in entries:
                if not (e.is_dir and is_uuid(e.name)):
                    continue
                try:
                    files = await self.target.scandir(f"vms/{vm}/{e.name}")
                except NotFound:
                    continue
                newest = max([e.mtime] + [f.mtime for f in files])
                has = any(f.name == MANIFEST_NAME for f in files)
                out.append((vm, e.name, has, newest))
        return out

    async def list_backups(self, vm_id: str | None = None, *, strict: bool = False) -> list[BackupInfo]:
        """Every published backup, from the manifests alone (catalog import).

        A damaged manifest is skipped with a warning, or raised if ``strict``.
        Sorted by (vm_id, created, backup_id).
        """
        found = []
        for vm, bid, has_manifest, _ in await self._scan_backup_dirs(vm_id):
            if not has_manifest:
                continue
            try:
                found.append(await self.get_backup(vm, bid))
            except BackupNotFound:
                continue  # deleted meanwhile
            except ManifestCorrupted as e:
                if strict:
                    raise
                log.warning("store.manifest_corrupted", vm_id=vm, backup_id=bid, error=str(e))
        found.sort(key=lambda b: (b.vm_id, b.created, b.backup_id))
        return found

    async def delete_backup(self, vm_id: str, backup_id: str) -> None:
        """Unpublish (remove manifest.json: atomic), then remove the indexes.

        Chunks are left for gc. A crash in between leaves an orphan dir that
        gc removes.
        """
        bdir = backup_dir(vm_id, backup_id)
        try:
            await self.target.remove(join(bdir, MANIFEST_NAME))
        except NotFound:
            raise BackupNotFound(vm_id, backup_id) from None
        await self._remove_dir(bdir)

    async def _remove_dir(self, bdir: str) -> bool:
        try:
            for e in await self.target.scandir(bdir):
                if not e.is_dir:
                    try:
                        await self.target.remove(join(bdir, e.name))
                    except NotFound:
                        pass
            return await self.target.rmdir(bdir)
        except NotFound:
            return True

    # -- writing and reading backups ---------------------------------------

    async def begin_backup(self, vm_id: str, backup_id: str, *, parent_id: str | None = None, **options):
        """Start writing a backup; see `BackupWriter`."""
        from .writer import BackupWriter

        vm_id = check_uuid(vm_id, "VM")
        backup_id = check_uuid(backup_id, "backup")
        parent = await self.get_backup(vm_id, parent_id) if parent_id is not None else None
        bdir = backup_dir(vm_id, backup_id)
        if await self.target.exists(join(bdir, MANIFEST_NAME)):
            raise BackupExists(vm_id, backup_id)
        await self.target.makedirs(bdir)
        return BackupWriter(self, vm_id, backup_id, parent, **options)

    async def publish_backup(
        self,
        vm_id: str,
        backup_id: str,
        disks: "Iterable[DiskInfo | dict]",
        *,
        parent_id: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> BackupInfo:
        """Publish a backup whose disks were committed by separate writers.

        The data mover commits each disk (``DiskWriter.commit``) in its own
        process and returns the `DiskInfo` (or its ``to_dict()``); the
        orchestrator publishes once every disk is in. Each index is checked
        against its recorded SHA-256 before the manifest appears.
        """
        vm_id = check_uuid(vm_id, "VM")
        backup_id = check_uuid(backup_id, "backup")
        if parent_id is not None:
            parent_id = check_uuid(parent_id, "backup")
        infos = tuple(d if isinstance(d, DiskInfo) else DiskInfo.from_dict(d, "publish_backup") for d in disks)
        if not infos:
            raise ValueError("a backup needs at least one disk")
        if len({d.disk_id for d in infos}) != len(infos):
            raise ValueError("duplicate disk ids")
        info = BackupInfo(vm_id=vm_id, backup_id=backup_id, created=utc_now_iso(), parent_id=parent_id,
                          disks=infos, meta=dict(meta or {}))
        info.to_json()
        await self.publish_manifest(info)
        return info

    async def open_disk(self, vm_id: str, backup_id: str, disk_id: str, **options):
        """A `DiskReader` over one disk of a published backup."""
        from .reader import DiskReader

        info = await self.get_backup(vm_id, backup_id)
        disk_id = check_uuid(disk_id, "disk")
        index = await self.read_backup_index(info, disk_id)
        return DiskReader(self, info, disk_id, index, **options)

    # -- verify --------------------------------------------------------------

    async def verify(self, vm_id: str, backup_id: str) -> VerifyReport:
        """Re-read and re-hash every chunk the backup references."""
        info = await self.get_backup(vm_id, backup_id)
        report = VerifyReport(info.vm_id, info.backup_id)
        # digest -> {disk_id: [offsets]}, and the plaintext length it must have
        refs: dict[bytes, dict[str, list[int]]] = {}
        lengths: dict[bytes, int] = {}
        for d in info.disks:
            try:
                index = await self.read_backup_index(info, d.disk_id)
            except IndexCorrupted as e:
                report.bad_indexes[d.disk_id] = e.reason
                continue
            for i in range(index.count):
                dg = index.get(i)
                if dg == ZERO_DIGEST:
                    continue
                refs.setdefault(dg, {}).setdefault(d.disk_id, []).append(i * index.chunk_size)
                lengths[dg] = index.chunk_len(i)

        async def check(dg: bytes) -> None:
            try:
                data = await self.get_chunk(dg, lengths[dg])
            except (ChunkMissing, ChunkCorrupted) as e:
                reason = "missing" if isinstance(e, ChunkMissing) else e.reason
                report.damaged.append(DamagedChunk(dg.hex(), reason, refs[dg]))
                return
            report.chunks_checked += 1
            report.bytes_checked += len(data)

        await bounded_map(check, list(refs), self.io_concurrency)
        report.damaged.sort(key=lambda x: x.digest)
        return report

    # -- gc ------------------------------------------------------------------

    async def target_now(self) -> float:
        """The target's clock: mtime of a freshly written probe file.

        gc compares chunk mtimes (stamped by the target) with this, so clock
        skew between this host and the NFS server does not matter.
        """
        probe = f".clock{'.tmp.'}{os.getpid()}-{time.monotonic_ns()}"
        await self.target.write_file(probe, b"")
        try:
            return (await self.target.stat(probe)).mtime
        finally:
            try:
                await self.target.remove(probe)
            except NotFound:
                pass

    async def gc(self, grace_seconds: float = DEFAULT_GC_GRACE) -> GcReport:
        """Mark-and-sweep. See the module docstring for the safety rules.

        Raises (and removes nothing) if any published manifest or index cannot
        be read: a chunk must never be removed because its user was unreadable.
        """
        if grace_seconds < 0:
            raise ValueError("grace_seconds must be >= 0")
        rep = GcReport()
        rep.now = await self.target_now()
        rep.cutoff = rep.now - grace_seconds

        # Mark.
        marked: set[bytes] = set()
        dirs = await self._scan_backup_dirs()
        for vm, bid, has_manifest, newest in dirs:
            if has_manifest:
                try:
                    info = await self.get_backup(vm, bid)
                except BackupNotFound:
                    continue  # deleted while we scanned; its chunks become garbage
                for d in info.disks:
                    index = await self.read_backup_index(info, d.disk_id)  # raises: abort gc
                    marked |= index.referenced()
                    rep.indexes += 1
            elif newest >= rep.cutoff:
                # In flight: committed disks count too (their chunks were
                # touched at commit, this is belt and braces).
                for f in await self._safe_scandir(f"vms/{vm}/{bid}"):
                    if f.name.endswith(".fidx") and is_uuid(f.name[: -len(".fidx")]):
                        try:
                            index = await self.read_index(vm, bid, f.name[: -len(".fidx")])
                        except IndexCorrupted:
                            continue
                        marked |= index.referenced()
                        rep.indexes += 1
        rep.referenced = len(marked)

        # Sweep chunks.
        for top in await self._safe_scandir("chunks"):
            if not (top.is_dir and len(top.name) == 2):
                continue
            for sub in await self._safe_scandir(f"chunks/{top.name}"):
                if not (sub.is_dir and len(sub.name) == 2):
                    continue
                d = f"chunks/{top.name}/{sub.name}"
                for e in await self._safe_scandir(d):
                    await self._sweep_one(d, e, marked, rep)

        # Orphan backup dirs (no manifest, nothing newer than the cutoff), and
        # stale temp files inside published ones.
        for vm, bid, has_manifest, newest in dirs:
            bdir = f"vms/{vm}/{bid}"
            if not has_manifest and newest < rep.cutoff:
                if await self._remove_dir(bdir):
                    rep.orphans_removed.append(f"{vm}/{bid}")
            elif has_manifest:
                for f in await self._safe_scandir(bdir):
                    if is_tmp_name(f.name) and f.mtime < rep.cutoff:
                        await self._try_remove(join(bdir, f.name))
                        rep.tmp_removed += 1
        for e in await self._safe_scandir("vms"):
            if e.is_dir and is_uuid(e.name):
                await self._try_rmdir(f"vms/{e.name}")  # only if empty
        for e in await self._safe_scandir(""):
            if is_tmp_name(e.name) and not e.is_dir and e.mtime < rep.cutoff:
                await self._try_remove(e.name)
                rep.tmp_removed += 1
        log.info(
            "store.gc",
            removed=rep.chunks_removed,
            bytes_removed=rep.bytes_removed,
            kept_young=rep.chunks_kept_young,
            referenced=rep.referenced,
            orphans=len(rep.orphans_removed),
        )
        return rep

    async def _sweep_one(self, d: str, e, marked: set[bytes], rep: GcReport) -> None:
        path = join(d, e.name)
        if e.is_dir:
            return
        if is_tmp_name(e.name):
            if e.mtime < rep.cutoff:
                await self._try_remove(path)
                rep.tmp_removed += 1
            return
        if not is_digest_hex(e.name):
            return  # not ours; leave it
        rep.chunks_seen += 1
        if bytes.fromhex(e.name) in marked:
            return
        if e.mtime >= rep.cutoff:
            rep.chunks_kept_young += 1
            return
        # Hide it first, then look again: a writer may have touched it after
        # our scandir. Its touch after the rename fails, and it re-sends.
        trash = tmp_name(path)
        try:
            await self.target.rename(path, trash)
        except NotFound:
            return
        st = await self.target.stat(trash)
        if st.mtime >= rep.cutoff:
            await self.target.rename(trash, path)  # same content if re-written meanwhile
            rep.chunks_kept_young += 1
            return
        await self._try_remove(trash)
        rep.chunks_removed += 1
        rep.bytes_removed += st.size

    async def _safe_scandir(self, path: str):
        try:
            return await self.target.scandir(path)
        except NotFound:
            return []

    async def _try_remove(self, path: str) -> None:
        try:
            await self.target.remove(path)
        except NotFound:
            pass

    async def _try_rmdir(self, path: str) -> None:
        try:
            await self.target.rmdir(path)
        except NotFound:
            pass

    # -- stats ---------------------------------------------------------------

    async def stats(self) -> StoreStats:
        chunks = 0
        stored = 0
        for top in await self._safe_scandir("chunks"):
            if not (top.is_dir and len(top.name) == 2):
                continue
            for sub in await self._safe_scandir(f"chunks/{top.name}"):
                if not sub.is_dir:
                    continue
                for e in await self._safe_scandir(f"chunks/{top.name}/{sub.name}"):
                    if not e.is_dir and is_digest_hex(e.name):
                        chunks += 1
                        stored += e.size
        logical = 0
        refs: set[bytes] = set()
        backups = await self.list_backups()
        for b in backups:
            for d in b.disks:
                index = await self.read_backup_index(b, d.disk_id)
                for i in range(index.count):
                    dg = index.get(i)
                    if dg != ZERO_DIGEST:
                        logical += index.chunk_len(i)
                        refs.add(dg)
        return StoreStats(
            backups=len(backups), chunks=chunks, stored_bytes=stored, logical_bytes=logical, unique_referenced=len(refs)
        )

    # -- export ----------------------------------------------------------------

    async def export_disk(self, vm_id: str, backup_id: str, disk_id: str, dest, fmt: str = "raw", **options):
        """Write a backup disk to a local raw or qcow2 file; see `export_disk`."""
        from .export import export_disk

        reader = await self.open_disk(vm_id, backup_id, disk_id)
        return await export_disk(reader, dest, fmt, **options)
