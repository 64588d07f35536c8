"""An encrypted store end to end through the sandbox's real movers: the key travels
with each copy request (as the orchestrator sends it), a missing or wrong key is
named, and a full backup restores byte-identical into a new disk."""
from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import ovirtsdk4.types as types
import pytest

from imageio_ext.store import Store, StoreKey
from tests.e2e.test_mover import finalize, mover_for, open_transfer, vm_disks
from tests.helpers import wait

pytestmark = pytest.mark.e2e


@pytest.fixture
def enc_store(sandbox):
    t = sandbox.info["target"]
    name = f"mover-enc-{uuid.uuid4().hex[:8]}"
    local = Path(t["path"]) / name
    local.mkdir(parents=True)
    key = StoreKey.generate()

    async def init():
        async with await Store.open(local, create=True, key=key, encrypt=True):
            pass
    asyncio.run(init())
    url = f"{t['nfs_url']}/{name}" if t.get("nfs_url") else str(local)
    return url, local, key


def _in_store(local, key, fn):
    async def go():
        async with await Store.open(local, key=key) as st:
            return await fn(st)
    return asyncio.run(go())


def test_encrypted_backup_and_restore_through_the_mover(conn, sandbox, enc_store, no_leftovers):
    store_url, local, key = enc_store
    vm = sandbox.vm("db-primary")
    boot = next(d for a, d in vm_disks(conn, vm["id"]) if a.bootable)
    digest = sandbox.digest(boot.id)
    bs = conn.system_service().vms_service().vm_service(vm["id"]).backups_service()
    b = bs.add(types.Backup(disks=[types.Disk(id=boot.id)]))
    bsvc = bs.backup_service(b.id)
    wait(lambda: bsvc.get().phase == types.BackupPhase.READY, what="backup ready")
    try:
        t, tsvc = open_transfer(conn, types.ImageTransferDirection.DOWNLOAD, disk=boot.id, backup=b.id)
        try:
            mover = mover_for(sandbox, t.host.id)
            spec = dict(op="backup", transfer_url=t.transfer_url, store=store_url, vm_id=vm["id"],
                        disk_id=boot.id, size=boot.provisioned_size)
            end, _ = mover.run(**spec, backup_id=str(uuid.uuid4()), store_key=StoreKey.generate().hex())
            assert end["state"] == "failed" and end["error"]["code"] == "store_key_wrong", end
            end, _ = mover.run(**spec, backup_id=str(uuid.uuid4()))
            assert end["state"] == "failed" and end["error"]["code"] == "store_key_missing", end
            assert key.fingerprint in end["error"]["message"]
            end, lines = mover.run(**spec, backup_id=b.id, store_key=key.hex())
            assert end["state"] == "succeeded", end
            assert all(key.hex() not in str(line) for line in lines)
        finally:
            finalize(tsvc)
    finally:
        bsvc.finalize()
        wait(lambda: bsvc.get().phase in (types.BackupPhase.SUCCEEDED, types.BackupPhase.FAILED))

    async def publish_and_digest(st):
        await st.publish_backup(vm["id"], b.id, [end["result"]["disk"]])
        return await (await st.open_disk(vm["id"], b.id, boot.id)).sha256()
    assert _in_store(local, key, publish_and_digest) == digest

    disks = conn.system_service().disks_service()
    new = disks.add(types.Disk(name=f"restored-enc-{boot.id[:8]}", format=types.DiskFormat.COW, sparse=True,
                               provisioned_size=boot.provisioned_size,
                               storage_domains=[types.StorageDomain(name="data")]))
    wait(lambda: disks.disk_service(new.id).get().status == types.DiskStatus.OK)
    try:
        t, svc = open_transfer(conn, types.ImageTransferDirection.UPLOAD, disk=new.id)
        try:
            end, _ = mover_for(sandbox, t.host.id).run(
                op="restore", transfer_url=t.transfer_url, store=store_url, vm_id=vm["id"], backup_id=b.id,
                disk_id=boot.id, size=boot.provisioned_size, store_key=key.hex())
        finally:
            finalize(svc)
        assert end["state"] == "succeeded", end
        assert sandbox.digest(new.id) == digest
    finally:
        disks.disk_service(new.id).remove()
