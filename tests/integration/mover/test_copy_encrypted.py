"""An encrypted (format 2) store end to end through a real ovirt-imageio daemon and
qemu: full and incremental backups, a byte-identical restore, and the target
holding no plaintext of the disk."""
from __future__ import annotations

import os
import subprocess
import uuid

import pytest

from bench.lab import ImageioLab, image_sha256, qemu_io
from imageio_ext.copy import run_copy
from imageio_ext.store import Store, StoreKey, StoreKeyMissing

pytestmark = pytest.mark.integration
MiB = 1 << 20
SIZE = 64 * MiB


@pytest.fixture
async def lab(tmp_path):
    lab = await ImageioLab(tmp_path / "lab").start()
    yield lab
    await lab.stop()


def _target_bytes(root) -> bytes:
    out = []
    for dirpath, _, files in os.walk(root):
        for f in files:
            with open(os.path.join(dirpath, f), "rb") as fh:
                out.append(fh.read())
    return b"".join(out)


async def test_encrypted_full_incremental_restore_byte_identical(lab, tmp_path):
    disk = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), str(SIZE)], check=True)
    marker = b"OVAULT-PLAINTEXT-MARKER-" * 4096  # compressible, easy to spot
    (tmp_path / "text").write_bytes(marker[: 2 * MiB])
    (tmp_path / "rnd").write_bytes(os.urandom(4 * MiB))
    qemu_io(disk, "qcow2", f"write -s {tmp_path / 'text'} 0 2M", f"write -s {tmp_path / 'rnd'} 8M 4M")
    target = tmp_path / "target"
    target.mkdir()
    key = StoreKey.generate()
    vm, b1, b2, d = (str(uuid.uuid4()) for _ in range(4))
    async with await Store.open(str(target), create=True, key=key, encrypt=True) as st:
        spec = dict(op="backup", store=str(target), vm_id=vm, disk_id=d, size=SIZE, ca_file=lab.ca)
        t = await lab.transfer(disk, "qcow2", SIZE)
        r1 = await run_copy({**spec, "backup_id": b1, "transfer_url": t.url}, store=st)
        await lab.close_transfer(t)
        await st.publish_backup(vm, b1, [r1.disk])
        full_sha = image_sha256(disk, "qcow2")

        subprocess.run(["qemu-img", "bitmap", "--add", str(disk), "cp1"], check=True)
        qemu_io(disk, "qcow2", "write -P 0x62 40M 1M")
        inc_sha = image_sha256(disk, "qcow2")
        t = await lab.transfer(disk, "qcow2", SIZE, bitmap="cp1")
        r2 = await run_copy({**spec, "backup_id": b2, "transfer_url": t.url, "parent_backup_id": b1,
                             "incremental": True}, store=st, local_socket=lab.local_socket)
        await lab.close_transfer(t)
        assert r2.incremental and r2.bytes_read == 1 * MiB
        await st.publish_backup(vm, b2, [r2.disk], parent_id=b1)
        assert await (await st.open_disk(vm, b1, d)).sha256() == full_sha
        assert (await st.verify(vm, b1)).ok and (await st.verify(vm, b2)).ok

        out = tmp_path / "restored.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(out), str(SIZE)], check=True)
        t = await lab.transfer(out, "qcow2", SIZE, write=True)
        await run_copy({"op": "restore", "store": str(target), "vm_id": vm, "backup_id": b2, "disk_id": d,
                        "transfer_url": t.url, "ca_file": lab.ca}, store=st, local_socket=lab.local_socket)
        await lab.close_transfer(t)
    assert image_sha256(out, "qcow2") == inc_sha
    on_target = _target_bytes(target)
    assert b"OVAULT-PLAINTEXT-MARKER" not in on_target and vm.encode() not in on_target
    # without the key: named, not mistaken for damage
    async with await Store.open(str(target)) as st:
        with pytest.raises(StoreKeyMissing, match=key.fingerprint):
            await st.open_disk(vm, b2, d)
