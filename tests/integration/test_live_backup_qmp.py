"""Live backups through a real qemu: QMP fleecing + NBD export while the
"guest" keeps writing (HMP qemu-io on the guest's device), live snapshots
and merges, and the freeze that finds no agent.

No OS is booted: qemu runs paused (-S) with a virtio-blk device over the
disk's -blockdev nodes, and writes go through the device's block backend as
a guest's would.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import urllib.parse
from pathlib import Path

import pytest

from sandbox.guests import live_backup
from sandbox.guests.qmp import AgentUnavailable, Qmp, QmpError

MiB = 1 << 20
SIZE = 16 * MiB


def _qemu(tmp: Path, disk: Path, *, agent: bool = False) -> subprocess.Popen:
    argv = ["qemu-system-x86_64", "-nodefaults", "-display", "none", "-S",
            "-machine", "q35,accel=tcg", "-m", "64",
            "-qmp", f"unix:{tmp / 'qmp.sock'},server=on,wait=off",
            "-blockdev", f"driver=file,filename={disk},node-name=file0",
            "-blockdev", "driver=qcow2,file=file0,node-name=disk0",
            "-device", "virtio-blk-pci,drive=disk0,id=vda"]
    if agent:
        argv += ["-chardev", f"socket,path={tmp / 'qga.sock'},server=on,wait=off,id=qga0",
                 "-device", "virtio-serial", "-device",
                 "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0"]
    with (tmp / "qemu.log").open("wb") as log:
        # HMP qemu-io prints its results on qemu's stdout.
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)


@pytest.fixture
def vm(tmp_path):
    disk = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", disk, str(SIZE)], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -P 0x11 0 {SIZE}", disk],
                   check=True, capture_output=True)
    p = _qemu(tmp_path, disk, agent=True)
    yield tmp_path, disk
    p.terminate()
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


async def qemu_io(qmp: Qmp, command: str) -> str:
    """Run qemu-io on the guest's device; what it printed (on qemu's stdout)."""
    log = Path(qmp.path).with_name("qemu.log")
    before = log.stat().st_size
    out = await qmp.hmp(f'qemu-io -d vda/virtio-backend "{command}"')
    assert out == "", out
    with log.open("rb") as f:
        f.seek(before)
        return f.read().decode()


async def guest_write(qmp: Qmp, pattern: int, offset: int, length: int):
    out = await qemu_io(qmp, f"write -P {pattern:#x} {offset} {length}")
    assert f"wrote {length}/{length} bytes at offset {offset}" in out, out


async def export_bytes(url: str) -> bytes:
    """The export's whole content, read by qemu-img from the NBD URL."""
    sock, name = url.removeprefix("nbd:unix:").split(":exportname=")
    dest = Path(sock).with_name("export.raw")
    await asyncio.to_thread(subprocess.run, [
        "qemu-img", "convert", "-f", "raw", "-O", "raw",
        f"nbd+unix:///{name}?socket={sock}", dest], check=True, capture_output=True)
    try:
        return dest.read_bytes()
    finally:
        dest.unlink()


def dirty_ranges(url: str) -> list[tuple[int, int]]:
    """Dirty extents as imageio's NBD client sees them (the ticket's `dirty`)."""
    from ovirt_imageio._internal import nbd
    c = nbd.open(urllib.parse.urlparse(url), dirty=True)
    try:
        assert c.dirty_bitmap, "the export has no dirty bitmap"
        out, off = [], 0
        for ext in c.extents(0, SIZE)[c.dirty_bitmap]:
            if ext.flags & nbd.EXTENT_DIRTY:
                out.append((off, ext.length))
            off += ext.length
        return out
    finally:
        c.close()


def expected(base: bytes, *writes) -> bytes:
    b = bytearray(base)
    for pattern, off, length in writes:
        b[off:off + length] = bytes([pattern]) * length
    return bytes(b)


async def test_full_and_incremental_point_in_time(vm):
    tmp, disk = vm
    base = b"\x11" * SIZE
    async with Qmp(tmp / "qmp.sock") as qmp:
        await guest_write(qmp, 0x22, 1 * MiB, 64 * 1024)
        t0 = expected(base, (0x22, MiB, 65536))
        lb = await live_backup.begin(qmp, "b1", {"d1": "disk0"}, {"d1": SIZE},
                                     scratch_dir=tmp / "scratch", sock=tmp / "nbd.sock",
                                     to_checkpoint="cp1", from_checkpoint=None)
        assert lb.disks["d1"]["bitmap"] is None
        # The guest keeps writing over the backed-up range and elsewhere.
        await guest_write(qmp, 0x33, 1 * MiB, 128 * 1024)
        await guest_write(qmp, 0x44, 8 * MiB, 4096)
        got = await export_bytes(lb.url("d1"))
        assert hashlib.sha256(got).hexdigest() == hashlib.sha256(t0).hexdigest()
        assert "cp1" in await qmp.bitmaps("disk0")
        await live_backup.end(qmp, lb)
        assert not (tmp / "scratch" / "b1-d1.scratch.qcow2").exists()
        nodes = await qmp.named_nodes()
        assert not [n for n in nodes if n.startswith("fleece-")]
        assert await qmp.execute("query-jobs") == []

        t1 = expected(t0, (0x33, MiB, 131072), (0x44, 8 * MiB, 4096))
        await guest_write(qmp, 0x55, 12 * MiB, 65536)
        t1 = expected(t1, (0x55, 12 * MiB, 65536))
        lb = await live_backup.begin(qmp, "b2", {"d1": "disk0"}, {"d1": SIZE},
                                     scratch_dir=tmp / "scratch", sock=tmp / "nbd.sock",
                                     to_checkpoint="cp2", from_checkpoint="cp1")
        assert lb.disks["d1"]["bitmap"]
        await guest_write(qmp, 0x66, 12 * MiB, 65536)
        await guest_write(qmp, 0x77, 2 * MiB, 65536)
        got = await export_bytes(lb.url("d1"))
        assert got == t1
        # Dirty since cp1, frozen at the point in time: the guest's later writes
        # (2 MiB) are not in it; cluster granularity is 64 KiB.
        dirty = await asyncio.to_thread(dirty_ranges, lb.url("d1"))
        assert dirty == [(MiB, 131072), (8 * MiB, 65536), (12 * MiB, 65536)]
        await live_backup.end(qmp, lb)
        assert set(await qmp.bitmaps("disk0")) >= {"cp1", "cp2"}
        await qmp.execute("quit")
    # The checkpoints' bitmaps were stored in the image when qemu closed it.
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", "-U", disk],
                                     check=True, capture_output=True, text=True).stdout)
    names = {b["name"] for b in info["format-specific"]["data"].get("bitmaps", [])}
    assert names == {"cp1", "cp2"}


async def test_begin_failure_undoes_everything(vm):
    tmp, _ = vm
    async with Qmp(tmp / "qmp.sock") as qmp:
        with pytest.raises(QmpError):
            await live_backup.begin(qmp, "b1", {"d1": "disk0", "d2": "no-such-node"},
                                    {"d1": SIZE, "d2": SIZE}, scratch_dir=tmp / "scratch",
                                    sock=tmp / "nbd.sock", to_checkpoint="cp1",
                                    from_checkpoint=None)
        assert not [n for n in await qmp.named_nodes() if n.startswith("fleece-")]
        assert await qmp.execute("query-jobs") == []
        assert list((tmp / "scratch").iterdir()) == []
        assert "cp1" not in await qmp.bitmaps("disk0")


async def test_live_snapshot_carries_bitmaps_and_merges(vm):
    tmp, disk = vm
    async with Qmp(tmp / "qmp.sock") as qmp:
        await qmp.execute("block-dirty-bitmap-add", {"node": "disk0", "name": "cp1",
                                                     "persistent": True})
        overlay = tmp / "overlay.qcow2"
        await live_backup.snapshot(qmp, "disk0", overlay, "disk1", disk.name, "qcow2", SIZE)
        await qmp.execute("block-dirty-bitmap-add", {"node": "disk1", "name": "cp2",
                                                     "persistent": True})
        await guest_write(qmp, 0x99, 4 * MiB, 65536)
        blk = {b["qdev"]: b for b in await qmp.execute("query-block")}
        ins = blk["/machine/peripheral/vda/virtio-backend"]["inserted"]
        assert ins["node-name"] == "disk1"
        assert ins["image"]["backing-image"]["filename"] == str(disk)
        assert sorted(await qmp.bitmaps("disk1")) == ["cp1", "cp2"]
        assert await live_backup.node_of(qmp, overlay) == "disk1"
        # The write went to the overlay: the frozen volume still holds 0x11.
        out = subprocess.run(["qemu-io", "-U", "-f", "qcow2", "-r", "-c",
                              f"read -P 0x11 {4 * MiB} 65536", disk],
                             capture_output=True, text=True)
        assert "Pattern verification failed" not in out.stdout, out.stdout
        # Live merge of the active overlay into its base.
        await live_backup.commit(qmp, "disk1", "disk1", "disk0", "commit-1")
        blk = {b["qdev"]: b for b in await qmp.execute("query-block")}
        assert blk["/machine/peripheral/vda/virtio-backend"]["inserted"]["node-name"] == "disk0"
        assert "disk1" not in await qmp.named_nodes()
        # Both checkpoints' bitmaps now on the base, the write recorded in both.
        bm = {b["name"]: b["count"] for b in (await qmp.named_nodes())["disk0"]["dirty-bitmaps"]}
        assert bm == {"cp1": 65536, "cp2": 65536}
        out = await qemu_io(qmp, f"read -P 0x99 {4 * MiB} 65536")
        assert "read 65536/65536" in out and "Pattern verification failed" not in out, out


async def test_freeze_without_agent_is_unavailable(vm):
    tmp, _ = vm
    with pytest.raises(AgentUnavailable):
        await live_backup.freeze(tmp / "qga.sock", timeout=1.0)
    with pytest.raises(AgentUnavailable):
        await live_backup.freeze(None)
