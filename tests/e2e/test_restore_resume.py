"""Issue 9 acceptance, restore side: the imageio daemon of the host serving a
restore's upload is restarted in the middle of it (it forgets the ticket); the
engine pauses the upload, ovault finalizes it and writes the disk again on a
new transfer into the same disk (statemachines/resume.py). The restored disk
holds the backed-up bytes and nothing stays in the engine."""
from __future__ import annotations

import json

import pytest
from ovirtsdk4 import types

from tests.helpers import Orchestrator, wait

pytestmark = pytest.mark.e2e
MiB = 1 << 20
SIZE = 400 * MiB


@pytest.fixture(scope="module")
def orch(sandbox, state_root):
    o = Orchestrator(sandbox.dir, state_root / "restore-resume").start()
    yield o
    o.stop()


def _boot_disk(conn, vm_id):
    atts = conn.system_service().vms_service().vm_service(vm_id).disk_attachments_service().list()
    return next(a for a in atts if a.bootable).disk.id


def _restart_imageio_mid_upload(orch, sandbox, conn, job_id) -> str:
    """Once the upload has moved 64 MiB but not all, restart the imageio daemon
    of its host; returns the interrupted transfer's id."""
    def uploading():
        m = orch.job(job_id)["machines"][0]
        ts = [t for t in conn.system_service().image_transfers_service().list()
              if t.direction == types.ImageTransferDirection.UPLOAD
              and t.phase == types.ImageTransferPhase.TRANSFERRING]
        return ts[0] if ts and 64 * MiB <= (m.get("bytes_done") or 0) < (m.get("bytes_total") or 1) \
            else None
    t = wait(uploading, timeout=120, what="an upload under way")
    sandbox.fault(kind="imageio", host_id=t.host.id, action="restart")
    return t.id


def _resumed(orch, job_id) -> list[dict]:
    return [json.loads(line) for line in (orch.state_dir / "serve.log").read_text().splitlines()
            if job_id in line and "resuming the disk on a new transfer" in line]


@pytest.fixture(scope="module")
def backed_up(orch, sandbox, conn_module):
    """A backup of db-primary whose boot disk holds 400 MiB of random data."""
    vm = sandbox.vm("db-primary")
    disk_id = _boot_disk(conn_module, vm["id"])
    sandbox.write(vm["id"], 0, SIZE, pattern="random", disk_id=disk_id)
    want = sandbox.digest(disk_id)
    j = orch.wait_job(orch.backup([vm["id"]], "full")["id"], timeout=300)
    assert j["state"] == "succeeded", j
    return vm, disk_id, want, j["machines"][0]["backup_id"]


@pytest.fixture(scope="module")
def conn_module(sandbox):
    c = sandbox.connect()
    yield c
    c.close()


def test_imageio_restarted_mid_upload_restore_as_new_disk_completes(orch, sandbox, conn, backed_up,
                                                                    no_leftovers):
    vm, disk_id, want, bid = backed_up
    job = orch.restore(bid, kind="disks", disk_ids=[disk_id])
    first = _restart_imageio_mid_upload(orch, sandbox, conn, job["id"])
    j = orch.wait_job(job["id"], timeout=300)
    assert j["state"] == "succeeded", j
    (r,) = _resumed(orch, job["id"])
    assert r["disk_id"] == disk_id and r["transfer_id"] == first, r
    assert 64 * MiB <= r["bytes_done"] < SIZE, r
    floating = [d for d in conn.system_service().disks_service().list()
                if d.description and bid in d.description]
    assert len(floating) == 1, [(d.id, d.alias) for d in floating]
    try:
        d = floating[0]
        assert d.status == types.DiskStatus.OK
        assert sandbox.digest(d.id) == want
        # both uploads into it ended well (the interrupted one finalized, not canceled)
        phases = [t.phase for t in conn.system_service().image_transfers_service().list()
                  if t.disk is not None and t.disk.id == d.id]
        assert set(phases) <= {types.ImageTransferPhase.FINISHED_SUCCESS}, phases
    finally:
        conn.system_service().disks_service().disk_service(floating[0].id).remove()


def test_imageio_restarted_mid_upload_in_place_restore_completes(orch, sandbox, conn, backed_up,
                                                                 no_leftovers):
    vm, disk_id, want, bid = backed_up
    vms = conn.system_service().vms_service().vm_service(vm["id"])
    sandbox.write(vm["id"], 0, 8 * MiB, pattern=0xEE, disk_id=disk_id)  # the guest wrecks it
    assert sandbox.digest(disk_id) != want
    vms.stop()
    wait(lambda: vms.get().status == types.VmStatus.DOWN, timeout=120, what="the VM down")
    try:
        job = orch.restore(bid, kind="in_place")
        _restart_imageio_mid_upload(orch, sandbox, conn, job["id"])
        j = orch.wait_job(job["id"], timeout=300)
        assert j["state"] == "succeeded", j
        assert len(_resumed(orch, job["id"])) == 1
        # the VM's own disk, still attached (the broken upload was finalized, not canceled)
        assert _boot_disk(conn, vm["id"]) == disk_id
        d = conn.system_service().disks_service().disk_service(disk_id).get()
        assert d.status == types.DiskStatus.OK
        assert sandbox.digest(disk_id) == want
    finally:
        vms.start()
        wait(lambda: vms.get().status == types.VmStatus.UP, timeout=120, what="the VM up")


def test_sandbox_engine_upload_that_lost_its_ticket(sandbox, conn, no_leftovers):
    """What the resume above builds on, through the SDK: a restarted daemon's
    upload is paused by the system; `resume` is accepted but adds no ticket
    (paused again); `finalize` of the paused upload keeps the disk; a new upload
    into it works; canceling an upload removes its disk."""
    disks = conn.system_service().disks_service()
    new = disks.add(types.Disk(name="resume-probe", format=types.DiskFormat.COW, sparse=True,
                               provisioned_size=64 * MiB,
                               storage_domains=[types.StorageDomain(name="data")]))
    dsvc = disks.disk_service(new.id)
    wait(lambda: dsvc.get().status == types.DiskStatus.OK, what="the new disk")
    ts = conn.system_service().image_transfers_service()

    def upload():
        t = ts.add(types.ImageTransfer(disk=types.Disk(id=new.id), format=types.DiskFormat.RAW,
                                       direction=types.ImageTransferDirection.UPLOAD))
        svc = ts.image_transfer_service(t.id)
        wait(lambda: svc.get().phase == types.ImageTransferPhase.TRANSFERRING, what="transferring")
        return svc.get(), svc

    def phase_is(svc, phase):
        return lambda: svc.get().phase == phase
    t, svc = upload()
    try:
        sandbox.fault(kind="imageio", host_id=t.host.id, action="restart")
        wait(phase_is(svc, types.ImageTransferPhase.PAUSED_SYSTEM), what="paused by the system")
        svc.resume()  # accepted: the phase is resuming when it answers (an error otherwise)
        # the daemon still lacks the ticket: the engine pauses the upload again
        wait(phase_is(svc, types.ImageTransferPhase.PAUSED_SYSTEM), what="paused again")
        svc.finalize()
        wait(phase_is(svc, types.ImageTransferPhase.FINISHED_SUCCESS), what="finalized")
        assert dsvc.get().status == types.DiskStatus.OK
        t, svc = upload()  # a new upload into the same disk
        svc.cancel()
        wait(phase_is(svc, types.ImageTransferPhase.FINISHED_CLEANUP), what="canceled")
        wait(lambda: new.id not in {d.id for d in disks.list()}, what="the canceled upload's disk removed")
    finally:
        if new.id in {d.id for d in disks.list()}:
            cur = svc.get()
            if cur.phase not in (types.ImageTransferPhase.FINISHED_SUCCESS,
                                 types.ImageTransferPhase.FINISHED_CLEANUP):
                svc.finalize()
                wait(phase_is(svc, types.ImageTransferPhase.FINISHED_SUCCESS), what="finalized")
            dsvc.remove()
