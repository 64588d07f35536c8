"""The copy engine in direct mode against a real ovirt-imageio daemon and qemu-nbd."""
from __future__ import annotations

import os
import subprocess
import uuid

import pytest

from bench.lab import ImageioLab, image_sha256, qemu_io
from imageio_ext.copy import DirtyExtentsUnavailable, TransferNotFound, run_copy
from imageio_ext.store import Store

pytestmark = pytest.mark.integration
MiB = 1 << 20
SIZE = 256 * MiB


@pytest.fixture
async def lab(tmp_path):
    lab = await ImageioLab(tmp_path / "lab").start()
    yield lab
    await lab.stop()


async def test_full_incremental_restore_over_https_and_unix_socket(lab, tmp_path):
    disk = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), str(SIZE)], check=True)
    rnd = tmp_path / "rnd"
    rnd.write_bytes(os.urandom(8 * MiB))
    # slots 0-1 random; slot 16 all 0x61; slot 17 half 0x61 half unallocated; 100M: zero clusters
    qemu_io(disk, "qcow2", f"write -s {rnd} 0 8M", "write -P 0x61 64M 6M", "write -z 100M 4M")
    (tmp_path / "target").mkdir()
    store_url = str(tmp_path / "target")
    async with await Store.open(store_url, create=True):
        pass
    vm, b1, b2, d = (str(uuid.uuid4()) for _ in range(4))
    spec = dict(op="backup", store=store_url, vm_id=vm, disk_id=d, size=SIZE, ca_file=lab.ca)

    # full, over HTTPS (no local socket given)
    t = await lab.transfer(disk, "qcow2", SIZE)
    r1 = await run_copy({**spec, "backup_id": b1, "transfer_url": t.url})
    assert r1.transport == "https"
    assert r1.bytes_read == 8 * MiB + 4 * MiB + 2 * MiB  # data only; slot 17's zero half is not read
    assert r1.new_chunks == 4 and r1.bytes_zeroed == SIZE - 4 * 4 * MiB
    async with await Store.open(store_url) as st:
        await st.publish_backup(vm, b1, [r1.disk])
    with pytest.raises(DirtyExtentsUnavailable):  # this ticket has no dirty=true
        await run_copy({**spec, "backup_id": str(uuid.uuid4()), "transfer_url": t.url, "parent_backup_id": b1,
                        "incremental": True})
    await lab.close_transfer(t)
    full_sha = image_sha256(disk, "qcow2")

    # a checkpoint, then a guest write
    subprocess.run(["qemu-img", "bitmap", "--add", str(disk), "cp1"], check=True)
    qemu_io(disk, "qcow2", "write -P 0x62 200M 1M")
    inc_sha = image_sha256(disk, "qcow2")
    assert inc_sha != full_sha

    # incremental, over the daemon's local unix socket
    t = await lab.transfer(disk, "qcow2", SIZE, bitmap="cp1")
    r2 = await run_copy({**spec, "backup_id": b2, "transfer_url": t.url, "parent_backup_id": b1,
                         "incremental": True}, local_socket=lab.local_socket)
    await lab.close_transfer(t)
    assert r2.transport == "unix" and r2.incremental
    assert r2.bytes_read == 1 * MiB and r2.new_chunks == 1
    assert r2.bytes_unchanged == SIZE - 4 * MiB
    async with await Store.open(store_url) as st:
        await st.publish_backup(vm, b2, [r2.disk], parent_id=b1)
        assert await (await st.open_disk(vm, b2, d)).sha256() == inc_sha

    # restore into a fresh qcow2 through a writable transfer
    out = tmp_path / "restored.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(out), str(SIZE)], check=True)
    t = await lab.transfer(out, "qcow2", SIZE, write=True)
    r3 = await run_copy({"op": "restore", "store": store_url, "vm_id": vm, "backup_id": b2, "disk_id": d,
                         "transfer_url": t.url, "ca_file": lab.ca}, local_socket=lab.local_socket)
    await lab.close_transfer(t)
    assert r3.transport == "unix"
    assert r3.bytes_written == 5 * 4 * MiB and r3.bytes_zeroed == SIZE - 5 * 4 * MiB
    assert image_sha256(out, "qcow2") == inc_sha
    # a ticket that is gone is a clear error, not a hang
    with pytest.raises(TransferNotFound):
        await run_copy({**spec, "backup_id": str(uuid.uuid4()), "transfer_url": t.url})
