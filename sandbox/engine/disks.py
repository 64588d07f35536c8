"""Disks, storage-domain disks and disk snapshots, and image transfers."""
from __future__ import annotations

from aiohttp import web
from ovirtsdk4 import types

from . import render
from .model import BadRequest, Conflict, NotFound
from .state import Engine
from .http import (API, ENGINE, action, is_admin, body, boolean, corr, enum, page, require_admin, search, visible_vms, xml_response)

routes = web.RouteTableDef()


# --- disks -------------------------------------------------------------------------------------------
def disk_fields(e) -> dict:
    """The disk search fields clients use (the engine's names): `vm_names` is
    the names of the VMs the disk is attached to (`ovirt_disk_info
    pattern: vm_names=NAME`), `storage` (and `Storage.name`) the storage domain's name."""
    def vm_names(d):
        return [v.name for v in e.vms.values() if any(a.disk_id == d.id for a in v.attachments)]
    return {"name": lambda d: d.alias, "alias": lambda d: d.alias, "id": lambda d: d.id,
            "status": lambda d: d.status, "description": lambda d: d.description,
            "storage": lambda d: e.sds[d.sd_id].name if d.sd_id in e.sds else None,
            # the storage domain's name as ovirt_disk searches it (`Storage.name=`)
            "storage.name": lambda d: e.sds[d.sd_id].name if d.sd_id in e.sds else None,
            "vm_names": vm_names, "number_of_vms": lambda d: len(vm_names(d)),
            "format": lambda d: d.format, "content_type": lambda d: d.content_type,
            "provisioned_size": lambda d: d.provisioned_size,
            "shareable": lambda d: str(d.shareable).lower(),
            "wipe_after_delete": lambda d: str(d.wipe_after_delete).lower()}


def _visible_disks(request):
    e, user = request.app[ENGINE], request["user"]
    if is_admin(e, user):
        return list(e.disks.values())
    mine = {a.disk_id for v in visible_vms(request) for a in v.attachments}
    mine |= {p.object_id for p in e.permissions if p.user_id == user.id and p.object_type == "disk"}
    return [d for d in e.disks.values() if d.id in mine]


@routes.get(API + "/disks")
async def disks_list(request):
    e = request.app[ENGINE]
    items = search(_visible_disks(request), request.query.get("search"), disk_fields(e),
                   boolean(request, "case_sensitive"))
    return xml_response([render.disk(e, d) for d in page(items, request)], root="disks")


def _get_disk(request, disk_id):
    for d in _visible_disks(request):
        if d.id == disk_id:
            return d
    raise NotFound(f"Disk '{disk_id}' not found")


@routes.get(API + "/disks/{id}")
async def disk_get(request):
    return xml_response(render.disk(request.app[ENGINE], _get_disk(request, request.match_info["id"])))


async def add_disk(e: Engine, x: types.Disk, correlation_id, sd_id=None):
    if sd_id is None:
        if not x.storage_domains:
            raise BadRequest("Disk [storage_domains] required for add")
        sd = x.storage_domains[0]
        sd_id = sd.id or next((s.id for s in e.sds.values() if s.name == sd.name), None)
        if sd_id is None:
            raise NotFound(f"Storage domain '{sd.name}' not found")
    if not x.provisioned_size:
        raise BadRequest("Disk [provisioned_size] required for add")
    if x.format is None:
        raise BadRequest("Disk [format] required for add")
    return await e.create_disk(
        alias=x.alias or x.name or "", size=x.provisioned_size, fmt=enum(x.format),
        sparse=x.sparse if x.sparse is not None else True,
        backup=enum(x.backup) or "none", sd_id=sd_id, description=x.description or "",
        disk_id=x.id, content_type=enum(x.content_type) or "data", correlation_id=correlation_id)


@routes.post(API + "/disks")
async def disk_add(request):
    e = request.app[ENGINE]
    x = await body(request, "disk")
    if not isinstance(x, types.Disk):
        raise BadRequest("Expected a <disk> document")
    d = await add_disk(e, x, corr(request))
    return xml_response(render.disk(e, d), status=201)


@routes.delete(API + "/disks/{id}")
async def disk_remove(request):
    require_admin(request)
    await request.app[ENGINE].remove_disk(request.match_info["id"])
    return web.Response(status=200)


@routes.get(API + "/disks/{id}/disksnapshots")
async def disk_snapshots(request):
    e = request.app[ENGINE]
    d = _get_disk(request, request.match_info["id"])
    include_active = boolean(request, "include_active")
    vols = d.image.volumes if include_active else d.image.volumes[:-1]
    vm = e.vm_of_disk(d.id)
    out = []
    for v in vols:
        snap = next((s for s in (vm.snapshots if vm else []) if s.volumes.get(d.id) == v.id), None)
        if snap is None and v is d.image.top and vm:
            snap = e.snapshot(vm, vm.active_snapshot_id)
        out.append(render.disk_snapshot(e, d, v.id, snap, vm,
                                        href=f"{API}/disks/{d.id}/disksnapshots/{v.id}"))
    return xml_response(out, root="disk_snapshots")


# storage domain sub-collections
@routes.get(API + "/storagedomains/{sd}/disks")
async def sd_disks(request):
    e = request.app[ENGINE]
    items = [d for d in _visible_disks(request) if d.sd_id == request.match_info["sd"]]
    items = search(items, request.query.get("search"), disk_fields(e),
                   boolean(request, "case_sensitive"))
    return xml_response([render.disk(e, d) for d in items], root="disks")


@routes.get(API + "/storagedomains/{sd}/disks/{id}")
async def sd_disk_get(request):
    return xml_response(render.disk(request.app[ENGINE], _get_disk(request, request.match_info["id"])))


@routes.post(API + "/storagedomains/{sd}/disks")
async def sd_disk_add(request):
    e = request.app[ENGINE]
    if request.match_info["sd"] not in e.sds:
        raise NotFound(f"Storage domain '{request.match_info['sd']}' not found")
    x = await body(request, "disk")
    d = await add_disk(e, x, corr(request), sd_id=request.match_info["sd"])
    return xml_response(render.disk(e, d), status=201)


@routes.delete(API + "/storagedomains/{sd}/disks/{id}")
async def sd_disk_remove(request):
    require_admin(request)
    await request.app[ENGINE].remove_disk(request.match_info["id"])
    return web.Response(status=200)


def _sd_disk_snapshots(e: Engine, sd_id, include_active=False):
    for d in e.disks.values():
        if d.sd_id != sd_id:
            continue
        vm = e.vm_of_disk(d.id)
        vols = d.image.volumes if include_active else d.image.volumes[:-1]
        for v in vols:
            snap = next((s for s in (vm.snapshots if vm else []) if s.volumes.get(d.id) == v.id), None)
            yield d, v.id, snap, vm


@routes.get(API + "/storagedomains/{sd}/disksnapshots")
async def sd_disk_snapshots(request):
    e = request.app[ENGINE]
    sd = request.match_info["sd"]
    return xml_response([render.disk_snapshot(e, d, v, s, vm) for d, v, s, vm in
                         _sd_disk_snapshots(e, sd, boolean(request, "include_active"))],
                        root="disk_snapshots")


@routes.get(API + "/storagedomains/{sd}/disksnapshots/{id}")
async def sd_disk_snapshot(request):
    e = request.app[ENGINE]
    for d, v, s, vm in _sd_disk_snapshots(e, request.match_info["sd"], True):
        if v == request.match_info["id"]:
            return xml_response(render.disk_snapshot(e, d, v, s, vm))
    raise NotFound(f"Disk snapshot '{request.match_info['id']}' not found")


# --- image transfers -----------------------------------------------------------------------------------
@routes.get(API + "/imagetransfers")
async def transfers_list(request):
    e = request.app[ENGINE]
    e.gc_transfers()
    return xml_response([render.transfer(e, t) for t in e.transfers.values()], root="image_transfers")


@routes.get(API + "/imagetransfers/{id}")
async def transfer_get(request):
    e = request.app[ENGINE]
    e.gc_transfers()
    return xml_response(render.transfer(e, e.transfer(request.match_info["id"])))


@routes.post(API + "/imagetransfers")
async def transfer_add(request):
    e = request.app[ENGINE]
    x = await body(request, "image_transfer")
    if not isinstance(x, types.ImageTransfer):
        raise BadRequest("Expected an <image_transfer> document")
    disk_id = x.disk.id if x.disk else (x.image.id if x.image else None)
    snap_id = x.snapshot.id if x.snapshot else None
    if disk_id and not snap_id:
        _get_disk(request, disk_id)  # visibility
    t = await e.create_transfer(
        direction=enum(x.direction) or "upload", disk_id=disk_id, snapshot_id=snap_id,
        backup_id=x.backup.id if x.backup else None, host_id=x.host.id if x.host else None,
        fmt=enum(x.format) or "cow", shallow=bool(x.shallow),
        inactivity_timeout=x.inactivity_timeout, timeout_policy=enum(x.timeout_policy),
        correlation_id=corr(request), transfer_id=x.id)
    return xml_response(render.transfer(e, t), status=201)


@routes.post(API + "/imagetransfers/{id}/{action:(finalize|cancel|pause|resume|extend)}")
async def transfer_action(request):
    e = request.app[ENGINE]
    tid, act = request.match_info["id"], request.match_info["action"]
    if act == "finalize":
        await e.finalize_transfer(tid)
    elif act == "cancel":
        await e.cancel_transfer(tid)
    elif act == "pause":
        await e.pause_transfer(tid)
    elif act == "resume":
        await e.resume_transfer(tid)
    else:  # extend the ticket: only a live transfer has one
        t = e.transfer(tid)
        if t.phase not in ("transferring", "paused_user", "paused_system", "resuming"):
            raise Conflict(f"[Cannot extend image transfer ticket. Phase is {t.phase}.]")
    return action()

async def update_disk(e: Engine, d, x: types.Disk, correlation_id):
    if x.provisioned_size is not None and x.provisioned_size != d.provisioned_size:
        await e.extend_disk(d.id, x.provisioned_size, correlation_id)
    if x.alias or x.name:
        d.alias = x.alias or x.name
    if x.description is not None:
        d.description = x.description
    if x.wipe_after_delete is not None:
        d.wipe_after_delete = x.wipe_after_delete
    if x.shareable is not None and x.shareable != d.shareable:
        raise Conflict("[Cannot edit Virtual Disk. Changing the shareable property is not "
                       "supported for this disk.]")
    fmt = enum(x.format)
    if fmt and fmt != d.format:
        raise Conflict("[Cannot edit Virtual Disk. The disk format cannot be changed.]")
    backup = enum(x.backup)
    if backup and backup != d.backup:
        if backup == "incremental" and d.format != "cow":
            raise Conflict("[Cannot edit Virtual Disk. Incremental backup is supported only for "
                           "disks in QCOW2 format.]")
        d.backup = backup


@routes.put(API + "/disks/{id}")
async def disk_update(request):
    e = request.app[ENGINE]
    d = _get_disk(request, request.match_info["id"])
    x = await body(request, "disk")
    if not isinstance(x, types.Disk):
        raise BadRequest("Expected a <disk> document")
    await update_disk(e, d, x, corr(request))
    return xml_response(render.disk(e, d))


@routes.post(API + "/disks/{id}/reduce")
async def disk_reduce(request):
    d = _get_disk(request, request.match_info["id"])
    raise Conflict(f"[Cannot reduce Virtual Disk {d.alias}. Reducing an image is not supported "
                   "for file storage domains.]")
