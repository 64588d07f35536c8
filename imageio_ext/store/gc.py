"""Garbage collection: mark and sweep, safe against concurrent writers on any host.

The full argument is in docs/store-format.md, *Writers and garbage
collection*; in short:

- `now` is the target's clock (a probe file's mtime), taken before anything
  else. Then the writer leases (`leases`) are read: the chunk cutoff is
  ``min(now - grace, oldest live writer's start - margin)``. A writer
  registers its lease before it stores or re-uses (touches) any chunk, so
  every chunk an in-flight writer wrote or re-used is younger than the
  cutoff; one that registered after gc read the leases started after `now`.
- Mark: every digest of every published index, plus the indexes already
  committed in unpublished directories (younger than ``now - grace``, or
  named by a live lease). Chunks an incremental *inherits* are not touched
  by its writer: its parent's published index protects them. If a
  published backup vanishes while gc reads it (deleted meanwhile), gc lists
  that VM again and marks what appeared since — the child that inherited
  from it has committed its index by then, see `DiskWriter.commit` (it
  checks after writing its index that the parent is still published).
- Sweep: a chunk is removed only if unmarked *and* its mtime is older than
  the chunk cutoff. To close the window between gc's stat and its unlink,
  gc renames the chunk to a temp name, stats it again, and renames it back
  if a writer touched it in between; a writer whose touch finds the chunk
  gone writes it again.
- Also removed: unpublished backup directories older than ``now - grace``
  not named by a live lease (aborted or crashed backups), stale temp files,
  lease files stale for longer than their lease plus grace, and damaged
  chunk copies set aside as ``<digest>.<n>.bad`` once the chunk has been
  rewritten (healed) or no published backup references the digest.

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

from dataclasses import dataclass, field
from typing import Callable

import structlog

from .errors import BackupNotFound, IndexCorrupted, NotFound, StoreError, TargetUnavailable
from .fidx import FixedIndex
from .ids import is_digest_hex, is_uuid
from .layout import (
    VMS_DIR,
    BackupDir,
    bad_chunk_name,
    chunk_path,
    chunk_leaf_dirs,
    index_disk_id,
    manifest_path,
    remove_dir,
    safe_scandir,
    scan_backup_dirs,
    try_remove,
    try_rmdir,
)
from .leases import WRITERS_DIR, compute_cutoff, damaged_marker_path, damaged_markers, read_leases, target_now
from .publish import Backups
from .target import DirEntry, Target, is_tmp_name, join, tmp_name

log = structlog.get_logger(__name__)

__all__ = ["DEFAULT_GC_GRACE", "DEFAULT_SKEW_MARGIN", "GcReport", "GcRaced", "collect_garbage", "target_now"]

DEFAULT_GC_GRACE = 24 * 3600
DEFAULT_SKEW_MARGIN = 300.0  # subtracted from the oldest live writer's start (capped by grace)
MAX_MARK_ROUNDS = 5  # listings of one VM while its backups keep vanishing under gc


class GcRaced(StoreError):
    """gc gave up marking because backups kept being deleted while it read them."""

    msg = "Garbage collection stopped, nothing removed: {self.why}"
    code = "gc_raced"

    def __init__(self, why: str):
        self.why = why


@dataclass
class GcReport:
    now: float = 0.0  # target clock at start
    cutoff: float = 0.0  # now - grace: orphan backup directories
    chunk_cutoff: float = 0.0  # chunks and temp files older than this may go
    writers_live: int = 0
    oldest_writer_start: float | None = None  # target clock, of the live writers
    leases_removed: int = 0  # stale lease files (dead writers)
    indexes: int = 0
    referenced: int = 0
    mark_rounds: int = 0  # extra listings of a VM after a backup vanished under gc
    chunks_seen: int = 0
    chunks_removed: int = 0
    bytes_removed: int = 0
    chunks_kept_young: int = 0
    tmp_removed: int = 0
    bad_removed: int = 0  # <digest>.<n>.bad copies removed (healed or unreferenced)
    bad_kept: int = 0  # damaged chunks still referenced and not yet rewritten
    markers_removed: int = 0  # .damaged/<digest> markers of healed or unreferenced chunks
    orphans_removed: list[str] = field(default_factory=list)  # "vm/backup"


async def collect_garbage(
    backups: Backups,
    grace_seconds: float = DEFAULT_GC_GRACE,
    *,
    margin_seconds: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> GcReport:
    """Mark-and-sweep. ``progress(done, total)`` counts backup and chunk directories.

    ``margin_seconds`` (default ``min(grace, DEFAULT_SKEW_MARGIN)``) is taken
    off the oldest live writer's start. Raises (and removes nothing) if any
    published manifest or index cannot be read: a chunk must never be
    removed because its user was unreadable.
    """
    if grace_seconds < 0:
        raise ValueError("grace_seconds must be >= 0")
    margin = min(grace_seconds, DEFAULT_SKEW_MARGIN) if margin_seconds is None else margin_seconds
    target = backups.target
    rep = GcReport()
    rep.now = await target_now(target)  # before the leases: see compute_cutoff
    leases = await read_leases(target)
    cut = compute_cutoff(rep.now, grace_seconds, margin, leases)
    rep.cutoff = rep.now - grace_seconds
    rep.chunk_cutoff = cut.chunk_cutoff
    rep.writers_live = len(cut.live)
    rep.oldest_writer_start = cut.oldest_start
    in_use = {(x.vm_id, x.backup_id) for x in cut.live}
    dirs = await scan_backup_dirs(target)
    leaves = await chunk_leaf_dirs(target)
    total, done = len(dirs) + len(leaves), 0

    def step(n: int = 1) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    if progress is not None:
        progress(0, total)

    # Mark, one VM at a time (a backup's parent is always of the same VM).
    marked: set[bytes] = set()
    by_vm: dict[str, list[BackupDir]] = {}
    for bd in dirs:
        by_vm.setdefault(bd.vm_id, []).append(bd)
    for vm, vm_dirs in by_vm.items():
        await _mark_vm(backups, vm, vm_dirs, marked, rep, in_use)
        step(len(vm_dirs))
    rep.referenced = len(marked)

    # Sweep chunks.
    for leaf in leaves:
        for e in await safe_scandir(target, leaf):
            await _sweep_one(target, leaf, e, marked, rep)
        step()

    # Damage markers whose chunk is back (healed) or no longer referenced.
    for dg, mtime in await damaged_markers(target):
        if mtime < rep.chunk_cutoff and (dg not in marked or await target.exists(chunk_path(dg))):
            await try_remove(target, damaged_marker_path(dg))
            rep.markers_removed += 1

    # Orphan backup dirs (no manifest, nothing newer than now - grace, no live
    # writer), and stale temp files inside published ones.
    for bd in dirs:
        if not bd.published and bd.newest < rep.cutoff and (bd.vm_id, bd.backup_id) not in in_use:
            if await target.exists(manifest_path(bd.vm_id, bd.backup_id)):
                continue  # published since the listing
            if await remove_dir(target, bd.path):
                rep.orphans_removed.append(f"{bd.vm_id}/{bd.backup_id}")
        elif bd.published:
            for f in await safe_scandir(target, bd.path):
                if is_tmp_name(f.name) and f.mtime < rep.chunk_cutoff:
                    await try_remove(target, join(bd.path, f.name))
                    rep.tmp_removed += 1
    for e in await safe_scandir(target, VMS_DIR):
        if e.is_dir and is_uuid(e.name):
            await try_rmdir(target, f"{VMS_DIR}/{e.name}")  # only if empty
    for e in await safe_scandir(target, ""):
        if is_tmp_name(e.name) and not e.is_dir and e.mtime < rep.chunk_cutoff:
            await try_remove(target, e.name)
            rep.tmp_removed += 1
    # Lease files of writers dead for longer than their lease plus grace.
    for x in cut.stale:
        if rep.now - x.mtime > x.lease_seconds + grace_seconds:
            await try_remove(target, join(WRITERS_DIR, x.name))
            rep.leases_removed += 1
    for e in await safe_scandir(target, WRITERS_DIR):
        if is_tmp_name(e.name) and not e.is_dir and e.mtime < rep.chunk_cutoff:
            await try_remove(target, join(WRITERS_DIR, e.name))
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
        writers_live=rep.writers_live,
        leases_removed=rep.leases_removed,
        mark_rounds=rep.mark_rounds,
    )
    return rep


async def _mark_vm(
    backups: Backups, vm: str, dirs: list[BackupDir], marked: set[bytes], rep: GcReport,
    in_use: set[tuple[str | None, str | None]],
) -> None:
    """Mark everything one VM's backups reference.

    A published backup that vanishes while we read it was deleted meanwhile;
    its chunks may have passed to a backup that did not exist, or was not
    committed, when we listed the VM (an incremental inheriting from it). So
    list the VM again and mark what is new, until a pass sees nothing vanish.
    """
    target = backups.target
    done: set[str] = set()  # published backups marked (immutable)
    for _ in range(MAX_MARK_ROUNDS):
        vanished = []
        for bd in dirs:
            if bd.published:
                if bd.backup_id in done:
                    continue
                if await _mark_published(backups, bd, marked, rep):
                    done.add(bd.backup_id)
                else:
                    vanished.append(bd.backup_id)
            elif bd.newest >= rep.cutoff or (bd.vm_id, bd.backup_id) in in_use:
                # In flight: its committed disks count (a mover commits, the
                # orchestrator publishes later).
                for f in await safe_scandir(target, bd.path):
                    disk_id = index_disk_id(f.name)
                    if disk_id is None:
                        continue
                    try:
                        index = await backups.read_index(bd.vm_id, bd.backup_id, disk_id)
                    except IndexCorrupted:
                        continue
                    _mark(index, marked, rep)
        if not vanished:
            return
        rep.mark_rounds += 1
        log.info("store.gc_backup_vanished", vm_id=vm, backups=vanished)
        dirs = await scan_backup_dirs(target, vm)
    raise GcRaced(f"backups of VM {vm} kept being deleted while gc read them ({MAX_MARK_ROUNDS} listings)")


async def _mark_published(backups: Backups, bd: BackupDir, marked: set[bytes], rep: GcReport) -> bool:
    """Mark one published backup; False if it was deleted meanwhile."""
    try:
        info = await backups.get(bd.vm_id, bd.backup_id)
        for d in info.disks:
            _mark(await backups.read_backup_index(info, d.disk_id), marked, rep)
    except BackupNotFound:
        return False
    except (IndexCorrupted, TargetUnavailable):
        # Being deleted (manifest first, then the indexes): a cut index, or over NFS a
        # read of a file removed under it, which libnfs may report as a transport error.
        if not await backups.target.exists(manifest_path(bd.vm_id, bd.backup_id)):
            return False
        raise  # damaged or unreachable: abort gc, remove nothing
    return True


def _mark(index: FixedIndex, marked: set[bytes], rep: GcReport) -> None:
    marked |= index.referenced()
    rep.indexes += 1


async def _sweep_one(target: Target, d: str, e: DirEntry, marked: set[bytes], rep: GcReport) -> None:
    path = join(d, e.name)
    if e.is_dir:
        return
    if is_tmp_name(e.name):
        if e.mtime < rep.chunk_cutoff:
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
    if e.mtime >= rep.chunk_cutoff:
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
    if st.mtime >= rep.chunk_cutoff:
        await target.rename(trash, path)  # same content if re-written meanwhile
        rep.chunks_kept_young += 1
        return
    await try_remove(target, trash)
    rep.chunks_removed += 1
    rep.bytes_removed += st.size
