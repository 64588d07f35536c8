"""The orchestrator SIGKILLed in every working state of a backup (CBT and
snapshot mode) and of a restore, then restarted: every case resumes to
success, with no second snapshot or engine backup and nothing left behind
(docs/operations.md, "Jobs and machines"). And two replicas on one database
backing up ten VMs."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import ovirtsdk4.types as types
import pytest

from tests.helpers import Orchestrator, Sandbox, wait

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]

# How to hold a machine in a state long enough to kill the orchestrator there:
# slow down the engine call that the state waits on (faults of the sandbox).
HOLD = {
    "snapshot/cbt": dict(method="GET", path=r"^/vms/[^/]+/backups/[^/]+$", delay=2.0, count=3),
    "snapshot/snapshot": dict(method="GET", path=r"^/vms/[^/]+/snapshots/[^/]+$", delay=2.0, count=3),
    "metadata": dict(method="GET", path=r"^/vms/[^/]+/nics$", delay=3.0, count=1),
    "transfer": dict(method="GET", path=r"^/imagetransfers/[^/]+$", delay=1.5, count=4),
    "finalize/cbt": dict(method="POST", path=r"^/vms/[^/]+/backups/[^/]+/finalize$", delay=3.0, count=1),
    "finalize/snapshot": dict(method="DELETE", path=r"^/vms/[^/]+/snapshots/[^/]+$", delay=3.0, count=1),
    "prepare": dict(method="POST", path=r"^/disks$", delay=3.0, count=1),
    "finalize/restore": dict(method="POST", path=r"^/vms/[^/]+/diskattachments$", delay=3.0, count=1),
}


@pytest.fixture(scope="module")
def orch(sandbox, state_root):
    o = Orchestrator(sandbox.dir, state_root / "crash").start()
    yield o
    o.stop()


def events_since(conn, index, vm_id, code):
    evs = conn.system_service().events_service().list(from_=index, max=10000)
    return [e for e in evs if e.code == code and e.vm and e.vm.id == vm_id]


def last_event_index(conn):
    evs = conn.system_service().events_service().list(max=1)
    return evs[0].index if evs else 0


def kill_in_state(orch, sandbox, job, state, hold):
    sandbox.fault(kind="engine", **HOLD[hold])

    def in_state():
        j = orch.job(job["id"])
        return j["machines"][0]["state"] == state
    try:
        wait(in_state, timeout=60, what=f"machine in {state}")
        orch.kill()
    finally:
        sandbox.clear_faults()
    orch.start()  # same state dir, same database: resume after the lease expires
    return orch.wait_job(job["id"], timeout=240)


# db-primary backs up through CBT, legacy-erp (raw disks) through a snapshot.
BACKUP_CASES = [(vm, state, hold) for vm, method in (("db-primary", "cbt"), ("legacy-erp", "snapshot"))
                for state, hold in (("snapshot", f"snapshot/{method}"), ("metadata", "metadata"),
                                    ("transfer", "transfer"), ("finalize", f"finalize/{method}"))]


@pytest.mark.parametrize("vm_name,state,hold", BACKUP_CASES, ids=[f"{v}-{h}" for v, _, h in BACKUP_CASES])
def test_backup_survives_sigkill(orch, sandbox, conn, no_leftovers, vm_name, state, hold):
    vm = sandbox.vm(vm_name)
    start = last_event_index(conn)
    job = orch.backup([vm["id"]])
    j = kill_in_state(orch, sandbox, job, state, hold)
    m = j["machines"][0]
    assert (j["state"], m["state"], m["error"]) == ("succeeded", "succeeded", None), j
    b = orch.api("GET", f"/api/v1/backups/{m['backup_id']}", expect=200)
    assert (b["status"], b["method"]) == ("succeeded", "snapshot" if vm_name == "legacy-erp" else "cbt")
    assert [x["id"] for x in orch.backups(vm["id"]) if x["status"] != "succeeded"] == []
    # never a second snapshot or engine backup for the same machine
    if vm_name == "legacy-erp":
        assert len(events_since(conn, start, vm["id"], 45)) == 1  # snapshot creations
    else:
        assert len(events_since(conn, start, vm["id"], 10790)) == 1  # engine backups started
    snaps = conn.system_service().vms_service().vm_service(vm["id"]).snapshots_service().list()
    assert [s.snapshot_type for s in snaps] == [types.SnapshotType.ACTIVE]


RESTORE_CASES = ["prepare", "transfer", "finalize"]


@pytest.mark.parametrize("state", RESTORE_CASES)
def test_restore_survives_sigkill(orch, sandbox, conn, no_leftovers, state):
    vm = sandbox.vm("web-frontend")
    (att,) = conn.system_service().vms_service().vm_service(vm["id"]).disk_attachments_service().list()
    want = sandbox.digest(att.disk.id)
    b = orch.wait_job(orch.backup([vm["id"]])["id"])
    assert b["state"] == "succeeded", b
    name = f"crash-{state}"
    job = orch.restore(b["machines"][0]["backup_id"], kind="new", name=name)
    hold = {"prepare": "prepare", "transfer": "transfer", "finalize": "finalize/restore"}[state]
    j = kill_in_state(orch, sandbox, job, state, hold)
    found = conn.system_service().vms_service().list(search=f"name={name}")
    assert (j["state"], j["machines"][0]["error"]) == ("succeeded", None), j
    assert len(found) == 1  # never a second VM
    disks = conn.system_service().vms_service().vm_service(found[0].id).disk_attachments_service().list()
    assert [sandbox.digest(a.disk.id) for a in disks] == [want]
    conn.system_service().vms_service().vm_service(found[0].id).remove()
    # no stray disks created by the restore
    strays = [d for d in conn.system_service().disks_service().list()
              if d.description and b["machines"][0]["backup_id"] in d.description]
    assert strays == []


def test_backup_killed_while_a_machine_is_queued(sandbox, state_root, conn, no_leftovers):
    """One VM of a job at a time (`limits.per_job=1`): the second machine is
    still `queued` when the orchestrator dies; after the restart both finish."""
    o = Orchestrator(sandbox.dir, state_root / "crash-queued", env={"OVAULT_LIMITS_PER_JOB": "1"}).start()
    try:
        vms = [sandbox.vm(n)["id"] for n in ("db-primary", "web-frontend")]
        job = o.backup(vms)
        sandbox.fault(kind="engine", **HOLD["transfer"])
        try:
            def one_busy_one_queued():
                states = sorted(m["state"] for m in o.job(job["id"])["machines"])
                return states == ["queued", "transfer"]
            wait(one_busy_one_queued, timeout=60, what="one machine in transfer, one queued")
            o.kill()
        finally:
            sandbox.clear_faults()
        o.start()
        j = o.wait_job(job["id"], timeout=240)
        assert j["state"] == "succeeded", j
        assert [m["state"] for m in j["machines"]] == ["succeeded", "succeeded"]
        for m in j["machines"]:
            assert o.api("GET", f"/api/v1/backups/{m['backup_id']}", expect=200)["status"] == "succeeded"
    finally:
        o.stop()


CLEANUP_HOLD = {  # what cleanup waits on: removing the snapshot, removing the new VM
    "backup": dict(method="DELETE", path=r"^/vms/[^/]+/snapshots/[^/]+$", delay=3.0, count=1),
    "restore": dict(method="DELETE", path=r"^/vms/[^/]+$", delay=3.0, count=1),
}


def kill_in_cleanup(orch, sandbox, job, kind):
    """Cancel the job mid-transfer, then kill the orchestrator while the
    machine cleans up; the restarted one finishes the cleanup."""
    sandbox.fault(kind="engine", **HOLD["transfer"])
    try:
        wait(lambda: orch.job(job["id"])["machines"][0]["state"] == "transfer", timeout=60,
             what="machine in transfer")
        sandbox.fault(kind="engine", **CLEANUP_HOLD[kind])
        orch.api("POST", f"/api/v1/jobs/{job['id']}/cancel", expect=202)
        wait(lambda: orch.job(job["id"])["machines"][0]["state"] == "cleanup", timeout=60,
             what="machine in cleanup")
        orch.kill()
    finally:
        sandbox.clear_faults()
    orch.start()
    return orch.wait_job(job["id"], timeout=240)


def test_backup_killed_in_cleanup_finishes_it(orch, sandbox, conn, no_leftovers):
    vm = sandbox.vm("legacy-erp")
    start = last_event_index(conn)
    j = kill_in_cleanup(orch, sandbox, orch.backup([vm["id"]]), "backup")
    m = j["machines"][0]
    assert (j["state"], m["state"]) == ("canceled", "canceled"), j
    b = orch.api("GET", f"/api/v1/backups/{m['backup_id']}", expect=200)
    assert b["status"] == "failed"  # recorded from `metadata` on, never published
    assert len(events_since(conn, start, vm["id"], 45)) == 1  # one snapshot, removed:
    snaps = conn.system_service().vms_service().vm_service(vm["id"]).snapshots_service().list()
    assert [s.snapshot_type for s in snaps] == [types.SnapshotType.ACTIVE]


def test_restore_killed_in_cleanup_finishes_it(orch, sandbox, conn, no_leftovers):
    vm = sandbox.vm("web-frontend")
    b = orch.wait_job(orch.backup([vm["id"]])["id"])
    assert b["state"] == "succeeded", b
    backup_id = b["machines"][0]["backup_id"]
    job = orch.restore(backup_id, kind="new", name="crash-cleanup")
    j = kill_in_cleanup(orch, sandbox, job, "restore")
    assert (j["state"], j["machines"][0]["state"]) == ("canceled", "canceled"), j
    assert conn.system_service().vms_service().list(search="name=crash-cleanup") == []
    strays = [d for d in conn.system_service().disks_service().list()
              if d.description and backup_id in d.description]
    assert strays == []


@pytest.fixture(scope="module")
def big_sandbox(state_root):
    """A second lab with ten small VMs (no NFS: the session sandbox has the only one)."""
    d = state_root / "big-sandbox"
    with open(state_root / "big-sandbox.log", "wb") as log:
        p = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "sandbox", "up", "--dir", str(d),
                              "--hosts", "2", "--vms", "10", "--disk-size", "128M", "--no-nfs"],
                             cwd=ROOT, stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + 90
    while not (d / "sandbox.json").exists():
        assert p.poll() is None and time.monotonic() < deadline, \
            (state_root / "big-sandbox.log").read_text()[-2000:]
        time.sleep(0.1)
    yield Sandbox(json.loads((d / "sandbox.json").read_text()), d)
    p.send_signal(signal.SIGTERM)
    p.wait(60)


def test_two_replicas_back_up_ten_vms_exactly_once(big_sandbox, state_root):
    from orchestrator.catalog import EmbeddedPostgres
    pg_dir = state_root / "shared-pg"
    pg = EmbeddedPostgres(pg_dir)
    asyncio.run(pg.start())
    a = b = None
    try:
        a = Orchestrator(big_sandbox.dir, state_root / "replica-a", dsn=pg.dsn).start()
        b = Orchestrator(big_sandbox.dir, state_root / "replica-b", dsn=pg.dsn).start()
        vms = [v["id"] for v in big_sandbox.info["vms"]]
        assert len(vms) == 10
        jobs = [(a if i % 2 else b).backup([vm]) for i, vm in enumerate(vms)]
        done = [a.wait_job(j["id"], timeout=300) for j in jobs]
        assert [j["state"] for j in done] == ["succeeded"] * 10, [j.get("error") for j in done]
        for vm in vms:
            assert [x["status"] for x in a.backups(vm)] == ["succeeded"]
        conn = big_sandbox.connect()
        try:
            for vm in vms:
                engine_backups = conn.system_service().vms_service().vm_service(vm).backups_service().list()
                created = [e for e in conn.system_service().events_service().list(from_=0, max=100000)
                           if e.vm and e.vm.id == vm and e.code == 45]
                assert len(engine_backups) + len(created) == 1  # one CBT backup or one snapshot
        finally:
            conn.close()
        claims = {name: (state_root / name / "serve.log").read_text().count('"job claimed"')
                  for name in ("replica-a", "replica-b")}
        assert sum(claims.values()) == 10 and all(claims.values()), claims
    finally:
        for o in (a, b):
            if o:
                o.stop()
        asyncio.run(pg.stop())
