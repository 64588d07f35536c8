"""The oVirt engine as the machines see it: a Protocol over ovault's own values.

The machines never see the SDK: `orchestrator/engine/port.py` implements
`Engine` over the SDK client and turns its objects into these frozen
dataclasses (enumerations become their lower-case engine names, e.g. a disk
format is "cow" or "raw", a transfer phase "transferring"). Unit tests
implement it with in-memory fakes (tests/unit/test_statemachines.py), checked
against this Protocol by tests/unit/test_engine_port.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


class CheckpointRefused(Exception):
    """The engine refused to start a backup from `checkpoint_id`: it answered
    with a conflict fault and the checkpoint is gone or invalid (its dirty
    bitmap was lost). `detail` is the engine's fault detail."""

    def __init__(self, checkpoint_id: str, detail: str):
        super().__init__(f"engine refused checkpoint {checkpoint_id}: {detail}")
        self.checkpoint_id, self.detail = checkpoint_id, detail


# --- what the engine reports -------------------------------------------------------

@dataclass(frozen=True)
class Disk:
    id: str
    alias: str | None = None
    provisioned_size: int = 0
    format: str | None = None           # "cow" | "raw"
    backup: str | None = None           # "incremental" | "none"
    sparse: bool = True
    storage_domain_id: str | None = None
    status: str | None = None           # "ok" | "locked" | "illegal"


@dataclass(frozen=True)
class Attachment:
    """A disk attached to a VM (also what `attach_disk` asks for)."""
    disk_id: str
    bootable: bool = False
    interface: str | None = None        # "virtio_scsi" | "virtio" | "sata" | ...
    active: bool = True


@dataclass(frozen=True)
class AttachedDisk:
    attachment: Attachment
    disk: Disk


@dataclass(frozen=True)
class EngineBackup:
    id: str
    phase: str                          # "initializing" | "ready" | "finalizing" | ...
    to_checkpoint_id: str | None = None


@dataclass(frozen=True)
class Checkpoint:
    """A VM checkpoint: a persistent dirty bitmap in every qcow2 layer of the
    disks it covers, where an incremental backup can start."""
    id: str
    parent_id: str | None = None
    state: str | None = None            # "created" | "invalid"


@dataclass(frozen=True)
class Snapshot:
    id: str
    description: str | None = None
    status: str | None = None           # "ok" | "locked" | "in_preview"


@dataclass(frozen=True)
class SnapshotDisk:
    disk_id: str
    image_id: str


@dataclass(frozen=True)
class Transfer:
    id: str
    phase: str                          # "initializing" | "transferring" | "finished_success" | ...
    direction: str | None = None        # "download" | "upload"
    disk_id: str | None = None
    host_id: str | None = None
    transfer_url: str | None = None


@dataclass(frozen=True)
class CpuTopology:
    sockets: int
    cores: int
    threads: int


@dataclass(frozen=True)
class VmConfig:
    """The VM settings a backup keeps and a restore applies (never the name of
    an in-place restore's VM)."""
    memory: int | None = None
    cpu: CpuTopology | None = None
    os_type: str | None = None
    boot_devices: tuple[str, ...] = ()
    bios_type: str | None = None
    description: str | None = None
    high_availability: bool | None = None


@dataclass(frozen=True)
class Vm:
    id: str
    name: str
    status: str | None = None           # "up" | "down" | ...
    type: str | None = None             # "server" | "desktop" | "high_performance"
    cluster_id: str | None = None
    ovf: str | None = None              # with `all_content`: the OVF the engine keeps
    guest_agent: bool = False           # the engine reports the guest's OS: an agent ran (up VMs only)
    config: VmConfig = field(default_factory=VmConfig)


@dataclass(frozen=True)
class Nic:
    name: str
    interface: str | None = None
    mac: str | None = None


@dataclass(frozen=True)
class StorageDomain:
    id: str
    type: str | None = None             # "data" | "iso" | "export"


# --- what the machines ask the engine to make ---------------------------------------

@dataclass(frozen=True)
class NewVm:
    """A VM from the backed-up OVF (`ovf`), else from the Blank template with
    `config` applied."""
    name: str
    cluster_id: str | None
    ovf: str | None = None
    config: VmConfig = field(default_factory=VmConfig)


@dataclass(frozen=True)
class NewDisk:
    id: str
    alias: str
    description: str
    format: str
    sparse: bool
    provisioned_size: int
    storage_domain_id: str
    backup: str | None = None


class Engine(Protocol):
    """What a machine asks of the oVirt engine. `correlation_id` tags the
    engine's jobs and events with the ovault job."""

    async def version(self) -> tuple[int, int, int]: ...  # the engine's (major, minor, build)

    # inventory
    async def get_vm(self, vm_id: str, all_content: bool = False) -> Vm: ...
    async def list_vms(self, search: str | None = None) -> list[Vm]: ...
    async def vm_disks(self, vm_id: str) -> list[AttachedDisk]: ...
    async def vm_nics(self, vm_id: str) -> list[Nic]: ...
    async def get_disk(self, disk_id: str) -> Disk | None: ...
    async def list_storage_domains(self) -> list[StorageDomain]: ...

    # snapshots
    async def create_snapshot(self, vm_id: str, description: str, disk_ids: list[str],
                              correlation_id: str) -> Snapshot: ...
    async def list_snapshots(self, vm_id: str) -> list[Snapshot]: ...
    async def get_snapshot(self, vm_id: str, snap_id: str) -> Snapshot | None: ...
    async def snapshot_disks(self, vm_id: str, snap_id: str) -> list[SnapshotDisk]: ...
    async def remove_snapshot(self, vm_id: str, snap_id: str, correlation_id: str) -> None: ...

    # backups (CBT)
    async def start_backup(self, vm_id: str, backup_id: str, disk_ids: list[str],
                           from_checkpoint_id: str | None, description: str,
                           correlation_id: str, require_consistency: bool = False) -> EngineBackup:
        """Raises `CheckpointRefused` when the engine refuses `from_checkpoint_id`.
        `require_consistency`: the engine fails the backup (phase `failed`, later,
        not this call) when the guest's file systems cannot be frozen."""
    async def get_backup(self, vm_id: str, backup_id: str) -> EngineBackup | None: ...
    async def backup_disk_modes(self, vm_id: str, backup_id: str) -> dict[str, str]:
        """disk id -> "full" | "incremental" (what the engine will serve)."""
    async def finalize_backup(self, vm_id: str, backup_id: str, correlation_id: str) -> None: ...
    async def list_checkpoints(self, vm_id: str) -> list[Checkpoint]:
        """The VM's checkpoints in chain order, oldest (the root) first."""
    async def remove_checkpoint(self, vm_id: str, checkpoint_id: str, correlation_id: str) -> None:
        """The engine removes only the oldest (root) checkpoint; a gone one is not an error."""

    # image transfers
    async def create_transfer(self, *, direction: str, correlation_id: str,
                              disk_id: str | None = None, snapshot_id: str | None = None,
                              backup_id: str | None = None,
                              host_id: str | None = None) -> Transfer: ...
    async def get_transfer(self, transfer_id: str) -> Transfer | None: ...
    async def list_transfers(self) -> list[Transfer]: ...
    async def transfer_action(self, transfer_id: str, action: str,
                              correlation_id: str | None = None) -> None: ...

    # restores
    async def add_vm(self, vm: NewVm, correlation_id: str) -> Vm: ...
    async def update_vm(self, vm_id: str, config: VmConfig, correlation_id: str) -> None: ...
    async def remove_vm(self, vm_id: str, correlation_id: str) -> None: ...
    async def start_vm(self, vm_id: str, correlation_id: str) -> None: ...
    async def grant_vm_role(self, vm_id: str, user_id: str, role: str,
                            correlation_id: str) -> None: ...
    async def grant_disk_role(self, disk_id: str, user_id: str, role: str,
                              correlation_id: str) -> None: ...
    async def add_disk(self, disk: NewDisk, correlation_id: str) -> Disk: ...
    async def remove_disk(self, disk_id: str, correlation_id: str) -> None: ...
    async def attach_disk(self, vm_id: str, attachment: Attachment,
                          correlation_id: str) -> None: ...

    # the engine's event log (a courtesy to the administrator)
    async def add_event(self, description: str, vm_id: str | None = None) -> None: ...
    # the codes of the audit-log events of one operation (its correlation id):
    # FREEZE_VM_SUCCESS when the engine froze the guest itself (snapshots; a live
    # backup's freeze is vdsm's and logs nothing: statemachines/consistency.py)
    async def event_codes(self, correlation_id: str) -> list[int]: ...
