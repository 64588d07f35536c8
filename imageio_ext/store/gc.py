"""Garbage collection: mark and sweep, safe against concurrent writers.

- Mark: every digest of every published index, plus indexes already
  committed by in-flight backups (directories without a manifest that were
  written to within the grace period).
- Sweep: a chunk is removed only if unmarked *and* its mtime is older than
  ``now - grace`` on the target's own clock (`target_now`), so clock skew
  between this host and an NFS server does not matter. To close the window
  between gc's stat and its unlink, gc first renames the chunk to a temp
  name, stats it again, and renames it back if a writer touched it in
  between. A writer whose touch finds the chunk gone re-sends it (dedup miss)
  or, for chunks it inherited from the parent index, is told which ranges to
  re-send (`ChunkMissing.offsets`).
- Rules that keep in-flight backups safe: grace must be longer than the
  longest backup (default one day); a writer touches, at commit, every chunk
  it references that it did not write or touch itself recently.
- Also removed: unpublished backup directories older than the cutoff
  (aborted or crashed backups), stale temp files, and damaged chunk copies
  set aside as ``<digest>.<n>.bad`` once the chunk has been rewritten (healed)
  or no published backup references the digest any more.

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

import os
import time
from dataclasses import dataclass, field
from typing import Callable

import structlog

from .errors import BackupNotFound, IndexCorrupted, NotFound
from .ids import is_digest_hex, is_uuid
from .layout import (
    VMS_DIR,
    bad_chunk_name,
    chunk_leaf_dirs,
    index_disk_id,
    remove_dir,
    safe_scandir,
    scan_backup_dirs,
    try_remove,
    try_rmdir,
)
from .publish import Backups
from .target import DirEntry, Target, is_tmp_name, join, tmp_name

log = structlog.get_logger(__name__)

DEFAULT_GC_GRACE = 24 * 3600


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
    bad_removed: int = 0  # <digest>.<n>.bad copies removed (healed or unreferenced)
    bad_kept: int = 0  # damaged chunks still referenced and not yet rewritten
    orphans_removed: list[str] = field(default_factory=list)  # "vm/backup"


async def target_now(target: Target) -> float:
    """The target's clock: mtime of a freshly written probe file."""
    probe = f".clock{'.tmp.'}{os.getpid()}-{time.monotonic_ns()}"
    await target.write_file(probe, b"")
    try:
        return (await target.stat(probe)).mtime
    finally:
        await try_remove(target, probe)


async def collect_garbage(
    backups: Backups,
    grace_seconds: float = DEFAULT_GC_GRACE,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> GcReport:
    """Mark-and-sweep. ``progress(done, total)`` counts backup and chunk directories.

    Raises (and removes nothing) if any published manifest or index cannot
    be read: a chunk must never be removed because its user was unreadable.
    """
    if grace_seconds < 0:
        raise ValueError("grace_seconds must be >= 0")
    target = backups.target
    rep = GcReport()
    rep.now = await target_now(target)
    rep.cutoff = rep.now - grace_seconds
    dirs = await scan_backup_dirs(target)
    leaves = await chunk_leaf_dirs(target)
    total, done = len(dirs) + len(leaves), 0

    def step() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    if progress is not None:
        progress(0, total)

    # Mark.
    marked: set[bytes] = set()
    for bd in dirs:
        if bd.published:
            try:
                info = await backups.get(bd.vm_id, bd.backup_id)
            except BackupNotFound:
                info = None  # deleted while we scanned; its chunks become garbage
            for d in info.disks if info else ():
                index = await backups.read_backup_index(info, d.disk_id)  # raises: abort gc
                marked |= index.referenced()
                rep.indexes += 1
        elif bd.newest >= rep.cutoff:
            # In flight: committed disks count too (their chunks were touched
            # at commit, this is belt and braces).
            for f in await safe_scandir(target, bd.path):
                disk_id = index_disk_id(f.name)
                if disk_id is None:
                    continue
                try:
                    index = await backups.read_index(bd.vm_id, bd.backup_id, disk_id)
                except IndexCorrupted:
                    continue
                marked |= index.referenced()
                rep.indexes += 1
        step()
    rep.referenced = len(marked)

    # Sweep chunks.
    for leaf in leaves:
        for e in await safe_scandir(target, leaf):
            await _sweep_one(target, leaf, e, marked, rep)
        step()

    # Orphan backup dirs (no manifest, nothing newer than the cutoff), and
    # stale temp files inside published ones.
    for bd in dirs:
        if not bd.published and bd.newest < rep.cutoff:
            if await remove_dir(target, bd.path):
                rep.orphans_removed.append(f"{bd.vm_id}/{bd.backup_id}")
        elif bd.published:
            for f in await safe_scandir(target, bd.path):
                if is_tmp_name(f.name) and f.mtime < rep.cutoff:
                    await try_remove(target, join(bd.path, f.name))
                    rep.tmp_removed += 1
    for e in await safe_scandir(target, VMS_DIR):
        if e.is_dir and is_uuid(e.name):
            await try_rmdir(target, f"{VMS_DIR}/{e.name}")  # only if empty
    for e in await safe_scandir(target, ""):
        if is_tmp_name(e.name) and not e.is_dir and e.mtime < rep.cutoff:
            await try_remove(target, e.name)
            rep.tmp_removed += 1
    log.info(
        "store.gc",
        removed=rep.chunks_removed,
        bytes_removed=rep.bytes_removed,
        kept_young=rep.chunks_kept_young,
        referenced=rep.referenced,
        orphans=len(rep.orphans_removed),
        bad_removed=rep.bad_removed,
        bad_kept=rep.bad_kept,
    )
    return rep


async def _sweep_one(target: Target, d: str, e: DirEntry, marked: set[bytes], rep: GcReport) -> None:
    path = join(d, e.name)
    if e.is_dir:
        return
    if is_tmp_name(e.name):
        if e.mtime < rep.cutoff:
            await try_remove(target, path)
            rep.tmp_removed += 1
        return
    bad = bad_chunk_name(e.name)
    if bad is not None:
        healed = await target.exists(join(d, bad[0]))
        if healed or (bytes.fromhex(bad[0]) not in marked and e.mtime < rep.cutoff):
            await try_remove(target, path)
            rep.bad_removed += 1
        else:
            rep.bad_kept += 1
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
        await target.rename(path, trash)
    except NotFound:
        return
    st = await target.stat(trash)
    if st.mtime >= rep.cutoff:
        await target.rename(trash, path)  # same content if re-written meanwhile
        rep.chunks_kept_young += 1
        return
    await try_remove(target, trash)
    rep.chunks_removed += 1
    rep.bytes_removed += st.size
