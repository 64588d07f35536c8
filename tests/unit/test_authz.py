"""The engine-permit authorizer: inheritance down the engine's tree, caching,
and who is checked at all (the engine's real role tables from the sandbox)."""
from __future__ import annotations

from types import SimpleNamespace as NS

import pytest

from orchestrator.api.auth import Principal
from orchestrator.api.authz import Authorizer, Obj, PermitMissing
from orchestrator.errors import Forbidden
from sandbox.engine.roles import ROLE_IDS, role_permits


class Engine:
    def __init__(self, grants):
        self.grants = grants  # [(role, kind, id)]
        self.asked: list[str] = []

    async def user_permissions(self, user_id):
        self.asked.append("perms")
        return [(ROLE_IDS[r], k, i) for r, k, i in self.grants]

    async def role_permits(self, role_id):
        self.asked.append("role")
        return frozenset(role_permits({v: k for k, v in ROLE_IDS.items()}[role_id]))

    async def list_clusters(self):
        return [NS(id="cl", data_center=NS(id="dc"))]

    async def list_storage_domains(self):
        return [NS(id="sd", data_centers=[NS(id="dc")])]

    async def get_vm(self, vm_id, all_content=False):
        return NS(id=vm_id, cluster=NS(id="cl"))

    async def get_disk(self, disk_id):
        return NS(id=disk_id, storage_domains=[NS(id="sd")])


USER = Principal(name="u@internal", role="operator", kind="sso", vm_ids=frozenset({"vm"}),
                 engine_user_id="u1")


@pytest.mark.parametrize("grant, permit, obj, allowed", [
    (("UserRole", "vm", "vm"), "backup_disk", Obj("vm", "vm"), False),
    (("UserVmManager", "vm", "vm"), "backup_disk", Obj("vm", "vm"), True),
    (("UserVmManager", "vm", "vm"), "backup_disk", Obj("disk", "d1", vm_id="vm"), True),  # the disk's VM
    (("UserVmManager", "vm", "vm"), "create_vm", Obj("cluster", "cl"), False),  # not upwards
    (("PowerUserRole", "cluster", "cl"), "create_vm", Obj("cluster", "cl"), True),
    (("PowerUserRole", "data_center", "dc"), "create_vm", Obj("cluster", "cl"), True),  # inherited
    (("PowerUserRole", "data_center", "dc"), "create_disk", Obj("storage_domain", "sd"), True),
    (("DiskCreator", "storage_domain", "sd"), "create_disk", Obj("storage_domain", "sd"), True),
    (("DiskCreator", "storage_domain", "sd"), "create_disk", Obj("storage_domain", "sd2"), False),
    (("ClusterAdmin", "cluster", "cl"), "edit_vm_properties", Obj("vm", "vm"), True),
    (("DiskOperator", "disk", "d1"), "backup_disk", Obj("vm", "vm"), False),
    (("SuperUser", "system", None), "configure_vm_storage", Obj("vm", "other"), True),
])
async def test_inheritance(grant, permit, obj, allowed):
    az = Authorizer(Engine([grant]))
    if allowed:
        await az.require(USER, permit, obj)
    else:
        with pytest.raises(PermitMissing) as e:
            await az.require(USER, permit, obj)
        assert e.value.problem_extra == {"permit": permit, "object_type": obj.kind, "object_id": obj.id}
        assert permit in str(e.value)


async def test_answers_are_cached_and_tokens_and_admins_are_not_checked():
    eng = Engine([("UserVmManager", "vm", "vm")])
    az = Authorizer(eng, ttl=60)
    for _ in range(3):
        await az.require(USER, "backup_disk", Obj("vm", "vm"))
    assert eng.asked == ["perms", "role"]
    await az.require(Principal(name="t", role="operator"), "backup_disk", Obj("vm", "x"))
    await az.require(Principal(name="a", role="admin", kind="sso"), "create_vm", Obj("cluster", "x"))
    assert eng.asked == ["perms", "role"]
    with pytest.raises(Forbidden):  # an SSO user the engine gave no id for
        await az.require(Principal(name="n", role="operator", kind="sso", vm_ids=frozenset()),
                         "backup_disk", Obj("vm", "vm"))
