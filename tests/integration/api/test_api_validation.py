"""Bad input gets a 4xx problem with a message that says what is wrong, and
changes nothing."""
import io
import uuid


async def _expect(api, method, path, status, detail, **kw):
    got, ctype, body = await api.call(method, path, **kw)
    assert (got, ctype) == (status, "application/problem+json"), body
    assert body["detail"] == detail, body
    assert body["status"] == status


async def test_backup_request_validation(api):
    vm = api.engine.add_vm("web")
    await _expect(api, "POST", "/api/v1/backups", 422, "vm_ids must be a non-empty list of VM ids (at most 500)",
                  json={})
    await _expect(api, "POST", "/api/v1/backups", 422, "vm_ids must be a non-empty list of VM ids (at most 500)",
                  json={"vm_ids": []})
    await _expect(api, "POST", "/api/v1/backups", 422, "vm_ids[] must be a UUID", json={"vm_ids": ["web"]})
    await _expect(api, "POST", "/api/v1/backups", 422, "vm_ids has duplicates", json={"vm_ids": [vm, vm.upper()]})
    await _expect(api, "POST", "/api/v1/backups", 422, "mode must be one of auto, full, incremental",
                  json={"vm_ids": [vm], "mode": "differential"})
    await _expect(api, "POST", "/api/v1/backups", 422, "unknown fields: when", json={"vm_ids": [vm], "when": 1})
    await _expect(api, "POST", "/api/v1/backups", 422, "the body must be a JSON object", json=[vm])
    await _expect(api, "POST", "/api/v1/backups", 422, "strings must not contain NUL characters",
                  json={"vm_ids": [vm], "mode": "full\x00"})
    status, ctype, body = await api.call("POST", "/api/v1/backups", data=b"{not json",
                                         headers={"Content-Type": "application/json"})
    assert (status, ctype) == (400, "application/problem+json") and body["detail"].startswith("malformed JSON")
    status, _, body = await api.call("POST", "/api/v1/backups", data=b"vm_ids=1",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 400 and body["detail"] == "expected application/json, got application/x-www-form-urlencoded"
    assert list((await api.catalog.jobs.list()).items) == [] and api.runner.pokes == 0


async def test_query_and_path_validation(api):
    await _expect(api, "GET", "/api/v1/jobs?limit=0", 422, "limit must be between 1 and 500")
    await _expect(api, "GET", "/api/v1/jobs?limit=ten", 422, "limit must be an integer")
    await _expect(api, "GET", "/api/v1/jobs?state=done", 422,
                  "state must be one of queued, running, succeeded, failed, canceled")
    await _expect(api, "GET", "/api/v1/jobs?vm_id=web", 422, "vm_id must be a UUID")
    await _expect(api, "GET", "/api/v1/jobs/123", 422, "id must be a UUID")
    await _expect(api, "GET", "/api/v1/backups?status=ok", 422,
                  "status must be one of running, succeeded, failed, deleted")
    await _expect(api, "GET", "/api/v1/tokens?include_revoked=maybe", 422, "include_revoked must be true or false")
    await _expect(api, "GET", "/api/v1/vms?cursor=gA", 422, "bad page cursor")
    # file search and its indexing: the VM id and the glob are checked before anything starts
    for method in ("GET", "DELETE"):
        await _expect(api, method, "/api/v1/vms/web1/files/indexing", 422, "id must be a UUID")
    vm = uuid.uuid4()
    await _expect(api, "GET", f"/api/v1/vms/{vm}/files", 422,
                  "name is required: a glob such as hostname or *.conf")
    await _expect(api, "GET", f"/api/v1/vms/{vm}/files?name=**/", 422,
                  "name must say more than * (a name or a glob such as *.conf)")
    await _expect(api, "GET", f"/api/v1/vms/{vm}/files?name=a%00b", 422,
                  "name must be at most 255 characters, without NUL")
    await _expect(api, "GET", f"/api/v1/vms/{vm}/files?name={'x' * 5000}", 422,
                  "name must be at most 255 characters, without NUL")
    status, _, body = await api.call("GET", "/api/v1/jobs?cursor=garbage")
    assert status == 422 and "cursor" in body["detail"]
    status, _, body = await api.call("GET", f"/api/v1/webhooks/{uuid.uuid4()}/deliveries?cursor=0")
    assert status == 404  # the webhook is checked first


async def test_a_body_over_the_limit_is_refused(api):
    status, ctype, body = await api.call("POST", "/api/v1/tokens", data=io.BytesIO(b"{" + b" " * (2 << 20) + b"}"),
                                         headers={"Content-Type": "application/json"})
    assert (status, ctype) == (413, "application/problem+json")
