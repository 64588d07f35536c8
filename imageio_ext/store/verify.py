"""Verify: re-read and re-hash every chunk one backup references.

Safe concurrently with everything (writers, deletes, gc): a chunk gc removes
can only be one no published index references. A damaged chunk is reported
with every (disk, offset, length) that uses it, and set aside on the target
(``<digest>.<n>.bad``, `ChunkStore.mark_bad`) so the next backup of the VM
re-reads those ranges and writes it again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .chunkstore import ChunkStore
from .errors import ChunkCorrupted, ChunkMissing, IndexCorrupted
from .fidx import ZERO_DIGEST
from .publish import Backups


@dataclass
class DamagedChunk:
    digest: str
    reason: str
    disk_offsets: dict[str, list[int]] = field(default_factory=dict)  # disk_id -> offsets
    length: int = 0  # plaintext bytes of the chunk (each range is offset..offset+length)
    set_aside: list[str] = field(default_factory=list)  # damaged copies kept on the target (.bad)

    def ranges(self) -> list[tuple[str, int, int]]:
        """(disk_id, offset, length) of every place the chunk is used, sorted."""
        return sorted((d, o, self.length) for d, offs in self.disk_offsets.items() for o in offs)

    def to_dict(self) -> dict:
        return {
            "digest": self.digest,
            "reason": self.reason,
            "ranges": [{"disk_id": d, "offset": o, "length": n} for d, o, n in self.ranges()],
            "set_aside": list(self.set_aside),
        }


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

    def to_dict(self) -> dict:
        return {
            "vm_id": self.vm_id,
            "backup_id": self.backup_id,
            "ok": self.ok,
            "chunks_checked": self.chunks_checked,
            "bytes_checked": self.bytes_checked,
            "damaged": [d.to_dict() for d in self.damaged],
            "bad_indexes": dict(self.bad_indexes),
        }


async def verify_backup(
    chunks: ChunkStore,
    backups: Backups,
    vm_id: str,
    backup_id: str,
    *,
    progress: Callable[[int, int], None] | None = None,
    catalog_digests: dict[str, str] | None = None,
) -> VerifyReport:
    """Check one backup. ``progress(done, total)`` is called in plaintext bytes.
    ``catalog_digests``: disk id -> index SHA-256 the catalog recorded."""
    info = await backups.get(vm_id, backup_id)
    report = VerifyReport(info.vm_id, info.backup_id)
    # digest -> {disk_id: [offsets]}, and the plaintext length it must have
    refs: dict[bytes, dict[str, list[int]]] = {}
    lengths: dict[bytes, int] = {}
    for d in info.disks:
        try:
            index = await backups.read_backup_index(
                info, d.disk_id, catalog_sha256=(catalog_digests or {}).get(d.disk_id))
        except IndexCorrupted as e:
            report.bad_indexes[d.disk_id] = e.reason
            continue
        for i in range(index.count):
            dg = index.get(i)
            if dg == ZERO_DIGEST:
                continue
            refs.setdefault(dg, {}).setdefault(d.disk_id, []).append(i * index.chunk_size)
            lengths[dg] = index.chunk_len(i)
    total = sum(lengths.values())
    done = 0
    if progress is not None:
        progress(0, total)

    async def check(dg: bytes) -> None:
        nonlocal done
        try:
            data = await chunks.get(dg, lengths[dg])
        except (ChunkMissing, ChunkCorrupted) as e:
            reason = "missing" if isinstance(e, ChunkMissing) else e.reason
            report.damaged.append(
                DamagedChunk(dg.hex(), reason, refs[dg], lengths[dg], await chunks.bad_copies(dg))
            )
        else:
            report.chunks_checked += 1
            report.bytes_checked += len(data)
        done += lengths[dg]
        if progress is not None:
            progress(done, total)

    await chunks.map(check, list(refs))
    report.damaged.sort(key=lambda x: x.digest)
    return report
