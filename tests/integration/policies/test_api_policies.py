"""/api/v1/policies and friends over the real app and catalog."""
import uuid
from datetime import datetime, timedelta, timezone

from orchestrator.policies.jobs import MaintenanceJobs
from orchestrator.policies.service import PolicyService

UTC = timezone.utc


async def _backup(catalog, vm_id, at=None, mode="full"):
    b = await catalog.backups.create(vm_id=vm_id, vm_name="x", mode=mode, method="cbt")
    b = await catalog.backups.complete(b.id, size_bytes=1, new_bytes=1, consistency="crash")
    if at is not None:
        await catalog.db.execute("UPDATE backups SET created_at = $2 WHERE id = $1", b.id, at)
    return b


async def test_policy_lifecycle_and_roles(papi):
    db1 = papi.engine.add_vm("db-1", tags=["prod"])
    web1 = papi.engine.add_vm("web-1", cluster="c2")
    tmp = papi.engine.add_vm("tmp-db", tags=["prod"])
    viewer, operator = await papi.token("viewer"), await papi.token("operator")
    body = {"name": "nightly", "schedule": "0 2 * * *", "timezone": "Europe/Paris",
            "retention": {"keep_last": 2}, "vm_ids": [web1],
            "rules": {"tags": ["prod"], "exclude_name_regex": "^tmp-"}}
    assert (await papi.call("POST", "/api/v1/policies", operator, json=body))[0] == 403
    st, p = await papi.call("POST", "/api/v1/policies", json=body)
    assert st == 201, p
    assert {m["vm_id"]: m["why"] for m in p["members"]} == {db1: "tag prod", web1: "explicit"}
    assert p["excluded"] == [{"vm_id": tmp, "why": "name matches exclude_name_regex ^tmp-"}]
    assert len(p["next_runs"]) == 5 and p["next_runs"][0].endswith(("+00:00"))
    # invalid input: clear 422s
    st, e = await papi.call("POST", "/api/v1/policies", json={**body, "name": "x",
                                                              "schedule": "0 2 * *"})
    assert st == 422 and "needs 5" in e["detail"]
    st, e = await papi.call("POST", "/api/v1/policies", json=body)
    assert st == 409 and "exists already" in e["detail"]
    # a second policy claiming db-1 by name: a conflict shown on both
    st, q = await papi.call("POST", "/api/v1/policies", json={
        "name": "dbs", "schedule": "*/5 * * * *", "rules": {"name_regex": "^db-"}})
    assert st == 201 and q["conflicts"] == [db1]
    st, lst = await papi.call("GET", "/api/v1/policies", viewer)
    by = {x["name"]: x for x in lst["items"]}
    assert by["nightly"]["conflicts"] == [db1]
    [m] = [m for m in by["nightly"]["members"] if m["vm_id"] == db1]
    assert m["conflict_with"] == [{"id": q["id"], "name": "dbs"}]
    # VM list: policy, next run, protection status
    st, vms = await papi.call("GET", "/api/v1/vms", viewer)
    prot = {v["id"]: (v["protection"], v["policy_id"]) for v in vms["items"]}
    assert prot[web1] == ("at_risk", p["id"])          # member, never backed up
    assert prot[db1] == ("unprotected", None)          # in conflict: nobody protects it
    assert prot[tmp] == ("excluded", None)
    st, one = await papi.call("GET", f"/api/v1/vms/{web1}", viewer)
    assert st == 200 and (one["protection"], one["policy"]) == ("at_risk", "nightly")
    assert one["next_run"] == p["next_runs"][0]
    # run now: the conflicted VM is skipped with the reason
    st, r = await papi.call("POST", f"/api/v1/policies/{p['id']}/run", viewer)
    assert st == 403
    st, r = await papi.call("POST", f"/api/v1/policies/{p['id']}/run", operator)
    assert st == 202, r
    assert [m["vm_id"] for m in r["job"]["machines"]] == [web1]
    assert r["job"]["request"]["policy_id"] == p["id"] and "conflict" in r["skipped"][db1]
    assert await papi.catalog.policies.job_policy(__import__("uuid").UUID(r["job"]["id"])) \
        is not None
    # the same VM is now busy: a second run skips it and starts nothing
    st, e = await papi.call("POST", f"/api/v1/policies/{p['id']}/run", operator)
    assert st == 409 and "previous run still going" in e["detail"]
    # PATCH and DELETE (admin only)
    st, q2 = await papi.call("PATCH", f"/api/v1/policies/{q['id']}", json={"enabled": False})
    assert st == 200 and q2["enabled"] is False and q2["next_runs"] == [], q2
    st, again = await papi.call("GET", f"/api/v1/policies/{p['id']}")
    assert again["conflicts"] == []                     # a disabled policy claims nothing
    st, e = await papi.call("PATCH", f"/api/v1/policies/{q['id']}",
                            json={"rules": {"name_regex": "("}})
    assert st == 422 and "not a valid regular expression" in e["detail"]
    assert (await papi.call("DELETE", f"/api/v1/policies/{q['id']}", operator))[0] == 403
    assert (await papi.call("DELETE", f"/api/v1/policies/{q['id']}"))[0] == 204
    assert (await papi.call("GET", f"/api/v1/policies/{q['id']}"))[0] == 404


async def test_preview_protect_prune_and_delete(papi):
    vm = papi.engine.add_vm("app-1")
    now = datetime.now(UTC)
    bs = [await _backup(papi.catalog, vm, now - timedelta(hours=h)) for h in (30, 20, 10, 1)]
    st, p = await papi.call("POST", "/api/v1/policies", json={
        "name": "p", "schedule": "0 * * * *", "vm_ids": [vm], "retention": {"keep_last": 2}})
    assert st == 201
    st, pv = await papi.call("GET", f"/api/v1/policies/{p['id']}/preview?vm_id={vm}")
    [v] = pv["vms"]
    assert [(b["backup_id"], b["action"], b["rule"]) for b in v["backups"]] == [
        (str(bs[3].id), "keep", "keep-last"), (str(bs[2].id), "keep", "keep-last"),
        (str(bs[1].id), "prune", None), (str(bs[0].id), "prune", None)]
    # protect the oldest: it stays, and takes no keep slot
    operator = await papi.token("operator")
    st, b = await papi.call("PATCH", f"/api/v1/backups/{bs[0].id}", operator,
                            json={"protected": True})
    assert st == 200 and b["protected"] is True
    st, e = await papi.call("PATCH", f"/api/v1/backups/{bs[0].id}", operator,
                            json={"protected": "yes"})
    assert st == 422
    st, e = await papi.call("DELETE", f"/api/v1/backups/{bs[0].id}", operator)
    assert st == 409 and "protected" in e["detail"]
    # dry run changes nothing; a real prune queues a prune job that deletes exactly
    # the one unprotected extra
    st, r = await papi.call("POST", "/api/v1/prune", operator, json={"vm_id": vm, "dry_run": True})
    assert st == 200 and [x["backup_id"] for x in r["vms"][0]["pruned"]] == [str(bs[1].id)]
    assert (await papi.catalog.backups.get(bs[1].id)).status == "succeeded"
    st, r = await papi.call("POST", "/api/v1/prune", operator, json={"vm_id": vm})
    assert st == 202 and r["job"]["kind"] == "prune" and r["job"]["state"] == "queued"
    jobs = MaintenanceJobs(papi.catalog, PolicyService(papi.catalog, papi.engine, store=papi.store))
    await jobs.prune(await papi.catalog.jobs.get(uuid.UUID(r["job"]["id"])))
    st, j = await papi.call("GET", f"/api/v1/jobs/{r['job']['id']}")
    assert j["state"] == "succeeded" and j["result"]["deleted"] == [str(bs[1].id)], j
    assert (await papi.catalog.backups.get(bs[1].id)).status == "deleted"
    st, lst = await papi.call("GET", f"/api/v1/backups?vm_id={vm}")
    assert {x["id"] for x in lst["items"]} == {str(bs[0].id), str(bs[2].id), str(bs[3].id)}
    evs = await papi.catalog.db.fetch("SELECT type, payload FROM events WHERE type = "
                                      "'backup.pruned'")
    assert [e["payload"]["backup_id"] for e in evs] == [str(bs[1].id)]
    # DELETE: hidden at once, removed by its job
    st, d = await papi.call("DELETE", f"/api/v1/backups/{bs[3].id}", operator)
    assert st == 202 and d["backup"]["status"] == "deleting" and d["job"]["kind"] == "prune"
    st, lst = await papi.call("GET", f"/api/v1/backups?vm_id={vm}")
    assert str(bs[3].id) not in {x["id"] for x in lst["items"]}
    await jobs.prune(await papi.catalog.jobs.get(uuid.UUID(d["job"]["id"])))
    assert (await papi.catalog.backups.get(bs[3].id)).status == "deleted"
    assert (await papi.call("DELETE", f"/api/v1/backups/{bs[3].id}", operator))[0] == 404
    # unprotect, then it can go
    await papi.call("PATCH", f"/api/v1/backups/{bs[0].id}", operator, json={"protected": False})
    assert (await papi.call("DELETE", f"/api/v1/backups/{bs[0].id}", operator))[0] == 202

async def test_policy_metrics(papi):
    vm = papi.engine.add_vm("app-9")
    at = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    await _backup(papi.catalog, vm, at)
    st, p = await papi.call("POST", "/api/v1/policies", json={
        "name": "gold", "schedule": "0 * * * *", "vm_ids": [vm]})
    await papi.catalog.policies.record_protection(vm, "at_risk", __import__("uuid").UUID(p["id"]))
    job = await papi.catalog.jobs.create("backup", [__import__(
        "orchestrator.catalog", fromlist=["NewMachine"]).NewMachine(vm_id=vm)])
    await papi.catalog.policies.tag_job(job.id, __import__("uuid").UUID(p["id"]))
    await papi.catalog.db.execute("UPDATE machines SET state = 'failed', finished_at = now()")
    await papi.catalog.db.execute("UPDATE jobs SET state = 'failed', finished_at = now()")
    async with papi.client.get("/metrics", headers={
            "Authorization": f"Bearer {await papi.token('viewer')}"}) as r:
        text = await r.text()
    lines = [x for x in text.splitlines() if x.startswith("ovault_vm_last_success_timestamp")]
    assert lines == [f'ovault_vm_last_success_timestamp_seconds{{policy="gold",vm="x",'
                     f'vm_id="{vm}"}} 1.893553445e+09'], lines
    assert 'ovault_vm_protection{status="at_risk"} 1.0' in text
    assert 'ovault_vm_protection{status="protected"} 0.0' in text
    assert 'ovault_policy_runs_total{policy="gold",result="failed"} 1.0' in text
