"""What a restore request can be refused for before its job exists (no 202 for
a request the job would only fail on):

- the VM it writes to is busy with another job (409 `vm-busy`, naming the job);
- in place: the VM no longer exists, or is not powered off (409);
- new VM: the name is taken (409), the cluster is unknown (422);
- any kind: the storage domain is unknown (422); disks: the target VM is unknown (422).

These are early answers, not guarantees: the job checks again (a VM can be
started or a name taken between the 202 and the job), and the per-VM lock is
decided when the job is created (`catalog.vmlocks`).
"""
from __future__ import annotations

from ..catalog.vmlocks import VmBusy, VmLockRepository
from ..errors import Conflict, Invalid, NotFound


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
