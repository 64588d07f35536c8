"""VMs and what hangs off them: disk attachments, NICs, snapshots, backups,
checkpoints, power actions."""
from __future__ import annotations

from aiohttp import web
from ovirtsdk4 import types

from . import ovf, render, templates
from .model import Attachment, BadRequest, Conflict, NotFound, Nic, Vm, new_id, vm_config
from .state import Engine
from .http import (API, ENGINE, action, action_body, body, boolean, corr, enum, find, get_vm, page, require_admin, search, visible_vms, xml_response)

routes = web.RouteTableDef()


# --- VMs -------------------------------------------------------------------------------------------
def vm_fields(e) -> dict:
    """The VM search fields clients use (the engine's names)."""
    from .tags import tag_names_matching

    def cluster(v):
        c = e.clusters.get(v.cluster_id)
        return c.name if c else None

    def dc(v):
        c = e.clusters.get(v.cluster_id)
        return e.dcs[c.dc_id].name if c and c.dc_id in e.dcs else None

    def storage(v):
        return [e.sds[e.disks[a.disk_id].sd_id].name for a in v.attachments
                if a.disk_id in e.disks and e.disks[a.disk_id].sd_id in e.sds]

    def template(v):
        from .templates import templates
        return next((t.name for t in templates(e) if t.id == v.template_id), None)
    return {"name": lambda v: v.name, "id": lambda v: v.id, "status": lambda v: v.status,
            "description": lambda v: v.description, "comment": lambda v: v.comment,
            "cluster": cluster, "datacenter": dc, "storage": storage,
            "host": lambda v: e.hosts[v.host_id].name if v.host_id in e.hosts else None,
            "tag": lambda v: tag_names_matching(e, v.tag_ids), "type": lambda v: v.type,
            "os": lambda v: v.os_type, "memory": lambda v: v.memory // (1 << 20),
            "template": template, "creationdate": lambda v: v.created.isoformat()}


@routes.get(API + "/vms")
async def vms_list(request):
    e = request.app[ENGINE]
    items = search(sorted(visible_vms(request), key=lambda v: v.name),
                   request.query.get("search"), vm_fields(e), boolean(request, "case_sensitive"))
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
    if any(v.name == vm.name for v in e.vms.values()):
        raise Conflict("[Cannot add VM. The VM name is already in use, please choose "
                       "a unique name and try again.]")
    snap_src = None
    if x.snapshots:  # clone from a snapshot: its configuration and copies of its disks
        snap_src = _snapshot_source(e, x.snapshots[0].id)
        src_vm, snap = snap_src
        conf_src = snap.config or src_vm
        for f in ("memory", "cpu_sockets", "cpu_cores", "cpu_threads", "os_type", "bios_type",
                  "type", "ha", "description", "comment"):
            setattr(vm, f, getattr(conf_src, f))
        vm.boot_devices = list(conf_src.boot_devices)
        for n in conf_src.nics:
            vm.nics.append(Nic(new_id(), n.name, n.interface, e.new_mac(), n.network))
        vm.template_id = src_vm.template_id
        tpl = None
    else:
        tpl = templates.find_template(e, x.template)
        if conf is None or not conf.data:
            templates.apply_template_config(e, vm, tpl)
    _apply_vm_fields(vm, _checked(e, x))
    if snap_src is not None:
        src_vm, snap = snap_src
        vm.template_id = src_vm.template_id
        atts = (snap.config.attachments if snap.config else src_vm.attachments)
        for a in atts:
            if a.disk_id not in snap.volumes or a.disk_id not in e.disks:
                continue
            src = e.disks[a.disk_id]
            if src.status != "ok":
                raise Conflict(f"[Cannot add VM. Disk {src.alias} is locked.]")
        e.add_vm(vm, corr(request))
        # As the engine: the VM is image_locked and the snapshot locked until the copies are done.
        vm.status, snap.status = "image_locked", "locked"
        copies = []
        try:
            for a in atts:
                if a.disk_id not in snap.volumes or a.disk_id not in e.disks:
                    continue
                src = e.disks[a.disk_id]
                d = await e.copy_disk(src, snap.volumes[a.disk_id], f"{src.alias}_{vm.name}",
                                      corr(request))
                vm.attachments.append(Attachment(d.id, a.bootable, a.interface, a.active))
                copies.append(d)
        except Exception:
            vm.status, snap.status = "down", "ok"
            raise
        _when_copied(e, vm, copies, corr(request), snap)
        return xml_response(render.vm(e, vm), status=201)
    copies = []
    if tpl is not None and tpl.id != render.BLANK:
        made = await templates.instantiate(e, vm, tpl, corr(request))
        attach += made
        copies = [e.disks[a.disk_id] for a in made]
    e.add_vm(vm, corr(request))
    for a in attach:
        e.attach(vm.id, a)
    if copies:
        vm.status = "image_locked"
        _when_copied(e, vm, copies, corr(request))
    return xml_response(render.vm(e, vm), status=201)


def _when_copied(e: Engine, vm: Vm, copies: list, correlation_id, snap=None):
    def end(ok: bool):
        vm.status = "down"
        if snap is not None:
            snap.status = "ok"
        if ok:
            e.event(53, f"VM {vm.name} creation has been completed.", vm_id=vm.id,
                    correlation_id=correlation_id)
        else:
            e.event(60, f"Failed to complete VM {vm.name} creation.", severity="error",
                    vm_id=vm.id, correlation_id=correlation_id)
    e.after_disks(copies, lambda: end(True), lambda: end(False))


def _snapshot_source(e: Engine, snap_id: str):
    for v in e.vms.values():
        for s in v.snapshots:
            if s.id == snap_id:
                if s.status != "ok":
                    raise Conflict("[Cannot add VM. The snapshot is locked.]")
                return v, s
    raise NotFound(f"Entity not found: Snapshot {snap_id}")


def _checked(e: Engine, x: types.Vm) -> types.Vm:
    """Validate a VM document before anything is changed (a failed add or
    update changes nothing)."""
    if x.memory is not None and x.memory <= 0:
        raise BadRequest("Vm [memory] must be positive")
    if x.cpu and x.cpu.topology:
        for f in ("sockets", "cores", "threads"):
            n = getattr(x.cpu.topology, f)
            if n is not None and n <= 0:
                raise BadRequest(f"Vm [cpu.topology.{f}] must be positive")
    if x.bios and x.bios.type:
        enum(x.bios.type)
    if x.cluster is not None and (x.cluster.id or x.cluster.name):
        _resolve_cluster(e, x.cluster)
    return x


@routes.put(API + "/vms/{vm}")
async def vm_update(request):
    """Everything is checked before anything changes: a refused update leaves
    the VM as it was."""
    require_admin(request)
    e = request.app[ENGINE]
    vm = get_vm(request)
    x = await body(request, "vm")
    if not isinstance(x, types.Vm):
        raise BadRequest("Expected a <vm> document")
    if x.name and x.name != vm.name and any(v.name == x.name for v in e.vms.values()):
        raise Conflict("[Cannot edit VM. The VM name is already in use.]")
    _checked(e, x)
    if x.template is not None and (x.template.id or x.template.name):
        t = templates.find_template(e, x.template)
        if t.id != vm.template_id:
            raise Conflict("[Cannot edit VM. The template of a VM cannot be changed.]")
    staged = vm_config(vm)
    _apply_vm_fields(staged, x)
    cluster_id = _resolve_cluster(e, x.cluster) if x.cluster and (x.cluster.id or x.cluster.name) \
        else vm.cluster_id
    if cluster_id != vm.cluster_id and vm.status != "down":
        raise Conflict("[Cannot edit VM. The cluster of a running VM cannot be changed.]")
    _apply_vm_fields(vm, x)
    vm.cluster_id = cluster_id
    e.event(35, f"VM {vm.name} configuration was updated by admin@internal-authz.", vm_id=vm.id,
            correlation_id=corr(request))
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
    act = request.app[ENGINE].set_power
    await act(vm.id, request.match_info["action"] == "start", corr(request),
              graceful=request.match_info["action"] == "shutdown")
    return action()


# disk attachments
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
