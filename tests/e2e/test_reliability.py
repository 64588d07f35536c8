"""Issue 9 acceptance (the parts about the orchestrator itself): the embedded
PostgreSQL killed under a running backup, one operation per VM at a time,
checks made before the 202, and an imageio daemon restarted during a copy
(the disk goes on on a new image transfer)."""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from tests.helpers import Orchestrator, wait

pytestmark = pytest.mark.e2e

# Slow the transfer polling down so the machine is in `transfer` long enough.
HOLD_TRANSFER = dict(kind="engine", method="GET", path=r"^/imagetransfers/[^/]+$", delay=1.5, count=6)


@pytest.fixture(scope="module")
def orch(sandbox, state_root):
    o = Orchestrator(sandbox.dir, state_root / "reliability").start()
    yield o
    o.stop()


def _postmaster_pid(orch) -> int:
    pidfile = orch.state_dir / "pg" / "postgres" / "data" / "postmaster.pid"
    try:
        return int(pidfile.read_text().split("\n", 1)[0])
    except (OSError, ValueError):  # between servers
        return 0


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def _metric(orch, name: str) -> float:
    import urllib.request
    req = urllib.request.Request(orch.url + "/metrics", headers={"Authorization": f"Bearer {orch.token}"})
    with urllib.request.urlopen(req, context=orch.ssl, timeout=30) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"metric {name} not exported")


def test_postmaster_sigkilled_during_transfer_job_resumes(orch, sandbox, no_leftovers):
    vm = sandbox.vm("db-primary")
    before = _metric(orch, "ovault_catalog_restarts_total")
    sandbox.fault(**HOLD_TRANSFER)
    try:
        job = orch.backup([vm["id"]])
        wait(lambda: orch.job(job["id"])["machines"][0]["state"] == "transfer", timeout=60,
             what="machine in transfer")
        pid = _postmaster_pid(orch)
        os.kill(pid, signal.SIGKILL)
        wait(lambda: not _alive(pid), timeout=10, what="postmaster gone")
        # ovault starts it again by itself
        wait(lambda: _postmaster_pid(orch) != pid and _alive(_postmaster_pid(orch)), timeout=60,
             what="postmaster restarted")
    finally:
        sandbox.clear_faults()
    # The API answers 503 (database unavailable) until the server is back.
    states = []

    def ended():
        doc = orch.api("GET", f"/api/v1/jobs/{job['id']}")
        states.append(doc.get("state") or doc.get("code"))
        return doc.get("state") in ("succeeded", "failed", "canceled") and doc
    j = wait(ended, timeout=240, what="the job to end")
    assert j["state"] == "succeeded", j
    m = j["machines"][0]
    b = orch.api("GET", f"/api/v1/backups/{m['backup_id']}", expect=200)
    assert b["status"] == "succeeded"
    assert _metric(orch, "ovault_catalog_restarts_total") == before + 1
    log = (orch.state_dir / "serve.log").read_text()
    assert "embedded PostgreSQL restarted" in log
    # no_leftovers: no transfer, engine backup, lock or ovault snapshot stays


def _jobs_count(orch) -> int:
    return len(orch.api("GET", "/api/v1/jobs?limit=500", expect=200)["items"])


def test_one_operation_per_vm(orch, sandbox, no_leftovers):
    vm = sandbox.vm("legacy-erp")
    first = orch.wait_job(orch.backup([vm["id"]])["id"])
    assert first["state"] == "succeeded", first
    bid = first["machines"][0]["backup_id"]
    rows_before = orch.backups(vm["id"])

    # Three backups of one VM at once: one runs, two are refused up front.
    sandbox.fault(**HOLD_TRANSFER)
    try:
        results = []

        def submit():
            results.append(orch.api("POST", "/api/v1/backups", {"vm_ids": [vm["id"]]}))
        threads = [threading.Thread(target=submit) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        accepted = [r["job"] for r in results if "job" in r]
        refused = [r for r in results if "job" not in r]
        assert len(accepted) == 1 and len(refused) == 2, results
        running = accepted[0]
        for r in refused:
            assert r["status"] == 409 and r["type"].endswith("/vm-busy"), r
            assert (r["job_id"], r["job_kind"], r["vm_id"]) == (running["id"], "backup", vm["id"])
            assert running["id"] in r["detail"] and "backup" in r["detail"]

        # While it runs: an in-place restore and a disks restore into that VM
        # are refused naming the backup's job; no job is created for them.
        wait(lambda: orch.job(running["id"])["machines"][0]["state"] == "transfer", timeout=60,
             what="backup in transfer")
        n = _jobs_count(orch)
        for body in ({"kind": "in_place"}, {"kind": "disks", "target_vm_id": vm["id"]}):
            r = orch.api("POST", f"/api/v1/backups/{bid}/restore", body)
            assert r["status"] == 409 and r["job_id"] == running["id"], r
            assert r["job_kind"] == "backup" and "legacy-erp" in r["detail"], r
        assert _jobs_count(orch) == n
    finally:
        sandbox.clear_faults()
    j = orch.wait_job(running["id"], timeout=240)
    assert j["state"] == "succeeded", j
    # no failed backup rows: exactly one more backup, and it succeeded
    rows = orch.backups(vm["id"])
    assert len(rows) == len(rows_before) + 1 and {r["status"] for r in rows} == {"succeeded"}
    # the lock went with the job: the next backup is accepted at once
    again = orch.wait_job(orch.backup([vm["id"]])["id"], timeout=240)
    assert again["state"] == "succeeded", again


def test_restore_checks_before_the_202(orch, sandbox, no_leftovers):
    vm = sandbox.vm("web-frontend")
    j = orch.wait_job(orch.backup([vm["id"]])["id"])
    assert j["state"] == "succeeded", j
    bid = j["machines"][0]["backup_id"]
    n = _jobs_count(orch)
    other = sandbox.vm("db-primary")
    unknown = "00000000-0000-4000-8000-00000000abcd"
    cases = [
        ({"kind": "new", "name": other["name"]}, 409, f"a VM named '{other['name']}' already exists"),
        ({"kind": "new", "name": "fresh-name", "cluster_id": unknown}, 422, f"cluster_id {unknown}"),
        ({"kind": "new", "name": "fresh-name", "storage_domain_id": unknown}, 422,
         f"storage_domain_id {unknown}"),
        ({"kind": "in_place"}, 409, "power it off before an in-place restore"),
        ({"kind": "disks", "target_vm_id": unknown}, 422, f"target_vm_id {unknown}: no such VM"),
    ]
    for body, status, text in cases:
        r = orch.api("POST", f"/api/v1/backups/{bid}/restore", body)
        assert r["status"] == status and text in r["detail"], (body, r)
    # the default name of a new VM is checked too: restore it once, then again
    first = orch.wait_job(orch.restore(bid, kind="new")["id"], timeout=240)
    assert first["state"] == "succeeded", first
    r = orch.api("POST", f"/api/v1/backups/{bid}/restore", {"kind": "new"})
    assert r["status"] == 409 and "web-frontend-restored" in r["detail"], r
    assert _jobs_count(orch) == n + 1  # only the restore that was accepted
    conn = sandbox.connect()
    try:
        (made,) = conn.system_service().vms_service().list(search="name=web-frontend-restored")
        conn.system_service().vms_service().vm_service(made.id).remove()
    finally:
        conn.close()


def test_imageio_restarted_mid_copy_backup_completes(orch, sandbox, conn, no_leftovers):
    vm = sandbox.vm("db-primary")
    atts = conn.system_service().vms_service().vm_service(vm["id"]).disk_attachments_service().list()
    att = next(a for a in atts if a.bootable)
    sandbox.write(vm["id"], 0, 400 << 20, pattern="random", disk_id=att.disk.id)
    want = sandbox.digest(att.disk.id)
    job = orch.backup([vm["id"]], "full")

    def copying():  # the transfer's host, once the copy has moved 64 MiB but not all
        m = orch.job(job["id"])["machines"][0]
        t = [t for t in conn.system_service().image_transfers_service().list()
             if str(t.phase) in ("ImageTransferPhase.TRANSFERRING", "transferring")]
        return t[0].host.id if t and (64 << 20) <= (m.get("bytes_done") or 0) < (m.get("bytes_total") or 1) \
            else None
    host = wait(copying, timeout=60, what="a copy under way")
    sandbox.fault(kind="imageio", host_id=host, action="restart")
    j = orch.wait_job(job["id"], timeout=240)
    assert j["state"] == "succeeded", j
    # the restarted daemon lost the ticket: the disk went on on a new image transfer
    # (statemachines/resume.py), said in the log and the job's events
    import json
    resumed = [json.loads(line) for line in (orch.state_dir / "serve.log").read_text().splitlines()
               if job["id"] in line and "resuming the disk on a new transfer" in line]
    assert len(resumed) == 1 and resumed[0]["disk_id"] == att.disk.id, resumed
    assert 0 < resumed[0]["bytes_done"] < (400 << 20)
    bid = j["machines"][0]["backup_id"]
    (d,) = [d for d in orch.api("GET", f"/api/v1/backups/{bid}", expect=200)["disks"]
            if d["disk_id"] == att.disk.id]
    # resumed, not restarted: the copy on the new transfer adopted what the first one had
    # stored (>= 64 MiB of the 400 MiB, less the reads in flight) and read only the rest
    assert d["bytes_read"] <= (400 - 32) << 20, (resumed, d)
    bid = j["machines"][0]["backup_id"]
    r = orch.wait_job(orch.restore(bid, kind="disks", disk_ids=[att.disk.id])["id"], timeout=240)
    assert r["state"] == "succeeded", r
    (floating,) = [d for d in conn.system_service().disks_service().list()
                   if d.description and bid in d.description]
    try:
        assert sandbox.digest(floating.id) == want
    finally:
        conn.system_service().disks_service().disk_service(floating.id).remove()
