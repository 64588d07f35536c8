"""The SDK's own example scripts, unchanged, against the sandbox.

They come from the ovirt-engine-sdk-python source distribution (fetched by
scripts/setup.sh into .cache/sdk) and read their connection from
~/.config/ovirt.conf, so each run gets a HOME of its own.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import ovirtsdk4.types as types
import pytest
from ovirt_imageio import client

from tests.helpers import allocated_ranges, image_digest, wait

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
MiB = 1 << 20


def examples_dir() -> Path:
    found = sorted(ROOT.glob(".cache/sdk/ovirt_engine_sdk_python-*/examples"))
    if not found:
        pytest.fail("SDK examples missing: run scripts/setup.sh (./dev test does)")
    return found[-1]


@pytest.fixture
def example(sandbox, tmp_path):
    home = tmp_path / "home"
    (home / ".config").mkdir(parents=True)
    e = sandbox.engine
    (home / ".config" / "ovirt.conf").write_text(
        f"[sb]\nengine_url = {e['url']}\nusername = {e['username']}\npassword = {e['password']}\n"
        f"cafile = {e['ca_file']}\n")

    def run(script, *args, timeout=180) -> str:
        p = subprocess.run([sys.executable, script, "-c", "sb", *map(str, args)],
                           cwd=examples_dir(), env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
                           capture_output=True, text=True, timeout=timeout)
        assert p.returncode == 0, f"{script} failed:\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
        return p.stdout
    return run


def disk_of(conn, vm_id, bootable=True):
    s = conn.system_service()
    for a in s.vms_service().vm_service(vm_id).disk_attachments_service().list():
        if bool(a.bootable) == bootable:
            return s.disks_service().disk_service(a.disk.id).get()


def test_list_storage_domains(example):
    out = json.loads(example("list_storage_domains.py"))
    assert [(x["name"], x["type"]) for x in out] == [("data", "data")]


def test_add_and_delete_disks(example, conn, no_leftovers):
    out = example("add_disks.py", "--sd-name", "data", "--count", "2", "--size", str(64 * MiB),
                  "--format", "qcow2", "--sparse")
    ids = re.findall(r"Created disk \d+ id=(\S+)", out)
    assert len(ids) == 2 and "All disks are ready" in out
    disks = conn.system_service().disks_service()
    assert all(disks.disk_service(i).get().status == types.DiskStatus.OK for i in ids)
    out = example("delete_disks.py", "--sd-name", "data", "--description", "Created by add_disks.py")
    assert "All disks were removed" in out
    assert not [d for d in disks.list() if d.id in ids]


def test_download_upload_checksum(example, sandbox, conn, tmp_path, no_leftovers):
    disk = disk_of(conn, sandbox.vm("legacy-erp")["id"])
    example("download_disk.py", disk.id, tmp_path / "d.qcow2", "-f", "qcow2")
    assert image_digest(tmp_path / "d.qcow2") == sandbox.digest(disk.id)
    remote = json.loads(example("checksum_disk.py", disk.id))
    assert remote == client.checksum(str(tmp_path / "d.qcow2"))
    out = example("upload_disk.py", "--sd-name", "data", "--disk-format", "qcow2", "--disk-sparse",
                  "--enable-backup", tmp_path / "d.qcow2")
    new_id = re.search(r"Disk ID: (\S+)", out).group(1)
    assert sandbox.digest(new_id) == sandbox.digest(disk.id)
    new = conn.system_service().disks_service().disk_service(new_id)
    assert new.get().backup == types.DiskBackup.INCREMENTAL
    new.remove()


def test_backup_vm_full_incremental_and_checkpoints(example, sandbox, conn, tmp_path, no_leftovers):
    vm = sandbox.vm("db-primary")
    boot = disk_of(conn, vm["id"])
    bdir = tmp_path / "backups"
    bdir.mkdir()
    before = sandbox.digest(boot.id)
    example("backup_vm.py", "full", vm["id"], "--backup-dir", bdir)
    (full,) = [f for f in bdir.glob(f"*.{boot.id}.full.qcow2")]
    assert image_digest(full) == before
    checkpoint = full.name.split(".")[1]
    sandbox.write(vm["id"], 700 * MiB, 2 * MiB, pattern="random", disk_id=boot.id, seed=3)
    after = sandbox.digest(boot.id)
    example("backup_vm.py", "incremental", vm["id"], "--from-checkpoint-uuid", checkpoint,
            "--backup-dir", bdir)
    (inc,) = [f for f in bdir.glob(f"*.{boot.id}.incremental.qcow2")]
    assert allocated_ranges(inc) == [(700 * MiB, 702 * MiB)]
    assert image_digest(inc) == after
    listed = example("checkpoints.py", "list", vm["id"])
    assert checkpoint in listed
    cps = conn.system_service().vms_service().vm_service(vm["id"]).checkpoints_service()
    oldest = cps.list()[0].id  # the engine removes checkpoints from the root of the chain
    example("checkpoints.py", "remove", vm["id"], oldest)
    assert oldest not in [c.id for c in cps.list()]


def test_snapshot_examples(example, sandbox, conn, tmp_path, no_leftovers):
    vm = sandbox.vm("legacy-erp")
    disk = disk_of(conn, vm["id"])
    snaps = conn.system_service().vms_service().vm_service(vm["id"]).snapshots_service()
    before = sandbox.digest(disk.id)
    snap = snaps.add(types.Snapshot(description="for examples", persist_memorystate=False))
    wait(lambda: snaps.snapshot_service(snap.id).get().snapshot_status == types.SnapshotStatus.OK)
    try:
        chain = json.loads(example("list_disk_snapshots.py", disk.id))
        assert len(chain) == 2 and chain[0]["parent"] is None
        base = chain[0]["id"]
        sandbox.write(vm["id"], 64 * MiB, MiB, pattern=0x77)
        example("download_disk_snapshot.py", "data", base, tmp_path / "s.qcow2")
        assert image_digest(tmp_path / "s.qcow2") == before
    finally:
        snaps.snapshot_service(snap.id).remove()
        wait(lambda: len(snaps.list()) == 1, what="snapshot removed")


def test_cancel_transfer(sandbox, conn, tmp_path, no_leftovers):
    """cancel_transfer.py takes its connection from arguments, not ovirt.conf."""
    vm = sandbox.vm("legacy-erp")
    disk = disk_of(conn, vm["id"])
    ts = conn.system_service().image_transfers_service()
    t = ts.add(types.ImageTransfer(disk=types.Disk(id=disk.id),
                                   direction=types.ImageTransferDirection.DOWNLOAD,
                                   format=types.DiskFormat.RAW))
    svc = ts.image_transfer_service(t.id)
    wait(lambda: svc.get().phase == types.ImageTransferPhase.TRANSFERRING)
    svc.pause()
    e = sandbox.engine
    (tmp_path / "pw").write_text(e["password"] + "\n")
    p = subprocess.run([sys.executable, "cancel_transfer.py", "--engine-url", e["url"],
                        "--username", e["username"], "--password-file", tmp_path / "pw",
                        "-c", e["ca_file"], t.id], cwd=examples_dir(), capture_output=True,
                       text=True, timeout=60, env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert p.returncode == 0 and "Transfer cancelled" in p.stdout, p.stderr[-2000:]
    wait(lambda: svc.get().phase == types.ImageTransferPhase.FINISHED_CLEANUP)
    assert conn.system_service().disks_service().disk_service(disk.id).get().status == types.DiskStatus.OK


def test_reduce_disk_fails_like_on_a_file_domain(sandbox, conn, tmp_path, example):
    """reduce_disk.py needs a block storage domain: on the sandbox's file (NFS-like)
    domain the engine refuses it, as a real one does."""
    disk = disk_of(conn, sandbox.vm("db-primary")["id"])
    with pytest.raises(AssertionError) as err:
        example("reduce_disk.py", disk.id)
    assert "not supported for file storage domains" in str(err.value)
    assert "409" in str(err.value)
