"""The simulated engine's operations on a VM whose guest runs (sandbox/guests):
live backups, live snapshots and live merges through the guest's qemu, and the
guest file system freeze around their point in time — what vdsm does with
libvirt on a real host. A VM without a running guest keeps the offline paths
(qemu-img on the volume files, qemu-nbd exports).

Freeze: through the guest agent, right before the point in time, thawed
right after. For a live snapshot the engine freezes the guest itself and says
so in its audit log (FREEZE_VM_SUCCESS; FAILED_TO_FREEZE_VM when the agent
does not answer, and the snapshot goes on crash consistent), as an engine
does with LiveSnapshotPerformFreezeInEngine. For a live backup vdsm freezes
the guest and the engine logs nothing about it: without
`require_consistency` a failed freeze goes unnoticed (crash consistent); with
it the backup fails (phase `failed`, VM_BACKUP_FAILED) and keeps nothing.
The audit log codes below are the engine's (AuditLogType).
"""
from __future__ import annotations

import uuid

from ..guests import live_backup
from ..guests.qmp import Qmp, QmpError
from ..storage import QCOW2, Volume

FAILED_TO_FREEZE_VM = 10764
FAILED_TO_THAW_VM = 10765
FREEZE_VM_INITIATED = 10766
FREEZE_VM_SUCCESS = 10767
THAW_VM_SUCCESS = 10768
FREEZE_TIMEOUT = 10.0  # the agent answers at once when it runs


class FreezeRequired(Exception):
    pass


def guest_of(engine, vm):
    """The VM's running guest, or None (no guests in this lab, VM down, a record-only VM)."""
    guests = getattr(engine, "guests", None)
    if guests is None or vm.status != "up":
        return None
    return guests.get(vm.id)


async def freeze(engine, vm, g, correlation_id: str, audit: bool = True) -> bool:
    """Freeze the guest's file systems; False (and, with `audit`, the engine's
    warning) when the agent does not answer or cannot freeze. Without `audit`
    (vdsm's freeze of a live backup) the engine's audit log says nothing."""
    if audit:
        engine.event(FREEZE_VM_INITIATED, f"Freezing the guest file systems of VM {vm.name}.",
                     vm_id=vm.id, correlation_id=correlation_id)
    try:
        await g.qga("guest-fsfreeze-freeze", timeout=FREEZE_TIMEOUT)
    except Exception as e:  # GuestError, a timeout, a closed channel
        try:
            await g.qga("guest-fsfreeze-thaw", timeout=2)
        except Exception:
            pass
        g.last_freeze_error = f"{type(e).__name__}: {e or 'no answer from the guest agent'}"
        if not audit:
            return False
        engine.event(FAILED_TO_FREEZE_VM,
                     f"The guest file systems of VM {vm.name} could not be frozen "
                     f"({type(e).__name__}: {e or 'no answer from the guest agent'}); the "
                     "point in time is crash consistent only.",
                     severity="warning", vm_id=vm.id, correlation_id=correlation_id)
        return False
    if audit:
        engine.event(FREEZE_VM_SUCCESS, f"The guest file systems of VM {vm.name} are frozen.",
                     vm_id=vm.id, correlation_id=correlation_id)
    return True


async def thaw(engine, vm, g, correlation_id: str, audit: bool = True):
    try:
        await g.qga("guest-fsfreeze-thaw", timeout=FREEZE_TIMEOUT)
        if audit:
            engine.event(THAW_VM_SUCCESS, f"The guest file systems of VM {vm.name} are thawed.",
                         vm_id=vm.id, correlation_id=correlation_id)
    except Exception as e:
        if not audit:
            return
        engine.event(FAILED_TO_THAW_VM, f"The guest file systems of VM {vm.name} could not be "
                     f"thawed ({type(e).__name__}: {e}).", severity="warning", vm_id=vm.id,
                     correlation_id=correlation_id)


class _Freezer:
    """Freeze/thaw callbacks for the point in time; remembers whether it froze."""

    def __init__(self, engine, vm, g, correlation_id, required: bool, audit: bool):
        self.args, self.audit = (engine, vm, g, correlation_id), audit
        self.required, self.frozen = required, False

    async def before(self):
        self.frozen = await freeze(*self.args, audit=self.audit)
        if not self.frozen and self.required:
            # vdsm refuses the backup; the engine's API and audit log say only that it failed
            raise FreezeRequired(f"VM {self.args[1].name}: freezing the guest failed "
                                 f"({getattr(self.args[2], 'last_freeze_error', '?')}) and "
                                 "the backup requires consistency")

    async def after(self):
        if self.frozen:
            await thaw(*self.args, audit=self.audit)


# --- backups ------------------------------------------------------------------------------------
async def begin_backup(engine, vm, g, b, disks, capable, require_consistency: bool,
                       correlation_id: str):
    """The live point in time of backup `b`: freeze, fleecing + bitmaps + NBD
    exports in the guest's qemu, thaw. Sets b.live, b.modes, b.consistency."""
    qmp = await Qmp(g.qmp_socket).connect()
    fr = _Freezer(engine, vm, g, correlation_id, require_consistency, audit=False)
    try:
        lb = await live_backup.begin(
            qmp, b.id, {d.id: g.disk(d.id).node_name for d in disks},
            {d.id: d.image.size for d in disks}, scratch_dir=engine.nbd_dir / "scratch",
            sock=engine.nbd_dir / f"live-{b.id[:8]}.sock", to_checkpoint=b.to_checkpoint_id,
            from_checkpoint=b.from_checkpoint_id, checkpoint_disks={d.id for d in capable},
            before_point=fr.before, after_point=fr.after)
    except BaseException:
        await qmp.close()
        raise
    b.live, b.qmp = lb, qmp
    b.consistency = "filesystem" if fr.frozen else "crash"
    for d in disks:
        b.modes[d.id] = "incremental" if lb.disks[d.id]["bitmap"] else "full"


async def end_backup(b):
    lb, qmp = getattr(b, "live", None), getattr(b, "qmp", None)
    if lb is None:
        return
    b.live = b.qmp = None
    try:
        await live_backup.end(qmp, lb)
    except (QmpError, ConnectionError, OSError, TimeoutError):
        # The guest went away meanwhile: nothing of the backup is left in qemu.
        for d in lb.disks.values():
            d["scratch"].unlink(missing_ok=True)
        lb.sock.unlink(missing_ok=True)
    finally:
        await qmp.close()


def transfer_source(b, disk_id: str):
    """(url, dirty) of a live backup's disk for the imageio ticket, or None."""
    lb = getattr(b, "live", None)
    if lb is None or disk_id not in lb.disks:
        return None
    return lb.url(disk_id), bool(lb.disks[disk_id]["bitmap"])


# --- snapshots ----------------------------------------------------------------------------------
async def snapshot(engine, vm, g, disks, correlation_id: str) -> tuple[dict, bool]:
    """Live snapshot of `disks`: freeze, a new overlay on each running disk,
    thaw. Returns ({disk_id: frozen volume id}, frozen)."""
    fr = _Freezer(engine, vm, g, correlation_id, False, audit=True)
    out = {}
    async with Qmp(g.qmp_socket) as qmp:
        await fr.before()
        try:
            for d in disks:
                gd = g.disk(d.id)
                old = d.image.top
                new = Volume(str(uuid.uuid4()), d.image.dir / "", QCOW2, parent=old.id)
                new.path = d.image.dir / new.id
                node, fnode = f"ovl-{new.id[:8]}", f"ovlf-{new.id[:8]}"
                await live_backup.snapshot(qmp, gd.node_name, new.path, node, old.path.name,
                                           old.fmt, d.image.size, file_node=fnode)
                d.image.volumes.append(new)
                d.image._meta(new)
                gd.node_name, gd.file_node_name, gd.path, gd.fmt = node, fnode, new.path, QCOW2
                out[d.id] = old.id
        finally:
            await fr.after()
    return out, fr.frozen


async def merge(engine, g, d, vol_id: str) -> str:
    """Live merge: the volume above `vol_id` is committed into it (block-commit
    in the guest's qemu), as Image.merge does offline. Returns the id of the
    volume removed."""
    image = d.image
    idx = [v.id for v in image.volumes].index(vol_id)
    if idx == len(image.volumes) - 1:
        raise ValueError("cannot merge the active volume")
    base, child = image.volumes[idx], image.volumes[idx + 1]
    gd = g.disk(d.id)
    async with Qmp(g.qmp_socket) as qmp:
        base_node = await live_backup.node_of(qmp, base.path)
        child_node = await live_backup.node_of(qmp, child.path)
        active = child is image.top
        await live_backup.commit(qmp, gd.node_name, child_node, base_node,
                                 f"commit-{child.id[:8]}")
    if active:
        gd.node_name, gd.path, gd.fmt = base_node, base.path, base.fmt
    if idx + 2 < len(image.volumes):
        grand = image.volumes[idx + 2]
        grand.parent = base.id
        image._meta(grand)
    del image.volumes[idx + 1]
    child.path.unlink(missing_ok=True)
    (image.dir / f"{child.id}.meta").unlink(missing_ok=True)
    return child.id


async def remove_bitmap(g, d, name: str):
    """Remove checkpoint bitmap `name` from the running disk's active node (the
    lower layers are open read-only in qemu; their copy goes on the next
    offline merge or removal)."""
    async with Qmp(g.qmp_socket) as qmp:
        gd = g.disk(d.id)
        if name in await qmp.bitmaps(gd.node_name):
            await qmp.execute("block-dirty-bitmap-remove", {"node": gd.node_name, "name": name})


async def has_bitmap(g, d, name: str) -> bool:
    async with Qmp(g.qmp_socket) as qmp:
        return name in await qmp.bitmaps(g.disk(d.id).node_name)


__all__ = ["guest_of", "freeze", "thaw", "begin_backup", "end_backup", "transfer_source",
           "snapshot", "merge", "remove_bitmap", "has_bitmap", "FreezeRequired"]
