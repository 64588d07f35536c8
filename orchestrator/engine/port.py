"""The machines' engine port (`statemachines.engine.Engine`) over the SDK client.

The only place where the SDK's objects meet the machines: each call goes
through `EngineClient` (pool, retries, error mapping) and its result becomes
one of ovault's frozen values; what the machines ask for is built into SDK
objects here.
"""
from __future__ import annotations

import ovirtsdk4 as sdk
import ovirtsdk4.types as types

from statemachines import engine as v

from ..errors import EngineError, NotFound
from .client import EngineClient


def chain_order(cps: list[v.Checkpoint]) -> list[v.Checkpoint]:
    """Checkpoints from the root (no parent among them) along parent links;
    any not on that chain (not expected) follow in the engine's order."""
    children: dict[str | None, list[v.Checkpoint]] = {}
    ids = {c.id for c in cps}
    for c in cps:
        children.setdefault(c.parent_id if c.parent_id in ids else None, []).append(c)
    out: list[v.Checkpoint] = []
    nxt = children.get(None, [])[:1]
    while nxt and nxt[0] not in out:
        out.append(nxt[0])
        nxt = children.get(nxt[0].id, [])[:1]
    return out + [c for c in cps if c not in out]


def _name(x) -> str | None:
    """An SDK enumeration's engine name ("cow", "transferring"), or None."""
    if x is None:
        return None
    return x.value if hasattr(x, "value") else str(x)


def _id(x) -> str | None:
    return x.id if x is not None else None


def to_disk(d: types.Disk) -> v.Disk:
    return v.Disk(id=d.id, alias=d.alias, provisioned_size=d.provisioned_size or 0,
                  format=_name(d.format), backup=_name(d.backup), sparse=bool(d.sparse),
                  storage_domain_id=d.storage_domains[0].id if d.storage_domains else None,
                  status=_name(d.status))


def to_transfer(t: types.ImageTransfer) -> v.Transfer:
    return v.Transfer(id=t.id, phase=_name(t.phase), direction=_name(t.direction),
                      disk_id=_id(t.disk), host_id=_id(t.host), transfer_url=t.transfer_url)


def to_backup(b: types.Backup) -> v.EngineBackup:
    return v.EngineBackup(id=b.id, phase=_name(b.phase), to_checkpoint_id=b.to_checkpoint_id)


def to_snapshot(s: types.Snapshot) -> v.Snapshot:
    return v.Snapshot(id=s.id, description=s.description, status=_name(s.snapshot_status))


def to_vm(x: types.Vm) -> v.Vm:
    topo = x.cpu.topology if x.cpu and x.cpu.topology else None
    os_ = x.os
    ovf = None
    if x.initialization and x.initialization.configuration:
        ovf = x.initialization.configuration.data
    config = v.VmConfig(
        memory=x.memory,
        cpu=v.CpuTopology(topo.sockets, topo.cores, topo.threads) if topo else None,
        os_type=os_.type if os_ else None,
        boot_devices=tuple(_name(d) for d in (os_.boot.devices or [])) if os_ and os_.boot else (),
        bios_type=_name(x.bios.type) if x.bios else None,
        description=x.description or "",
        high_availability=bool(x.high_availability and x.high_availability.enabled))
    return v.Vm(id=x.id, name=x.name, status=_name(x.status), type=_name(x.type),
                cluster_id=_id(x.cluster), ovf=ovf, config=config,
                guest_agent=x.guest_operating_system is not None)


def apply_config(target: types.Vm, c: v.VmConfig) -> types.Vm:
    """Set the fields of `c` that are known on an SDK Vm (None leaves a field alone)."""
    if c.memory is not None:
        target.memory = c.memory
    if c.cpu:
        target.cpu = types.Cpu(topology=types.CpuTopology(sockets=c.cpu.sockets, cores=c.cpu.cores,
                                                          threads=c.cpu.threads))
    if c.os_type:
        target.os = types.OperatingSystem(type=c.os_type, boot=types.Boot(
            devices=[types.BootDevice(b) for b in c.boot_devices or ("hd",)]))
    if c.bios_type:
        target.bios = types.Bios(type=types.BiosType(c.bios_type))
    if c.description is not None:
        target.description = c.description
    if c.high_availability is not None:
        target.high_availability = types.HighAvailability(enabled=c.high_availability)
    return target


class EnginePort:
    """`statemachines.engine.Engine` over an `EngineClient`."""

    def __init__(self, client: EngineClient):
        self.client = client

    async def version(self) -> tuple[int, int, int]:
        return await self.client.version()

    # --- inventory -------------------------------------------------------------------
    async def get_vm(self, vm_id: str, all_content: bool = False) -> v.Vm:
        return to_vm(await self.client.get_vm(vm_id, all_content=all_content))

    async def list_vms(self, search: str | None = None) -> list[v.Vm]:
        return [to_vm(x) for x in await self.client.list_vms(search=search)]

    async def vm_disks(self, vm_id: str) -> list[v.AttachedDisk]:
        return [v.AttachedDisk(v.Attachment(disk_id=a.disk.id, bootable=bool(a.bootable),
                                            interface=_name(a.interface),
                                            active=a.active is not False), to_disk(d))
                for a, d in await self.client.vm_disks(vm_id)]

    async def vm_nics(self, vm_id: str) -> list[v.Nic]:
        return [v.Nic(name=n.name, interface=_name(n.interface),
                      mac=n.mac.address if n.mac else None)
                for n in await self.client.vm_nics(vm_id)]

    async def get_disk(self, disk_id: str) -> v.Disk | None:
        try:
            return to_disk(await self.client.get_disk(disk_id))
        except NotFound:
            return None

    async def list_storage_domains(self) -> list[v.StorageDomain]:
        return [v.StorageDomain(id=s.id, type=_name(s.type))
                for s in await self.client.list_storage_domains()]

    # --- snapshots ---------------------------------------------------------------------
    async def create_snapshot(self, vm_id: str, description: str, disk_ids: list[str],
                              correlation_id: str) -> v.Snapshot:
        return to_snapshot(await self.client.create_snapshot(vm_id, description, disk_ids,
                                                          correlation_id))

    async def list_snapshots(self, vm_id: str) -> list[v.Snapshot]:
        return [to_snapshot(s) for s in await self.client.list_snapshots(vm_id)]

    async def get_snapshot(self, vm_id: str, snap_id: str) -> v.Snapshot | None:
        s = await self.client.get_snapshot(vm_id, snap_id)
        return None if s is None else to_snapshot(s)

    async def snapshot_disks(self, vm_id: str, snap_id: str) -> list[v.SnapshotDisk]:
        return [v.SnapshotDisk(disk_id=d.id, image_id=d.image_id)
                for d in await self.client.snapshot_disks(vm_id, snap_id)]

    async def remove_snapshot(self, vm_id: str, snap_id: str, correlation_id: str) -> None:
        await self.client.remove_snapshot(vm_id, snap_id, correlation_id)

    # --- backups -------------------------------------------------------------------------
    async def start_backup(self, vm_id: str, backup_id: str, disk_ids: list[str],
                           from_checkpoint_id: str | None, description: str,
                           correlation_id: str, require_consistency: bool = False) -> v.EngineBackup:
        try:
            return to_backup(await self.client.start_backup(vm_id, backup_id, disk_ids,
                                                         from_checkpoint_id, description,
                                                         correlation_id, require_consistency))
        except EngineError as err:
            fault = err.__cause__
            if not from_checkpoint_id or not isinstance(fault, sdk.Error) or fault.code != 409:
                raise
            # A conflict fault: refused because of the checkpoint only if the
            # engine no longer has it, or has it marked invalid.
            cp = await self.client.get_checkpoint(vm_id, from_checkpoint_id)
            if cp is not None and _name(cp.state) != "invalid":
                raise
            detail = (fault.fault.detail or fault.fault.reason) if fault.fault else None
            raise v.CheckpointRefused(from_checkpoint_id, detail or str(err)) from err

    async def list_checkpoints(self, vm_id: str) -> list[v.Checkpoint]:
        cps = [v.Checkpoint(id=c.id, parent_id=c.parent_id, state=_name(c.state))
               for c in await self.client.list_checkpoints(vm_id)]
        return chain_order(cps)

    async def remove_checkpoint(self, vm_id: str, checkpoint_id: str, correlation_id: str) -> None:
        await self.client.remove_checkpoint(vm_id, checkpoint_id, correlation_id)

    async def get_backup(self, vm_id: str, backup_id: str) -> v.EngineBackup | None:
        b = await self.client.get_backup(vm_id, backup_id)
        return None if b is None else to_backup(b)

    async def backup_disk_modes(self, vm_id: str, backup_id: str) -> dict[str, str]:
        return {d.id: _name(d.backup_mode) or "full"
                for d in await self.client.backup_disks(vm_id, backup_id)}

    async def finalize_backup(self, vm_id: str, backup_id: str, correlation_id: str) -> None:
        await self.client.finalize_backup(vm_id, backup_id, correlation_id)

    # --- image transfers -------------------------------------------------------------------
    async def create_transfer(self, *, direction: str, correlation_id: str,
                              disk_id: str | None = None, snapshot_id: str | None = None,
                              backup_id: str | None = None,
                              host_id: str | None = None) -> v.Transfer:
        return to_transfer(await self.client.create_transfer(
            direction=direction, correlation_id=correlation_id, disk_id=disk_id,
            snapshot_id=snapshot_id, backup_id=backup_id, host_id=host_id))

    async def get_transfer(self, transfer_id: str) -> v.Transfer | None:
        t = await self.client.get_transfer(transfer_id)
        return None if t is None else to_transfer(t)

    async def list_transfers(self) -> list[v.Transfer]:
        return [to_transfer(t) for t in await self.client.list_transfers()]

    async def transfer_action(self, transfer_id: str, action: str,
                              correlation_id: str | None = None) -> None:
        await self.client.transfer_action(transfer_id, action, correlation_id)

    # --- restores ------------------------------------------------------------------------------
    async def add_vm(self, vm: v.NewVm, correlation_id: str) -> v.Vm:
        new = types.Vm(name=vm.name, cluster=types.Cluster(id=vm.cluster_id),
                       template=types.Template(name="Blank"))
        if vm.ovf:
            new.initialization = types.Initialization(configuration=types.Configuration(
                type=types.ConfigurationType.OVF, data=vm.ovf))
        else:
            apply_config(new, vm.config)
        return to_vm(await self.client.add_vm(new, correlation_id))

    async def update_vm(self, vm_id: str, config: v.VmConfig, correlation_id: str) -> None:
        await self.client.update_vm(vm_id, apply_config(types.Vm(), config), correlation_id)

    async def remove_vm(self, vm_id: str, correlation_id: str) -> None:
        await self.client.remove_vm(vm_id, correlation_id)

    async def start_vm(self, vm_id: str, correlation_id: str) -> None:
        await self.client.start_vm(vm_id, correlation_id)

    async def grant_vm_role(self, vm_id: str, user_id: str, role: str,
                            correlation_id: str) -> None:
        await self.client.grant_vm_role(vm_id, user_id, role, correlation_id)

    async def grant_disk_role(self, disk_id: str, user_id: str, role: str,
                              correlation_id: str) -> None:
        await self.client.grant_disk_role(disk_id, user_id, role, correlation_id)

    async def add_disk(self, disk: v.NewDisk, correlation_id: str) -> v.Disk:
        d = types.Disk(id=disk.id, name=disk.alias, alias=disk.alias, description=disk.description,
                       format=types.DiskFormat(disk.format), sparse=disk.sparse,
                       provisioned_size=disk.provisioned_size,
                       backup=types.DiskBackup(disk.backup) if disk.backup else None,
                       storage_domains=[types.StorageDomain(id=disk.storage_domain_id)])
        return to_disk(await self.client.add_disk(d, correlation_id))

    async def remove_disk(self, disk_id: str, correlation_id: str) -> None:
        await self.client.remove_disk(disk_id, correlation_id)

    async def attach_disk(self, vm_id: str, attachment: v.Attachment,
                          correlation_id: str) -> None:
        await self.client.attach_disk(vm_id, types.DiskAttachment(
            disk=types.Disk(id=attachment.disk_id), bootable=attachment.bootable,
            interface=types.DiskInterface(attachment.interface) if attachment.interface else None,
            active=attachment.active), correlation_id)

    async def add_event(self, description: str, vm_id: str | None = None) -> None:
        await self.client.add_event(description, vm_id=vm_id)

    async def event_codes(self, correlation_id: str) -> list[int]:
        return [e.code for e in await self.client.events_of(correlation_id)]
