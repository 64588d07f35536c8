"""A VM's devices: disk attachments (attach, plug/unplug, bootable,
interface, extend through the attachment, detach) and NICs (add, update,
remove; a plugged NIC of a running VM keeps its type and MAC)."""
from __future__ import annotations

from aiohttp import web
from ovirtsdk4 import types

from . import render
from .disks import add_disk, update_disk
from .http import API, ENGINE, body, boolean, corr, enum, find, get_vm, xml_response
from .model import Attachment, BadRequest, Conflict, NotFound, Nic, new_id

routes = web.RouteTableDef()


# --- disk attachments ----------------------------------------------------------------------------------
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
