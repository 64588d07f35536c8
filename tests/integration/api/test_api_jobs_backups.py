"""Jobs and backups over HTTP against the real catalog: start, list and page,
filter, inspect, cancel, delete, and the restore request's checks."""
import uuid

from orchestrator.catalog import BackupDisk, NewMachine


async def _backup(catalog, vm_id, name, *, status="succeeded", target_id=None):
    job = await catalog.jobs.create("backup", [NewMachine(vm_id, name)])
    b = await catalog.backups.create(vm_id=vm_id, vm_name=name, mode="full", method="cbt", job_id=job.id,
                                     target_id=target_id)
    await catalog.backups.put_disk(b.id, BackupDisk("d-" + vm_id[:8], 1 << 30, "raw", alias=f"{name}_Disk1",
                                                    info={"bootable": True}))
    if status == "succeeded":
        b = await catalog.backups.complete(b.id, size_bytes=1 << 30, new_bytes=1 << 20, consistency="crash")
    elif status == "failed":
        b = await catalog.backups.fail(b.id, "transfer timed out")
    return b


async def _pages(api, path, limit):
    """Every item by following next_cursor, and the number of pages."""
    items, cursor, pages = [], None, 0
    while True:
        sep = "&" if "?" in path else "?"
        url = f"{path}{sep}limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        status, _, body = await api.call("GET", url)
        assert status == 200, body
        assert len(body["items"]) <= limit
        items += body["items"]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            return items, pages


async def test_start_backup_queues_one_job_and_pokes_the_runner(api):
    a, b = api.engine.add_vm("web01"), api.engine.add_vm("db01")
    operator = await api.token("operator")
    status, _, body = await api.call("POST", "/api/v1/backups", token=operator,
                                     json={"vm_ids": [a, b.upper()], "mode": "full"})
    assert status == 202, body
    job = body["job"]
    assert (job["kind"], job["state"], job["request"]) == ("backup", "queued", {"vm_ids": [a, b], "mode": "full"})
    assert sorted((m["vm_id"], m["vm_name"], m["state"]) for m in job["machines"]) == \
        sorted([(a, "web01", "queued"), (b, "db01", "queued")])
    assert job["created_by"].startswith("test-operator") and api.runner.pokes == 1
    stored = await api.catalog.jobs.get(uuid.UUID(job["id"]))
    assert sorted(m.vm_id for m in stored.machines) == sorted([a, b])
    # an unknown VM is the engine's 404
    status, _, body = await api.call("POST", "/api/v1/backups", json={"vm_ids": [str(uuid.uuid4())]})
    assert status == 404 and "VM" in body["detail"]
    assert api.runner.pokes == 1


async def test_jobs_list_pages_filters_and_cancel(api):
    vms = [api.engine.add_vm(f"vm{i:02}") for i in range(7)]
    made = []
    for vm in vms:
        status, _, body = await api.call("POST", "/api/v1/backups", json={"vm_ids": [vm]})
        assert status == 202
        made.append(body["job"]["id"])
    items, pages = await _pages(api, "/api/v1/jobs", 3)
    assert pages == 3
    assert [j["id"] for j in items] == list(reversed(made))  # newest first, each exactly once
    # filters
    _, _, one = await api.call("GET", f"/api/v1/jobs?vm_id={vms[2]}")
    assert [j["id"] for j in one["items"]] == [made[2]]
    _, _, none = await api.call("GET", "/api/v1/jobs?kind=restore")
    assert none == {"items": [], "next_cursor": None}
    # cancel: 202, the flag and an event
    viewer = await api.token("viewer")
    assert (await api.call("POST", f"/api/v1/jobs/{made[0]}/cancel", token=viewer))[0] == 403
    status, _, job = await api.call("POST", f"/api/v1/jobs/{made[0]}/cancel", token=await api.token("operator"))
    assert status == 202 and job["cancel_requested"] is True
    events = await api.catalog.events.list_after(0, types=["job.cancel_requested"])
    assert [(e.job_id, e.payload) for e in events] == [(uuid.UUID(made[0]), {"job_id": made[0]})]
    status, _, got = await api.call("GET", f"/api/v1/jobs/{made[0]}", token=viewer)
    assert status == 200 and got["cancel_requested"] is True and got["machines"][0]["vm_id"] == vms[0]
    status, _, body = await api.call("GET", f"/api/v1/jobs/{uuid.uuid4()}")
    assert status == 404 and body["type"].endswith("/not-found")


async def test_backups_list_pages_filters_get_and_delete(api):
    vm_a, vm_b = str(uuid.uuid4()), str(uuid.uuid4())
    ok = [await _backup(api.catalog, vm_a, "a") for _ in range(4)]
    bad = await _backup(api.catalog, vm_b, "b", status="failed")
    running = await _backup(api.catalog, vm_b, "b", status="running")
    items, pages = await _pages(api, "/api/v1/backups", 2)
    assert pages == 3
    assert sorted(b["id"] for b in items) == sorted(str(b.id) for b in [*ok, bad, running])
    items, _ = await _pages(api, f"/api/v1/backups?vm_id={vm_a}", 10)
    assert {b["id"] for b in items} == {str(b.id) for b in ok}
    assert all(b["disks"][0]["alias"] == "a_Disk1" and b["disks"][0]["bootable"] is True for b in items)
    _, _, failed = await api.call("GET", "/api/v1/backups?status=failed")
    assert [(b["id"], b["error"]) for b in failed["items"]] == [(str(bad.id), "transfer timed out")]
    status, _, one = await api.call("GET", f"/api/v1/backups/{ok[0].id}")
    assert status == 200 and (one["status"], one["size_bytes"], one["new_bytes"]) == ("succeeded", 1 << 30, 1 << 20)
    # a running backup cannot be deleted; a succeeded one can: hidden at once, its
    # removal from the target queued as a prune job (docs/policies.md)
    status, _, body = await api.call("DELETE", f"/api/v1/backups/{running.id}", token=await api.token("operator"))
    assert status == 409 and "still running" in body["detail"]
    status, _, body = await api.call("DELETE", f"/api/v1/backups/{ok[0].id}", token=await api.token("operator"))
    assert status == 202 and body["backup"]["status"] == "deleting" and body["job"]["kind"] == "prune"
    assert (await api.catalog.backups.get(ok[0].id)).status == "deleting"
    assert body["job"]["request"]["backup_ids"] == [str(ok[0].id)]
    items, _ = await _pages(api, f"/api/v1/backups?vm_id={vm_a}", 10)
    assert str(ok[0].id) not in {b["id"] for b in items}


async def test_restore_checks_the_request_and_queues_a_job(api):
    vm = str(uuid.uuid4())
    ok = await _backup(api.catalog, vm, "web")
    failed = await _backup(api.catalog, str(uuid.uuid4()), "x", status="failed")
    status, _, body = await api.call("POST", f"/api/v1/backups/{failed.id}/restore", json={})
    assert status == 409 and "only succeeded backups can be restored" in body["detail"]
    status, _, body = await api.call("POST", f"/api/v1/backups/{ok.id}/restore",
                                     json={"kind": "in_place", "name": "other"})
    assert status == 422 and body["detail"] == "an in-place restore keeps the VM's name"
    status, _, body = await api.call("POST", f"/api/v1/backups/{ok.id}/restore",
                                     json={"kind": "disks", "disk_ids": [str(uuid.uuid4())]})
    assert status == 422 and body["detail"].startswith(f"disks not in backup {ok.id}")
    status, _, body = await api.call("POST", f"/api/v1/backups/{ok.id}/restore", json={"name": "web-copy"})
    assert status == 202, body
    job = body["job"]
    assert (job["kind"], job["request"]) == ("restore", {"backup_id": str(ok.id), "kind": "new",
                                                         "name": "web-copy", "power_on": False})
    assert api.runner.pokes == 1


async def test_a_running_jobs_rate_and_eta_come_from_the_server(api):
    """The figures the websocket's progress messages carry, on the REST job view
    too: the CLI and the UI plugin show them and compute none."""
    vm = api.engine.add_vm("big")
    _, _, body = await api.call("POST", "/api/v1/backups", json={"vm_ids": [vm]})
    job = body["job"]
    machine_id = job["machines"][0]["id"]
    assert job["machines"][0].get("rate_bps") is None
    claimed = await api.catalog.jobs.claim("test-replica", lease_seconds=30)
    assert [j.id for j in claimed] == [uuid.UUID(job["id"])]
    await api.catalog.jobs.update_progress(uuid.UUID(machine_id), bytes_done=300 << 20, bytes_total=1 << 30,
                                           disks={"d1": {"done": 300 << 20, "total": 1 << 30}})
    sample = {"job_id": job["id"], "machine_id": machine_id, "vm_id": vm, "bytes_total": 1 << 30}
    api.tracker.message({**sample, "bytes_done": 100 << 20, "t": 1000.0, "disks": {"d1": {"done": 100 << 20,
                                                                                          "total": 1 << 30}}})
    ws = api.tracker.message({**sample, "bytes_done": 300 << 20, "t": 1002.0,
                              "disks": {"d1": {"done": 300 << 20, "total": 1 << 30}}})
    assert ws["rate_bps"] == 100 << 20
    status, _, got = await api.call("GET", f"/api/v1/jobs/{job['id']}")
    assert status == 200
    (m,) = got["machines"]
    assert (m["bytes_done"], m["rate_bps"], m["eta_seconds"]) == (300 << 20, 100 << 20, ws["eta_seconds"])
    assert (m["disks"]["d1"]["rate_bps"], m["disks"]["d1"]["eta_seconds"]) == (100 << 20, ws["eta_seconds"])
    _, _, listed = await api.call("GET", "/api/v1/jobs")
    assert listed["items"][0]["machines"][0]["rate_bps"] == 100 << 20


async def test_a_vm_held_by_a_job_is_answered_409_naming_that_job(api):
    a, b = api.engine.add_vm("web01"), api.engine.add_vm("db01")
    _, _, first = await api.call("POST", "/api/v1/backups", json={"vm_ids": [a]})
    status, ctype, body = await api.call("POST", "/api/v1/backups", json={"vm_ids": [b, a]})
    assert (status, ctype) == (409, "application/problem+json"), body
    assert body["type"].endswith("/vm-busy") and body["vm_id"] == a and body["job_id"] == first["job"]["id"]
    assert body["job_kind"] == "backup" and "wait for it to end or cancel it" in body["detail"]
    jobs = (await api.catalog.jobs.list()).items
    assert [str(j.id) for j in jobs] == [first["job"]["id"]]  # nothing half-made for db01
    assert api.runner.pokes == 1
