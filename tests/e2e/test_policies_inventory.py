"""Membership follows the engine's events: tagging a VM through the engine's API
makes it a member of the policy whose rule names the tag — in GET /api/v1/vms and
as a `vm.protection_changed` event — within seconds, although the periodic
protection check (`policies.protection_interval`) is set to a day; untagging it
takes it out again the same way. A renamed VM that a name rule matches joins too."""
from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from tests.helpers import Orchestrator

pytestmark = pytest.mark.e2e

QUICK = 15.0   # seconds: far below the day-long periodic check


def _wait(fn, timeout=QUICK, what=""):
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.2)


async def test_tagging_a_vm_in_the_engine_changes_membership_at_once(sandbox, state_root):
    import ovirtsdk4.types as types

    from orchestrator.catalog import Catalog, EmbeddedPostgres, connect

    pg = EmbeddedPostgres(state_root / "inventory-pg")
    await pg.start()
    orch = pool = None
    conn = sandbox.connect()
    tag = f"gold-{uuid.uuid4().hex[:8]}"
    vm = sandbox.vm("web-frontend")
    vms = conn.system_service().vms_service()
    tag_obj = None
    try:
        orch = await asyncio.to_thread(lambda: Orchestrator(
            sandbox.dir, state_root / "inventory", dsn=pg.dsn,
            env={"OVAULT_POLICIES_SCHEDULER_INTERVAL": "100000",
                 "OVAULT_POLICIES_PROTECTION_INTERVAL": "86400",
                 "OVAULT_ENGINE_EVENTS_INTERVAL": "0.5"}).start())
        pool = await connect(pg.dsn, min_size=1, max_size=2)
        catalog = Catalog(pool)
        p = await asyncio.to_thread(orch.api, "POST", "/api/v1/policies", {
            "name": f"by-tag-{tag}", "schedule": "0 3 * * *", "rules": {"tags": [tag]},
            "retention": {"keep_last": 1}}, 201)
        assert p["members"] == []

        def view():
            return orch.api("GET", f"/api/v1/vms/{vm['id']}", expect=200)

        def listed():
            items = orch.api("GET", "/api/v1/vms?limit=500", expect=200)["items"]
            return next(x for x in items if x["id"] == vm["id"])

        assert view()["policy_id"] is None and listed()["policy_id"] is None
        # creating the policy ran a protection check at once: the VM is recorded unprotected
        ev = await _until(catalog, vm["id"], "unprotected")
        assert ev["previous"] is None and ev["policy_id"] is None

        tag_obj = conn.system_service().tags_service().add(types.Tag(name=tag))
        t0 = time.monotonic()
        vms.vm_service(vm["id"]).tags_service().add(types.Tag(name=tag))
        got = await asyncio.to_thread(_wait, lambda: listed()["policy_id"] == p["id"],
                                      QUICK, "the tagged VM listed with the policy")
        assert got
        v = view()
        assert v["policy_id"] == p["id"] and v["protection"] == "at_risk" and v["next_run"]
        ev = await _until(catalog, vm["id"], "at_risk")
        assert ev["policy_id"] == p["id"] and ev["previous"] == "unprotected"
        took = time.monotonic() - t0
        assert took < QUICK, took
        pol = orch.api("GET", f"/api/v1/policies/{p['id']}", expect=200)
        assert [m["vm_id"] for m in pol["members"]] == [vm["id"]]
        assert pol["members"][0]["why"] == f"tag {tag}"

        # untagged: out again, announced the same way
        vms.vm_service(vm["id"]).tags_service().tag_service(tag_obj.id).remove()
        await asyncio.to_thread(_wait, lambda: listed()["policy_id"] is None, QUICK,
                                "the untagged VM listed without a policy")
        ev = await _until(catalog, vm["id"], "unprotected")
        assert ev["previous"] == "at_risk"
    finally:
        if tag_obj is not None:
            try:
                conn.system_service().tags_service().tag_service(tag_obj.id).remove()
            except Exception:
                pass
        conn.close()
        if orch is not None:
            await asyncio.to_thread(orch.stop)
        if pool is not None:
            await pool.close()
        await pg.stop()


async def _until(catalog, vm_id: str, status: str, timeout: float = QUICK) -> dict:
    """The newest `vm.protection_changed` event of a VM, once it says `status`."""
    deadline = time.monotonic() + timeout
    while True:
        evs = [e for e in await catalog.events.list_after(0, limit=500,
                                                          types=["vm.protection_changed"])
               if e.payload.get("vm_id") == vm_id]
        if evs and evs[-1].payload["status"] == status:
            return evs[-1].payload
        if time.monotonic() > deadline:
            raise AssertionError(f"no vm.protection_changed to {status} for {vm_id}: "
                                 f"{[e.payload for e in evs]}")
        await asyncio.sleep(0.2)


def test_a_policy_run_uses_its_own_parallelism(sandbox, state_root):
    """`limits.per_job=1` makes a manual three-VM job run one VM after the other; a
    policy run of the same VMs runs them side by side (`limits.per_policy_run` 0:
    up to `limits.total`)."""
    from datetime import datetime
    names = ("db-primary", "web-frontend", "legacy-erp")
    vm_ids = [sandbox.vm(n)["id"] for n in names]
    orch = Orchestrator(sandbox.dir, state_root / "per-policy-run",
                        env={"OVAULT_LIMITS_PER_JOB": "1",
                             "OVAULT_POLICIES_SCHEDULER_INTERVAL": "100000"}).start()
    try:
        def spans(job):
            return sorted((datetime.fromisoformat(m["started_at"]),
                           datetime.fromisoformat(m["finished_at"])) for m in job["machines"])
        manual = orch.wait_job(orch.backup(vm_ids)["id"], 300)
        assert manual["state"] == "succeeded", manual
        s = spans(manual)
        assert all(s[i + 1][0] >= s[i][1] for i in range(len(s) - 1)), s   # one at a time
        p = orch.api("POST", "/api/v1/policies", {
            "name": "parallel", "schedule": "0 3 * * *", "vm_ids": vm_ids,
            "retention": {"keep_last": 5}}, expect=201)
        job = orch.api("POST", f"/api/v1/policies/{p['id']}/run", None, expect=202)["job"]
        job = orch.wait_job(job["id"], 300)
        assert job["state"] == "succeeded", job
        s = spans(job)
        assert max(a for a, _ in s) < min(b for _, b in s), s                # all at once
    finally:
        orch.stop()
