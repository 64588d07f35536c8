"""Authorization per action and per object for non-admin engine (SSO) users:
what the engine's roles carry (the engine's real role → permit lists) on the
objects involved decides, and every refusal is a 403 naming the permit and the
object. Principals: UserRole on one VM, UserVmManager on one VM, PowerUserRole
on a cluster, DiskCreator on a storage domain, no permissions; an engine admin
and an ovault operator token are not limited by permits."""
from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest

from orchestrator.api.sso import SsoUser
from orchestrator.catalog import BackupDisk, NewMachine

DC, CL, CL2, SD, SD2 = (str(uuid.uuid4()) for _ in range(5))


async def _backup(catalog, vm_id, name, disk_id):
    job = await catalog.jobs.create("backup", [NewMachine(vm_id, name)])
    b = await catalog.backups.create(
        vm_id=vm_id, vm_name=name, mode="full", method="cbt", job_id=job.id,
        config={"name": name, "cluster_id": CL,
                "disks": {disk_id: {"storage_domain": SD, "alias": f"{name}_Disk1", "size": 1 << 30,
                                    "format": "raw"}}})
    await catalog.backups.put_disk(b.id, BackupDisk(disk_id, 1 << 30, "raw", alias=f"{name}_Disk1"))
    return await catalog.backups.complete(b.id, size_bytes=1 << 30, new_bytes=1 << 20,
                                          consistency="crash")


@pytest.fixture
async def lab(api):
    e = api.engine
    e.clusters = [SimpleNamespace(id=CL, name="Default", data_center=SimpleNamespace(id=DC)),
                  SimpleNamespace(id=CL2, name="Other", data_center=SimpleNamespace(id=DC))]
    e.storage_domains = [SimpleNamespace(id=SD, name="data", type="data", data_centers=[SimpleNamespace(id=DC)]),
                         SimpleNamespace(id=SD2, name="data2", type="data",
                                         data_centers=[SimpleNamespace(id=DC)])]
    a, other = e.add_vm("app-a"), e.add_vm("app-b")

    async def list_vms(search=None):  # the engine's `name=` search
        return [v for v in e.vms.values() if search is None or f"name={v.name}" == search]
    e.list_vms = list_vms
    for vm in (a, other):
        e.vms[vm].status = "down"
        e.disks[vm] = [SimpleNamespace(id=str(uuid.uuid4()), alias=f"{e.vms[vm].name}_Disk1", name=None,
                                       storage_domains=[SimpleNamespace(id=SD)])]
    b = await _backup(api.catalog, a, "app-a", e.disks[a][0].id)
    users = {
        "user-role": [("UserRole", "vm", a)],
        "vm-manager": [("UserVmManager", "vm", a)],
        "manager-power": [("UserVmManager", "vm", a), ("PowerUserRole", "cluster", CL),
                          ("DiskCreator", "storage_domain", SD)],
        "power-cluster": [("PowerUserRole", "cluster", CL)],
        "disk-creator": [("DiskCreator", "storage_domain", SD)],
        "nothing": [],
    }
    for token, grants in users.items():
        uid = f"u-{token}"
        for role, kind, oid in grants:
            e.grant(uid, role, kind, oid)
        # what the engine shows them (Filter: true): the VM they hold a role on
        seen = frozenset(oid for _, kind, oid in grants if kind == "vm")
        api.sso.users[token] = SsoUser(name=f"{token}@internal", principal_id=uid, admin=False,
                                       vm_ids=seen, engine_user_id=uid)
    api.sso.users["engine-admin"] = SsoUser(name="admin@internal", principal_id="p0", admin=True,
                                            vm_ids=None)
    return SimpleNamespace(a=a, other=other, backup=b, disk=e.disks[a][0].id)


def _refused(status, body, permit, kind, oid):
    assert status == 403, body
    assert (body["permit"], body["object_type"], body["object_id"]) == (permit, kind, oid), body
    assert permit in body["detail"] and oid in body["detail"], body


async def test_backup_needs_backup_disk_on_the_vm_and_its_disks(api, lab):
    for token in ("user-role", "power-cluster"):
        status, _, body = await api.call("POST", "/api/v1/backups", token=token,
                                         json={"vm_ids": [lab.a]})
        if token == "power-cluster":   # PowerUserRole on a cluster does not show its VMs
            assert status == 404, body
            continue
        _refused(status, body, "backup_disk", "vm", lab.a)
    status, _, body = await api.call("POST", "/api/v1/backups", token="vm-manager", json={"vm_ids": [lab.a]})
    assert status == 202 and body["job"]["machines"][0]["vm_id"] == lab.a, body
    # a disk granted to no one else: still covered by the VM's role (inheritance)
    assert api.runner.pokes == 1


async def test_restore_as_new_needs_create_vm_on_the_cluster_and_create_disk_on_the_domain(api, lab):
    path = f"/api/v1/backups/{lab.backup.id}/restore"
    status, _, body = await api.call("POST", path, token="user-role", json={"kind": "new"})
    _refused(status, body, "create_vm", "cluster", CL)
    # UserVmManager on the VM carries create_vm there, not on the cluster
    status, _, body = await api.call("POST", path, token="vm-manager", json={"kind": "new", "name": "x1"})
    _refused(status, body, "create_vm", "cluster", CL)
    status, _, body = await api.call("POST", path, token="manager-power",
                                     json={"kind": "new", "name": "x2", "cluster_id": CL2})
    _refused(status, body, "create_vm", "cluster", CL2)
    status, _, body = await api.call("POST", path, token="manager-power",
                                     json={"kind": "new", "name": "x3", "storage_domain_id": SD2})
    _refused(status, body, "create_disk", "storage_domain", SD2)
    status, _, body = await api.call("POST", path, token="manager-power", json={"kind": "new", "name": "x4"})
    assert status == 202, body
    assert body["job"]["request"]["owner_user_id"] == "u-manager-power"


async def test_restore_in_place_and_disks(api, lab):
    path = f"/api/v1/backups/{lab.backup.id}/restore"
    status, _, body = await api.call("POST", path, token="user-role", json={"kind": "in_place"})
    _refused(status, body, "edit_vm_properties", "vm", lab.a)
    status, _, body = await api.call("POST", path, token="vm-manager", json={"kind": "in_place"})
    assert status == 202, body
    # disks: create_disk on the domain (UserVmManager on a VM does not reach the domain)
    status, _, body = await api.call("POST", path, token="user-role", json={"kind": "disks"})
    _refused(status, body, "create_disk", "storage_domain", SD)
    status, _, body = await api.call("POST", path, token="manager-power", json={"kind": "disks"})
    assert status == 202 and body["job"]["request"]["owner_user_id"] == "u-manager-power", body


async def test_delete_protect_and_prune_need_operator_rights_on_the_vm(api, lab):
    bid = lab.backup.id
    status, _, body = await api.call("PATCH", f"/api/v1/backups/{bid}", token="user-role",
                                     json={"protected": True})
    _refused(status, body, "edit_vm_properties", "vm", lab.a)
    status, _, body = await api.call("DELETE", f"/api/v1/backups/{bid}", token="user-role")
    _refused(status, body, "edit_vm_properties", "vm", lab.a)
    status, _, body = await api.call("PATCH", f"/api/v1/backups/{bid}", token="vm-manager",
                                     json={"protected": False})
    assert status == 200, body
    status, _, body = await api.call("DELETE", f"/api/v1/backups/{bid}", token="vm-manager")
    assert status == 202, body


@pytest.mark.parametrize("token, expect", [
    ("user-role", 403), ("vm-manager", 202), ("manager-power", 202), ("power-cluster", 404),
    ("disk-creator", 404), ("nothing", 404), ("engine-admin", 202), ("operator-token", 202)])
async def test_backup_by_principal(api, lab, token, expect):
    if token == "operator-token":
        token = await api.token("operator")
    status, _, body = await api.call("POST", "/api/v1/backups", token=token, json={"vm_ids": [lab.a]})
    assert status == expect, body
    if expect == 403:
        assert body["permit"] == "backup_disk"


@pytest.mark.parametrize("token, body_, expect", [
    ("disk-creator", {"kind": "new"}, 404), ("nothing", {"kind": "new"}, 404),
    ("power-cluster", {"kind": "new"}, 404), ("engine-admin", {"kind": "new", "name": "adm"}, 202),
    ("operator-token", {"kind": "new", "name": "tok"}, 202),
    ("manager-power", {"kind": "disks", "target_vm_id": "OTHER"}, 404)])
async def test_restore_by_principal(api, lab, token, body_, expect):
    if token == "operator-token":
        token = await api.token("operator")
    if body_.get("target_vm_id") == "OTHER":
        body_ = {**body_, "target_vm_id": lab.other}
    status, _, body = await api.call("POST", f"/api/v1/backups/{lab.backup.id}/restore", token=token, json=body_)
    assert status == expect, body


async def test_attaching_restored_disks_needs_configure_vm_storage_on_the_target(api, lab):
    # the user sees app-b (UserRole) but may not change its storage
    api.engine.grant("u-manager-power", "UserRole", "vm", lab.other)
    u = api.sso.users["manager-power"]
    api.sso.users["manager-power"] = SsoUser(name=u.name, principal_id=u.principal_id, admin=False,
                                             vm_ids=u.vm_ids | {lab.other}, engine_user_id=u.engine_user_id)
    status, _, body = await api.call("POST", f"/api/v1/backups/{lab.backup.id}/restore", token="manager-power",
                                     json={"kind": "disks", "target_vm_id": lab.other})
    _refused(status, body, "configure_vm_storage", "vm", lab.other)
