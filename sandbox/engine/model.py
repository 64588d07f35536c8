"""The simulated engine's entities: plain dataclasses, the errors the engine
reports as `<fault>`, and the delays of its asynchronous operations.
`render.py` turns entities into the SDK's types and XML; `state.Engine` owns
and changes them.
"""
from __future__ import annotations

import copy
import datetime as dt
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ..hosts import ImageioDaemon, NbdExport
from ..storage import Image
from .roles import ADMIN_ROLES, ROLE_IDS  # noqa: F401  (ADMIN_ROLES re-exported)
BLANK = "00000000-0000-0000-0000-000000000000"


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).astimezone()


def new_id() -> str:
    return str(uuid.uuid4())


class EngineError(Exception):
    """A failure the engine reports as a <fault>."""
    status = 400
    reason = "Operation Failed"

    def __init__(self, detail: str, status: int | None = None, reason: str | None = None):
        super().__init__(detail)
        self.detail = detail
        if status:
            self.status = status
        if reason:
            self.reason = reason


class NotFound(EngineError):
    status = 404
    reason = "Not Found"


class Conflict(EngineError):
    """Validation failures of engine commands come back as 409."""
    status = 409


class BadRequest(EngineError):
    status = 400
    reason = "Bad Request"


@dataclass
class Timing:
    """Delays of asynchronous operations, in seconds (configurable for tests)."""
    snapshot: float = 1.0
    snapshot_remove: float = 1.0
    disk_add: float = 0.3
    transfer_init: float = 0.2
    transfer_finalize: float = 0.2
    backup_start: float = 0.5
    backup_finalize: float = 0.5
    vm_power: float = 0.5
    transfer_gc: float = 600.0  # finished transfers stay listed this long (4.4.7+)


@dataclass
class DataCenter:
    id: str
    name: str


@dataclass
class Cluster:
    id: str
    name: str
    dc_id: str


@dataclass
class Host:
    id: str
    name: str
    cluster_id: str
    daemon: ImageioDaemon
    status: str = "up"
    hw_id: str = field(default_factory=new_id)
    tag_ids: set = field(default_factory=set)


@dataclass
class StorageDomain:
    id: str
    name: str
    dir: Path
    dc_id: str
    type: str = "data"


@dataclass
class Disk:
    id: str
    alias: str
    provisioned_size: int
    format: str  # cow | raw (oVirt's names)
    sparse: bool
    backup: str  # none | incremental
    sd_id: str
    image: Image
    description: str = ""
    status: str = "ok"
    content_type: str = "data"
    shareable: bool = False
    wipe_after_delete: bool = False
    created: dt.datetime = field(default_factory=now)
    locked_by: str | None = None


@dataclass
class Attachment:
    disk_id: str
    bootable: bool = False
    interface: str = "virtio_scsi"
    active: bool = True
    read_only: bool = False
    pass_discard: bool = False


@dataclass
class Nic:
    id: str
    name: str
    interface: str
    mac: str
    network: str = "ovirtmgmt"
    linked: bool = True
    plugged: bool = True


@dataclass
class Snapshot:
    id: str
    vm_id: str
    description: str
    type: str = "regular"  # active | regular
    status: str = "ok"
    date: dt.datetime = field(default_factory=now)
    persist_memorystate: bool = False
    volumes: dict = field(default_factory=dict)  # disk_id -> volume id frozen by it
    config: Vm | None = None  # the VM's configuration when the snapshot was taken


@dataclass
class Checkpoint:
    id: str
    vm_id: str
    parent_id: str | None
    disk_ids: list
    created: dt.datetime = field(default_factory=now)
    state: str = "created"  # created | invalid


@dataclass
class Backup:
    id: str
    vm_id: str
    disk_ids: list
    from_checkpoint_id: str | None
    to_checkpoint_id: str | None
    host_id: str
    description: str = ""
    phase: str = "initializing"
    created: dt.datetime = field(default_factory=now)
    modified: dt.datetime = field(default_factory=now)
    modes: dict = field(default_factory=dict)  # disk_id -> full | incremental
    frozen: dict = field(default_factory=dict)  # disk_id -> frozen volume id
    consistency: str = "crash"  # filesystem: the guest was frozen for the point in time
    live: object | None = None  # a running guest's export (guests.live_backup.LiveBackup)
    qmp: object | None = None  # the QMP connection that holds it


@dataclass
class Transfer:
    id: str
    direction: str
    disk_id: str
    host_id: str
    format: str = "raw"
    snapshot_id: str | None = None  # a disk snapshot = volume id
    backup_id: str | None = None
    shallow: bool = False
    inactivity_timeout: int = 60
    timeout_policy: str = "legacy"
    phase: str = "initializing"
    transferred: int = 0
    created: dt.datetime = field(default_factory=now)
    ticket: str | None = None
    export: NbdExport | None = None
    finished_at: float | None = None
    transfer_url: str | None = None
    proxy_url: str | None = None


@dataclass
class Vm:
    id: str
    name: str
    cluster_id: str
    memory: int
    cpu_sockets: int = 1
    cpu_cores: int = 1
    cpu_threads: int = 1
    os_type: str = "other_linux"
    bios_type: str = "q35_sea_bios"
    boot_devices: list = field(default_factory=lambda: ["hd"])
    type: str = "server"
    ha: bool = False
    description: str = ""
    comment: str = ""
    status: str = "down"
    host_id: str | None = None
    template_id: str = BLANK
    created: dt.datetime = field(default_factory=now)
    attachments: list = field(default_factory=list)
    nics: list = field(default_factory=list)
    snapshots: list = field(default_factory=list)
    checkpoints: list = field(default_factory=list)
    backups: list = field(default_factory=list)
    tag_ids: set = field(default_factory=set)
    numa_nodes: list = field(default_factory=list)  # {"id", "index", "memory", "cores", "pins"}
    active_snapshot_id: str = field(default_factory=new_id)
    busy: str | None = None  # a running snapshot/backup operation


# The engine's predefined roles (ids are the engine's fixed ones) and their
# permits: see roles.py.
ROLES = ROLE_IDS
ROLE_DESCRIPTIONS = {
    "SuperUser": "Roles management administrator", "UserRole": "Standard User Role",
    "PowerUserRole": "User Role, allowed to create VMs, Templates and Disks",
    "ClusterAdmin": "Administrator Role, permission for all the objects underneath a specific "
                    "Cluster", "DataCenterAdmin": "Administrator of a specific Data Center",
    "StorageAdmin": "Administrator of a specific Storage Domain",
    "HostAdmin": "Administrator of a specific Host", "NetworkAdmin": "Network Administrator",
    "UserVmManager": "User Role, with permission for any operation on Vms",
    "DiskOperator": "User Role, permissions for all operations on a specific disk"}


@dataclass
class Permission:
    id: str
    role: str  # a name of ROLES
    user_id: str | None
    object_type: str = "vm"  # system | data_center | cluster | storage_domain | vm | disk | ...
    object_id: str | None = None  # None for system
    group_id: str | None = None


@dataclass
class Tag:
    id: str
    name: str
    description: str = ""
    parent_id: str | None = None  # None: under the root tag


@dataclass
class Event:
    index: int
    code: int
    description: str
    severity: str = "normal"
    time: dt.datetime = field(default_factory=now)
    correlation_id: str | None = None
    origin: str = "oVirt"
    custom_id: int = -1
    vm_id: str | None = None
    host_id: str | None = None
    sd_id: str | None = None
    cluster_id: str | None = None
    user: str | None = None


@dataclass
class Job:
    id: str
    description: str
    correlation_id: str
    status: str = "started"
    start: dt.datetime = field(default_factory=now)
    end: dt.datetime | None = None
    external: bool = False
    steps: list = field(default_factory=list)  # Step
    auto_cleared: bool = True


@dataclass
class Step:
    id: str
    description: str
    type: str = "executing"
    status: str = "started"
    number: int = 1
    parent_id: str | None = None
    external: bool = True
    start: dt.datetime = field(default_factory=now)
    end: dt.datetime | None = None
    progress: int | None = None



def vm_config(vm: Vm) -> Vm:
    """A copy of a VM's configuration (what a snapshot keeps in its OVF)."""
    c = copy.copy(vm)
    c.attachments = [copy.copy(a) for a in vm.attachments]
    c.nics = [copy.copy(n) for n in vm.nics]
    c.boot_devices = list(vm.boot_devices)
    c.snapshots, c.checkpoints, c.backups = [], [], []
    c.tag_ids = set(vm.tag_ids)
    return c


ACTIVE_PHASES = {"initializing", "transferring", "resuming", "paused_user", "paused_system",
                 "finalizing_success", "finalizing_failure", "finalizing_cleanup",
                 "cancelled_user", "cancelled_system"}
FINAL_PHASES = {"finished_success", "finished_failure", "finished_cleanup"}


@dataclass
class Template:
    """A template: a VM configuration and its own copies of the disks."""
    id: str
    name: str
    config: Vm  # memory, CPU, OS, NICs, attachments (of the template's disks)
    cluster_id: str | None
    description: str = ""
    version_number: int = 1
    version_name: str | None = None
    base_id: str | None = None  # the base template of a version; None: itself
    status: str = "ok"
    created: dt.datetime = field(default_factory=now)
