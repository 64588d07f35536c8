"""The simulated engine's live paths against a real qemu: a backup of a VM
whose guest runs is exported by qemu (fleecing + NBD), snapshots are live
overlays and their removal a live merge, checkpoints are removed from the
running disk — and a guest without an agent is backed up crash consistent
(vdsm's freeze: no engine event) unless the backup requires consistency, and
snapshotted crash consistent with the engine's FAILED_TO_FREEZE_VM warning.

The guest is `sandbox.guests.runner.Guest` over a qemu started here (paused,
no OS: its agent never answers); guest writes are HMP qemu-io on its device.
"""
from __future__ import annotations

import asyncio
import subprocess
import uuid
from pathlib import Path

import pytest

from sandbox.engine import live
from sandbox.engine.model import (Attachment, Cluster, DataCenter, Disk, Host, StorageDomain,
                                  Timing, Vm)
from sandbox.engine.state import Engine
from sandbox.guests.qmp import Qmp
from sandbox.guests.runner import Guest, GuestDisk
from sandbox.proc import Registry
from sandbox.storage import Image

MiB = 1 << 20
SIZE = 16 * MiB


class RunningGuests:
    """engine.guests for a guest started by the test."""

    def __init__(self, guest):
        self.guest = guest

    def get(self, vm_id):
        return self.guest if vm_id == self.guest.vm_id else None

    def is_guest(self, vm):
        return False  # power changes are not the test's business

    async def close(self):
        pass


@pytest.fixture
async def lab(tmp_path, monkeypatch):
    monkeypatch.setattr(live, "FREEZE_TIMEOUT", 1.0)
    e = Engine(tmp_path / "engine", Registry(tmp_path / "pids"),
               Timing(**{f: 0.01 for f in ("backup_start", "backup_finalize", "snapshot",
                                           "snapshot_remove")}))
    dc = DataCenter(str(uuid.uuid4()), "Default")
    cl = Cluster(str(uuid.uuid4()), "Default", dc.id)
    sd = StorageDomain(str(uuid.uuid4()), "data", tmp_path / "sd", dc.id)
    e.dcs[dc.id], e.clusters[cl.id], e.sds[sd.id] = dc, cl, sd
    host = Host(str(uuid.uuid4()), "host1", cl.id, None)
    e.hosts[host.id] = host
    disk_id = str(uuid.uuid4())
    img = await Image.create(sd.dir, disk_id, SIZE, "qcow2")
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -P 0x11 0 {SIZE}", img.top.path],
                   check=True, capture_output=True)
    e.disks[disk_id] = Disk(disk_id, "vm1_disk", SIZE, "cow", True, "incremental", sd.id, img)
    vm = Vm(str(uuid.uuid4()), "vm1", cl.id, 1024, status="up", host_id=host.id)
    vm.attachments.append(Attachment(disk_id, True, "virtio"))
    e.vms[vm.id] = vm
    g = Guest(vm.id, vm.name, tmp_path / "guest",
              [GuestDisk(disk_id, "disk-0", "file-0", "dev-0", img.top.path, "qcow2", "virtio")])
    g.dir.mkdir()
    argv = ["qemu-system-x86_64", "-nodefaults", "-display", "none", "-S",
            "-machine", "q35,accel=tcg", "-m", "64",
            "-qmp", f"unix:{g.qmp_socket},server=on,wait=off",
            "-qmp", f"unix:{g.sandbox_qmp_socket},server=on,wait=off",
            "-chardev", f"socket,id=qga0,path={g.qga_socket},server=on,wait=off",
            "-device", "virtio-serial,id=vser0",
            "-device", "virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0",
            "-blockdev", f"driver=file,filename={img.top.path},node-name=file-0",
            "-blockdev", "driver=qcow2,file=file-0,node-name=disk-0",
            "-device", "virtio-blk-pci,drive=disk-0,id=dev-0"]
    with (tmp_path / "qemu.log").open("wb") as log:
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    e.guests = RunningGuests(g)
    async with Qmp(g.qmp_socket):  # up
        pass
    try:
        yield e, vm, e.disks[disk_id], g
    finally:
        e.guests = None
        await e.close()
        p.terminate()
        p.wait(10)


async def until(pred, timeout=30.0):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        assert loop.time() < end, "timed out"
        await asyncio.sleep(0.02)


async def write(g, pattern, offset, length):
    assert await g.hmp(f'qemu-io -d {g.disks[0].device_id}/virtio-backend '
                       f'"write -P {pattern:#x} {offset} {length}"') == ""


async def read_export(url: str, dest: Path) -> bytes:
    sock, name = url.removeprefix("nbd:unix:").split(":exportname=")
    await asyncio.to_thread(subprocess.run, [
        "qemu-img", "convert", "-f", "raw", "-O", "raw", f"nbd+unix:///{name}?socket={sock}",
        dest], check=True, capture_output=True)
    return dest.read_bytes()


def fill(base: bytes, pattern: int, offset: int, length: int) -> bytes:
    return base[:offset] + bytes([pattern]) * length + base[offset + length:]


async def test_live_backups_snapshots_and_checkpoints(lab, tmp_path):
    e, vm, disk, g = lab
    t0 = b"\x11" * SIZE
    b = await e.start_backup(vm.id, [disk.id], None, None, "full", None)
    await until(lambda: b.phase == "ready")
    assert b.live is not None and b.frozen == {} and b.modes == {disk.id: "full"}
    assert b.consistency == "crash"
    # vdsm froze (tried to) for the backup: the engine's audit log says nothing about it
    freeze_codes = {live.FREEZE_VM_INITIATED, live.FREEZE_VM_SUCCESS, live.FAILED_TO_FREEZE_VM,
                    live.THAW_VM_SUCCESS, live.FAILED_TO_THAW_VM}
    assert not freeze_codes & {ev.code for ev in e.events if ev.vm_id == vm.id}
    await write(g, 0x22, 2 * MiB, 65536)
    url, dirty = live.transfer_source(b, disk.id)
    assert not dirty
    assert await read_export(url, tmp_path / "full.raw") == t0
    await e.finalize_backup(vm.id, b.id, None)
    await until(lambda: b.phase == "succeeded")
    assert [ev.code for ev in e.events[-2:]] == [10794, 10793]  # finalized, succeeded
    assert b.live is None and vm.busy is None
    assert [c.id for c in vm.checkpoints] == [b.to_checkpoint_id]
    async with Qmp(g.qmp_socket) as qmp:
        assert await qmp.bitmaps("disk-0") == [b.to_checkpoint_id]
        assert not [n for n in await qmp.named_nodes() if n.startswith("fleece-")]
    assert list((e.nbd_dir / "scratch").iterdir()) == []

    # Incremental from the checkpoint, the guest writing on.
    t1 = fill(t0, 0x22, 2 * MiB, 65536)
    b2 = await e.start_backup(vm.id, [disk.id], b.to_checkpoint_id, None, "inc", None)
    await until(lambda: b2.phase == "ready")
    assert b2.modes == {disk.id: "incremental"}
    await write(g, 0x33, 2 * MiB, 65536)
    url, dirty = live.transfer_source(b2, disk.id)
    assert dirty
    assert await read_export(url, tmp_path / "inc.raw") == t1
    await e.finalize_backup(vm.id, b2.id, None)
    await until(lambda: b2.phase == "succeeded")
    t2 = fill(t1, 0x33, 2 * MiB, 65536)

    # The oldest checkpoint is removed from the running disk.
    await e.remove_checkpoint(vm.id, b.to_checkpoint_id)
    async with Qmp(g.qmp_socket) as qmp:
        assert await qmp.bitmaps("disk-0") == [b2.to_checkpoint_id]

    # A live snapshot, then its removal (a live merge of the active overlay).
    base_vol = disk.image.top.id
    snap = await e.create_snapshot(vm.id, "live", None, False, None)
    await until(lambda: snap.status == "ok")
    assert snap.volumes == {disk.id: base_vol} and len(disk.image.volumes) == 2
    # The engine froze (tried to) for its own snapshot, and says it could not.
    codes = [ev.code for ev in e.events if ev.vm_id == vm.id]
    assert codes[-3:-1] == [live.FREEZE_VM_INITIATED, live.FAILED_TO_FREEZE_VM], codes
    warn = e.events[-2]
    assert warn.severity == "warning" and "crash consistent" in warn.description
    assert warn.correlation_id == next(ev.correlation_id for ev in e.events if ev.code == 45)
    assert g.disks[0].node_name != "disk-0" and g.disks[0].path == disk.image.top.path
    async with Qmp(g.qmp_socket) as qmp:
        assert await qmp.bitmaps(g.disks[0].node_name) == [b2.to_checkpoint_id]
    await write(g, 0x44, 4 * MiB, 65536)
    t3 = fill(t2, 0x44, 4 * MiB, 65536)
    await e.remove_snapshot(vm.id, snap.id, None)
    await until(lambda: snap not in vm.snapshots, timeout=60)
    assert [v.id for v in disk.image.volumes] == [base_vol]
    assert g.disks[0].node_name == "disk-0"
    async with Qmp(g.qmp_socket) as qmp:
        assert await qmp.bitmaps("disk-0") == [b2.to_checkpoint_id]
        await qmp.execute("quit")
    await asyncio.sleep(0.5)
    got = subprocess.run(["qemu-img", "convert", "-U", "-f", "qcow2", "-O", "raw",
                          disk.image.top.path, tmp_path / "final.raw"], check=True)
    assert got.returncode == 0 and (tmp_path / "final.raw").read_bytes() == t3


async def test_live_backup_requiring_consistency_fails_without_agent(lab):
    e, vm, disk, g = lab
    b = await e.start_backup(vm.id, [disk.id], None, None, "strict", None,
                             require_consistency=True)
    await until(lambda: b.phase == "failed")
    assert b.live is None and vm.busy is None and not vm.checkpoints
    assert e.events[-1].code == 10792 and e.events[-1].severity == "error"  # VM_BACKUP_FAILED
    assert live.FAILED_TO_FREEZE_VM not in [ev.code for ev in e.events]  # vdsm's, not logged
    async with Qmp(g.qmp_socket) as qmp:
        assert await qmp.bitmaps("disk-0") == []
        assert not [n for n in await qmp.named_nodes() if n.startswith("fleece-")]


async def test_a_running_vm_without_a_guest_fails_a_backup_requiring_consistency(lab):
    """A record-only VM "up" without a guest has no agent: as vdsm, the freeze fails."""
    e, vm, disk, g = lab
    guests, e.guests = e.guests, None
    try:
        b = await e.start_backup(vm.id, [disk.id], None, None, "strict", None,
                                 require_consistency=True)
        await until(lambda: b.phase == "failed")
        assert vm.busy is None and not vm.checkpoints and b.frozen == {}
        assert disk.status == "ok" and len(disk.image.volumes) == 1
        assert e.events[-1].code == 10792
    finally:
        e.guests = guests
