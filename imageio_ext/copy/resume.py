"""Resuming a backup copy where an interrupted one stopped.

A copy that fails (the transfer's ticket lost when ovirt-imageio restarted, the
daemon away too long, ...) leaves, in its unpublished backup directory on the
target, a *partial index* of the disk: the digest of every data chunk it had
durably stored, other slots unset. It is written where the disk's index goes
(`Store.write_index`); nothing reads an index without a published manifest, and
the copy that completes the disk overwrites it with the full one.

A later copy of the same disk into the same backup id reads the same point in
time (the same engine backup or snapshot, on a new image transfer), so it
adopts those slots — each chunk checked to be still on the target, which also
refreshes its time for gc — and reads only the rest of the disk: it resumes
from what was written instead of starting from zero. The orchestrator resumes
a disk this way when a transfer loses its ticket (statemachines/resume.py).
"""
from __future__ import annotations

import dataclasses

import structlog

from ..store import Store
from ..store.fidx import ZERO_DIGEST
from ..store.writer import DiskWriter
from .plan import Step

log = structlog.get_logger("ovault.copy")


async def save_partial(store: Store, dw: DiskWriter, vm_id: str, backup_id: str) -> int:
    """Write the partial index of `dw` (best effort); returns the slots recorded."""
    slots = dw.stored_slots()
    if not slots:
        return 0
    idx = dataclasses.replace(dw.index, digests=bytearray(len(dw.index.digests)))
    for i, digest in slots.items():
        idx.set(i, digest)
    try:
        await store.write_index(vm_id, backup_id, dw.disk_id, idx)
    except Exception as e:  # the copy's own error is what matters
        log.warning("copy.partial_index_not_saved", disk_id=dw.disk_id, error=str(e))
        return 0
    return len(slots)


async def adopt_partial(store: Store, dw: DiskWriter, vm_id: str, backup_id: str) -> set[int]:
    """Adopt the slots a partial index of an interrupted copy recorded and whose
    chunks are still on the target; returns the adopted slots."""
    try:
        idx = await store.read_index(vm_id, backup_id, dw.disk_id)
    except Exception:  # none (the usual case), or unreadable: copy everything
        return set()
    if idx.size != dw.size or idx.chunk_size != dw.chunk_size:
        return set()
    slots = {i: d for i, d in enumerate(idx) if d != ZERO_DIGEST}
    if not slots:
        return set()
    missing = set(await dw.chunks.touch_all(set(slots.values())))
    adopted = set()
    for i, d in slots.items():
        if d not in missing:
            dw.adopt(i, d)
            adopted.add(i)
    return adopted


def without_adopted(steps: list[Step], adopted: set[int], chunk_size: int) -> tuple[list[Step], int]:
    """The steps still to do, and the bytes the adopted slots cover."""
    if not adopted:
        return steps, 0
    keep, skipped = [], 0
    for s in steps:
        slots = range(s.offset // chunk_size, (s.offset + s.length + chunk_size - 1) // chunk_size)
        if all(i in adopted for i in slots):
            skipped += s.length
        else:
            keep.append(s)
    return keep, skipped
