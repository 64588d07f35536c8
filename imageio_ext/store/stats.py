"""Store statistics: stored versus logical bytes, hence the dedup ratio."""

from __future__ import annotations

from dataclasses import dataclass

from .fidx import ZERO_DIGEST
from .ids import is_digest_hex
from .layout import chunk_leaf_dirs, safe_scandir
from .publish import Backups


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


async def store_stats(backups: Backups) -> StoreStats:
    target = backups.target
    chunks = 0
    stored = 0
    for leaf in await chunk_leaf_dirs(target):
        for e in await safe_scandir(target, leaf):
            if not e.is_dir and is_digest_hex(e.name):
                chunks += 1
                stored += e.size
    logical = 0
    refs: set[bytes] = set()
    infos = await backups.published()
    for b in infos:
        for d in b.disks:
            index = await backups.read_backup_index(b, d.disk_id)
            for i in range(index.count):
                dg = index.get(i)
                if dg != ZERO_DIGEST:
                    logical += index.chunk_len(i)
                    refs.add(dg)
    return StoreStats(
        backups=len(infos), chunks=chunks, stored_bytes=stored, logical_bytes=logical, unique_referenced=len(refs)
    )
