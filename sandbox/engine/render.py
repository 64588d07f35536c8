"""State entities to oVirt API v4 XML, through the SDK's own types and writers.

Using `ovirtsdk4.writers` guarantees that element names, enum spellings, date
and boolean formats are exactly the ones the SDK's readers (generated from
ovirt-engine-api-model) expect. The writers do not emit `<link>` elements,
so sub-collection links are added here, first in the element as the engine
does.
"""
from __future__ import annotations

import contextvars
import ipaddress
import xml.etree.ElementTree as ET
from urllib.parse import urlsplit, urlunsplit

import ovirtsdk4.readers  # noqa: F401  (registers the readers)
import ovirtsdk4.writers  # noqa: F401  (registers the writers)
from ovirtsdk4 import types
from ovirtsdk4.reader import Reader
from ovirtsdk4.writer import Writer

from . import live, ovf
from .model import BLANK, Snapshot, Transfer
from .state import Engine

API = "/ovirt-engine/api"


def T(cls, href=None, **kw):
    """An SDK type instance with its href (the SDK constructors take no href)."""
    obj = cls(**kw)
    if href is not None:
        obj.href = href
    return obj

LINKS = {
    "vm": ["affinitylabels", "applications", "backups", "cdroms", "checkpoints",
           "diskattachments", "graphicsconsoles", "hostdevices", "katelloerrata",
           "mediateddevices", "nics", "numanodes", "permissions", "reporteddevices",
           "sessions", "snapshots", "statistics", "tags", "watchdogs"],
    "disk": ["disksnapshots", "permissions", "statistics"],
    "snapshot": ["cdroms", "disks", "nics"],
    "backup": ["disks"],
    "checkpoint": ["disks"],
    "storage_domain": ["disks", "disksnapshots", "diskprofiles", "files", "images",
                       "permissions", "storageconnections", "templates", "vms"],
    "host": ["nics", "statistics", "permissions", "storage", "tags"],
    "cluster": ["networks", "permissions", "cpuprofiles"],
    "data_center": ["clusters", "networks", "storagedomains", "permissions", "quotas"],
    "job": ["steps"],
}


def parse(body: bytes):
    """An SDK object from a request body (raises ValueError on bad XML)."""
    if not body or not body.strip():
        raise ValueError("request body is empty")
    try:
        return Reader.read(body)
    except Exception as e:  # the SDK's C reader raises plain Errors
        raise ValueError(f"malformed XML: {e}") from None


def to_xml(obj, root: str | None = None) -> str:
    text = Writer.write(obj, root=root)
    tree = ET.fromstring(text)
    # Links go on the entities rendered, not on the references they hold
    # (a disk's <storage_domain href id/> has none, as on the engine).
    for el in (list(tree) if isinstance(obj, list) else [tree]):
        _add_links(el)
    return '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n' + ET.tostring(
        tree, encoding="unicode")


def _add_links(el: ET.Element):
    rels = LINKS.get(el.tag)
    href = el.get("href")
    if rels and href and el.get("id"):
        for i, rel in enumerate(rels):
            link = ET.Element("link", {"href": f"{href}/{rel}", "rel": rel})
            el.insert(i, link)


def _ref(cls, id_, href=None):
    return cls(id=id_, href=href) if id_ else None


def dc(e: Engine, d):
    return T(types.DataCenter, id=d.id, href=f"{API}/datacenters/{d.id}", name=d.name,
                            local=False, status=types.DataCenterStatus.UP,
                            storage_format=types.StorageFormat.V5,
                            version=types.Version(major=4, minor=7))


def cluster(e: Engine, c):
    return T(types.Cluster, id=c.id, href=f"{API}/clusters/{c.id}", name=c.name,
                         data_center=T(types.DataCenter, id=c.dc_id, href=f"{API}/datacenters/{c.dc_id}"),
                         cpu=types.Cpu(architecture=types.Architecture.X86_64,
                                       type="Intel Cascadelake Server Family"),
                         version=types.Version(major=4, minor=7))


def host(e: Engine, h):
    return T(types.Host, id=h.id, href=f"{API}/hosts/{h.id}", name=h.name, address="127.0.0.1",
                      status=types.HostStatus(h.status) if h.status in ("up", "maintenance")
                      else types.HostStatus.NON_RESPONSIVE,
                      cluster=T(types.Cluster, id=h.cluster_id, href=f"{API}/clusters/{h.cluster_id}"),
                      hardware_information=types.HardwareInformation(uuid=h.hw_id),
                      type=types.HostType.RHEL, port=54321)


def storage_domain(e: Engine, sd, href=None):
    used = sum(d.provisioned_size for d in e.disks.values() if d.sd_id == sd.id)
    import shutil
    free = shutil.disk_usage(sd.dir).free
    return T(types.StorageDomain, 
        id=sd.id, href=href or f"{API}/storagedomains/{sd.id}", name=sd.name,
        type=types.StorageDomainType.DATA, status=types.StorageDomainStatus.ACTIVE,
        external_status=types.ExternalStatus.OK, master=True,
        storage=types.HostStorage(type=types.StorageType.NFS, address="127.0.0.1",
                                  path=str(sd.dir)),
        storage_format=types.StorageFormat.V5, available=free, used=used, committed=used,
        data_centers=[T(types.DataCenter, id=sd.dc_id, href=f"{API}/datacenters/{sd.dc_id}")],
        backup=False, discard_after_delete=False, wipe_after_delete=False)


def disk(e: Engine, d, href=None, with_backup_mode: str | None = None):
    actual = 0
    try:
        actual = sum(v.path.stat().st_blocks * 512 for v in d.image.volumes if v.path.exists())
    except OSError:
        pass
    return _disk(e, d, href, with_backup_mode, actual)


def _disk(e, d, href, with_backup_mode, actual):
    x = T(types.Disk, 
        id=d.id, href=href or f"{API}/disks/{d.id}", name=d.alias, alias=d.alias,
        description=d.description, provisioned_size=d.provisioned_size, actual_size=actual,
        total_size=actual, format=types.DiskFormat(d.format), sparse=d.sparse,
        backup=types.DiskBackup(d.backup), status=types.DiskStatus(d.status),
        content_type=types.DiskContentType(d.content_type), shareable=d.shareable,
        wipe_after_delete=d.wipe_after_delete, propagate_errors=False,
        storage_type=types.DiskStorageType.IMAGE,
        image_id=d.image.top.id if d.image.volumes else None,
        qcow_version=types.QcowVersion.QCOW2_V3 if d.format == "cow" else None,
        storage_domains=[T(types.StorageDomain, id=d.sd_id, href=f"{API}/storagedomains/{d.sd_id}")])
    if with_backup_mode:
        x.backup_mode = types.DiskBackupMode(with_backup_mode)
    return x


def attachment(e: Engine, vm, a):
    return T(types.DiskAttachment, 
        id=a.disk_id, href=f"{API}/vms/{vm.id}/diskattachments/{a.disk_id}",
        bootable=a.bootable, interface=types.DiskInterface(a.interface), active=a.active,
        read_only=a.read_only, pass_discard=a.pass_discard, uses_scsi_reservation=False,
        logical_name=None, disk=T(types.Disk, id=a.disk_id, href=f"{API}/disks/{a.disk_id}"),
        vm=T(types.Vm, id=vm.id, href=f"{API}/vms/{vm.id}"))


def nic(e: Engine, vm, n):
    return T(types.Nic, id=n.id, href=f"{API}/vms/{vm.id}/nics/{n.id}", name=n.name,
                     interface=types.NicInterface(n.interface), mac=types.Mac(address=n.mac),
                     linked=n.linked, plugged=n.plugged,
                     vnic_profile=T(types.VnicProfile, id=e.vnic_profile_id,
                                                    href=f"{API}/vnicprofiles/{e.vnic_profile_id}"),
                     vm=T(types.Vm, id=vm.id, href=f"{API}/vms/{vm.id}"))


def vm(e: Engine, v, all_content=False):
    x = T(types.Vm, 
        id=v.id, href=f"{API}/vms/{v.id}", name=v.name, description=v.description,
        comment=v.comment, status=types.VmStatus(v.status), memory=v.memory,
        memory_policy=types.MemoryPolicy(guaranteed=v.memory, max=v.memory * 4, ballooning=True),
        cpu=types.Cpu(architecture=types.Architecture.X86_64,
                      topology=types.CpuTopology(sockets=v.cpu_sockets, cores=v.cpu_cores,
                                                 threads=v.cpu_threads)),
        os=types.OperatingSystem(type=v.os_type,
                                 boot=types.Boot(devices=[types.BootDevice(b) for b in v.boot_devices])),
        bios=types.Bios(type=types.BiosType(v.bios_type)), type=types.VmType(v.type),
        high_availability=types.HighAvailability(enabled=v.ha, priority=1 if v.ha else 0),
        stateless=False, delete_protected=False, origin="ovirt", creation_time=v.created,
        cluster=T(types.Cluster, id=v.cluster_id, href=f"{API}/clusters/{v.cluster_id}"),
        template=T(types.Template, id=v.template_id, href=f"{API}/templates/{v.template_id}"),
        original_template=T(types.Template, id=BLANK, href=f"{API}/templates/{BLANK}"),
        host=T(types.Host, id=v.host_id, href=f"{API}/hosts/{v.host_id}") if v.host_id else None,
        cpu_shares=0, run_once=False, next_run_configuration_exists=False,
        large_icon=None)
    if live.guest_of(e, v) is not None:
        # What the guest agent reports through vdsm (kept while it runs, as the engine does)
        x.guest_operating_system = types.GuestOperatingSystem(
            architecture="x86_64", family="Linux", distribution="Debian GNU/Linux",
            codename="bookworm", version=types.Version(full_version="12", major=12))
    if all_content:
        disks = [(a, e.disks[a.disk_id]) for a in v.attachments if a.disk_id in e.disks]
        sd = disks[0][1].sd_id if disks else next(iter(e.sds))
        x.initialization = types.Initialization(configuration=types.Configuration(
            type=types.ConfigurationType.OVF, data=ovf.build(v, disks, v.nics, sd)))
    return x


def snapshot(e: Engine, v, s: Snapshot, all_content: bool = False):
    x = T(types.Snapshot,
        id=s.id, href=f"{API}/vms/{v.id}/snapshots/{s.id}", description=s.description,
        snapshot_type=types.SnapshotType(s.type), snapshot_status=types.SnapshotStatus(s.status),
        date=s.date, persist_memorystate=s.persist_memorystate,
        vm=T(types.Vm, id=v.id, href=f"{API}/vms/{v.id}"))
    if all_content:
        # The VM's configuration at snapshot time, as the OVF the engine keeps.
        conf = s.config if s.config is not None else v
        atts = conf.attachments if s.type != "active" else v.attachments
        disks = [(a, e.disks[a.disk_id]) for a in atts if a.disk_id in e.disks
                 and (s.type == "active" or a.disk_id in s.volumes)]
        sd = disks[0][1].sd_id if disks else next(iter(e.sds))
        x.initialization = types.Initialization(configuration=types.Configuration(
            type=types.ConfigurationType.OVF,
            data=ovf.build(conf, disks, conf.nics, sd,
                           volumes=s.volumes if s.type != "active" else None, snapshot_id=s.id)))
    return x


def disk_snapshot(e: Engine, d, vol_id: str, snap=None, vm=None, href=None):
    vol = d.image.volume(vol_id)
    actual = vol.path.stat().st_blocks * 512 if vol.path.exists() else 0
    x = T(types.DiskSnapshot, 
        id=vol_id, href=href or f"{API}/storagedomains/{d.sd_id}/disksnapshots/{vol_id}",
        name=d.alias, alias=d.alias, description=d.description,
        provisioned_size=d.provisioned_size, actual_size=actual, total_size=actual,
        format=types.DiskFormat("cow" if vol.fmt == "qcow2" else "raw"), sparse=d.sparse,
        status=types.DiskStatus.OK, content_type=types.DiskContentType.DATA,
        image_id=vol_id, storage_type=types.DiskStorageType.IMAGE,
        disk=T(types.Disk, id=d.id, href=f"{API}/disks/{d.id}"),
        storage_domains=[T(types.StorageDomain, id=d.sd_id, href=f"{API}/storagedomains/{d.sd_id}")])
    if vol.parent:
        x.parent = types.DiskSnapshot(id=vol.parent)
    if snap is not None and vm is not None:
        x.snapshot = T(types.Snapshot, id=snap.id, href=f"{API}/vms/{vm.id}/snapshots/{snap.id}")
    return x


def checkpoint(e: Engine, v, c):
    return T(types.Checkpoint, 
        id=c.id, href=f"{API}/vms/{v.id}/checkpoints/{c.id}", parent_id=c.parent_id,
        creation_date=c.created, state=types.CheckpointState(c.state),
        vm=T(types.Vm, id=v.id, href=f"{API}/vms/{v.id}"),
        disks=[types.Disk(id=d) for d in c.disk_ids])


def backup(e: Engine, v, b):
    return T(types.Backup, 
        id=b.id, href=f"{API}/vms/{v.id}/backups/{b.id}", phase=types.BackupPhase(b.phase),
        from_checkpoint_id=b.from_checkpoint_id, to_checkpoint_id=b.to_checkpoint_id,
        creation_date=b.created, modification_date=b.modified, description=b.description,
        vm=T(types.Vm, id=v.id, href=f"{API}/vms/{v.id}"),
        host=T(types.Host, id=b.host_id, href=f"{API}/hosts/{b.host_id}"),
        disks=[T(types.Disk, id=d, href=f"{API}/disks/{d}") for d in b.disk_ids])


def transfer(e: Engine, t: Transfer):
    x = T(types.ImageTransfer, 
        id=t.id, href=f"{API}/imagetransfers/{t.id}",
        direction=types.ImageTransferDirection(t.direction), phase=types.ImageTransferPhase(t.phase),
        format=types.DiskFormat(t.format), shallow=t.shallow, active=t.phase == "transferring",
        inactivity_timeout=t.inactivity_timeout,
        timeout_policy=types.ImageTransferTimeoutPolicy(t.timeout_policy),
        transferred=t.transferred,
        host=T(types.Host, id=t.host_id, href=f"{API}/hosts/{t.host_id}"),
        disk=T(types.Disk, id=t.disk_id, href=f"{API}/disks/{t.disk_id}"),
        image=types.Image(id=t.snapshot_id or (e.disks[t.disk_id].image.top.id
                                                if t.disk_id in e.disks and e.disks[t.disk_id].image.volumes
                                                else None)))
    if t.phase not in ("initializing",) and t.transfer_url:
        x.transfer_url, x.proxy_url = _for_client(e, t.transfer_url), _for_client(e, t.proxy_url)
    if t.snapshot_id:
        x.snapshot = types.DiskSnapshot(id=t.snapshot_id)
    if t.backup_id:
        x.backup = types.Backup(id=t.backup_id)
    return x


def event(e: Engine, ev):
    x = T(types.Event, 
        id=str(ev.index), href=f"{API}/events/{ev.index}", index=ev.index, code=ev.code,
        description=ev.description, severity=types.LogSeverity(ev.severity), time=ev.time,
        correlation_id=ev.correlation_id, origin=ev.origin, custom_id=ev.custom_id,
        flood_rate=30)
    if ev.vm_id:
        x.vm = T(types.Vm, id=ev.vm_id, href=f"{API}/vms/{ev.vm_id}")
    if ev.host_id:
        x.host = T(types.Host, id=ev.host_id, href=f"{API}/hosts/{ev.host_id}")
    if ev.sd_id:
        x.storage_domain = T(types.StorageDomain, id=ev.sd_id, href=f"{API}/storagedomains/{ev.sd_id}")
    if ev.user:
        x.user = types.User(name=ev.user)
    return x


def job(e: Engine, j):
    return T(types.Job, id=j.id, href=f"{API}/jobs/{j.id}", description=j.description,
                     status=types.JobStatus(j.status), start_time=j.start, end_time=j.end,
                     last_updated=j.end or j.start, external=j.external, auto_cleared=True,
                     owner=T(types.User, id=e.admin_user_id, href=f"{API}/users/{e.admin_user_id}"))


# The address the current API client used to reach the engine (set per request by the
# HTTP middleware). Every host of the lab runs on this machine, so a client that came in
# through another of its addresses - a VM on qemu user-mode networking reaches the
# host's loopback as 10.0.2.2 - is handed transfer URLs on that address, as a real
# engine hands out host addresses its clients can route to. A lab started with a fixed
# `--address` always uses that one.
CLIENT_ADDRESS: contextvars.ContextVar[str | None] = contextvars.ContextVar("client_address", default=None)


def _for_client(e: Engine, url: str | None) -> str | None:
    client = CLIENT_ADDRESS.get()
    if not url or not client or e.address != "127.0.0.1":
        return url
    try:
        ip = ipaddress.ip_address(client)
    except ValueError:  # a name (localhost): the lab's own address serves it
        return url
    if ip.is_loopback or ip.is_unspecified:
        return url
    u = urlsplit(url)
    if u.hostname != e.address:
        return url
    host = f"[{ip}]" if ip.version == 6 else str(ip)
    return urlunsplit(u._replace(netloc=f"{host}:{u.port}" if u.port else host))
