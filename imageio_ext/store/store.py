"""The store on one backup target: the one object callers open.

`Store` composes the parts, each in its own module (the full on-target
format is in docs/store-format.md):

==============  ===========================================================
`layout`        where things live on the target; walking the tree
`chunkstore`    put/get/touch chunks (content-addressed, deduplicated)
`publish`       indexes and manifests: publishing, listing, deleting
`writer`        writing one backup (`BackupWriter`, `DiskWriter`)
`reader`        reading one disk of a published backup (`DiskReader`)
`verify`        re-hashing every chunk of a backup
`gc`            mark-and-sweep (and which operation is safe against which)
`stats`         stored versus logical bytes
`export`        a backup disk as a plain raw or qcow2 file
`registry`      which `Target` serves a URL or path
`format`        what differs between format versions 1 and 2
`crypto`        store keys, sealing, key files, the paper form
==============  ===========================================================

New stores are version 2 (BLAKE3; encrypted when created with a key);
version-1 stores are read and written as version 1, never migrated.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable

from .chunkstore import ChunkStore
from .crypto import StoreKey
from .errors import Damaged, IncompatibleStore, NotFound, StoreKeyWrong, StoreNotInitialized
from .export import ExportResult, export_disk
from .fidx import FixedIndex
from .format import StoreFormat, sniff_chunk
from .gc import DEFAULT_GC_GRACE, GcReport, collect_garbage, target_now
from .ids import check_uuid
from .layout import CHUNKS_DIR, CONFIG_NAME, VMS_DIR, safe_scandir
from .manifest import DEFAULT_CHUNK_SIZE, MAX_DOCUMENT, STORE_VERSION, BackupInfo, DiskInfo, StoreConfig
from .publish import Backups
from .reader import DiskReader
from .registry import open_target
from .stats import StoreStats, store_stats
from .target import Target
from .verify import VerifyReport, verify_backup
from .writer import BackupWriter

ProgressFn = Callable[[int, int], None]


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
        self.chunks = ChunkStore(
            target,
            cpu_workers=cpu_workers,
            compression_level=compression_level,
            io_concurrency=io_concurrency,
            touch_refresh=touch_refresh,
        )
        self.backups = Backups(target, self.chunks)
        self._config: StoreConfig | None = None
        self._key: StoreKey | None = None

    # -- lifecycle ---------------------------------------------------------

    @classmethod
    async def open(
        cls,
        url_or_path: str | os.PathLike,
        *,
        create: bool = False,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        target_options: dict[str, Any] | None = None,
        key: StoreKey | None = None,
        encrypt: bool = False,
        version: int = STORE_VERSION,
        **options,
    ) -> "Store":
        """Open (and with ``create=True`` initialise) the store at a URL or path.

        ``key``: the store key of an encrypted store (a wrong one is refused
        here; without one, listing works but reading or writing data raises
        `StoreKeyMissing`). With ``create=True``, ``encrypt`` makes a new
        store encrypted with ``key`` and ``version`` picks the format of a
        new store (1 only to write stores for older readers)."""
        target = open_target(url_or_path, **(target_options or {}))
        store = cls(target, **options)
        try:
            await target.connect()
            if create:
                await store.init(chunk_size, key=key, encrypt=encrypt, version=version)
            else:
                await store.load(key)
        except BaseException:
            await store.close()
            raise
        return store

    async def close(self) -> None:
        self.chunks.close()
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
    def encrypted(self) -> bool:
        return self.config.encryption != "none"

    @property
    def key(self) -> StoreKey | None:
        return self._key

    def _use(self, cfg: StoreConfig, key: StoreKey | None) -> StoreConfig:
        if key is not None:
            if cfg.encryption == "none":
                raise IncompatibleStore(self.target.url, "a key was given but the store is not encrypted "
                                        "(a store's encryption is chosen when it is created)")
            if key.fingerprint != cfg.key_fingerprint:
                raise StoreKeyWrong(self.target.url, key.fingerprint, cfg.key_fingerprint)
        self._config, self._key = cfg, key
        self.chunks.configure(StoreFormat(cfg, key, self.target.url, self.chunks.compression_level))
        return cfg

    def set_key(self, key: StoreKey) -> None:
        """Give an open encrypted store its key (checked against the fingerprint)."""
        if self._key is not None and self._key.fingerprint == key.fingerprint:
            return
        self._use(self.config, key)

    async def init(self, chunk_size: int = DEFAULT_CHUNK_SIZE, *, key: StoreKey | None = None,
                   encrypt: bool = False, version: int = STORE_VERSION) -> StoreConfig:
        """Create ovault-store.json, or accept an existing identical store.

        An existing store with another format, chunk size or encryption is
        refused rather than silently reused; an existing version-1 store is
        accepted as it is (no silent migration). A target that holds store
        data but no ovault-store.json is refused: its version is unknown.
        """
        if encrypt and key is None:
            raise ValueError("an encrypted store needs a key")
        if key is not None and not encrypt:
            raise ValueError("a key was given for a store that is not to be encrypted")
        try:
            existing = await self.target.read_file(CONFIG_NAME, max_size=MAX_DOCUMENT)
        except NotFound:
            existing = None
        except Damaged as e:
            raise IncompatibleStore(self.target.url, f"ovault-store.json: {e.reason}") from None
        if existing is not None:
            cfg = StoreConfig.from_json(existing, self.target.url)
            if cfg.chunk_size != chunk_size:
                raise IncompatibleStore(
                    self.target.url, f"existing store has chunk_size {cfg.chunk_size}, asked for {chunk_size}"
                )
            if (cfg.encryption != "none") != encrypt:
                raise IncompatibleStore(
                    self.target.url, f"existing store is {'' if encrypt is False else 'not '}encrypted, "
                    f"asked for {'an encrypted' if encrypt else 'a plain'} one")
            await self._check_versions(cfg)
        else:
            if await self._holds_data():
                raise IncompatibleStore(self.target.url, "the target holds chunks or backups but no "
                                        "ovault-store.json: unknown format version, refusing to create a store over it")
            cfg = StoreConfig.new(chunk_size, version=version, fingerprint=key.fingerprint if key else None)
            # Validate our own document the way a reader would.
            StoreConfig.from_json(cfg.to_json(), self.target.url)
            await self.target.makedirs(CHUNKS_DIR)
            await self.target.makedirs(VMS_DIR)
            await self.target.write_file(CONFIG_NAME, cfg.to_json())
        return self._use(cfg, key)

    async def load(self, key: StoreKey | None = None) -> StoreConfig:
        try:
            data = await self.target.read_file(CONFIG_NAME, max_size=MAX_DOCUMENT)
        except NotFound:
            raise StoreNotInitialized(self.target.url) from None
        except Damaged as e:
            raise IncompatibleStore(self.target.url, f"ovault-store.json: {e.reason}") from None
        cfg = StoreConfig.from_json(data, self.target.url)
        await self._check_versions(cfg)
        return self._use(cfg, key)

    async def _holds_data(self) -> bool:
        for d in (CHUNKS_DIR, VMS_DIR):
            if any(not e.name.startswith(".") for e in await safe_scandir(self.target, d)):
                return True
        return False

    async def _check_versions(self, cfg: StoreConfig) -> None:
        """Refuse a target holding objects of another format version than its
        config says (two ovault generations writing one directory). Cheap: one
        walk down the first entries of ``chunks/`` (three listings), one chunk read."""
        leaf = CHUNKS_DIR
        for _ in range(2):
            subs = sorted(e.name for e in await safe_scandir(self.target, leaf) if e.is_dir and len(e.name) == 2)
            if not subs:
                return
            leaf = f"{leaf}/{subs[0]}"
        for e in sorted(await safe_scandir(self.target, leaf), key=lambda e: e.name):
            if e.is_dir or "." in e.name or len(e.name) != 64:
                continue
            try:
                head = await self.target.read_file(f"{leaf}/{e.name}", max_size=2 * cfg.chunk_size + 4096)
            except (NotFound, Damaged):
                continue
            found = sniff_chunk(head)
            if found is not None and found != cfg.version:
                raise IncompatibleStore(
                    self.target.url, f"ovault-store.json says version {cfg.version} but the target holds "
                    f"version-{found} chunks ({leaf}/{e.name}): mixed format versions are refused")
            return

    # -- chunks ------------------------------------------------------------

    async def put_chunk(self, data: bytes) -> bytes:
        """Store one chunk; return its 32-byte digest (ZERO_DIGEST for zeros)."""
        return (await self.chunks.put(data)).digest

    async def get_chunk(self, digest: bytes, length: int | None = None) -> bytes:
        """Read, decrypt, decompress and verify one chunk (see `ChunkStore.get`)."""
        return await self.chunks.get(digest, length)

    read_chunk = get_chunk  # the read path's name for it (any version, encrypted or not)

    # -- backups -----------------------------------------------------------

    async def write_index(self, vm_id: str, backup_id: str, disk_id: str, index: FixedIndex) -> str:
        return await self.backups.write_index(vm_id, backup_id, disk_id, index)

    async def read_index(
        self, vm_id: str, backup_id: str, disk_id: str, *, expect_sha256: str | None = None
    ) -> FixedIndex:
        return await self.backups.read_index(vm_id, backup_id, disk_id, expect_sha256=expect_sha256)

    async def read_backup_index(self, info: BackupInfo, disk_id: str) -> FixedIndex:
        return await self.backups.read_backup_index(info, disk_id)

    async def get_backup(self, vm_id: str, backup_id: str) -> BackupInfo:
        return await self.backups.get(vm_id, backup_id)

    async def list_backups(self, vm_id: str | None = None, *, strict: bool = False) -> list[BackupInfo]:
        """Every published backup, sorted by (vm_id, created, backup_id); see `Backups.published`."""
        return await self.backups.published(vm_id, strict=strict)

    async def delete_backup(self, vm_id: str, backup_id: str) -> None:
        """Unpublish, then remove the indexes; chunks are left for gc."""
        await self.backups.delete(vm_id, backup_id)

    async def begin_backup(
        self, vm_id: str, backup_id: str, *, parent_id: str | None = None, **options
    ) -> BackupWriter:
        """Start writing a backup; see `BackupWriter`."""
        vm_id = check_uuid(vm_id, "VM")
        backup_id = check_uuid(backup_id, "backup")
        parent = await self.backups.get(vm_id, parent_id) if parent_id is not None else None
        await self.backups.prepare(vm_id, backup_id)
        return BackupWriter(self.chunks, self.backups, vm_id, backup_id, parent, **options)

    async def publish_backup(
        self,
        vm_id: str,
        backup_id: str,
        disks: Iterable[DiskInfo | dict],
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
        return await self.backups.publish_disks(vm_id, backup_id, disks, parent_id=parent_id, meta=meta)

    async def open_disk(
        self, vm_id: str, backup_id: str, disk_id: str, *, catalog_sha256: str | None = None, **options
    ) -> DiskReader:
        """A `DiskReader` over one disk of a published backup. ``catalog_sha256``:
        the index digest the catalog recorded at publication (a restore passes it,
        so an index replaced on the target since is refused)."""
        info = await self.backups.get(vm_id, backup_id)
        disk_id = check_uuid(disk_id, "disk")
        index = await self.backups.read_backup_index(info, disk_id, catalog_sha256=catalog_sha256)
        return DiskReader(self.chunks, info, disk_id, index, **options)

    # -- maintenance -------------------------------------------------------

    async def verify(
        self, vm_id: str, backup_id: str, *, progress: ProgressFn | None = None,
        catalog_digests: dict[str, str] | None = None,
    ) -> VerifyReport:
        """Re-read and re-hash every chunk the backup references; each index is
        also checked against ``catalog_digests`` (disk id -> the SHA-256 the
        catalog recorded at publication) when given."""
        return await verify_backup(self.chunks, self.backups, vm_id, backup_id, progress=progress,
                                   catalog_digests=catalog_digests)

    async def target_now(self) -> float:
        """The target's clock (gc compares chunk mtimes with it)."""
        return await target_now(self.target)

    async def gc(self, grace_seconds: float = DEFAULT_GC_GRACE, *, progress: ProgressFn | None = None) -> GcReport:
        """Mark-and-sweep; see `gc` for the safety rules."""
        return await collect_garbage(self.backups, grace_seconds, progress=progress)

    async def stats(self) -> StoreStats:
        return await store_stats(self.backups)

    async def export_disk(
        self, vm_id: str, backup_id: str, disk_id: str, dest, fmt: str = "raw", **options
    ) -> ExportResult:
        """Write a backup disk to a local raw or qcow2 file; see `export.export_disk`."""
        reader = await self.open_disk(vm_id, backup_id, disk_id)
        return await export_disk(reader, dest, fmt, **options)
