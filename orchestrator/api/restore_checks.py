"""What a restore request can be refused for before its job exists (no 202 for
a request the job would only fail on):

- the VM it writes to is busy with another job (409 `vm-busy`, naming the job);
- in place: the VM no longer exists, or is not powered off (409);
- new VM: the name is taken (409), the cluster is unknown (422);
- any kind: the storage domain is unknown (422); disks: the target VM is unknown (422).

`restore_permits` says which engine permits a restore needs of a non-admin
engine user, on which objects (checked by `authz.Authorizer`, before these).

These are early answers, not guarantees: the job checks again (a VM can be
started or a name taken between the 202 and the job), and the per-VM lock is
decided when the job is created (`catalog.vmlocks`).
"""
from __future__ import annotations

from ..catalog.vmlocks import VmBusy, VmLockRepository
from ..errors import Conflict, Invalid, NotFound
from .authz import Obj


def _enum(v) -> str:
    return getattr(v, "value", v) or "unknown"


def locked_vms(kind: str, backup_vm_id: str, target_vm_id: str | None) -> list[str]:
    """The VMs a restore writes to and therefore holds for its whole run."""
    if kind == "in_place":
        return [backup_vm_id]
    if kind == "disks" and target_vm_id:
        return [target_vm_id]
    return []


async def check_restore(engine, catalog, backup, req: dict) -> None:
    kind = req["kind"]
    for vm_id in locked_vms(kind, backup.vm_id, req.get("target_vm_id")):
        held = await VmLockRepository(catalog.db).holder(vm_id)
        if held is not None:
            job = await catalog.jobs.get(held.job_id, with_machines=False)
            raise VmBusy(vm_id, held.job_id, job.kind,
                         backup.vm_name if vm_id == backup.vm_id else None)
    if kind == "in_place":
        try:
            vm = await engine.get_vm(backup.vm_id)
        except NotFound:
            raise Conflict(f"VM {backup.vm_name or backup.vm_id} no longer exists; "
                           "restore it as a new VM (kind \"new\")") from None
        if _enum(vm.status) != "down":
            raise Conflict(f"VM {vm.name} is {_enum(vm.status)}: power it off before an "
                           "in-place restore")
    elif kind == "new":
        cfg = backup.config or {}
        name = req.get("name") or f"{cfg.get('name') or backup.vm_name}-restored"
        if await engine.list_vms(search=f"name={name}"):
            raise Conflict(f"a VM named {name!r} already exists; choose another name")
        clusters = {c.id for c in await engine.list_clusters()}
        if req.get("cluster_id"):
            if req["cluster_id"] not in clusters:
                raise Invalid(f"cluster_id {req['cluster_id']}: no such cluster")
        elif cfg.get("cluster_id") and cfg["cluster_id"] not in clusters:
            raise Invalid(f"the backed-up VM's cluster {cfg['cluster_id']} no longer exists; "
                          "choose one with cluster_id")
    elif kind == "disks" and req.get("target_vm_id"):
        try:
            await engine.get_vm(req["target_vm_id"])
        except NotFound:
            raise Invalid(f"target_vm_id {req['target_vm_id']}: no such VM") from None
    if req.get("storage_domain_id"):
        sds = {sd.id for sd in await engine.list_storage_domains()}
        if req["storage_domain_id"] not in sds:
            raise Invalid(f"storage_domain_id {req['storage_domain_id']}: no such storage domain")


async def restore_permits(engine, backup, req: dict) -> list[tuple[str, Obj]]:
    """(permit, object) pairs a restore needs, as the engine would check them
    had the user made the objects themselves: a new VM needs `create_vm` on its
    cluster; new disks `create_disk` on their storage domain; attaching them
    to a VM `configure_vm_storage` on it; in place, `edit_vm_properties` on the
    VM and `edit_disk_properties` on each disk written."""
    kind = req["kind"]
    cfg = backup.config or {}
    disks_cfg = cfg.get("disks") or {}
    chosen = req.get("disk_ids") or list(disks_cfg) or [d.disk_id for d in backup.disks]
    aliases = {d.disk_id: d.alias for d in backup.disks}
    if kind == "in_place":
        return [("edit_vm_properties", Obj("vm", backup.vm_id, backup.vm_name))] + [
            ("edit_disk_properties", Obj("disk", d, aliases.get(d), vm_id=backup.vm_id))
            for d in chosen]
    checks: list[tuple[str, Obj]] = []
    if kind == "new":
        cluster = req.get("cluster_id") or cfg.get("cluster_id")
        names = {c.id: c.name for c in await engine.list_clusters()}
        checks.append(("create_vm", Obj("cluster", cluster, names.get(cluster)) if cluster
                       else Obj("system", None)))
    sds = await engine.list_storage_domains()
    wanted = ({req["storage_domain_id"]} if req.get("storage_domain_id") else
              {(disks_cfg.get(d) or {}).get("storage_domain") for d in chosen})
    if None in wanted:  # the restore's fallback: the first data domain
        wanted.discard(None)
        wanted.update([next((sd.id for sd in sds if _enum(sd.type) == "data"), None)] or [])
        wanted.discard(None)
    names = {sd.id: sd.name for sd in sds}
    checks += [("create_disk", Obj("storage_domain", sd, names.get(sd))) for sd in sorted(wanted)]
    if kind == "disks" and req.get("target_vm_id"):
        checks.append(("configure_vm_storage", Obj("vm", req["target_vm_id"])))
    return checks
