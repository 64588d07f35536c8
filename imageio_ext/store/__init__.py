"""The ovault backup store: content-addressed, deduplicated, verifiable.

Public face of the package; everything not listed in ``__all__`` is private.
The on-target format is specified in docs/store-format.md; `store` lists the
modules the store is made of.
"""

from .errors import (
    BackupExists,
    BackupNotFound,
    ChunkCorrupted,
    ChunkMissing,
    DiskNotFound,
    ExportFailed,
    IncompatibleStore,
    IncompleteDisk,
    IndexCorrupted,
    InvalidId,
    InvalidPath,
    InvalidRange,
    ManifestCorrupted,
    NotFound,
    StoreError,
    StoreKeyInvalid,
    StoreKeyMissing,
    StoreKeyWrong,
    StoreNotInitialized,
    TargetUnavailable,
    WriterStateError,
)
from .chunkstore import ChunkStore, PutResult
from .crypto import StoreKey
from .export import ExportResult, export_disk
from .fidx import ZERO_DIGEST, FixedIndex
from .gc import DEFAULT_GC_GRACE, GcReport
from .manifest import DEFAULT_CHUNK_SIZE, BackupInfo, DiskInfo, StoreConfig
from .nfs_target import NfsTarget
from .path_target import PathTarget
from .publish import Backups
from .reader import DiskReader, Extent
from .registry import open_target
from .stats import StoreStats
from .store import Store
from .target import DirEntry, FileStat, Target
from .verify import DamagedChunk, VerifyReport
from .writer import BackupWriter, DiskWriter

__all__ = [
    # store and its parts
    "Store",
    "ChunkStore",
    "Backups",
    "BackupWriter",
    "DiskWriter",
    "DiskReader",
    "Extent",
    "export_disk",
    "ExportResult",
    # targets
    "Target",
    "PathTarget",
    "NfsTarget",
    "open_target",
    "FileStat",
    "DirEntry",
    # format and results
    "StoreConfig",
    "StoreKey",
    "BackupInfo",
    "DiskInfo",
    "FixedIndex",
    "ZERO_DIGEST",
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_GC_GRACE",
    "PutResult",
    "VerifyReport",
    "DamagedChunk",
    "GcReport",
    "StoreStats",
    # errors
    "StoreError",
    "InvalidId",
    "InvalidPath",
    "InvalidRange",
    "TargetUnavailable",
    "NotFound",
    "StoreNotInitialized",
    "StoreKeyInvalid",
    "StoreKeyMissing",
    "StoreKeyWrong",
    "IncompatibleStore",
    "ChunkMissing",
    "ChunkCorrupted",
    "IndexCorrupted",
    "ManifestCorrupted",
    "BackupNotFound",
    "BackupExists",
    "DiskNotFound",
    "IncompleteDisk",
    "WriterStateError",
    "ExportFailed",
]
