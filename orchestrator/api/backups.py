"""/api/v1/backups: start backups, list and inspect them, restore, delete."""
from __future__ import annotations

from aiohttp import web

from .. import catalog as cat
from ..catalog.vmlocks import VmBusy, create_job_locked
from ..errors import Conflict, NotFound
from ..keys import CATALOG, ENGINE, RUNNER, STORE
from . import validate as v
from . import views
from .views import json_response
from .auth import allow, require
from .authz import Obj, authorizer, restricted
from .policies import policy_service
from .problem import problem
from .restore_checks import check_restore, locked_vms, restore_permits

routes = web.RouteTableDef()
MODES = ("auto", "full", "incremental")
KINDS = ("new", "in_place", "disks")
VM_NAME = r"^[A-Za-z0-9_.\-]+$"


@routes.post("/api/v1/backups")
@allow("operator")
async def start_backup(request: web.Request):
    p = require(request, "operator")
    body = await v.json_body(request)
    v.no_unknown(body, {"vm_ids", "mode"})
    ids = body.get("vm_ids")
    if not isinstance(ids, list) or not ids or len(ids) > 500:
        raise v.Invalid("vm_ids must be a non-empty list of VM ids (at most 500)")
    ids = [v.uuid_str(x, "vm_ids[]") for x in ids]
    if len(set(ids)) != len(ids):
        raise v.Invalid("vm_ids has duplicates")
    mode = v.enum(body.get("mode"), "mode", MODES, "auto")
    engine = request.app[ENGINE]
    machines = []
    for vm_id in ids:
        if not p.sees(vm_id):
            raise NotFound("VM", vm_id)
        vm = await engine.get_vm(vm_id)
        machines.append(cat.NewMachine(vm_id=vm_id, vm_name=vm.name))
    if restricted(p):
        # the engine's own check for a VM backup: backup_disk on the VM and each disk
        az = authorizer(request.app)
        for m in machines:
            await az.require(p, "backup_disk", Obj("vm", m.vm_id, m.vm_name))
            for _, d in await engine.vm_disks(m.vm_id):
                await az.require(p, "backup_disk", Obj("disk", d.id, d.alias or d.name, vm_id=m.vm_id))
    try:
        job = await create_job_locked(request.app[CATALOG], "backup", machines, lock_vms=ids,
                                      request={"vm_ids": ids, "mode": mode}, created_by=p.name)
    except VmBusy as e:
        return busy(e)
    request.app[RUNNER].poke()
    return json_response({"job": views.job(job)}, status=202)


@routes.get("/api/v1/backups")
@allow("viewer")
async def list_backups(request: web.Request):
    p = require(request, "viewer")
    q = request.query
    vm_id = v.uuid_str(q["vm_id"], "vm_id") if "vm_id" in q else None
    status = v.enum(q.get("status"), "status", ("running", "succeeded", "failed", "deleted"))
    page = await request.app[CATALOG].backups.list(
        vm_id=vm_id, vm_ids=p.vm_ids, status=status, limit=v.limit(request),
        cursor=q.get("cursor"), with_disks=True)
    return json_response({"items": [views.backup(b) for b in page.items],
                              "next_cursor": page.next_cursor})


async def _backup(request, p):
    bid = v.path_uuid(request, "id")
    b = await request.app[CATALOG].backups.get(bid)
    if not p.sees(b.vm_id):
        raise NotFound("backup", bid)
    return b


@routes.get("/api/v1/backups/{id}")
@allow("viewer")
async def get_backup(request: web.Request):
    p = require(request, "viewer")
    return json_response(views.backup(await _backup(request, p)))


@routes.delete("/api/v1/backups/{id}")
@allow("operator")
async def delete_backup(request: web.Request):
    """`202 {"job", "backup"}`: the backup is hidden at once (`deleting`) and a
    `prune` job removes its manifest from the target, then its row
    (policies.PolicyService.delete_backup); a protected backup is a 409."""
    p = require(request, "operator")
    b = await _backup(request, p)
    if b.status == "running":
        raise Conflict(f"backup {b.id} is still running")
    if b.status == "deleted":
        raise NotFound("backup", b.id)
    await authorizer(request.app).require(p, "edit_vm_properties", Obj("vm", b.vm_id, b.vm_name))
    if getattr(b, "protected", False):
        raise Conflict(f"backup {b.id} is protected; unmark it first "
                       f"(PATCH {{\"protected\": false}})")
    _, job = await policy_service(request.app).delete_backup(b.id, requested_by=p.name)
    return json_response({"job": views.job(job), "backup": views.backup(
        await request.app[CATALOG].backups.get(b.id))}, status=202)


@routes.post("/api/v1/backups/{id}/restore")
@allow("operator")
async def restore(request: web.Request):
    p = require(request, "operator")
    b = await _backup(request, p)
    if b.status != "succeeded":
        raise Conflict(f"backup {b.id} is {b.status}; only succeeded backups can be restored")
    body = await v.json_body(request)
    v.no_unknown(body, {"kind", "name", "cluster_id", "storage_domain_id", "disk_ids",
                        "target_vm_id", "power_on"})
    kind = v.enum(body.get("kind"), "kind", KINDS, "new")
    req = {"backup_id": str(b.id), "kind": kind,
           "name": v.opt_str(body.get("name"), "name", 64, VM_NAME),
           "cluster_id": v.uuid_str(body["cluster_id"], "cluster_id") if body.get("cluster_id") else None,
           "storage_domain_id": v.uuid_str(body["storage_domain_id"], "storage_domain_id")
           if body.get("storage_domain_id") else None,
           "target_vm_id": v.uuid_str(body["target_vm_id"], "target_vm_id")
           if body.get("target_vm_id") else None,
           "power_on": v.opt_bool(body.get("power_on"), "power_on")}
    disk_ids = body.get("disk_ids")
    if disk_ids is not None:
        if not isinstance(disk_ids, list) or not disk_ids:
            raise v.Invalid("disk_ids must be a non-empty list")
        known = {d.disk_id for d in b.disks}
        req["disk_ids"] = [v.uuid_str(d, "disk_ids[]") for d in disk_ids]
        unknown = [d for d in req["disk_ids"] if d not in known]
        if unknown:
            raise v.Invalid(f"disks not in backup {b.id}: {', '.join(unknown)}")
    if kind == "disks" and not req.get("disk_ids"):
        req["disk_ids"] = [d.disk_id for d in b.disks]
    if req["target_vm_id"] and not p.sees(req["target_vm_id"]):
        raise NotFound("VM", req["target_vm_id"])
    if kind == "in_place" and req["name"]:
        raise v.Invalid("an in-place restore keeps the VM's name")
    if kind in ("new", "disks") and p.engine_user_id:
        # ovault creates the VM (or the disks) with its own engine account; the SSO
        # user who asked must be able to see and manage them, as if they had made them.
        req["owner_user_id"] = p.engine_user_id
    if restricted(p):
        await authorizer(request.app).require_all(
            p, await restore_permits(request.app[ENGINE], b, req))
    try:
        # Refusals that need no job (busy VM, name taken, unknown cluster, a
        # running VM for in place) are answered now, not by a failed job.
        await check_restore(request.app[ENGINE], request.app[CATALOG], b, req)
        # The VM written to is held for the whole job (the backed-up VM in
        # place, or the VM the restored disks are attached to).
        job = await create_job_locked(
            request.app[CATALOG], "restore",
            [cat.NewMachine(vm_id=b.vm_id, vm_name=b.vm_name, context={})],
            lock_vms=locked_vms(kind, b.vm_id, req["target_vm_id"]),
            request={k: val for k, val in req.items() if val is not None}, created_by=p.name)
    except VmBusy as e:
        return busy(e)
    request.app[RUNNER].poke()
    return json_response({"job": views.job(job)}, status=202)


def busy(e: VmBusy) -> web.Response:
    """409: the VM is held by another job, which the answer names."""
    return problem(409, "vm-busy", "VM busy", f"{e}; wait for it to end or cancel it",
                   code="vm_busy", vm_id=e.vm_id, job_id=str(e.job_id), job_kind=e.kind)
