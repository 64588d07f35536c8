"""The `verify` job: queued by POST /api/v1/verify (admins) or the weekly
maintenance schedule, run over a real store and catalog; damaged backups are
flagged and announced, healed ones cleared."""
from __future__ import annotations

import asyncio
import os
import uuid
from datetime import datetime, timezone

import pytest

from orchestrator.jobs.verify import VerifyJobs
from orchestrator.policies.maintenance import Maintenance
from orchestrator.policies.service import PolicyService
from orchestrator.policies.settings import Policies

pytestmark = pytest.mark.integration
CS = 64 * 1024


async def _published(catalog, store, vm, data: bytes):
    bid, disk = uuid.uuid4(), str(uuid.uuid4())
    bw = await store.begin_backup(vm, str(bid))
    dw = await bw.add_disk(disk, len(data))
    await dw.write(0, data)
    await dw.commit()
    await bw.publish({"note": "test"})
    b = await catalog.backups.create(vm_id=vm, vm_name="v", mode="full", method="cbt", backup_id=bid)
    await catalog.backups.complete(b.id, size_bytes=len(data), new_bytes=1, consistency="crash")
    return bid, disk


async def test_verify_job_flags_damage_and_clears_it_when_healed(papi):
    catalog, store = papi.catalog, papi.store
    vm = str(uuid.uuid4())
    data = os.urandom(3 * CS)
    b1, disk = await _published(catalog, store, vm, data)
    b2, _ = await _published(catalog, store, str(uuid.uuid4()), os.urandom(CS))
    digest = (await store.read_index(vm, str(b1), disk)).get(1).hex()
    path = f"chunks/{digest[:2]}/{digest[2:4]}/{digest}"
    await store.target.write_file(path, b"rotten")

    operator = await papi.token("operator")
    assert (await papi.call("POST", "/api/v1/verify", operator, json={}))[0] == 403
    st, bad = await papi.call("POST", "/api/v1/verify", json={"backup_ids": [str(uuid.uuid4())]})
    assert st == 404
    st, r = await papi.call("POST", "/api/v1/verify", json={})
    assert st == 202 and r["job"]["kind"] == "verify" and r["job"]["state"] == "queued"
    jobs = VerifyJobs(catalog, store)
    await jobs.run(await catalog.jobs.get(uuid.UUID(r["job"]["id"])))
    st, j = await papi.call("GET", f"/api/v1/jobs/{r['job']['id']}")
    assert j["state"] == "succeeded", j
    assert j["result"]["backups"] == 2 and j["result"]["damaged"] == [str(b1)]
    st, b = await papi.call("GET", f"/api/v1/backups/{b1}")
    assert b["damaged"] is True
    assert b["damage"]["damaged_chunks"][0]["ranges"] == [{"disk_id": disk, "offset": CS, "length": CS}]
    assert (await papi.call("GET", f"/api/v1/backups/{b2}"))[1]["damaged"] is False
    evs = await catalog.db.fetch("SELECT payload FROM events WHERE type = 'backup.damaged'")
    assert [e["payload"]["backup_id"] for e in evs] == [str(b1)]

    # A later backup of the same content rewrites the chunk; verify clears the flag.
    await _published(catalog, store, vm, data)
    st, r = await papi.call("POST", "/api/v1/verify", json={"backup_ids": [str(b1)]})
    assert st == 202
    await jobs.run(await catalog.jobs.get(uuid.UUID(r["job"]["id"])))
    j = await catalog.jobs.get(uuid.UUID(r["job"]["id"]))
    assert j.state == "succeeded" and j.result["healed"] == [str(b1)] and j.result["backups"] == 1
    assert (await catalog.backups.get(b1)).damaged is False


async def test_weekly_schedule_queues_one_verify_job_across_replicas(papi):
    catalog = papi.catalog
    now = datetime(2030, 3, 10, 4, 5, tzinfo=timezone.utc)  # a Sunday, after 04:00
    svc = PolicyService(catalog, papi.engine, store=papi.store, clock=lambda: now)
    settings = Policies(gc_schedule="", summary_schedule="")  # verify_schedule: the default
    assert settings.verify_schedule == "0 4 * * 0"
    await asyncio.gather(*(Maintenance(catalog, svc, replica=r, settings=settings,
                                       clock=lambda: now).pass_once() for r in "AB"))
    rows = await catalog.db.fetch("SELECT request, created_by FROM jobs WHERE kind = 'verify'")
    assert len(rows) == 1 and rows[0]["created_by"] == "schedule"


async def test_verify_looks_at_every_target_and_names_one_it_cannot_read(papi, tmp_path):
    """A policy's own target is verified beside the service's; a target that cannot be
    read fails the job, naming it, after the others were checked."""
    from imageio_ext.store import Store
    catalog, main = papi.catalog, papi.store
    (tmp_path / "policy-target").mkdir()
    other = await Store.open(str(tmp_path / "policy-target"), create=True, chunk_size=CS)
    try:
        vm = str(uuid.uuid4())
        data = os.urandom(2 * CS)
        b_main, _ = await _published(catalog, main, str(uuid.uuid4()), os.urandom(CS))
        b_other, disk = await _published(catalog, other, vm, data)
        digest = (await other.read_index(vm, str(b_other), disk)).get(0).hex()
        await other.target.write_file(f"chunks/{digest[:2]}/{digest[2:4]}/{digest}", b"rotten")
        tid = uuid.uuid4()

        class Unreadable:
            async def list_backups(self):
                raise OSError("NFS server not responding")

        async def targets():
            return [(None, main), (tid, other), (uuid.UUID(int=7), Unreadable())]

        job = await catalog.policies.create_job("verify", {}, created_by="t")
        await VerifyJobs(catalog, main, stores=targets).run(job)
        j = await catalog.jobs.get(job.id)
        assert j.state == "failed"
        assert str(uuid.UUID(int=7)) in j.error and "NFS server not responding" in j.error
        assert j.result["targets"] == 3 and j.result["backups"] >= 2
        assert j.result["damaged"] == [str(b_other)]
        assert (await catalog.backups.get(b_other)).damaged is True
        assert (await catalog.backups.get(b_main)).damaged is False
    finally:
        await other.close()
