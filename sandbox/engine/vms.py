"""VMs and what hangs off them: disk attachments, NICs, snapshots, backups,
checkpoints, power actions."""
from __future__ import annotations

from aiohttp import web
from ovirtsdk4 import types

from . import ovf, render
from .model import ROLES, Attachment, BadRequest, Conflict, NotFound, Nic, Permission, Vm, new_id
from .state import Engine
from .disks import add_disk, update_disk
from .http import (API, ENGINE, SSO, action, action_body, body, boolean, corr, enum, find, get_vm, page, require_admin, search, visible_vms, xml_response)

routes = web.RouteTableDef()


# --- VMs -------------------------------------------------------------------------------------------
VM_FIELDS = {"name": lambda v: v.name, "id": lambda v: v.id, "status": lambda v: v.status,
             "cluster": lambda v: v.cluster_id, "description": lambda v: v.description}


@routes.get(API + "/vms")
async def vms_list(request):
    e = request.app[ENGINE]
    items = search(sorted(visible_vms(request), key=lambda v: v.name),
                   request.query.get("search"), VM_FIELDS, boolean(request, "case_sensitive"))
    ac = boolean(request, "all_content")
    return xml_response([render.vm(e, v, ac) for v in page(items, request)], root="vms")


@routes.get(API + "/vms/{vm}")
async def vm_get(request):
    return xml_response(render.vm(request.app[ENGINE], get_vm(request),
                                  boolean(request, "all_content")))


def _resolve_cluster(e: Engine, c) -> str:
    if c is None:
        raise BadRequest("Vm [cluster.id|name] required for add")
    if c.id:
        if c.id not in e.clusters:
            raise NotFound(f"Cluster '{c.id}' not found")
        return c.id
    for cl in e.clusters.values():
        if cl.name == c.name:
            return cl.id
    raise NotFound(f"Cluster '{c.name}' not found")


def _apply_vm_fields(vm: Vm, x: types.Vm):
    if x.name:
        vm.name = x.name
    if x.description is not None:
        vm.description = x.description
    if x.comment is not None:
        vm.comment = x.comment
    if x.memory:
        vm.memory = x.memory
    if x.cpu and x.cpu.topology:
        t = x.cpu.topology
        vm.cpu_sockets = t.sockets or vm.cpu_sockets
        vm.cpu_cores = t.cores or vm.cpu_cores
        vm.cpu_threads = t.threads or vm.cpu_threads
    if x.os:
        if x.os.type:
            vm.os_type = x.os.type
        if x.os.boot and x.os.boot.devices:
            vm.boot_devices = [enum(d) for d in x.os.boot.devices]
    if x.bios and x.bios.type:
        vm.bios_type = enum(x.bios.type)
    if x.type:
        vm.type = enum(x.type)
    if x.high_availability and x.high_availability.enabled is not None:
        vm.ha = x.high_availability.enabled


@routes.post(API + "/vms")
async def vms_add(request):
    require_admin(request)
    e = request.app[ENGINE]
    x = await body(request, "vm")
    if not isinstance(x, types.Vm):
        raise BadRequest("Expected a <vm> document")
    cluster_id = _resolve_cluster(e, x.cluster)
    conf = x.initialization.configuration if x.initialization else None
    vm = Vm(x.id or new_id(), x.name or "", cluster_id, memory=1 << 30)
    attach = []
    if conf is not None and conf.data:
        if enum(conf.type) not in (None, "ovf"):
            raise BadRequest(f"Unsupported configuration type '{enum(conf.type)}'")
        try:
            o = ovf.parse(conf.data)
        except Exception as ex:
            raise BadRequest(f"Invalid OVF configuration: {ex}") from None
        vm.name = x.name or o["name"]
        vm.description, vm.comment, vm.type = o["description"], o["comment"], o["type"]
        vm.bios_type, vm.os_type, vm.boot_devices, vm.ha = (o["bios_type"], o["os_type"],
                                                            o["boot_devices"], o["ha"])
        vm.memory = o["memory"] or vm.memory
        if "cpu" in o:
            vm.cpu_sockets, vm.cpu_cores, vm.cpu_threads = o["cpu"]
        for i, n in enumerate(o["nics"]):
            vm.nics.append(Nic(new_id(), n["name"] or f"nic{i + 1}", n["interface"], e.new_mac(),
                               n["network"] or "ovirtmgmt"))
        # Disks named by the OVF are attached when they exist and float (they
        # were uploaded before the VM was registered).
        for d in o["disks"]:
            if d["disk_id"] in e.disks and e.vm_of_disk(d["disk_id"]) is None:
                attach.append(Attachment(d["disk_id"], d["bootable"], d["interface"]))
    if not vm.name:
        raise BadRequest("Vm [name] required for add")
    _apply_vm_fields(vm, x)
    if x.template and x.template.name not in (None, "Blank") and x.template.id not in (None, render.BLANK):
        raise NotFound(f"Template '{x.template.name or x.template.id}' not found")
    e.add_vm(vm, corr(request))
    for a in attach:
        e.attach(vm.id, a)
    return xml_response(render.vm(e, vm), status=201)


@routes.put(API + "/vms/{vm}")
async def vm_update(request):
    require_admin(request)
    e = request.app[ENGINE]
    vm = get_vm(request)
    x = await body(request, "vm")
    if x.name and x.name != vm.name and any(v.name == x.name for v in e.vms.values()):
        raise Conflict("[Cannot edit VM. The VM name is already in use.]")
    _apply_vm_fields(vm, x)
    return xml_response(render.vm(e, vm))


@routes.delete(API + "/vms/{vm}")
async def vm_remove(request):
    vm = get_vm(request)
    require_admin(request)
    await request.app[ENGINE].remove_vm(vm.id, detach_only=boolean(request, "detach_only"))
    return web.Response(status=200)


@routes.post(API + "/vms/{vm}/{action:(start|stop|shutdown)}")
async def vm_power(request):
    vm = get_vm(request)
    await request.app[ENGINE].set_power(vm.id, request.match_info["action"] == "start", corr(request))
    return action()


# disk attachments
@routes.get(API + "/vms/{vm}/diskattachments")
async def atts_list(request):
    e, vm = request.app[ENGINE], get_vm(request)
    return xml_response([render.attachment(e, vm, a) for a in vm.attachments],
                        root="disk_attachments")


@routes.get(API + "/vms/{vm}/diskattachments/{id}")
async def att_get(request):
    e, vm = request.app[ENGINE], get_vm(request)
    for a in vm.attachments:
        if a.disk_id == request.match_info["id"]:
            return xml_response(render.attachment(e, vm, a))
    raise NotFound(f"Disk attachment '{request.match_info['id']}' not found")


@routes.post(API + "/vms/{vm}/diskattachments")
async def att_add(request):
    e, vm = request.app[ENGINE], get_vm(request)
    x = await body(request, "disk_attachment")
    if not isinstance(x, types.DiskAttachment) or x.disk is None:
        raise BadRequest("DiskAttachment [disk] required for add")
    if x.interface is None:
        raise BadRequest("DiskAttachment [interface] required for add")
    disk_id = x.disk.id
    if not disk_id or disk_id not in e.disks:
        if x.disk.provisioned_size:  # a new disk, created and attached
            d = await add_disk(e, x.disk, corr(request))
            disk_id = d.id
        elif disk_id:
            raise NotFound(f"Disk '{disk_id}' not found")
        else:
            raise BadRequest("DiskAttachment [disk.id] required for add")
    a = e.attach(vm.id, Attachment(disk_id, bool(x.bootable), enum(x.interface),
                                   x.active if x.active is not None else True,
                                   bool(x.read_only), bool(x.pass_discard)))
    return xml_response(render.attachment(e, vm, a), status=201)


@routes.delete(API + "/vms/{vm}/diskattachments/{id}")
async def att_remove(request):
    e, vm = request.app[ENGINE], get_vm(request)
    e.detach(vm.id, request.match_info["id"])
    if boolean(request, "detach_only", True) is False:
        await e.remove_disk(request.match_info["id"])
    return web.Response(status=200)


# NICs
@routes.get(API + "/vms/{vm}/nics")
async def nics_list(request):
    e, vm = request.app[ENGINE], get_vm(request)
    return xml_response([render.nic(e, vm, n) for n in vm.nics], root="nics")


@routes.post(API + "/vms/{vm}/nics")
async def nic_add(request):
    e, vm = request.app[ENGINE], get_vm(request)
    x = await body(request, "nic")
    if not isinstance(x, types.Nic):
        raise BadRequest("Expected a <nic> document")
    if x.name and any(o.name == x.name for o in vm.nics):
        raise Conflict("[Cannot add Interface. The VM already has a network interface with the "
                       "same name.]")
    n = Nic(new_id(), x.name or f"nic{len(vm.nics) + 1}", enum(x.interface) or "virtio",
            x.mac.address if x.mac and x.mac.address else e.new_mac(),
            linked=x.linked if x.linked is not None else True,
            plugged=x.plugged if x.plugged is not None else True)
    vm.nics.append(n)
    return xml_response(render.nic(e, vm, n), status=201)


# --- permissions (what ovault grants the user who restored a VM) ------------------------------------
@routes.get(API + "/vms/{vm}/permissions")
async def perms_list(request):
    vm = get_vm(request)
    return xml_response([render.permission(vm, p) for p in vm.permissions], root="permissions")


@routes.post(API + "/vms/{vm}/permissions")
async def perm_add(request):
    """Granting a role on a VM to a user makes the VM visible to that user
    (the engine's user-level filtering is permission-based)."""
    require_admin(request)
    vm = get_vm(request)
    x = await body(request, "permission")
    if not isinstance(x, types.Permission) or x.role is None or x.user is None or not x.user.id:
        raise BadRequest("Permission [role, user.id] required for add")
    by_id = {v: k for k, v in ROLES.items()}
    role = x.role.name or by_id.get(x.role.id or "")
    if role not in ROLES:
        raise NotFound(f"Entity not found: Role {x.role.name or x.role.id}")
    users = [u for u in request.app[SSO].users.values() if u.id == x.user.id]
    if not users:
        raise NotFound(f"Entity not found: User {x.user.id}")
    for p in vm.permissions:
        if p.role == role and p.user_id == x.user.id:
            raise Conflict("[Cannot add Permission. Permission already exists.]")
    p = Permission(new_id(), role, x.user.id)
    vm.permissions.append(p)
    users[0].vm_ids.add(vm.id)
    return xml_response(render.permission(vm, p), status=201)


# --- snapshots ---------------------------------------------------------------------------------------
@routes.get(API + "/vms/{vm}/snapshots")
async def snaps_list(request):
    e, vm = request.app[ENGINE], get_vm(request)
    snaps = [e.snapshot(vm, vm.active_snapshot_id)] + list(vm.snapshots)
    ac = boolean(request, "all_content")
    return xml_response([render.snapshot(e, vm, s, ac) for s in snaps], root="snapshots")


@routes.get(API + "/vms/{vm}/snapshots/{id}")
async def snap_get(request):
    e, vm = request.app[ENGINE], get_vm(request)
    return xml_response(render.snapshot(e, vm, e.snapshot(vm, request.match_info["id"]),
                                        boolean(request, "all_content")))


@routes.post(API + "/vms/{vm}/snapshots")
async def snap_add(request):
    e, vm = request.app[ENGINE], get_vm(request)
    x = await body(request, "snapshot")
    if not isinstance(x, types.Snapshot):
        raise BadRequest("Expected a <snapshot> document")
    disk_ids = None
    if x.disk_attachments:
        disk_ids = [a.disk.id if a.disk else a.id for a in x.disk_attachments]
    s = await e.create_snapshot(vm.id, x.description, disk_ids,
                                x.persist_memorystate if x.persist_memorystate is not None else True,
                                corr(request), snap_id=x.id)
    return xml_response(render.snapshot(e, vm, s), status=201)


@routes.delete(API + "/vms/{vm}/snapshots/{id}")
async def snap_remove(request):
    e, vm = request.app[ENGINE], get_vm(request)
    await e.remove_snapshot(vm.id, request.match_info["id"], corr(request))
    return web.Response(status=200)


@routes.get(API + "/vms/{vm}/snapshots/{id}/disks")
async def snap_disks(request):
    e, vm = request.app[ENGINE], get_vm(request)
    s = e.snapshot(vm, request.match_info["id"])
    out = []
    if s.type == "active":
        for a in vm.attachments:
            d = e.disks[a.disk_id]
            out.append(render.disk(e, d))
    else:
        for disk_id, vol in s.volumes.items():
            d = e.disks.get(disk_id)
            if d:
                x = render.disk(e, d)
                x.image_id = vol
                x.snapshot = types.Snapshot(id=s.id)
                out.append(x)
    return xml_response(out, root="disks")


# --- backups and checkpoints ----------------------------------------------------------------------------
@routes.get(API + "/vms/{vm}/backups")
async def backups_list(request):
    e, vm = request.app[ENGINE], get_vm(request)
    return xml_response([render.backup(e, vm, b) for b in vm.backups], root="backups")


@routes.get(API + "/vms/{vm}/backups/{id}")
async def backup_get(request):
    e, vm = request.app[ENGINE], get_vm(request)
    return xml_response(render.backup(e, vm, e.backup(vm, request.match_info["id"])))


@routes.post(API + "/vms/{vm}/backups")
async def backup_add(request):
    e, vm = request.app[ENGINE], get_vm(request)
    x = await body(request, "backup")
    if not isinstance(x, types.Backup):
        raise BadRequest("Expected a <backup> document")
    b = await e.start_backup(vm.id, [d.id for d in (x.disks or []) if d.id], x.from_checkpoint_id,
                             x.id, x.description or "", corr(request),
                             boolean(request, "require_consistency"))
    return xml_response(render.backup(e, vm, b), status=201)


@routes.post(API + "/vms/{vm}/backups/{id}/finalize")
async def backup_finalize(request):
    e, vm = request.app[ENGINE], get_vm(request)
    await e.finalize_backup(vm.id, request.match_info["id"], corr(request))
    return action()


@routes.get(API + "/vms/{vm}/backups/{id}/disks")
async def backup_disks(request):
    e, vm = request.app[ENGINE], get_vm(request)
    b = e.backup(vm, request.match_info["id"])
    return xml_response([render.disk(e, e.disks[d], with_backup_mode=b.modes.get(d))
                         for d in b.disk_ids if d in e.disks], root="disks")


@routes.get(API + "/vms/{vm}/checkpoints")
async def cps_list(request):
    e, vm = request.app[ENGINE], get_vm(request)
    return xml_response([render.checkpoint(e, vm, c) for c in vm.checkpoints], root="checkpoints")


def _cp(vm, cp_id):
    return find(vm.checkpoints, cp_id, "Checkpoint")


@routes.get(API + "/vms/{vm}/checkpoints/{id}")
async def cp_get(request):
    e, vm = request.app[ENGINE], get_vm(request)
    return xml_response(render.checkpoint(e, vm, _cp(vm, request.match_info["id"])))


@routes.get(API + "/vms/{vm}/checkpoints/{id}/disks")
async def cp_disks(request):
    e, vm = request.app[ENGINE], get_vm(request)
    c = _cp(vm, request.match_info["id"])
    return xml_response([render.disk(e, e.disks[d]) for d in c.disk_ids if d in e.disks],
                        root="disks")


@routes.delete(API + "/vms/{vm}/checkpoints/{id}")
async def cp_remove(request):
    e, vm = request.app[ENGINE], get_vm(request)
    await e.remove_checkpoint(vm.id, request.match_info["id"])
    return web.Response(status=200)

# --- VM NICs (single) ---------------------------------------------------------------------------------
def _nic(vm, nic_id):
    return find(vm.nics, nic_id, "NIC")


@routes.get(API + "/vms/{vm}/nics/{id}")
async def nic_get(request):
    e, vm = request.app[ENGINE], get_vm(request)
    return xml_response(render.nic(e, vm, _nic(vm, request.match_info["id"])))


@routes.put(API + "/vms/{vm}/nics/{id}")
async def nic_update(request):
    e, vm = request.app[ENGINE], get_vm(request)
    n = _nic(vm, request.match_info["id"])
    x = await body(request, "nic")
    if not isinstance(x, types.Nic):
        raise BadRequest("Expected a <nic> document")
    running = vm.status not in ("down",)
    iface = enum(x.interface)
    if iface and iface != n.interface and running and n.plugged:
        raise Conflict("[Cannot edit Interface. Changing the interface type of a plugged "
                       "network interface of a running VM is not supported. Unplug it first.]")
    if x.name and x.name != n.name and any(o.name == x.name for o in vm.nics if o is not n):
        raise Conflict("[Cannot edit Interface. The VM already has a network interface with "
                       "the same name.]")
    if x.mac and x.mac.address and x.mac.address != n.mac:
        if running and n.plugged:
            raise Conflict("[Cannot edit Interface. The MAC address of a plugged network "
                           "interface of a running VM cannot be changed.]")
        if any(o.mac == x.mac.address for v in e.vms.values() for o in v.nics if o is not n):
            raise Conflict("[Cannot edit Interface. MAC Address is already in use.]")
        n.mac = x.mac.address
    if x.name:
        n.name = x.name
    if iface:
        n.interface = iface
    if x.linked is not None:
        n.linked = x.linked
    if x.plugged is not None:
        n.plugged = x.plugged
    e.event(933, f"Interface {n.name} ({n.interface}) was updated for VM {vm.name}.",
            vm_id=vm.id, correlation_id=corr(request))
    return xml_response(render.nic(e, vm, n))


@routes.delete(API + "/vms/{vm}/nics/{id}")
async def nic_remove(request):
    e, vm = request.app[ENGINE], get_vm(request)
    n = _nic(vm, request.match_info["id"])
    if vm.status != "down" and n.plugged:
        raise Conflict("[Cannot remove Interface. The network interface is plugged to a "
                       "running VM. Unplug it first.]")
    vm.nics.remove(n)
    e.event(935, f"Interface {n.name} ({n.interface}) was removed from VM {vm.name}.",
            vm_id=vm.id, correlation_id=corr(request))
    return web.Response(status=200)


# --- disk attachment update ---------------------------------------------------------------------------
@routes.put(API + "/vms/{vm}/diskattachments/{id}")
async def att_update(request):
    e, vm = request.app[ENGINE], get_vm(request)
    a = next((a for a in vm.attachments if a.disk_id == request.match_info["id"]), None)
    if a is None:
        raise NotFound(f"Disk attachment '{request.match_info['id']}' not found")
    x = await body(request, "disk_attachment")
    if not isinstance(x, types.DiskAttachment):
        raise BadRequest("Expected a <disk_attachment> document")
    d = e.disk(a.disk_id)
    running = vm.status != "down"
    iface = enum(x.interface)
    if d.status == "locked" and (x.active is not None or iface or x.disk):
        raise Conflict(f"[Cannot edit Virtual Disk. Disk {d.alias} is locked. Please try again "
                       "in a few minutes.]")
    if iface and iface != a.interface and running and a.active:
        raise Conflict("[Cannot edit Virtual Disk. Cannot change the interface of a plugged "
                       "disk of a running VM. Deactivate the disk first.]")
    if x.bootable and not a.bootable and any(o.bootable for o in vm.attachments if o is not a):
        raise Conflict("[Cannot edit Virtual Disk. The VM already has a bootable disk.]")
    if x.disk is not None:  # the disk itself, through its attachment (the classic extend)
        await update_disk(e, d, x.disk, corr(request))
    if iface:
        a.interface = iface
    if x.bootable is not None:
        a.bootable = x.bootable
    if x.read_only is not None:
        a.read_only = x.read_only
    if x.pass_discard is not None:
        a.pass_discard = x.pass_discard
    if x.active is not None and x.active != a.active:
        a.active = x.active
        if running:
            verb = "plugged" if a.active else "unplugged"
            e.event(2010 if a.active else 2011, f"VM {vm.name} disk {d.alias} was "
                    f"{verb} by admin@internal-authz.", vm_id=vm.id, correlation_id=corr(request))
        else:
            e.event(2016 if a.active else 2017, f"Disk {d.alias} was successfully "
                    f"{'activated' if a.active else 'deactivated'} on VM {vm.name}.",
                    vm_id=vm.id, correlation_id=corr(request))
    return xml_response(render.attachment(e, vm, a))

# --- snapshot restore, reboot, suspend --------------------------------------------------------------------
@routes.post(API + "/vms/{vm}/snapshots/{id}/restore")
async def snap_restore(request):
    e, vm = request.app[ENGINE], get_vm(request)
    a = await action_body(request)
    disk_ids = [d.id for d in a.disks or [] if d.id] or None
    if a.restore_memory:
        snap = e.snapshot(vm, request.match_info["id"])
        if not snap.persist_memorystate:
            raise Conflict("[Cannot revert to Snapshot. The snapshot has no memory state.]")
    await e.restore_snapshot(vm.id, request.match_info["id"], corr(request), disk_ids)
    return action()


@routes.post(API + "/vms/{vm}/{action:(reboot|suspend)}")
async def vm_reboot_suspend(request):
    vm = get_vm(request)
    e = request.app[ENGINE]
    if request.match_info["action"] == "reboot":
        await e.reboot(vm.id, corr(request))
    else:
        await e.suspend(vm.id, corr(request))
    return action()
