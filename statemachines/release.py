"""Engine-only release: give back what a machine holds in the engine when the
catalog cannot be reached.

A machine whose catalog write failed stops (`CatalogUnreachable`) and keeps,
in the engine, what its step was using: image transfers (which lock their
disks), an engine backup (which locks the VM), a snapshot. Normally the same
or another runner resumes it a moment later. When the catalog stays down
(``jobs.catalog_unreachable_release_seconds``), the runner calls
`release_engine` for each stopped machine: it works only from what the machine
holds in memory (its `resources` as last known) and the engine — no catalog
write — and is idempotent (a resumed machine's cleanup finds the objects gone
and records them so).

- backup: downloads are finalized (never canceled: the disk stays intact), the
  engine backup finalized, ovault's snapshot removed;
- restore: uploads into disks the restore created are canceled (the engine
  removes such a disk; it is unusable anyway), an in-place restore's are
  finalized (a canceled upload would take the VM's own disk with it); VMs and
  disks a restore created are left for its cleanup, which runs once the catalog
  answers (they hold no lock).
"""
from __future__ import annotations

from .backup import ACTIVE, BackupMachine
from .base import VmMachine
from .resume import end_transfer


async def release_engine(m: VmMachine) -> list[str]:
    """Release what `m` holds in the engine; returns what was done, in words.
    Every object is tried even if another fails (the failures are listed too)."""
    done: list[str] = []
    if isinstance(m, BackupMachine):
        await _backup(m, done)
    else:
        await _uploads(m, done)
    return done


async def _end_transfer(m: VmMachine, tid: str, action: str, done: list[str]) -> None:
    if await end_transfer(m, tid, action):
        done.append(f"image transfer {tid} {'finalized' if action == 'finalize' else 'canceled'}")


async def _try(what: str, coro, done: list[str]) -> None:
    try:
        await coro
    except Exception as err:  # keep going: release as much as possible
        done.append(f"{what} not released: {err}")


async def _backup(m: BackupMachine, done: list[str]) -> None:
    res, e = m.res, m.engine
    transfers = dict(res.get("transfers") or {})
    for disk_id, t_rec in transfers.items():
        if not t_rec.get("finalized"):
            await _try(f"image transfer {t_rec['id']}", _end_transfer(m, t_rec["id"], "finalize", done), done)
    if res.get("method"):
        # a transfer created just before its id could be recorded
        for disk_id in res.get("disks") or {}:
            if disk_id in transfers:
                continue
            for t in await e.list_transfers():
                if t.disk_id == disk_id and t.direction == "download" and t.phase in ACTIVE:
                    await _try(f"image transfer {t.id}", _end_transfer(m, t.id, "finalize", done), done)
    eb = res.get("engine_backup")
    if eb and not eb.get("finalized"):
        await _try(f"engine backup {eb['id']}", _finalize_backup(m, eb["id"], done), done)
    snap = res.get("snapshot") or {}
    if snap and not snap.get("removed"):
        sid = snap.get("id")
        if not sid and snap.get("description"):
            found = [s for s in await e.list_snapshots(m.vm_id) if s.description == snap["description"]]
            sid = found[0].id if found else None
        if sid:
            await _try(f"snapshot {sid}", _remove_snapshot(m, sid, done), done)


async def _finalize_backup(m: BackupMachine, backup_id: str, done: list[str]) -> None:
    e = m.engine
    b = await e.get_backup(m.vm_id, backup_id)
    if b is None or b.phase in ("succeeded", "failed"):
        return
    if b.phase != "finalizing":
        await e.finalize_backup(m.vm_id, backup_id, m.correlation_id)

    async def ended():
        cur = await e.get_backup(m.vm_id, backup_id)
        return cur is None or cur.phase in ("succeeded", "failed")
    await m.wait(ended, timeout=m.deps.timeouts.engine_backup, interval=m.deps.timeouts.poll,
                 what="the engine backup to finish")
    done.append(f"engine backup {backup_id} finalized")


async def _remove_snapshot(m: BackupMachine, snap_id: str, done: list[str]) -> None:
    if await m.engine.get_snapshot(m.vm_id, snap_id) is None:
        return
    await m._remove_snapshot(snap_id, attempts=3)
    done.append(f"snapshot {snap_id} removed")


async def _uploads(m: VmMachine, done: list[str]) -> None:
    for t_rec in (m.res.get("transfers") or {}).values():
        if not t_rec.get("finalized"):
            # canceling an upload makes the engine remove its disk: an in-place restore's is finalized
            action = "finalize" if m.res.get("kind") == "in_place" else "cancel"
            await _try(f"image transfer {t_rec['id']}", _end_transfer(m, t_rec["id"], action, done), done)
