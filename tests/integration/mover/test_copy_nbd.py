"""Copies beside imageio (the ticket's NBD export read and written directly) and
sub-chunk incrementals, against a real ovirt-imageio daemon and qemu-nbd."""
from __future__ import annotations

import asyncio
import os
import subprocess
import uuid

import pytest

from bench.lab import ImageioLab, image_sha256, qemu_io
from imageio_ext.copy import ImageioClient, TransferNotFound, run_copy
from imageio_ext.copy.nbd_direct import NbdPool, nbd_unix_url, ticket_info
from imageio_ext.store import Store

pytestmark = pytest.mark.integration
KiB, MiB = 1 << 10, 1 << 20
CS = 1 * MiB  # the store's chunk size: 16 clusters of 64 KiB
SIZE = 24 * MiB + 192 * KiB  # not a multiple of the chunk size


@pytest.fixture
async def lab(tmp_path):
    lab = await ImageioLab(tmp_path / "lab").start()
    yield lab
    await lab.stop()


async def test_control_socket_reports_the_tickets_nbd_url(lab, tmp_path):
    disk = tmp_path / "d.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), str(SIZE)], check=True)
    t = await lab.transfer(disk, "qcow2", SIZE)
    info = await ticket_info(lab.control_socket, t.ticket)
    assert info["uuid"] == t.ticket and info["url"] == t.export.url
    assert nbd_unix_url(info["url"]) == (str(t.export.sock), "")
    assert await ticket_info(lab.control_socket, str(uuid.uuid4())) is None  # unknown ticket
    assert await ticket_info(str(tmp_path / "nope.sock"), t.ticket) is None  # no daemon there
    assert await ticket_info(lab.local_socket, t.ticket) is None  # the data socket has no /tickets
    assert nbd_unix_url("nbd:localhost:10809") is None and nbd_unix_url("file:///x") is None
    await lab.close_transfer(t)


async def test_nbd_pool_pins_ovirt_imageio_nbd_client(lab, tmp_path):
    """The parts of ovirt_imageio._internal.nbd the copy engine relies on."""
    disk = tmp_path / "d.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), str(SIZE)], check=True)
    qemu_io(disk, "qcow2", "write -P 0x33 1M 64k")
    t = await lab.transfer(disk, "qcow2", SIZE, write=True)
    pool = NbdPool(t.export.url, 2, sparse=True)
    try:
        pool.connect()
        assert pool.export_size == SIZE and not pool.read_only and pool.can_zero
        assert pool.read(MiB - 4, 8) == b"\0" * 4 + b"\x33" * 4
        big = os.urandom(40 * MiB)[:SIZE - MiB]  # beyond maximum_block_size (32 MiB) when it exceeds it
        pool.write(MiB, big)
        buf = bytearray(len(big))
        assert pool.readinto(MiB, buf) == len(big) and buf == big
        pool.zero(2 * MiB, 3 * MiB)
        pool.flush()
        assert pool.read(2 * MiB, 3 * MiB) == bytes(3 * MiB)
    finally:
        pool.close()
    # One worker thread, so one reused read buffer: a hole read after a data read must
    # come back as zeros (the client zero-fills hole replies), never the stale bytes.
    one = NbdPool(t.export.url, 1)
    try:
        one.connect()
        loop = asyncio.get_running_loop()
        got = await loop.run_in_executor(one.executor, one.read, MiB, 4 * MiB)
        assert isinstance(got, bytes) and got == big[:MiB] + bytes(3 * MiB)  # data then the zeroed range
        got = await loop.run_in_executor(one.executor, one.read, 6 * MiB, 64 * 1024)
        assert got == big[5 * MiB:5 * MiB + 64 * 1024]
        got = await loop.run_in_executor(one.executor, one.read, 2 * MiB, 3 * MiB)
        assert got == bytes(3 * MiB)
    finally:
        one.close()
        await lab.close_transfer(t)
    want = bytearray(SIZE)
    want[MiB:] = big
    want[2 * MiB:5 * MiB] = bytes(3 * MiB)
    import hashlib
    assert image_sha256(disk, "qcow2") == hashlib.sha256(want).hexdigest()


async def test_full_and_sub_chunk_incremental_beside_imageio_restore_byte_identical(lab, tmp_path):
    disk = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), str(SIZE)], check=True)
    rnd = tmp_path / "rnd"
    rnd.write_bytes(os.urandom(SIZE))
    qemu_io(disk, "qcow2", f"write -s {rnd} 0 {SIZE}")  # every slot holds data
    target = tmp_path / "target"
    target.mkdir()
    async with await Store.open(target, create=True, chunk_size=CS):
        pass
    vm, b1, b2, d = (str(uuid.uuid4()) for _ in range(4))
    spec = dict(op="backup", store=str(target), vm_id=vm, disk_id=d, size=SIZE, ca_file=lab.ca)
    direct = dict(local_socket=lab.local_socket, control_socket=lab.control_socket)

    t = await lab.transfer(disk, "qcow2", SIZE)
    r1 = await run_copy({**spec, "backup_id": b1, "transfer_url": t.url}, **direct)
    await lab.close_transfer(t)
    assert r1.transport == "nbd" and r1.bytes_read == SIZE
    async with await Store.open(target) as st:
        await st.publish_backup(vm, b1, [r1.disk])
        assert await (await st.open_disk(vm, b1, d)).sha256() == image_sha256(disk, "qcow2")

    subprocess.run(["qemu-img", "bitmap", "--add", str(disk), "cp1"], check=True)
    w = tmp_path / "w"
    w.write_bytes(os.urandom(3 * MiB))
    writes = [
        f"write -s {w} {CS - 64 * KiB} 64k",  # the last cluster of slot 0
        f"write -s {w} {2 * CS} 64k",  # the first cluster of slot 2
        f"write -s {w} {5 * CS - 128 * KiB} 256k",  # across slots 4 and 5
        f"write -s {w} {SIZE - 64 * KiB} 64k",  # the disk's last cluster (its short last slot)
        f"write -z {8 * CS + 64 * KiB} 128k",  # zeroed clusters inside slot 8
        f"write -z {10 * CS} {CS}",  # a whole slot zeroed
        f"discard {12 * CS + 192 * KiB} 64k",  # a discarded cluster (reads as zeros)
    ]
    qemu_io(disk, "qcow2", *writes)
    changed = 64 * KiB * 3 + 256 * KiB  # data clusters written (zeroes are not read)
    t = await lab.transfer(disk, "qcow2", SIZE, bitmap="cp1")
    r2 = await run_copy({**spec, "backup_id": b2, "transfer_url": t.url, "parent_backup_id": b1,
                         "incremental": True}, **direct)
    await lab.close_transfer(t)
    assert r2.transport == "nbd" and r2.incremental
    assert r2.bytes_read == changed  # only what changed
    # slots 0, 2, 4, 5, the last one and 8, 12 (zeroed parts) patched from the parent; slot 10 is a zero slot
    assert r2.bytes_from_parent == 7 * CS - (SIZE % CS and CS - SIZE % CS) - changed - 128 * KiB - 64 * KiB
    inc_sha = image_sha256(disk, "qcow2")
    async with await Store.open(target) as st:
        await st.publish_backup(vm, b2, [r2.disk], parent_id=b1)
        assert await (await st.open_disk(vm, b2, d)).sha256() == inc_sha

    # restore beside imageio: NBD writes and zeroes
    out = tmp_path / "restored.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(out), str(SIZE)], check=True)
    t = await lab.transfer(out, "qcow2", SIZE, write=True)
    r3 = await run_copy({"op": "restore", "store": str(target), "vm_id": vm, "backup_id": b2, "disk_id": d,
                         "transfer_url": t.url, "ca_file": lab.ca}, **direct)
    await lab.close_transfer(t)
    assert r3.transport == "nbd"
    assert image_sha256(out, "qcow2") == inc_sha


async def test_falls_back_to_imageio_when_the_control_socket_cannot_help(lab, tmp_path):
    disk = tmp_path / "d.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), str(SIZE)], check=True)
    qemu_io(disk, "qcow2", "write -P 7 0 1M")
    t = await lab.transfer(disk, "qcow2", SIZE)
    for control in (str(tmp_path / "missing.sock"), lab.local_socket):  # absent; the data socket
        async with ImageioClient(t.url, ca_file=lab.ca, local_socket=lab.local_socket,
                                 control_socket=control) as c:
            assert c.transport == "unix"
            assert await c.read(0, 4) == b"\x07" * 4
    # the export exists but cannot be reached (qemu-nbd gone): imageio's path is kept too
    os.chmod(t.export.sock, 0)
    try:
        if os.geteuid() != 0:
            async with ImageioClient(t.url, ca_file=lab.ca, local_socket=lab.local_socket,
                                     control_socket=lab.control_socket) as c:
                assert c.transport == "unix"
    finally:
        os.chmod(t.export.sock, 0o755)
    await lab.close_transfer(t)


async def test_nbd_copy_keeps_the_ticket_active_and_stops_when_it_is_removed(lab, tmp_path):
    disk = tmp_path / "d.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), str(SIZE)], check=True)
    t = await lab.transfer(disk, "qcow2", SIZE)
    async with ImageioClient(t.url, ca_file=lab.ca, local_socket=lab.local_socket,
                             control_socket=lab.control_socket, keepalive=0.2, retries=0) as c:
        assert c.transport == "nbd"
        await asyncio.sleep(1.5)
        info = await ticket_info(lab.control_socket, t.ticket)
        assert info["idle_time"] <= 1  # the OPTIONS requests count as activity
        await lab.daemon.remove_ticket(t.ticket)
        await asyncio.sleep(0.6)
        with pytest.raises(TransferNotFound):
            await c.read(0, 4096)
    await t.export.stop()
    lab.transfers.remove(t)
