"""Issue 3 acceptance: backups and restores end to end on the sandbox, through
`ovault serve` (real PostgreSQL, real movers, real imageio, real qemu)."""
from __future__ import annotations

import time

import ovirtsdk4.types as types
import pytest

from tests.helpers import Orchestrator, wait

pytestmark = pytest.mark.e2e
MiB = 1 << 20


@pytest.fixture(scope="module")
def orch(sandbox, state_root):
    o = Orchestrator(sandbox.dir, state_root / "orch").start()
    yield o
    o.stop()


def disks_of(conn, vm_id):
    s = conn.system_service()
    out = []
    for a in s.vms_service().vm_service(vm_id).disk_attachments_service().list():
        out.append((a, s.disks_service().disk_service(a.disk.id).get()))
    return out


def digests(sandbox, conn, vm_id) -> dict:
    """(bootable, interface, size) -> sha256 of each disk of a VM."""
    return {(bool(a.bootable), str(a.interface), d.provisioned_size): sandbox.digest(d.id)
            for a, d in disks_of(conn, vm_id)}


def vm_by_name(conn, name):
    found = conn.system_service().vms_service().list(search=f"name={name}")
    return found[0] if found else None


def remove_vm(conn, name):
    vm = vm_by_name(conn, name)
    if vm:
        conn.system_service().vms_service().vm_service(vm.id).remove()


def machine(job):
    (m,) = job["machines"]
    return m


def config_of(conn, vm_id):
    s = conn.system_service()
    vm = s.vms_service().vm_service(vm_id).get()
    nics = s.vms_service().vm_service(vm_id).nics_service().list()
    return {"memory": vm.memory, "cpu": (vm.cpu.topology.sockets, vm.cpu.topology.cores,
                                         vm.cpu.topology.threads),
            "bios": str(vm.bios.type), "os": vm.os.type, "boot": [str(b) for b in vm.os.boot.devices],
            "nics": sorted(str(n.interface) for n in nics),
            "disks": sorted((bool(a.bootable), str(a.interface), d.provisioned_size, str(d.format),
                             str(d.backup)) for a, d in disks_of(conn, vm_id))}


def test_cbt_full_then_incremental_and_restores(orch, sandbox, conn, no_leftovers):
    vm = sandbox.vm("db-primary")
    boot = next(d for a, d in disks_of(conn, vm["id"]) if a.bootable)
    d1 = digests(sandbox, conn, vm["id"])
    j1 = orch.wait_job(orch.backup([vm["id"]], "full")["id"])
    assert j1["state"] == "succeeded", j1
    b1 = orch.api("GET", f"/api/v1/backups/{machine(j1)['backup_id']}", expect=200)
    assert (b1["mode"], b1["method"], b1["status"]) == ("full", "cbt", "succeeded")

    sandbox.write(vm["id"], 256 * MiB, 4 * MiB, pattern="random", disk_id=boot.id, seed=21)
    sandbox.write(vm["id"], 600 * MiB, 1 * MiB, pattern=0x42, disk_id=boot.id)
    d2 = digests(sandbox, conn, vm["id"])
    j2 = orch.wait_job(orch.backup([vm["id"]])["id"])
    assert j2["state"] == "succeeded", j2
    b2 = orch.api("GET", f"/api/v1/backups/{machine(j2)['backup_id']}", expect=200)
    assert (b2["mode"], b2["method"], b2["parent_id"]) == ("incremental", "cbt", b1["id"])
    read = {d["disk_id"]: d["bytes_read"] for d in b2["disks"]}
    assert read[boot.id] == 5 * MiB  # only the changed ranges were read
    assert sum(read.values()) == 5 * MiB
    assert b2["new_bytes"] <= 4 * MiB + 64 * 1024  # random data is new; the pattern compresses

    for backup, want, name in ((b1, d1, "db-restore-full"), (b2, d2, "db-restore-incr")):
        j = orch.wait_job(orch.restore(backup["id"], kind="new", name=name)["id"])
        assert j["state"] == "succeeded", j
        new = vm_by_name(conn, name)
        assert digests(sandbox, conn, new.id) == want
        assert config_of(conn, new.id) == config_of(conn, vm["id"])
    for name in ("db-restore-full", "db-restore-incr"):
        remove_vm(conn, name)


def test_snapshot_mode_full_incremental_restore(orch, sandbox, conn, no_leftovers):
    vm = sandbox.vm("legacy-erp")
    (att, disk), = disks_of(conn, vm["id"])
    assert disk.format == types.DiskFormat.RAW
    j1 = orch.wait_job(orch.backup([vm["id"]])["id"])
    assert j1["state"] == "succeeded", j1
    b1 = orch.api("GET", f"/api/v1/backups/{machine(j1)['backup_id']}", expect=200)
    assert b1["method"] == "snapshot"
    sandbox.write(vm["id"], 128 * MiB, 2 * MiB, pattern="random", seed=5)
    want = sandbox.digest(disk.id)
    j2 = orch.wait_job(orch.backup([vm["id"]])["id"])
    b2 = orch.api("GET", f"/api/v1/backups/{machine(j2)['backup_id']}", expect=200)
    assert (b2["mode"], b2["method"]) == ("incremental", "snapshot")
    assert 2 * MiB <= b2["new_bytes"] <= 2 * MiB + 64 * 1024  # reads everything, writes only new chunks
    assert conn.system_service().vms_service().vm_service(vm["id"]).snapshots_service().list()[1:] == []
    j = orch.wait_job(orch.restore(b2["id"], kind="new", name="erp-restored")["id"])
    assert j["state"] == "succeeded", j
    new = vm_by_name(conn, "erp-restored")
    (_, nd), = disks_of(conn, new.id)
    assert nd.format == types.DiskFormat.RAW and sandbox.digest(nd.id) == want
    remove_vm(conn, "erp-restored")


def test_in_place_and_selected_disk_restore(orch, sandbox, conn, no_leftovers):
    vm = sandbox.vm("web-frontend")
    vms = conn.system_service().vms_service().vm_service(vm["id"])
    (att, disk), = disks_of(conn, vm["id"])
    want = sandbox.digest(disk.id)
    j = orch.wait_job(orch.backup([vm["id"]])["id"])
    assert j["state"] == "succeeded", j
    bid = machine(j)["backup_id"]
    sandbox.write(vm["id"], 0, 8 * MiB, pattern=0xEE)  # the guest wrecks its boot sector
    assert sandbox.digest(disk.id) != want
    # in place needs the VM down: refused up front while it runs, with a clear reason
    r = orch.api("POST", f"/api/v1/backups/{bid}/restore", {"kind": "in_place"})
    assert r["status"] == 409 and "power it off" in r["detail"], r
    vms.stop()
    wait(lambda: vms.get().status == types.VmStatus.DOWN)
    memory = vms.get().memory
    vms.update(types.Vm(memory=memory * 2))  # configuration drift after the backup
    j = orch.wait_job(orch.restore(bid, kind="in_place")["id"])
    assert j["state"] == "succeeded", j
    assert sandbox.digest(disk.id) == want
    assert vms.get().memory == memory  # configuration restored too
    vms.start()
    wait(lambda: vms.get().status == types.VmStatus.UP)
    # selected disks: a new floating disk with the backed-up content
    j = orch.wait_job(orch.restore(bid, kind="disks", disk_ids=[disk.id])["id"])
    assert j["state"] == "succeeded", j
    floating = [d for d in conn.system_service().disks_service().list()
                if d.description and bid in d.description]
    assert len(floating) == 1 and sandbox.digest(floating[0].id) == want
    conn.system_service().disks_service().disk_service(floating[0].id).remove()


def test_refused_checkpoint_falls_back_to_full(orch, sandbox, conn, no_leftovers):
    vm = sandbox.vm("db-primary")
    j = orch.wait_job(orch.backup([vm["id"]])["id"])
    b = orch.api("GET", f"/api/v1/backups/{machine(j)['backup_id']}", expect=200)
    sandbox.fault(kind="checkpoint", vm_id=vm["id"], checkpoint_id=b["checkpoint_id"])
    j = orch.wait_job(orch.backup([vm["id"]])["id"])
    assert j["state"] == "succeeded", j
    b2 = orch.api("GET", f"/api/v1/backups/{machine(j)['backup_id']}", expect=200)
    assert b2["mode"] == "full" and "refused checkpoint" in b2["fallback_reason"]


def test_transient_engine_errors_are_retried(orch, sandbox, no_leftovers):
    vm = sandbox.vm("legacy-erp")
    sandbox.fault(kind="engine", method="POST", path=r"^/vms/[^/]+/snapshots$", status=503, count=2)
    sandbox.fault(kind="engine", method="GET", path=r"^/imagetransfers/", delay=0.5, count=3)
    try:
        j = orch.wait_job(orch.backup([vm["id"]])["id"])
    finally:
        sandbox.clear_faults()
    assert j["state"] == "succeeded", j


def test_permanent_engine_error_fails_cleanly_with_cause(orch, sandbox, no_leftovers):
    vm = sandbox.vm("web-frontend")
    sandbox.fault(kind="engine", method="POST", path=r"^/imagetransfers$", status=400,
                  detail="Cannot transfer Virtual Disk: storage domain is in maintenance")
    try:
        j = orch.wait_job(orch.backup([vm["id"]])["id"])
    finally:
        sandbox.clear_faults()
    assert j["state"] == "failed"
    assert "storage domain is in maintenance" in machine(j)["error"]
    b = orch.api("GET", f"/api/v1/backups/{machine(j)['backup_id']}", expect=200)
    assert b["status"] == "failed"


def test_imageio_daemon_killed_mid_transfer(orch, sandbox, conn, no_leftovers):
    vm = sandbox.vm("db-primary")
    # hold the copy long enough to kill the daemon under it
    sandbox.fault(kind="engine", method="GET", path=r"^/imagetransfers/", delay=1.5, count=2)
    job = orch.backup([vm["id"]], "full")
    try:
        def transfer_host():
            t = [t for t in conn.system_service().image_transfers_service().list()
                 if str(t.phase) in ("ImageTransferPhase.TRANSFERRING", "transferring")]
            return t[0].host.id if t else None
        host = wait(transfer_host, timeout=60, what="an active transfer")
        sandbox.fault(kind="imageio", host_id=host, action="kill")
        j = orch.wait_job(job["id"])
    finally:
        sandbox.clear_faults()
        for h in sandbox.info["hosts"]:
            sandbox.fault(kind="imageio", host_id=h["id"], action="restart")
    assert j["state"] == "failed"
    err = machine(j)["error"].lower()
    assert "imageio" in err or "transfer" in err, err
    # and the next backup works again
    j = orch.wait_job(orch.backup([vm["id"]])["id"])
    assert j["state"] == "succeeded", j


def test_conflict_409_on_snapshot_is_retried(orch, sandbox, conn, no_leftovers):
    vm = sandbox.vm("legacy-erp")
    sandbox.fault(kind="engine", method="POST", path=r"^/vms/[^/]+/snapshots$", status=409, count=2,
                  detail="[Cannot create Snapshot. Snapshot is currently being created for VM.]")
    try:
        j = orch.wait_job(orch.backup([vm["id"]])["id"])
    finally:
        sandbox.clear_faults()
    assert j["state"] == "succeeded", j


def test_cancel_during_transfer_cleans_up(orch, sandbox, conn, no_leftovers):
    vm = sandbox.vm("web-frontend")
    # slow the transfer's progress polling so the job is surely mid-transfer
    sandbox.fault(kind="engine", method="GET", path=r"^/imagetransfers/[^/]+$", delay=1.0, count=6)
    job = orch.backup([vm["id"]], "full")
    try:
        wait(lambda: orch.job(job["id"])["machines"][0]["state"] == "transfer", timeout=60,
             what="transfer state")
        orch.api("POST", f"/api/v1/jobs/{job['id']}/cancel", expect=202)
        j = orch.wait_job(job["id"])
    finally:
        sandbox.clear_faults()
    assert j["state"] == "canceled" and j["machines"][0]["state"] == "canceled", j
    b = orch.api("GET", f"/api/v1/backups/{j['machines'][0]['backup_id']}", expect=200)
    assert b["status"] == "failed"
    backups = conn.system_service().vms_service().vm_service(vm["id"]).backups_service().list()
    assert all(str(b.phase) in ("BackupPhase.SUCCEEDED", "succeeded") for b in backups)


def test_cancel_while_the_snapshot_request_is_in_flight(orch, sandbox, conn, no_leftovers):
    """The engine is slow to answer POST /snapshots and the job is canceled
    meanwhile: the snapshot it then creates is still found and removed."""
    vm = sandbox.vm("legacy-erp")
    start = ([e.index for e in conn.system_service().events_service().list(max=1)] or [0])[0]
    rule = sandbox.fault(kind="engine", method="POST", path=r"^/vms/[^/]+/snapshots$", delay=3.0, count=1)
    try:
        job = orch.backup([vm["id"]], "full")

        def post_held():  # the rule was used up: the engine holds the POST now
            return [r["count"] for r in sandbox.admin("GET", "/faults") if r["id"] == rule["id"]] == [0]
        wait(post_held, timeout=60, what="POST /snapshots to reach the engine")
        orch.api("POST", f"/api/v1/jobs/{job['id']}/cancel", expect=202)
        j = orch.wait_job(job["id"])
    finally:
        sandbox.clear_faults()
    assert j["state"] == "canceled", j
    created = [e for e in conn.system_service().events_service().list(from_=start, max=1000)
               if e.code == 45 and e.vm and e.vm.id == vm["id"]]
    assert len(created) == 1  # the held request did create a snapshot...
    snaps = conn.system_service().vms_service().vm_service(vm["id"]).snapshots_service().list()
    assert [s.snapshot_type for s in snaps] == [types.SnapshotType.ACTIVE]  # ...and it is gone


def test_direct_mode_without_movers(sandbox, conn, state_root, no_leftovers):
    """Hosts without a mover: the orchestrator runs the copy engine itself."""
    o = Orchestrator(sandbox.dir, state_root / "direct", env={"OVAULT_MOVERS__ENABLED": "false"}).start()
    try:
        vm = sandbox.vm("web-frontend")
        (att, disk), = disks_of(conn, vm["id"])
        want = sandbox.digest(disk.id)
        j = o.wait_job(o.backup([vm["id"]], "full")["id"])
        assert j["state"] == "succeeded", j
        b = o.api("GET", f"/api/v1/backups/{machine(j)['backup_id']}", expect=200)
        assert b["disks"][0]["bytes_read"] > 0
        # no host's mover saw this backup: the data went through the orchestrator
        import json as _json
        import urllib.request
        for h in sandbox.info["hosts"]:
            req = urllib.request.Request(h["mover_url"] + "/v1/copies",
                                         headers={"Authorization": f"Bearer {h['mover_token']}"})
            with urllib.request.urlopen(req, timeout=10) as r:
                doc = _json.loads(r.read())
            copies = doc["copies"]
            assert all(c["backup_id"] != b["id"] for c in copies)
        j = o.wait_job(o.restore(b["id"], kind="disks")["id"])
        assert j["state"] == "succeeded", j
        (new,) = [d for d in conn.system_service().disks_service().list()
                  if d.description and b["id"] in d.description]
        assert sandbox.digest(new.id) == want
        conn.system_service().disks_service().disk_service(new.id).remove()
    finally:
        o.stop()
