"""The `ovirt.ovirt` Ansible collection (bundled in the pinned `ansible`
release) against the sandbox. Every module's result is checked on its own:
through the SDK, the lab's admin API (digests, users) and the engine's
events, not only "the task did not fail". Slow tier: it builds a venv once
(under the tests' cache folder, tests.helpers.CACHE_DIR) and each playbook takes a few seconds."""
from __future__ import annotations

import base64
import json
import subprocess
import urllib.request
import uuid

import ovirtsdk4 as sdk
import ovirtsdk4.types as t
import pytest

from tests.e2e.ansible_lab import Playbooks, ansible_venv
from tests.helpers import image_digest, wait

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def plays(sandbox, tmp_path_factory):
    return Playbooks(ansible_venv(), sandbox, tmp_path_factory.mktemp("ansible"))


def _uid() -> str:
    return uuid.uuid4().hex[:6]


def _vm_ids(result) -> set:
    return {v["id"] for v in result["ovirt_vms"]}


def _all_vms(conn):
    return conn.system_service().vms_service().list(follow="tags")


def test_searches_apply_tag_cluster_host_and_refuse_unknown_fields(plays, conn, sandbox):
    r = plays.run([
        {"name": "gold", "ovirt.ovirt.ovirt_vm_info": {"auth": "{{ ovirt_auth }}", "pattern": "tag=gold"}},
        {"name": "missing", "ovirt.ovirt.ovirt_vm_info": {"auth": "{{ ovirt_auth }}",
                                                          "pattern": "tag=no-such-tag-anywhere"}},
        {"name": "cluster", "ovirt.ovirt.ovirt_vm_info": {"auth": "{{ ovirt_auth }}",
                                                          "pattern": "cluster=Default"}},
        {"name": "host", "ovirt.ovirt.ovirt_vm_info": {"auth": "{{ ovirt_auth }}", "pattern": "host=host1"}},
        {"name": "unknown", "ovirt.ovirt.ovirt_vm_info": {"auth": "{{ ovirt_auth }}",
                                                          "pattern": "colour=blue"}},
        {"name": "gold_up", "ovirt.ovirt.ovirt_vm_info": {"auth": "{{ ovirt_auth }}",
                                                          "pattern": "tag=gold and name=db-*"}},
        {"name": "disks", "ovirt.ovirt.ovirt_disk_info": {"auth": "{{ ovirt_auth }}",
                                                          "pattern": "vm_names=db-primary"}},
        {"name": "hosts", "ovirt.ovirt.ovirt_host_info": {"auth": "{{ ovirt_auth }}",
                                                          "pattern": "cluster=Default"}},
    ])
    vms = _all_vms(conn)
    gold = {v.id for v in vms if any(x.name == "gold" for x in v.tags or [])}
    assert gold == {sandbox.vm("db-primary")["id"], sandbox.vm("web-frontend")["id"]}
    assert _vm_ids(r["gold"]) == gold
    assert _vm_ids(r["missing"]) == set()
    # The engine rejects a search naming a field it does not know: no VM comes back.
    assert _vm_ids(r["unknown"]) == set()
    assert _vm_ids(r["gold_up"]) == {sandbox.vm("db-primary")["id"]}
    default = next(c for c in conn.system_service().clusters_service().list() if c.name == "Default")
    in_default = {v.id for v in vms if v.cluster.id == default.id}
    assert in_default and _vm_ids(r["cluster"]) == in_default
    host1 = next(h for h in conn.system_service().hosts_service().list() if h.name == "host1")
    on_host1 = {v.id for v in vms if v.host and v.host.id == host1.id}
    assert on_host1 and _vm_ids(r["host"]) == on_host1
    vms_service = conn.system_service().vms_service()
    atts = vms_service.vm_service(sandbox.vm("db-primary")["id"]).disk_attachments_service().list()
    assert {d["id"] for d in r["disks"]["ovirt_disks"]} == {a.disk.id for a in atts} and len(atts) == 2
    assert {h["name"] for h in r["hosts"]["ovirt_hosts"]} == {"host1", "host2"}


def test_tags_module_hierarchy_assignment_search_and_removal(plays, conn, sandbox):
    parent, child = f"ans-parent-{_uid()}", f"ans-child-{_uid()}"
    r = plays.run([
        {"name": "parent", "ovirt.ovirt.ovirt_tag": {"auth": "{{ ovirt_auth }}", "name": parent,
                                                     "description": "made by ansible"}},
        {"name": "child", "ovirt.ovirt.ovirt_tag": {"auth": "{{ ovirt_auth }}", "name": child,
                                                    "parent": parent, "vms": ["legacy-erp"]}},
        {"name": "again", "ovirt.ovirt.ovirt_tag": {"auth": "{{ ovirt_auth }}", "name": child,
                                                    "parent": parent, "vms": ["legacy-erp"]}},
        {"name": "info", "ovirt.ovirt.ovirt_tag_info": {"auth": "{{ ovirt_auth }}", "name": child}},
        {"name": "by_parent", "ovirt.ovirt.ovirt_vm_info": {"auth": "{{ ovirt_auth }}",
                                                            "pattern": f"tag={parent}"}},
    ])
    assert r["parent"]["changed"] and r["child"]["changed"] and not r["again"]["changed"]
    tags = {x.name: x for x in conn.system_service().tags_service().list()}
    assert tags[child].parent.id == tags[parent].id
    assert tags[parent].parent.id == "00000000-0000-0000-0000-000000000000"
    assert tags[parent].description == "made by ansible"
    legacy = sandbox.vm("legacy-erp")["id"]
    vm_tags = conn.system_service().vms_service().vm_service(legacy).tags_service().list()
    assert child in {x.name for x in vm_tags}
    assert [x["name"] for x in r["info"]["ovirt_tags"]] == [child]
    assert _vm_ids(r["by_parent"]) == {legacy}  # a tag selects what carries a tag below it
    evs = conn.system_service().events_service().list(search=f"vm.id={legacy}", max=20)
    assert any(child in ev.description and "tagged" in ev.description for ev in evs)

    r = plays.run([{"name": "rm", "ovirt.ovirt.ovirt_tag": {"auth": "{{ ovirt_auth }}",
                                                          "name": parent, "state": "absent"}}])
    assert r["rm"]["changed"]
    names = {x.name for x in conn.system_service().tags_service().list()}
    assert parent not in names and child not in names and "gold" in names
    vm_tags = conn.system_service().vms_service().vm_service(legacy).tags_service().list()
    assert child not in {x.name for x in vm_tags}


def _make_qcow2(path, size_mib=64):
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), f"{size_mib}M"], check=True)
    for off, pat in ((0, 0x11), (5 << 20, 0x22), (40 << 20, 0x33)):
        subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -P {pat} {off} 1M", str(path)],
                       check=True, capture_output=True)


def test_upload_create_from_blank_run_stop_remove(plays, conn, sandbox, tmp_path):
    img = tmp_path / "image.qcow2"
    _make_qcow2(img)
    disk, name = f"ans-disk-{_uid()}", f"ans-vm-{_uid()}"
    auth = {"auth": "{{ ovirt_auth }}"}
    r = plays.run([
        {"name": "upload", "ovirt.ovirt.ovirt_disk": {**auth, "name": disk, "upload_image_path": str(img),
                                                      "storage_domain": "data", "format": "cow",
                                                      "size": "64MiB", "wait": True}},
        {"name": "create", "ovirt.ovirt.ovirt_vm": {
            **auth, "name": name, "cluster": "Default", "template": "Blank", "memory": "1GiB",
            "cpu_cores": 2, "operating_system": "rhel_8x64", "state": "stopped",
            "disks": [{"name": disk, "bootable": True, "interface": "virtio_scsi"}],
            "nics": [{"name": "nic1", "profile_name": "ovirtmgmt", "interface": "virtio"}]}},
        {"name": "run", "ovirt.ovirt.ovirt_vm": {**auth, "name": name, "state": "running", "wait": True}},
        {"name": "stop", "ovirt.ovirt.ovirt_vm": {**auth, "name": name, "state": "stopped", "wait": True}},
        {"name": "download", "ovirt.ovirt.ovirt_disk": {**auth, "name": disk, "format": "cow",
                                                        "download_image_path": str(tmp_path / "back.qcow2")}},
        {"name": "snaps", "ovirt.ovirt.ovirt_snapshot_info": {**auth, "vm": name}},
    ])
    s = conn.system_service()
    (d,) = s.disks_service().list(search=f"name={disk}")
    assert d.id == r["upload"]["id"] and d.format == t.DiskFormat.COW
    assert sandbox.digest(d.id) == image_digest(img)  # the uploaded content, byte for byte
    assert image_digest(tmp_path / "back.qcow2") == image_digest(img)  # and downloaded again
    assert [x["snapshot_type"] for x in r["snaps"]["ovirt_snapshots"]] == ["active"]
    (vm,) = s.vms_service().list(search=f"name={name}")
    assert r["create"]["changed"] and r["create"]["id"] == vm.id
    assert vm.template.id == "00000000-0000-0000-0000-000000000000"
    assert vm.memory == 1 << 30 and vm.cpu.topology.cores == 2 and vm.os.type == "rhel_8x64"
    vm_service = s.vms_service().vm_service(vm.id)
    (att,) = vm_service.disk_attachments_service().list()
    assert att.disk.id == d.id and att.bootable
    assert [n.name for n in vm_service.nics_service().list()] == ["nic1"]
    # (the modules return the VM as it was before the action; the events tell the rest)
    assert r["run"]["changed"] and r["stop"]["changed"]
    assert vm_service.get().status == t.VmStatus.DOWN
    codes = [ev.code for ev in reversed(s.events_service().list(search=f"vm.id={vm.id}"))]
    assert 34 in codes and 153 in codes and 33 in codes  # created, started, powered off
    assert codes.index(153) < codes.index(33)

    r = plays.run([{"name": "remove", "ovirt.ovirt.ovirt_vm": {**auth, "name": name, "state": "absent"}}])
    assert r["remove"]["changed"]
    assert s.vms_service().list(search=f"name={name}") == []
    assert s.disks_service().list(search=f"name={disk}") == []  # removed with the VM


def test_clone_from_snapshot_copies_the_snapshot_disks(plays, conn, sandbox):
    src = sandbox.vm("web-frontend")["id"]
    desc, clone = f"ans-snap-{_uid()}", f"ans-clone-{_uid()}"
    auth = {"auth": "{{ ovirt_auth }}"}
    plays.run([{"name": "snap", "ovirt.ovirt.ovirt_snapshot": {
        **auth, "vm_name": "web-frontend", "description": desc, "use_memory": False, "wait": True}}])
    s = conn.system_service()
    snaps = s.vms_service().vm_service(src).snapshots_service()
    (snap,) = [x for x in snaps.list() if x.description == desc]
    wait(lambda: snaps.snapshot_service(snap.id).get().snapshot_status == t.SnapshotStatus.OK)
    frozen = {x.id: x.image_id for x in snaps.snapshot_service(snap.id).disks_service().list()}
    sandbox.write(src, 0, 1 << 20, pattern=0x5a)  # the active layer moves on after the snapshot
    r = plays.run([{"name": "clone", "ovirt.ovirt.ovirt_vm": {
        **auth, "name": clone, "cluster": "Default", "snapshot_vm": "web-frontend",
        "snapshot_name": desc, "state": "stopped"}}])
    (vm,) = s.vms_service().list(search=f"name={clone}")
    assert r["clone"]["changed"] and r["clone"]["id"] == vm.id
    atts = s.vms_service().vm_service(vm.id).disk_attachments_service().list()
    assert len(atts) == len(frozen) == 1
    (src_disk, vol), = frozen.items()
    assert atts[0].disk.id != src_disk
    want = sandbox.digest(src_disk, snapshot=vol)
    assert sandbox.digest(atts[0].disk.id) == want != sandbox.digest(src_disk)
    assert s.vms_service().vm_service(vm.id).get().memory == 8 << 30  # the snapshot's configuration
    plays.run([
        {"name": "rm", "ovirt.ovirt.ovirt_vm": {**auth, "name": clone, "state": "absent"}},
        {"name": "rmsnap", "ovirt.ovirt.ovirt_snapshot": {**auth, "vm_name": "web-frontend",
                                                          "snapshot_id": snap.id, "state": "absent",
                                                          "wait": True}},
    ])
    assert s.vms_service().list(search=f"name={clone}") == []
    wait(lambda: all(x.id != snap.id for x in snaps.list()), timeout=60)


def test_user_and_permission_modules_grant_exactly_one_vm(plays, conn, sandbox):
    principal = f"ans-user-{_uid()}"
    sandbox.admin("POST", "/users", {"name": f"{principal}@internal", "password": "s3cret-pw",
                                     "engine_user": False})
    s = conn.system_service()
    assert s.users_service().list(search=f"usrname={principal}@internal-authz") == []
    auth = {"auth": "{{ ovirt_auth }}"}
    r = plays.run([
        {"name": "user", "ovirt.ovirt.ovirt_user": {**auth, "name": principal,
                                                    "authz_name": "internal-authz"}},
        {"name": "again", "ovirt.ovirt.ovirt_user": {**auth, "name": principal,
                                                     "authz_name": "internal-authz"}},
        {"name": "perm", "ovirt.ovirt.ovirt_permission": {
            **auth, "user_name": principal, "authz_name": "internal-authz", "role": "UserRole",
            "object_type": "vm", "object_name": "legacy-erp"}},
        {"name": "perm_again", "ovirt.ovirt.ovirt_permission": {
            **auth, "user_name": principal, "authz_name": "internal-authz", "role": "UserRole",
            "object_type": "vm", "object_name": "legacy-erp"}},
        {"name": "users", "ovirt.ovirt.ovirt_user_info": {**auth,
                                                          "pattern": f"usrname={principal}@internal-authz"}},
        {"name": "perms", "ovirt.ovirt.ovirt_permission_info": {**auth, "user_name": principal,
                                                                "authz_name": "internal-authz"}},
    ])
    assert r["user"]["changed"] and not r["again"]["changed"]
    assert r["perm"]["changed"] and not r["perm_again"]["changed"]
    (user,) = s.users_service().list(search=f"usrname={principal}@internal-authz")
    assert user.id == r["user"]["id"] and user.principal == principal
    assert [u["id"] for u in r["users"]["ovirt_users"]] == [user.id]
    legacy = sandbox.vm("legacy-erp")["id"]
    perms = s.vms_service().vm_service(legacy).permissions_service().list()
    mine = [p for p in perms if p.user and p.user.id == user.id]
    assert len(mine) == 1 and s.roles_service().role_service(mine[0].role.id).get().name == "UserRole"
    assert [(p["role"], p["user_id"], p["vm_id"], p["vm"]) for p in r["perms"]["ovirt_permissions"]] \
        == [("UserRole", user.id, legacy, "legacy-erp")]
    e = sandbox.engine
    uc = sdk.Connection(url=e["api"], username=f"{principal}@internal", password="s3cret-pw",
                        ca_file=e["ca_file"])
    try:
        assert [v.id for v in uc.system_service().vms_service().list()] == [legacy]
        r = plays.run([{"name": "revoke", "ovirt.ovirt.ovirt_permission": {
            **auth, "user_name": principal, "authz_name": "internal-authz", "role": "UserRole",
            "object_type": "vm", "object_name": "legacy-erp", "state": "absent"}}])
        assert r["revoke"]["changed"]
        assert uc.system_service().vms_service().list() == []
        assert all(p.user is None or p.user.id != user.id
                   for p in s.vms_service().vm_service(legacy).permissions_service().list())
    finally:
        uc.close()


def test_vm_update_applies_and_a_refused_update_changes_nothing(plays, conn):
    name = f"ans-upd-{_uid()}"
    auth = {"auth": "{{ ovirt_auth }}"}
    r = plays.run([
        {"name": "create", "ovirt.ovirt.ovirt_vm": {**auth, "name": name, "cluster": "Default",
                                                    "template": "Blank", "memory": "1GiB",
                                                    "state": "stopped"}},
        {"name": "update", "ovirt.ovirt.ovirt_vm": {**auth, "name": name, "memory": "2GiB",
                                                    "description": "resized by ansible",
                                                    "state": "stopped"}},
        {"name": "suspend_needs_up", "ovirt.ovirt.ovirt_vm": {**auth, "name": name, "state": "running",
                                                              "wait": True}},
        {"name": "suspend", "ovirt.ovirt.ovirt_vm": {**auth, "name": name, "state": "suspended",
                                                     "wait": True}},
        {"name": "clash", "ovirt.ovirt.ovirt_vm": {**auth, "id": "{{ r0.id }}", "name": "db-primary",
                                                   "memory": "4GiB"}, "ignore_errors": True},
    ])
    s = conn.system_service()
    (vm,) = s.vms_service().list(search=f"name={name}")
    assert r["update"]["changed"] and r["suspend"]["changed"]
    assert r["clash"]["failed"] and "409" in r["clash"]["msg"]
    assert vm.memory == 2 << 30 and vm.description == "resized by ansible"  # not 4 GiB
    assert vm.status == t.VmStatus.SUSPENDED
    plays.run([{"name": "rm", "ovirt.ovirt.ovirt_vm": {**auth, "name": name, "state": "absent"}}])
    assert s.vms_service().list(search=f"name={name}") == []


def test_info_modules_and_external_jobs(plays, conn, sandbox):
    auth = {"auth": "{{ ovirt_auth }}"}
    job = f"ans-job-{_uid()}"
    r = plays.run([
        {"name": "templates", "ovirt.ovirt.ovirt_template_info": {**auth, "pattern": "name=Blank"}},
        {"name": "networks", "ovirt.ovirt.ovirt_network_info": {**auth}},
        {"name": "profiles", "ovirt.ovirt.ovirt_vnic_profile_info": {**auth}},
        {"name": "groups", "ovirt.ovirt.ovirt_group_info": {**auth}},
        {"name": "oses", "ovirt.ovirt.ovirt_vm_os_info": {**auth}},
        {"name": "policies", "ovirt.ovirt.ovirt_scheduling_policy_info": {**auth}},
        {"name": "quotas", "ovirt.ovirt.ovirt_quota_info": {**auth, "data_center": "Default"}},
        {"name": "sdvms", "ovirt.ovirt.ovirt_storage_vm_info": {**auth, "storage_domain": "data"}},
        {"name": "labels", "ovirt.ovirt.ovirt_affinity_label_info": {**auth}},
        {"name": "option", "ovirt.ovirt.ovirt_system_option_info": {**auth, "name": "MaxVmNameLength"}},
        {"name": "events", "ovirt.ovirt.ovirt_event_info": {**auth, "search": "severity=normal",
                                                            "max": 5}},
        {"name": "job", "ovirt.ovirt.ovirt_job": {**auth, "description": job, "steps": [
            {"description": "step one", "state": "present"}]}},
        {"name": "job_done", "ovirt.ovirt.ovirt_job": {**auth, "description": job, "state": "finished",
                                                       "steps": [{"description": "step one",
                                                                  "state": "finished"}]}},
    ])
    s = conn.system_service()
    assert [x["name"] for x in r["templates"]["ovirt_templates"]] == ["Blank"]
    assert r["templates"]["ovirt_templates"][0]["version"]["version_number"] == 1
    assert [x["id"] for x in r["networks"]["ovirt_networks"]] == [n.id for n in s.networks_service().list()]
    assert [x["name"] for x in r["profiles"]["ovirt_vnic_profiles"]] == ["ovirtmgmt"]
    assert r["groups"]["ovirt_groups"] == [] and r["quotas"]["ovirt_quotas"] == []
    assert r["labels"]["ovirt_affinity_labels"] == []
    assert {o["name"] for o in r["oses"]["ovirt_operating_systems"]} >= {"other", "rhel_8x64"}
    assert "none" in {p["name"] for p in r["policies"]["ovirt_scheduling_policies"]}
    with_disks_on_data = {v.id for v in s.vms_service().list()
                          if s.vms_service().vm_service(v.id).disk_attachments_service().list()}
    assert {v["id"] for v in r["sdvms"]["ovirt_storage_vms"]} == with_disks_on_data
    assert r["option"]["ovirt_system_option"]["values"][0]["value"] == "64"
    assert 0 < len(r["events"]["ovirt_events"]) <= 5
    assert all(ev["severity"] == "normal" for ev in r["events"]["ovirt_events"])
    (j,) = [x for x in s.jobs_service().list() if x.description == job]
    assert j.external and j.status == t.JobStatus.FINISHED
    steps = s.jobs_service().job_service(j.id).steps_service().list()
    assert [(x.description, x.status) for x in steps] == [("step one", t.StepStatus.FINISHED)]


def test_unknown_search_field_is_an_empty_answer_over_http(sandbox):
    """What the modules above saw, at the HTTP level: 200 and an empty collection
    (the engine's SearchQuery records the syntax error and returns no data)."""
    e = sandbox.engine
    req = urllib.request.Request(e["api"] + "/vms?search=colour%3Dblue", headers={
        "Accept": "application/json", "Authorization": "Basic " + base64.b64encode(
            f"{e['username']}:{e['password']}".encode()).decode()})
    with urllib.request.urlopen(req, context=sandbox.ssl) as resp:
        assert resp.status == 200 and json.loads(resp.read()) == {}


def test_disk_nic_and_template_modules(plays, conn, sandbox):
    u = _uid()
    src, disk, tpl, copy = f"ans-src-{u}", f"ans-data-{u}", f"ans-tpl-{u}", f"ans-from-tpl-{u}"
    auth = {"auth": "{{ ovirt_auth }}"}
    plays.run([
        {"name": "vm", "ovirt.ovirt.ovirt_vm": {**auth, "name": src, "cluster": "Default",
                                                "template": "Blank", "memory": "1GiB",
                                                "state": "stopped"}},
        {"name": "disk", "ovirt.ovirt.ovirt_disk": {**auth, "name": disk, "vm_name": src,
                                                    "size": "32MiB", "format": "cow",
                                                    "interface": "virtio", "bootable": True,
                                                    "storage_domain": "data", "wait": True}},
    ])
    s = conn.system_service()
    (vm,) = s.vms_service().list(search=f"name={src}")
    (d,) = s.disks_service().list(search=f"name={disk}")
    (att,) = s.vms_service().vm_service(vm.id).disk_attachments_service().list()
    assert att.disk.id == d.id and att.interface == t.DiskInterface.VIRTIO and att.bootable
    sandbox.write(vm.id, 1 << 20, 2 << 20, pattern=0x3c, disk_id=d.id)
    before = sandbox.digest(d.id)
    r = plays.run([
        {"name": "grow", "ovirt.ovirt.ovirt_disk": {**auth, "name": disk, "vm_name": src,
                                                    "size": "64MiB", "wait": True}},
        {"name": "nic", "ovirt.ovirt.ovirt_nic": {**auth, "vm": src, "name": "nic2",
                                                  "profile": "ovirtmgmt", "interface": "e1000"}},
        {"name": "nics", "ovirt.ovirt.ovirt_nic_info": {**auth, "vm": src}},
        {"name": "tpl", "ovirt.ovirt.ovirt_template": {**auth, "name": tpl, "vm": src,
                                                       "cluster": "Default", "memory": "2GiB",
                                                       "description": "from ansible"}},
        {"name": "tpl_info", "ovirt.ovirt.ovirt_template_info": {**auth, "pattern": f"name={tpl}"}},
        {"name": "copy", "ovirt.ovirt.ovirt_vm": {**auth, "name": copy, "cluster": "Default",
                                                  "template": tpl, "state": "stopped"}},
        {"name": "clusters", "ovirt.ovirt.ovirt_cluster_info": {**auth, "pattern": "name=Default"}},
        {"name": "dcs", "ovirt.ovirt.ovirt_datacenter_info": {**auth, "pattern": "name=Default"}},
        {"name": "sds", "ovirt.ovirt.ovirt_storage_domain_info": {**auth, "pattern": "name=data"}},
        {"name": "api", "ovirt.ovirt.ovirt_api_info": {**auth}},
    ])
    wait(lambda: s.disks_service().disk_service(d.id).get().status == t.DiskStatus.OK)
    assert s.disks_service().disk_service(d.id).get().provisioned_size == 64 << 20
    assert r["grow"]["changed"]
    nics = s.vms_service().vm_service(vm.id).nics_service().list()
    assert [(n.name, n.interface) for n in nics] == [("nic2", t.NicInterface.E1000)]
    assert [n["name"] for n in r["nics"]["ovirt_nics"]] == ["nic2"]
    (tp,) = s.templates_service().list(search=f"name={tpl}")
    assert r["tpl"]["id"] == tp.id and tp.version.version_number == 1
    assert tp.memory == 2 << 30 and tp.description == "from ansible"
    (tatt,) = s.templates_service().template_service(tp.id).disk_attachments_service().list()
    assert tatt.disk.id != d.id
    grown = sandbox.digest(d.id)
    assert sandbox.digest(tatt.disk.id) == grown  # the template holds a copy of the VM's disk
    assert [x["id"] for x in r["tpl_info"]["ovirt_templates"]] == [tp.id]
    (cp,) = s.vms_service().list(search=f"name={copy}")
    assert cp.template.id == tp.id and cp.memory == 2 << 30
    (catt,) = s.vms_service().vm_service(cp.id).disk_attachments_service().list()
    assert catt.disk.id not in (d.id, tatt.disk.id) and sandbox.digest(catt.disk.id) == grown
    assert grown != before  # 64 MiB now (the written data kept, the new tail zeros)
    assert [c["name"] for c in r["clusters"]["ovirt_clusters"]] == ["Default"]
    assert [x["name"] for x in r["dcs"]["ovirt_datacenters"]] == ["Default"]
    assert [x["name"] for x in r["sds"]["ovirt_storage_domains"]] == ["data"]
    assert r["api"]["ovirt_api"]["product_info"]["version"]["major"] == 4
    plays.run([
        {"name": "rm_copy", "ovirt.ovirt.ovirt_vm": {**auth, "name": copy, "state": "absent"}},
        {"name": "rm_tpl", "ovirt.ovirt.ovirt_template": {**auth, "name": tpl, "state": "absent"}},
        {"name": "rm_src", "ovirt.ovirt.ovirt_vm": {**auth, "name": src, "state": "absent"}},
    ])
    assert s.templates_service().list(search=f"name={tpl}") == []
    assert s.vms_service().list(search=f"name={src}") == [] and s.vms_service().list(
        search=f"name={copy}") == []
    left = {x.id for x in s.disks_service().list()}
    assert not {d.id, tatt.disk.id, catt.disk.id} & left
