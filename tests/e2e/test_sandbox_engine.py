"""The sandbox driven with the real ovirt-engine-sdk-python and ovirt_imageio.client."""
from __future__ import annotations

import time
import uuid

import ovirtsdk4 as sdk
import ovirtsdk4.types as types
import pytest
from ovirt_imageio import client

from tests.helpers import allocated_ranges, image_digest, wait

pytestmark = pytest.mark.e2e
MiB = 1 << 20


def vm_disks(conn, vm_id):
    s = conn.system_service()
    atts = s.vms_service().vm_service(vm_id).disk_attachments_service().list()
    return [(a, s.disks_service().disk_service(a.disk.id).get()) for a in atts]


def transfer(conn, direction, *, disk=None, snapshot=None, backup=None, shallow=None):
    ts = conn.system_service().image_transfers_service()
    t = types.ImageTransfer(direction=direction, format=types.DiskFormat.RAW, shallow=shallow,
                            backup=types.Backup(id=backup) if backup else None)
    if snapshot:
        t.snapshot = types.DiskSnapshot(id=snapshot)
    else:
        t.disk = types.Disk(id=disk)
    t = ts.add(t)
    svc = ts.image_transfer_service(t.id)
    wait(lambda: svc.get().phase == types.ImageTransferPhase.TRANSFERRING, what="transferring")
    return svc.get(), svc


def finalize(svc):
    svc.finalize()
    wait(lambda: svc.get().phase == types.ImageTransferPhase.FINISHED_SUCCESS, what="finalized")


def test_inventory_is_varied_and_realistic(conn, sandbox):
    s = conn.system_service()
    sample = {v["name"] for v in sandbox.info["vms"]}
    listed = {v.name: v for v in s.vms_service().list()}
    assert sample <= set(listed)  # other tests may have restored VMs beside them
    vms = {n: v for n, v in listed.items() if n in sample}
    assert len({(v.memory, v.cpu.topology.sockets, v.cpu.topology.cores) for v in vms.values()}) == 3
    disks = {name: vm_disks(conn, v.id) for name, v in vms.items()}
    cow_incremental = [n for n, ds in disks.items() if len(ds) == 2 and all(
        d.format == types.DiskFormat.COW and d.backup == types.DiskBackup.INCREMENTAL for _, d in ds)]
    raw = [n for n, ds in disks.items() if any(d.format == types.DiskFormat.RAW for _, d in ds)]
    assert cow_incremental and raw
    assert sum(a.bootable for a, _ in disks[cow_incremental[0]]) == 1
    # search, as the SDK examples use it
    found = s.vms_service().list(search=f"name={cow_incremental[0]}")
    assert [v.name for v in found] == [cow_incremental[0]]
    assert s.vms_service().list(search="name=does-not-exist") == []
    # the OVF is real XML carrying the configuration
    full = s.vms_service().vm_service(vms[raw[0]].id).get(all_content=True)
    data = full.initialization.configuration.data
    assert full.initialization.configuration.type == types.ConfigurationType.OVF
    assert "<ovf:Envelope" in data and raw[0] in data
    assert [h.name for h in s.hosts_service().list()] == ["host1", "host2"]
    with pytest.raises(sdk.NotFoundError):
        s.vms_service().vm_service(str(uuid.uuid4())).get()


def test_wrong_password_is_an_auth_error(sandbox):
    e = sandbox.engine
    conn = sdk.Connection(url=e["api"], username=e["username"], password="wrong", ca_file=e["ca_file"])
    with pytest.raises(sdk.AuthError):
        conn.system_service().vms_service().list()


def test_snapshot_lifecycle_and_conflicts(conn, sandbox, no_leftovers, tmp_path):
    vm = sandbox.vm("web-frontend")
    (att, disk), = vm_disks(conn, vm["id"])
    before = sandbox.digest(disk.id)
    snaps = conn.system_service().vms_service().vm_service(vm["id"]).snapshots_service()
    snap = snaps.add(types.Snapshot(description="t-snap", persist_memorystate=False))
    assert snap.snapshot_status == types.SnapshotStatus.LOCKED
    with pytest.raises(sdk.Error) as err:  # another snapshot operation is running
        snaps.add(types.Snapshot(description="second", persist_memorystate=False))
    assert err.value.code == 409
    wait(lambda: snaps.snapshot_service(snap.id).get().snapshot_status == types.SnapshotStatus.OK)
    # guest writes after the snapshot change the disk, not the snapshot
    sandbox.write(vm["id"], 200 * MiB, 2 * MiB, pattern=0x5a)
    after = sandbox.digest(disk.id)
    assert after != before
    (sdisk,) = snaps.snapshot_service(snap.id).disks_service().list()
    assert sandbox.digest(disk.id, snapshot=sdisk.image_id) == before
    # download the snapshot disk with the imageio client
    t, svc = transfer(conn, types.ImageTransferDirection.DOWNLOAD, snapshot=sdisk.image_id)
    try:
        client.download(t.transfer_url, str(tmp_path / "snap.qcow2"), sandbox.engine["ca_file"],
                        fmt="qcow2")
    finally:
        finalize(svc)
    assert image_digest(tmp_path / "snap.qcow2") == before
    # delete merges: the disk keeps the post-snapshot content
    snaps.snapshot_service(snap.id).remove()
    wait(lambda: len(snaps.list()) == 1, what="snapshot removed")
    assert sandbox.digest(disk.id) == after
    events = [e.code for e in conn.system_service().events_service().list(max=30)]
    assert 68 in events and 356 in events  # created, removed


def test_download_and_upload_disk(conn, sandbox, no_leftovers, tmp_path):
    vm = sandbox.vm("legacy-erp")
    (_, disk), = vm_disks(conn, vm["id"])
    t, svc = transfer(conn, types.ImageTransferDirection.DOWNLOAD, disk=disk.id)
    assert conn.system_service().disks_service().disk_service(disk.id).get().status == types.DiskStatus.LOCKED
    try:
        client.download(t.transfer_url, str(tmp_path / "d.qcow2"), sandbox.engine["ca_file"], fmt="qcow2")
    finally:
        finalize(svc)
    digest = sandbox.digest(disk.id)
    assert image_digest(tmp_path / "d.qcow2") == digest
    # upload it into a new qcow2 disk
    disks = conn.system_service().disks_service()
    new = disks.add(types.Disk(name="uploaded", format=types.DiskFormat.COW, sparse=True,
                               provisioned_size=disk.provisioned_size,
                               storage_domains=[types.StorageDomain(name="data")]))
    wait(lambda: disks.disk_service(new.id).get().status == types.DiskStatus.OK)
    t, svc = transfer(conn, types.ImageTransferDirection.UPLOAD, disk=new.id)
    try:
        client.upload(str(tmp_path / "d.qcow2"), t.transfer_url, sandbox.engine["ca_file"])
    finally:
        finalize(svc)
    assert sandbox.digest(new.id) == digest
    disks.disk_service(new.id).remove()
    with pytest.raises(sdk.NotFoundError):
        disks.disk_service(new.id).get()


def test_full_then_incremental_backup_with_imageio_client(conn, sandbox, no_leftovers, tmp_path):
    vm = sandbox.vm("db-primary")
    vms = conn.system_service().vms_service().vm_service(vm["id"])
    disks = [d for _, d in vm_disks(conn, vm["id"])]
    boot = next(d for a, d in vm_disks(conn, vm["id"]) if a.bootable)

    def run_backup(from_cp, tag):
        bs = vms.backups_service()
        b = bs.add(types.Backup(disks=[types.Disk(id=d.id) for d in disks], from_checkpoint_id=from_cp))
        bsvc = bs.backup_service(b.id)
        wait(lambda: bsvc.get().phase == types.BackupPhase.READY, what="backup ready")
        b = bsvc.get()
        files = {}
        for d in bsvc.disks_service().list():
            incremental = d.backup_mode == types.DiskBackupMode.INCREMENTAL
            assert incremental == (from_cp is not None)
            t, tsvc = transfer(conn, types.ImageTransferDirection.DOWNLOAD, disk=d.id, backup=b.id)
            path = tmp_path / f"{tag}.{d.id}.qcow2"
            try:
                client.download(t.transfer_url, str(path), sandbox.engine["ca_file"],
                                incremental=incremental, fmt="qcow2",
                                backing_file=f"full.{d.id}.qcow2" if incremental else None,
                                backing_format="qcow2" if incremental else None)
            finally:
                finalize(tsvc)
            files[d.id] = path
        bsvc.finalize()
        wait(lambda: bsvc.get().phase == types.BackupPhase.SUCCEEDED, what="backup succeeded")
        return b, files

    full_digests = {d.id: sandbox.digest(d.id) for d in disks}
    b1, full = run_backup(None, "full")
    assert b1.to_checkpoint_id
    for d in disks:
        assert image_digest(full[d.id]) == full_digests[d.id]
    cps = vms.checkpoints_service().list()
    assert b1.to_checkpoint_id in [c.id for c in cps]

    sandbox.write(vm["id"], 300 * MiB, 3 * MiB, pattern="random", disk_id=boot.id, seed=11)
    sandbox.write(vm["id"], 512 * MiB, 1 * MiB, pattern=0x11, disk_id=boot.id)
    inc_digests = {d.id: sandbox.digest(d.id) for d in disks}
    b2, inc = run_backup(b1.to_checkpoint_id, "inc")
    # the incremental holds exactly the blocks written in between
    assert allocated_ranges(inc[boot.id]) == [(300 * MiB, 303 * MiB), (512 * MiB, 513 * MiB)]
    other = next(d for d in disks if d.id != boot.id)
    assert allocated_ranges(inc[other.id]) == []
    for d in disks:  # the chain restores to the content at backup time
        assert image_digest(inc[d.id]) == inc_digests[d.id]


def test_missing_or_invalid_checkpoint_is_refused(conn, sandbox, no_leftovers):
    vm = sandbox.vm("web-frontend")
    vms = conn.system_service().vms_service().vm_service(vm["id"])
    disks = [types.Disk(id=d.id) for _, d in vm_disks(conn, vm["id"])]
    with pytest.raises(sdk.Error) as err:
        vms.backups_service().add(types.Backup(disks=disks, from_checkpoint_id=str(uuid.uuid4())))
    assert err.value.code == 409 and "does not exist" in str(err.value)
    bs = vms.backups_service()
    b = bs.add(types.Backup(disks=disks))
    wait(lambda: bs.backup_service(b.id).get().phase == types.BackupPhase.READY)
    cp = bs.backup_service(b.id).get().to_checkpoint_id
    with pytest.raises(sdk.Error) as err:  # one backup at a time
        bs.add(types.Backup(disks=disks))
    assert err.value.code == 409
    bs.backup_service(b.id).finalize()
    wait(lambda: bs.backup_service(b.id).get().phase == types.BackupPhase.SUCCEEDED)
    sandbox.fault(kind="checkpoint", vm_id=vm["id"], checkpoint_id=cp)
    with pytest.raises(sdk.Error) as err:
        bs.add(types.Backup(disks=disks, from_checkpoint_id=cp))
    assert err.value.code == 409 and "invalid" in str(err.value)


def test_injected_engine_faults(conn, sandbox):
    before = len(conn.system_service().vms_service().list())
    rule = sandbox.fault(kind="engine", method="GET", path=r"^/vms$", status=503, count=1)
    try:
        with pytest.raises(sdk.Error) as err:
            conn.system_service().vms_service().list()
        assert err.value.code == 503
        assert len(conn.system_service().vms_service().list()) == before  # count=1: once only
        sandbox.fault(kind="engine", method="GET", path=r"^/hosts$", delay=1.0, count=1)
        t0 = time.monotonic()
        conn.system_service().hosts_service().list()
        assert time.monotonic() - t0 >= 1.0
    finally:
        sandbox.clear_faults()
    assert rule["status"] == 503


def test_killed_imageio_daemon_pauses_transfer_then_restarts(conn, sandbox, no_leftovers):
    vm = sandbox.vm("legacy-erp")
    (_, disk), = vm_disks(conn, vm["id"])
    t, svc = transfer(conn, types.ImageTransferDirection.DOWNLOAD, disk=disk.id)
    sandbox.fault(kind="imageio", host_id=t.host.id, action="kill")
    try:
        wait(lambda: svc.get().phase == types.ImageTransferPhase.PAUSED_SYSTEM, what="paused_system")
        svc.cancel()
        wait(lambda: svc.get().phase == types.ImageTransferPhase.FINISHED_CLEANUP)
    finally:
        r = sandbox.fault(kind="imageio", host_id=t.host.id, action="restart")
    assert r["running"] is True
    t, svc = transfer(conn, types.ImageTransferDirection.DOWNLOAD, disk=disk.id)
    try:
        with client.ImageioClient(t.transfer_url, cafile=sandbox.engine["ca_file"]) as c:
            buf = bytearray(4096)
            c.read(0, buf)
    finally:
        finalize(svc)
    assert buf[:12] == b"[template-os"  # the first block of the shared OS image
