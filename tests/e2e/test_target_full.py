"""A backup target on a small file system that fills up (issue 9).

The target is a 64 MiB tmpfs mounted under the sandbox's target directory (a
store path the sandbox's movers accept), mostly taken by a filler file, and used
as a path target by an orchestrator of its own. The backup of a VM with 40 MiB
of fresh random data does not fit: it fails naming "is full" with the free
bytes (`TargetFull`, from the mover over its API), publishes no manifest (no
half-written backup for a restore, `import` or `verify` to find), and leaves
nothing in the engine. Once the filler is removed the next backup succeeds and
restores byte-identical.

Needs root (mount); skipped otherwise.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.helpers import Orchestrator

pytestmark = pytest.mark.e2e

SIZE_MIB = 64
FILLER_MIB = 44
DATA_MIB = 40


@pytest.fixture(scope="module")
def small_target(sandbox):
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    mnt = Path(sandbox.info["target"]["path"]) / f"small-{uuid.uuid4().hex[:8]}"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE_MIB}m,mode=0755", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        mnt.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
        mnt.rmdir()


@pytest.fixture(scope="module")
def orch(sandbox, state_root, small_target):
    # the sandbox as `ovault serve --sandbox` reads it, with the small target
    d = state_root / "small-target-sandbox"
    d.mkdir(exist_ok=True)
    info = json.loads((sandbox.dir / "sandbox.json").read_text())
    info["target"] = {"nfs_url": None, "path": str(small_target)}
    (d / "sandbox.json").write_text(json.dumps(info))
    o = Orchestrator(d, state_root / "target-full").start()
    yield o
    o.stop()


def _manifests(root: Path, vm_id: str) -> list[Path]:
    return sorted((root / "vms" / vm_id).glob("*/manifest.json")) if (root / "vms" / vm_id).exists() else []


@pytest.fixture
def fresh_vm(conn):
    """A VM of its own with one empty 64 MiB disk: the session's sample VMs carry whatever
    data earlier tests wrote, which would not fit the small target even once it is freed."""
    from ovirtsdk4 import types
    s = conn.system_service()
    name = f"target-full-{uuid.uuid4().hex[:8]}"
    vm = s.vms_service().add(types.Vm(name=name, cluster=types.Cluster(name="Default"),
                                      template=types.Template(name="Blank"), memory=1 << 30))
    vsvc = s.vms_service().vm_service(vm.id)
    try:
        att = vsvc.disk_attachments_service().add(types.DiskAttachment(
            disk=types.Disk(name=f"{name}-disk", format=types.DiskFormat.COW, sparse=True,
                            provisioned_size=64 << 20, storage_domains=[types.StorageDomain(name="data")]),
            interface=types.DiskInterface.VIRTIO, bootable=True, active=True))
        dsvc = s.disks_service().disk_service(att.disk.id)
        deadline = time.monotonic() + 60
        while dsvc.get().status != types.DiskStatus.OK:
            assert time.monotonic() < deadline, "the new disk did not become OK"
            time.sleep(0.5)
        yield {"id": vm.id, "name": name}
    finally:
        vsvc.remove()  # with its disks, as the engine does by default


def test_a_full_target_fails_with_the_numbers_then_works_once_space_is_freed(
        sandbox, orch, small_target, conn, fresh_vm, no_leftovers):
    vm = fresh_vm
    (att,) = conn.system_service().vms_service().vm_service(vm["id"]).disk_attachments_service().list()
    filler = small_target / "filler"
    with open(filler, "wb") as f:
        for _ in range(FILLER_MIB):
            f.write(os.urandom(1 << 20))
    sandbox.write(vm["id"], 0, DATA_MIB << 20, pattern="random", seed=91, disk_id=att.disk.id)
    want = sandbox.digest(att.disk.id)

    j = orch.wait_job(orch.backup([vm["id"]], "full")["id"], timeout=300)
    m = j["machines"][0]
    assert (j["state"], m["state"]) == ("failed", "failed"), j
    err = m["error"]
    assert "is full" in err and "No space left on device" in err, err
    free = int(re.search(r"\((\d+) bytes free\)", err).group(1))  # the numbers are there
    assert 0 <= free < (SIZE_MIB - FILLER_MIB) << 20, err
    assert "Internal error" not in err and "see the mover log" not in err
    # nothing half-published: no manifest, the catalog row failed, nothing restorable
    assert _manifests(small_target, vm["id"]) == []
    rows = orch.backups(vm["id"])
    assert [r["status"] for r in rows] == ["failed"], rows

    filler.unlink()
    ok = orch.wait_job(orch.backup([vm["id"]], "full")["id"], timeout=300)
    assert ok["state"] == "succeeded", ok
    bid = ok["machines"][0]["backup_id"]
    assert [p.parent.name for p in _manifests(small_target, vm["id"])] == [bid]
    r = orch.wait_job(orch.restore(bid, kind="disks", disk_ids=[att.disk.id])["id"], timeout=300)
    assert r["state"] == "succeeded", r
    (floating,) = [d for d in conn.system_service().disks_service().list()
                   if d.description and bid in d.description]
    try:
        assert sandbox.digest(floating.id) == want
    finally:
        conn.system_service().disks_service().disk_service(floating.id).remove()
