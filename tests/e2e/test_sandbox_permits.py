"""The sandbox's engine permissions: roles carry the engine's permits, the lab's
admin API grants roles at every level, and `Filter: true` shows what the
roles let a user see (a role on a parent shows the children only when the
role views children)."""
from __future__ import annotations

import uuid

import ovirtsdk4 as sdk
import ovirtsdk4.types as t
import pytest

pytestmark = pytest.mark.e2e


def _user_conn(sandbox, name: str, password: str) -> sdk.Connection:
    e = sandbox.engine
    return sdk.Connection(url=e["api"], username=name, password=password, ca_file=e["ca_file"])


def test_roles_carry_the_engine_s_permits(conn):
    roles = {r.name: r for r in conn.system_service().roles_service().list()}
    assert roles["UserVmManager"].id == "def00006-0000-0000-0000-def000000006"
    assert roles["DiskOperator"].id == "def0000a-0000-0000-0000-def00000000b"
    assert roles["DiskCreator"].id == "def0000a-0000-0000-0000-def00000000c"
    assert roles["VmCreator"].id == "def0000a-0000-0000-0000-def00000000d"

    def permits(name):
        svc = conn.system_service().roles_service().role_service(roles[name].id).permits_service()
        return {p.name: p for p in svc.list()}
    user, manager, power = permits("UserRole"), permits("UserVmManager"), permits("PowerUserRole")
    assert {"run_vm", "stop_vm", "login"} <= set(user)
    assert not {"backup_disk", "edit_vm_properties", "create_vm", "delete_vm"} & set(user)
    assert {"backup_disk", "edit_vm_properties", "create_disk", "attach_disk", "delete_vm"} <= set(manager)
    assert {"create_vm", "create_disk"} <= set(power) and "backup_disk" not in power
    assert set(permits("DiskCreator")) == {"create_disk", "login"}
    assert set(permits("VmCreator")) == {"create_vm", "create_disk", "login", "assign_cpu_profile"}
    assert manager["backup_disk"].id == "1110" and manager["backup_disk"].administrative
    assert not manager["create_vm"].administrative and manager["create_vm"].id == "1"
    assert len(permits("SuperUser")) > 90
    one = conn.system_service().roles_service().role_service(roles["UserRole"].id) \
        .permits_service().permit_service("22").get()
    assert one.name == "run_vm"
    with pytest.raises(sdk.NotFoundError):
        conn.system_service().roles_service().role_service(roles["UserRole"].id) \
            .permits_service().permit_service("1110").get()


def test_admin_api_grants_roles_at_every_level(conn, sandbox):
    s = conn.system_service()
    vms = {v.name: v for v in s.vms_service().list()}
    vm = vms["db-primary"]
    cluster = s.clusters_service().cluster_service(vm.cluster.id).get()
    sd = s.storage_domains_service().list()[0]
    name = f"perm-{uuid.uuid4().hex[:6]}"
    made = sandbox.admin("POST", "/users", {
        "name": f"{name}@internal", "password": "pw-perm-1", "admin": False,
        "vm_ids": [vms["legacy-erp"].id],
        "permissions": [{"role": "UserVmManager", "vm_id": vm.id},
                        {"role": "PowerUserRole", "cluster_id": cluster.id},
                        {"role": "DiskCreator", "storage_domain_id": sd.id}]})
    assert {(p["role"], p["object_type"], p["object_id"]) for p in made["permissions"]} == {
        ("UserRole", "vm", vms["legacy-erp"].id), ("UserVmManager", "vm", vm.id),
        ("PowerUserRole", "cluster", cluster.id), ("DiskCreator", "storage_domain", sd.id)}
    (u,) = s.users_service().list(search=f"usrname={name}@internal-authz")
    perms = s.users_service().user_service(u.id).permissions_service().list()
    roles = {r.id: r.name for r in s.roles_service().list()}
    got = set()
    for p in perms:
        obj = p.vm or p.cluster or p.storage_domain
        got.add((roles[p.role.id], obj.id))
    assert got == {("UserRole", vms["legacy-erp"].id), ("UserVmManager", vm.id),
                   ("PowerUserRole", cluster.id), ("DiskCreator", sd.id)}
    # The VM's own permissions list the VM-level grants.
    vp = s.vms_service().vm_service(vm.id).permissions_service().list()
    assert [roles[p.role.id] for p in vp if p.user and p.user.id == u.id] == ["UserVmManager"]
    # PowerUserRole on the cluster lets the user create there, not see its VMs.
    c = _user_conn(sandbox, f"{name}@internal", "pw-perm-1")
    try:
        assert sorted(v.name for v in c.system_service().vms_service().list()) == ["db-primary", "legacy-erp"]
    finally:
        c.close()
    # A viewing role on the cluster shows all of its VMs.
    other = f"perm-{uuid.uuid4().hex[:6]}"
    sandbox.admin("POST", "/users", {"name": f"{other}@internal", "password": "pw-perm-2",
                                     "permissions": [{"role": "UserRole", "cluster_id": cluster.id}]})
    c = _user_conn(sandbox, f"{other}@internal", "pw-perm-2")
    try:
        assert sorted(v.name for v in c.system_service().vms_service().list()) == \
            sorted(v.name for v in vms.values() if v.cluster.id == cluster.id)
    finally:
        c.close()


@pytest.mark.parametrize("body, words", [
    ({"permissions": [{"role": "NoSuchRole", "vm_id": "x"}]}, "unknown role"),
    ({"permissions": [{"role": "UserRole", "vm_id": "not-a-vm"}]}, "no such vm"),
    ({"permissions": [{"role": "UserRole", "vm_id": "a", "cluster_id": "b"}]}, "name one of"),
])
def test_admin_api_refuses_bad_permissions(sandbox, body, words):
    with pytest.raises(AssertionError, match=words):
        sandbox.admin("POST", "/users", {"name": f"bad-{uuid.uuid4().hex[:6]}@internal",
                                         "password": "pw", **body})
