"""SDK-level checks of the engine services the Ansible collection needs (fast
compared with running playbooks): the search language, tags, users, roles and
permissions at every level, templates, VM create/update/clone, networks,
NUMA nodes, external jobs and the informational services."""
from __future__ import annotations

import uuid

import ovirtsdk4 as sdk
import ovirtsdk4.types as t
import pytest

from tests.helpers import wait

pytestmark = pytest.mark.e2e
BLANK = "00000000-0000-0000-0000-000000000000"


def _uid() -> str:
    return uuid.uuid4().hex[:6]


def _names(vms) -> list:
    return sorted(v.name for v in vms)


def test_search_language(conn, sandbox):
    vs = conn.system_service().vms_service()
    assert _names(vs.list(search="tag=gold")) == ["db-primary", "web-frontend"]
    assert _names(vs.list(search="tag=not-a-tag")) == []
    assert _names(vs.list(search="tag!=gold")) == ["legacy-erp"]
    assert _names(vs.list(search="cluster=Default and name=legacy*")) == ["legacy-erp"]
    assert _names(vs.list(search="cluster=NoSuchCluster")) == []
    assert _names(vs.list(search='name="web-frontend" or tag=legacy')) == ["legacy-erp", "web-frontend"]
    assert _names(vs.list(search="datacenter=Default and storage=data and name=db-primary")) \
        == ["db-primary"]
    host1 = next(h for h in conn.system_service().hosts_service().list() if h.name == "host1")
    on1 = [v.name for v in vs.list() if v.host and v.host.id == host1.id]
    assert on1 and _names(vs.list(search="host=host1")) == sorted(on1)
    assert _names(vs.list(search="memory>4000 and name=web*")) == ["web-frontend"]
    # `and` binds tighter than `or`; a quoted value keeps its spaces and keywords.
    assert _names(vs.list(search="tag=gold and name=db* or name=legacy*")) == ["db-primary", "legacy-erp"]
    assert _names(vs.list(search='name="db-primary or name=web-frontend"')) == []
    assert _names(vs.list(search="TAG=gold AND Name=DB-*")) == ["db-primary"]
    assert _names(vs.list(search="name=DB-*", case_sensitive=True)) == []
    status = vs.vm_service(sandbox.vm("db-primary")["id"]).get().status.value.upper()
    assert _names(vs.list(search=f"status={status} and name=db-primary", case_sensitive=True)) \
        == ["db-primary"]  # enums match regardless of case
    # A field the engine does not know selects nothing (never everything).
    assert vs.list(search="colour=blue") == []
    assert vs.list(search="name=db-primary and colour=blue") == []
    assert vs.list(search="sortby colour") == []
    ds = conn.system_service().disks_service()
    att = {a.disk.id for a in vs.vm_service(sandbox.vm("db-primary")["id"]).disk_attachments_service().list()}
    assert {d.id for d in ds.list(search="vm_names=db-primary")} == att
    assert len(ds.list(search="storage=data")) >= 4 and ds.list(search="storage=nope") == []
    assert conn.system_service().hosts_service().list(search="bogus=1") == []
    origin = f"tests-{_uid()}"
    conn.system_service().events_service().add(t.Event(
        description="search test", severity=t.LogSeverity.NORMAL, origin=origin, custom_id=7))
    conn.system_service().events_service().add(t.Event(
        description="search test", severity=t.LogSeverity.WARNING, origin=origin, custom_id=8))
    evs = conn.system_service().events_service().list(search=f"severity=normal and origin={origin}")
    assert [e.custom_id for e in evs] == [7]


def test_tags_tree_assignment_events_and_follow(conn, sandbox):
    s = conn.system_service()
    tags = s.tags_service()
    root = [x for x in tags.list() if x.id == BLANK]
    assert root and root[0].name == "root"
    p = tags.add(t.Tag(name=f"p-{_uid()}", description="parent"))
    c = tags.add(t.Tag(name=f"c-{_uid()}", parent=t.Tag(name=p.name)))
    assert p.parent.id == BLANK and c.parent.id == p.id
    with pytest.raises(sdk.Error, match="409"):
        tags.add(t.Tag(name=p.name))
    with pytest.raises(sdk.Error, match="409"):  # a tag cannot move under its own child
        tags.tag_service(p.id).update(t.Tag(parent=t.Tag(id=c.id)))
    assert tags.tag_service(p.id).get().parent.id == BLANK  # the refused update changed nothing
    vm_id = sandbox.vm("legacy-erp")["id"]
    vts = s.vms_service().vm_service(vm_id).tags_service()
    vts.add(t.Tag(name=c.name))
    with pytest.raises(sdk.Error, match="409"):
        vts.add(t.Tag(id=c.id))
    assert c.name in {x.name for x in vts.list()}
    (vm,) = s.vms_service().list(search=f"tag={p.name}", follow="tags")  # through the child
    assert vm.id == vm_id and c.name in {x.name for x in vm.tags}
    assert any(c.name in e.description for e in s.events_service().list(search=f"vm.id={vm_id}", max=5))
    tags.tag_service(p.id).update(t.Tag(name=p.name + "-x", description="renamed"))
    assert tags.tag_service(p.id).get().name == p.name + "-x"
    vts.tag_service(c.id).remove()
    assert c.name not in {x.name for x in vts.list()}
    vts.add(t.Tag(id=c.id))
    host = next(h for h in s.hosts_service().list() if h.name == "host2")
    hts = s.hosts_service().host_service(host.id).tags_service()
    hts.add(t.Tag(name=c.name))
    assert [h.name for h in s.hosts_service().list(search=f"tag={c.name}")] == ["host2"]
    tags.tag_service(p.id).remove()  # the subtree and its assignments go
    assert hts.list() == [] and s.hosts_service().list(search=f"tag={c.name}") == []
    left = {x.id for x in tags.list()}
    assert p.id not in left and c.id not in left
    assert c.name not in {x.name for x in vts.list()}


def test_users_roles_and_permissions_at_every_level(conn, sandbox):
    s = conn.system_service()
    (admin,) = s.users_service().list(search="usrname=admin@internal-authz")
    assert admin.principal == "admin" and admin.domain.name == "internal-authz"
    roles = {r.name: r for r in s.roles_service().list()}
    assert {"SuperUser", "UserRole", "UserVmManager"} <= set(roles)
    assert roles["SuperUser"].administrative and not roles["UserRole"].administrative
    system = s.permissions_service().list()
    assert any(p.user.id == admin.id and p.role.id == roles["SuperUser"].id for p in system)
    name = f"svc-{_uid()}"
    sandbox.admin("POST", "/users", {"name": f"{name}@internal", "password": "pw-1",
                                     "engine_user": False})
    with pytest.raises(sdk.NotFoundError):
        s.users_service().add(t.User(user_name=f"nobody-{_uid()}@internal-authz",
                                     domain=t.Domain(name="internal-authz")))
    u = s.users_service().add(t.User(user_name=f"{name}@internal-authz",
                                     domain=t.Domain(name="internal-authz")))
    assert u.user_name == f"{name}@internal-authz"
    e = sandbox.engine

    def sees():
        c = sdk.Connection(url=e["api"], username=f"{name}@internal", password="pw-1",
                           ca_file=e["ca_file"])
        try:
            return _names(c.system_service().vms_service().list())
        finally:
            c.close()
    assert sees() == []
    # A directory user who logs in becomes an engine user (as at a first login to the engine).
    other = f"svc-login-{_uid()}"
    sandbox.admin("POST", "/users", {"name": f"{other}@internal", "password": "pw-2",
                                     "engine_user": False})
    assert s.users_service().list(search=f"usrname={other}@internal-authz") == []
    sdk.Connection(url=e["api"], username=f"{other}@internal", password="pw-2",
                   ca_file=e["ca_file"]).authenticate()
    assert len(s.users_service().list(search=f"usrname={other}@internal-authz")) == 1
    legacy = sandbox.vm("legacy-erp")["id"]
    vp = s.vms_service().vm_service(legacy).permissions_service()
    p = vp.add(t.Permission(role=t.Role(name="UserRole"), user=t.User(id=u.id)))
    assert p.vm.id == legacy and p.role.id == roles["UserRole"].id
    assert sees() == ["legacy-erp"]
    with pytest.raises(sdk.Error, match="409"):
        vp.add(t.Permission(role=t.Role(name="UserRole"), user=t.User(id=u.id)))
    # Inherited from the cluster: every VM of it.
    cl = s.clusters_service().list()[0]
    cp = s.clusters_service().cluster_service(cl.id).permissions_service()
    cperm = cp.add(t.Permission(role=t.Role(id=roles["UserRole"].id), user=t.User(id=u.id)))
    assert cperm.cluster.id == cl.id
    assert sees() == _names(s.vms_service().list(search=f"cluster={cl.name}"))
    cp.permission_service(cperm.id).remove()
    assert sees() == ["legacy-erp"]
    # Data center, storage domain, disk and system levels answer and list.
    dc = s.data_centers_service().list()[0]
    sd = s.storage_domains_service().list()[0]
    disk = s.disks_service().list()[0]
    for svc, attr, oid in (
            (s.data_centers_service().data_center_service(dc.id).permissions_service(), "data_center", dc.id),
            (s.storage_domains_service().storage_domain_service(sd.id).permissions_service(),
             "storage_domain", sd.id),
            (s.disks_service().disk_service(disk.id).permissions_service(), "disk", disk.id)):
        x = svc.add(t.Permission(role=t.Role(name="UserRole"), user=t.User(id=u.id)))
        assert getattr(x, attr).id == oid and x.id in {y.id for y in svc.list()}
        svc.permission_service(x.id).remove()
    # System level: every VM.
    sp = s.permissions_service().add(t.Permission(role=t.Role(name="UserRole"), user=t.User(id=u.id)))
    assert sp.data_center is None and sp.vm is None and sp.id in {x.id for x in s.permissions_service().list()}
    assert sees() == _names(s.vms_service().list())
    s.permissions_service().permission_service(sp.id).remove()
    assert sees() == ["legacy-erp"]
    assert {x.id for x in s.users_service().user_service(u.id).permissions_service().list()} == {p.id}
    s.users_service().user_service(u.id).remove()  # the user's permissions go with it
    assert all(x.user is None or x.user.id != u.id for x in vp.list())
    assert s.users_service().list(search=f"usrname={name}@internal-authz") == []


def test_templates_create_update_and_clone_from_snapshot(conn, sandbox):
    s = conn.system_service()
    ts, vs = s.templates_service(), s.vms_service()
    blank = ts.template_service(BLANK).get()
    assert blank.name == "Blank" and blank.version.version_number == 1
    assert [x.name for x in ts.list(search="name=Blank and datacenter=Default")] == ["Blank"]
    vm = vs.add(t.Vm(name=f"svc-{_uid()}", cluster=t.Cluster(name="Default"),
                     template=t.Template(name="Blank"), memory=1 << 30))
    assert vm.template.id == BLANK and vm.status == t.VmStatus.DOWN
    with pytest.raises(sdk.Error, match="409"):
        vs.vm_service(vm.id).update(t.Vm(name="db-primary", memory=3 << 30))
    assert vs.vm_service(vm.id).get().memory == 1 << 30  # nothing of the refused update applied
    assert vs.vm_service(vm.id).numa_nodes_service().list() == []
    numa = vs.vm_service(vm.id).numa_nodes_service().add(t.VirtualNumaNode(
        index=0, memory=512, cpu=t.Cpu(cores=[t.Core(index=0)])))
    assert [n.index for n in vs.vm_service(vm.id).numa_nodes_service().list()] == [0]
    vs.vm_service(vm.id).numa_nodes_service().node_service(numa.id).remove()
    with pytest.raises(sdk.NotFoundError):
        vs.add(t.Vm(name=f"svc-{_uid()}", cluster=t.Cluster(name="Default"),
                    template=t.Template(name="no-such-template")))
    # Clone from a snapshot: the disks as they were at the snapshot.
    src = sandbox.vm("db-primary")["id"]
    snaps = vs.vm_service(src).snapshots_service()
    snap = snaps.add(t.Snapshot(description=f"svc-{_uid()}", persist_memorystate=False))
    wait(lambda: snaps.snapshot_service(snap.id).get().snapshot_status == t.SnapshotStatus.OK)
    frozen = {d.id: d.image_id for d in snaps.snapshot_service(snap.id).disks_service().list()}
    sandbox.write(src, 0, 1 << 20, pattern=0x77)
    clone = vs.add(t.Vm(name=f"svc-clone-{_uid()}", cluster=t.Cluster(name="Default"),
                        snapshots=[t.Snapshot(id=snap.id)]))
    # Like the engine: image_locked (and the snapshot locked) while the disks are copied.
    assert clone.status == t.VmStatus.IMAGE_LOCKED
    assert snaps.snapshot_service(snap.id).get().snapshot_status == t.SnapshotStatus.LOCKED
    wait(lambda: vs.vm_service(clone.id).get().status == t.VmStatus.DOWN)
    assert snaps.snapshot_service(snap.id).get().snapshot_status == t.SnapshotStatus.OK
    atts = vs.vm_service(clone.id).disk_attachments_service().list()
    assert len(atts) == len(frozen) == 2
    src_by_size = {s.disks_service().disk_service(d).get().provisioned_size: (d, v) for d, v in frozen.items()}
    for a in atts:
        d = s.disks_service().disk_service(a.disk.id).get()
        sd_id, vol = src_by_size[d.provisioned_size]
        assert sandbox.digest(d.id) == sandbox.digest(sd_id, snapshot=vol)
    # A template from the clone, a VM from the template (with copies of its disks).
    tpl = ts.add(t.Template(name=f"svc-tpl-{_uid()}", vm=t.Vm(id=clone.id)))
    assert tpl.version.version_number == 1 and tpl.status == t.TemplateStatus.LOCKED
    assert vs.vm_service(clone.id).get().status == t.VmStatus.IMAGE_LOCKED
    wait(lambda: ts.template_service(tpl.id).get().status == t.TemplateStatus.OK)
    assert vs.vm_service(clone.id).get().status == t.VmStatus.DOWN
    v2 = ts.add(t.Template(name="ignored", vm=t.Vm(id=clone.id),
                           version=t.TemplateVersion(base_template=t.Template(id=tpl.id),
                                                     version_name="second")))
    assert v2.name == tpl.name and v2.version.version_number == 2
    wait(lambda: ts.template_service(v2.id).get().status == t.TemplateStatus.OK)
    from_tpl = vs.add(t.Vm(name=f"svc-ft-{_uid()}", cluster=t.Cluster(name="Default"),
                           template=t.Template(id=tpl.id)))
    wait(lambda: vs.vm_service(from_tpl.id).get().status == t.VmStatus.DOWN)
    ft_disks = [a.disk.id for a in vs.vm_service(from_tpl.id).disk_attachments_service().list()]
    assert len(ft_disks) == 2 and from_tpl.template.id == tpl.id
    tpl_disks = [a.disk.id for a in ts.template_service(tpl.id).disk_attachments_service().list()]
    assert not set(ft_disks) & set(tpl_disks)
    with pytest.raises(sdk.Error, match="409"):  # a VM still uses it
        ts.template_service(tpl.id).remove()
    for x in (from_tpl, clone, vm):
        vs.vm_service(x.id).remove()
    ts.template_service(v2.id).remove()
    ts.template_service(tpl.id).remove()
    snaps.snapshot_service(snap.id).remove()
    wait(lambda: all(x.id != snap.id for x in snaps.list()), timeout=60)


def test_networks_jobs_and_info_services(conn, sandbox):
    s = conn.system_service()
    (net,) = s.networks_service().list()
    assert net.name == "ovirtmgmt" and net.data_center is not None
    cl = s.clusters_service().list()[0]
    assert [n.id for n in conn.follow_link(cl.networks)] == [net.id]
    dc = s.data_centers_service().list()[0]
    assert [n.id for n in s.data_centers_service().data_center_service(dc.id).networks_service().list()] \
        == [net.id]
    (prof,) = s.vnic_profiles_service().list()
    assert prof.network.id == net.id
    assert s.vnic_profiles_service().profile_service(prof.id).get().name == "ovirtmgmt"
    jobs = s.jobs_service()
    j = jobs.add(t.Job(description=f"external {_uid()}", auto_cleared=True))
    steps = jobs.job_service(j.id).steps_service()
    st = steps.add(t.Step(description="copy", type=t.StepEnum.EXECUTING))
    assert jobs.job_service(j.id).get().status == t.JobStatus.STARTED
    steps.step_service(st.id).end(succeeded=True)
    jobs.job_service(j.id).end(succeeded=False)
    assert jobs.job_service(j.id).get().status == t.JobStatus.FAILED
    assert [x.status for x in steps.list()] == [t.StepStatus.FINISHED]
    with pytest.raises(sdk.Error, match="409"):
        jobs.job_service(j.id).end(succeeded=True)
    assert s.groups_service().list() == []
    assert "other" in {o.name for o in s.operating_systems_service().list()}
    assert "none" in {p.name for p in s.scheduling_policies_service().list()}
    assert s.affinity_labels_service().list() == []
    assert s.data_centers_service().data_center_service(dc.id).quotas_service().list() == []
    sd = s.storage_domains_service().list()[0]
    on_sd = _names(s.storage_domains_service().storage_domain_service(sd.id).vms_service().list())
    assert set(on_sd) >= {"db-primary", "legacy-erp", "web-frontend"}
    opt = s.options_service().option_service("MaxVmNameLength").get()
    assert opt.values[0].value == "64"
