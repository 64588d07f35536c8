"""On the sandbox: what a non-admin engine user may do in ovault follows the
engine's roles and permits on the objects involved, and every refusal names
the missing permit and the object.

- UserRole on VM A only: no backup of A, no restore of A's backup as new
  anywhere, no deleting its backups;
- UserVmManager on A, PowerUserRole on A's cluster and DiskCreator on its
  storage domain: restore as new there (the VM is then theirs) and nowhere else.
"""
from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
import uuid

import pytest

from tests.e2e.api_harness import ApiServer, cleanup, state_root

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def api(sandbox):
    d = state_root()
    s = ApiServer(sandbox.dir, d).start()
    yield s
    s.stop()
    cleanup(d)


def _sso_token(sandbox, user: str, password: str) -> str:
    base = sandbox.engine["api"].rsplit("/api", 1)[0]
    data = urllib.parse.urlencode({"grant_type": "password", "username": user, "password": password,
                                   "scope": "ovirt-app-api"}).encode()
    with urllib.request.urlopen(urllib.request.Request(base + "/sso/oauth/token", data=data),
                                context=sandbox.ssl, timeout=30) as r:
        return json.loads(r.read())["access_token"]


def _wait_job(api, job_id: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        j = api.ok("GET", f"/api/v1/jobs/{job_id}")
        if j["state"] in ("succeeded", "failed", "canceled"):
            return j
        assert time.monotonic() < deadline, f"job {job_id} did not end: {j}"
        time.sleep(0.3)


def _user(sandbox, permissions=None, vm_ids=None) -> str:
    name = f"perm-{uuid.uuid4().hex[:6]}@internal"
    sandbox.admin("POST", "/users", {"name": name, "password": "pw-123456", "admin": False,
                                     "vm_ids": vm_ids or [], "permissions": permissions or []})
    return _sso_token(sandbox, name, "pw-123456")


def _refused(api, method, path, body, tok, permit, kind, oid):
    status, doc = api.call(method, path, body, token=tok)
    assert status == 403, (method, path, status, doc)
    assert doc["type"] == "https://ovault.dev/problems/forbidden", doc
    assert (doc["permit"], doc["object_type"], doc["object_id"]) == (permit, kind, oid), doc
    assert permit in doc["detail"] and oid in doc["detail"], doc


@pytest.fixture(scope="module")
def setting(api, sandbox):
    vm = sandbox.vm("web-frontend")
    conn = sandbox.connect()
    try:
        v = conn.system_service().vms_service().vm_service(vm["id"]).get()
        cluster = v.cluster.id
        (sd,) = [s.id for s in conn.system_service().storage_domains_service().list()
                 if str(s.type).lower().endswith("data")]
    finally:
        conn.close()
    other = sandbox.admin("POST", "/clusters", {"name": f"elsewhere-{uuid.uuid4().hex[:4]}"})
    job = api.ok("POST", "/api/v1/backups", {"vm_ids": [vm["id"]], "mode": "full"}, expect=202)["job"]
    done = _wait_job(api, job["id"])
    assert done["state"] == "succeeded", done
    yield {"vm": vm["id"], "cluster": cluster, "sd": sd, "other": other["id"],
           "backup": done["machines"][0]["backup_id"]}
    sandbox.admin("DELETE", f"/clusters/{other['id']}")


def test_user_role_on_the_vm_may_look_but_not_back_up_restore_or_delete(api, sandbox, setting):
    s = setting
    tok = _user(sandbox, vm_ids=[s["vm"]])  # UserRole on A
    assert api.ok("GET", f"/api/v1/backups/{s['backup']}", token=tok)["vm_id"] == s["vm"]
    _refused(api, "POST", "/api/v1/backups", {"vm_ids": [s["vm"]]}, tok, "backup_disk", "vm", s["vm"])
    restore = f"/api/v1/backups/{s['backup']}/restore"
    _refused(api, "POST", restore, {"kind": "new", "name": "ur-1"}, tok, "create_vm", "cluster", s["cluster"])
    _refused(api, "POST", restore, {"kind": "new", "name": "ur-2", "cluster_id": s["other"]}, tok,
             "create_vm", "cluster", s["other"])
    _refused(api, "POST", restore, {"kind": "in_place"}, tok, "edit_vm_properties", "vm", s["vm"])
    _refused(api, "POST", restore, {"kind": "disks"}, tok, "create_disk", "storage_domain", s["sd"])
    _refused(api, "DELETE", f"/api/v1/backups/{s['backup']}", None, tok, "edit_vm_properties", "vm", s["vm"])
    _refused(api, "PATCH", f"/api/v1/backups/{s['backup']}", {"protected": True}, tok,
             "edit_vm_properties", "vm", s["vm"])
    # nothing was started or changed
    assert api.ok("GET", f"/api/v1/backups/{s['backup']}")["status"] == "succeeded"


def test_vm_manager_with_cluster_and_storage_rights_restores_there_and_nowhere_else(api, sandbox, setting):
    s = setting
    tok = _user(sandbox, permissions=[{"role": "UserVmManager", "vm_id": s["vm"]},
                                      {"role": "PowerUserRole", "cluster_id": s["cluster"]},
                                      {"role": "DiskCreator", "storage_domain_id": s["sd"]}])
    restore = f"/api/v1/backups/{s['backup']}/restore"
    name = f"perm-restored-{uuid.uuid4().hex[:4]}"
    _refused(api, "POST", restore, {"kind": "new", "name": name, "cluster_id": s["other"]}, tok,
             "create_vm", "cluster", s["other"])
    job = api.ok("POST", restore, {"kind": "new", "name": name, "cluster_id": s["cluster"]},
                 token=tok, expect=202)["job"]
    done = _wait_job(api, job["id"])
    assert done["state"] == "succeeded", done
    conn = sandbox.connect()
    try:
        (vm,) = conn.system_service().vms_service().list(search=f"name={name}")
        assert vm.cluster.id == s["cluster"]
        perms = conn.system_service().vms_service().vm_service(vm.id).permissions_service().list()
        roles = {r.id: r.name for r in conn.system_service().roles_service().list()}
        assert [roles[p.role.id] for p in perms if p.user is not None] == ["UserVmManager"]
    finally:
        conn.system_service().vms_service().vm_service(vm.id).remove()
        conn.close()
