"""Fidelity of the engine simulator for clients other than our own: JSON (curl,
Ansible-style), `follow`, the services added for common clients, and the
engine's answers to malformed or unusual requests."""
from __future__ import annotations

import base64
import json
import subprocess
import threading
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import ovirtsdk4 as sdk
import ovirtsdk4.types as types
import pytest

from tests.helpers import wait

pytestmark = pytest.mark.e2e
MiB = 1 << 20


def http(sandbox, method, path, body=None, headers=None, auth=True):
    """(status, headers, body text) of a raw API request (Basic auth, like curl -u)."""
    e = sandbox.engine
    h = {"Version": "4"}
    if auth:
        h["Authorization"] = "Basic " + base64.b64encode(
            f"{e['username']}:{e['password']}".encode()).decode()
    h.update(headers or {})
    h = {k: v for k, v in h.items() if v is not None}
    data = body.encode() if isinstance(body, str) else body
    url = path if path.startswith("https://") else e["api"] + path
    req = urllib.request.Request(url, method=method, data=data, headers=h)
    try:
        with urllib.request.urlopen(req, context=sandbox.ssl, timeout=60) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read().decode()


def get_json(sandbox, path, status=200):
    code, hdrs, text = http(sandbox, "GET", path, headers={"Accept": "application/json"})
    assert code == status, (code, text[:500])
    assert hdrs["Content-Type"].startswith("application/json")
    return json.loads(text)


def send_json(sandbox, method, path, doc, status):
    code, hdrs, text = http(sandbox, method, path, json.dumps(doc),
                            {"Accept": "application/json", "Content-Type": "application/json"})
    assert code == status, (code, text[:500])
    return json.loads(text) if text else None


def vm_disks(conn, vm_id):
    s = conn.system_service()
    atts = s.vms_service().vm_service(vm_id).disk_attachments_service().list()
    return [(a, s.disks_service().disk_service(a.disk.id).get()) for a in atts]


def volume_info(sandbox, disk_id, vol_id):
    path = next(Path(sandbox.dir).glob(f"**/images/{disk_id}/{vol_id}"))
    out = subprocess.run(["qemu-img", "info", "-U", "--output=json", str(path)], check=True,
                         capture_output=True, text=True, cwd=path.parent).stdout
    return json.loads(out)


# --- JSON ---------------------------------------------------------------------------------------
def test_json_entity_matches_the_sdk_view(conn, sandbox):
    vm_id = sandbox.vm("db-primary")["id"]
    sdk_vm = conn.system_service().vms_service().vm_service(vm_id).get()
    j = get_json(sandbox, f"/vms/{vm_id}")
    assert "vm" not in j  # a single entity is the object itself
    assert j["id"] == vm_id and j["href"] == f"/ovirt-engine/api/vms/{vm_id}"
    assert j["name"] == sdk_vm.name and j["status"] == sdk_vm.status.value
    assert j["memory"] == str(sdk_vm.memory)  # scalars are strings
    assert j["high_availability"]["enabled"] == str(sdk_vm.high_availability.enabled).lower()
    assert j["cpu"]["topology"] == {"sockets": str(sdk_vm.cpu.topology.sockets),
                                    "cores": str(sdk_vm.cpu.topology.cores),
                                    "threads": str(sdk_vm.cpu.topology.threads)}
    assert j["os"]["boot"]["devices"] == {"device": [d.value for d in sdk_vm.os.boot.devices]}
    assert j["cluster"]["id"] == sdk_vm.cluster.id and "href" in j["cluster"]
    assert abs(j["creation_time"] - sdk_vm.creation_time.timestamp() * 1000) < 1  # epoch ms
    rels = {link["rel"]: link["href"] for link in j["link"]}
    assert rels["diskattachments"] == f"/ovirt-engine/api/vms/{vm_id}/diskattachments"
    # a nested list keeps its wrapper, even with one item
    disk_id = vm_disks(conn, vm_id)[0][1].id
    d = get_json(sandbox, f"/disks/{disk_id}")
    assert d["storage_domains"] == {"storage_domain": [
        {"id": d["storage_domains"]["storage_domain"][0]["id"],
         "href": d["storage_domains"]["storage_domain"][0]["href"]}]}
    assert d["provisioned_size"] == str(conn.system_service().disks_service()
                                        .disk_service(disk_id).get().provisioned_size)


def test_json_collections_faults_and_actions(conn, sandbox):
    vms = get_json(sandbox, "/vms")
    assert list(vms) == ["vm"] and {v["name"] for v in vms["vm"]} == {
        v.name for v in conn.system_service().vms_service().list()}
    assert get_json(sandbox, "/vms?search=name%3Dnothing-like-this") == {}
    atts = get_json(sandbox, f"/vms/{sandbox.vm('db-primary')['id']}/diskattachments")
    assert len(atts["disk_attachment"]) == 2
    assert all(a["disk"]["id"] and a["bootable"] in ("true", "false") for a in atts["disk_attachment"])
    f = get_json(sandbox, f"/vms/{uuid.uuid4()}", status=404)
    assert set(f) == {"reason", "detail"}
    root = get_json(sandbox, "/")
    assert root["product_info"]["version"]["major"] == "4"
    assert any(link["rel"] == "vms" for link in root["link"])
    # actions in JSON: the answer is JSON, a failed one a JSON fault
    assert send_json(sandbox, "POST", f"/imagetransfers/{uuid.uuid4()}/extend", {}, 404)["reason"]
    vm_id = sandbox.vm("web-frontend")["id"]
    if conn.system_service().vms_service().vm_service(vm_id).get().status == types.VmStatus.UP:
        assert send_json(sandbox, "POST", f"/vms/{vm_id}/start", {}, 409)["detail"].startswith(
            "[Cannot run VM.")


def test_json_request_bodies_and_nic_service(conn, sandbox):
    vm_id = sandbox.vm("web-frontend")["id"]
    nics = conn.system_service().vms_service().vm_service(vm_id).nics_service()
    before = [n.name for n in nics.list()]
    made = send_json(sandbox, "POST", f"/vms/{vm_id}/nics",
                     {"name": "json-nic", "interface": "e1000", "linked": False}, 201)
    assert made["name"] == "json-nic" and made["interface"] == "e1000" and made["linked"] == "false"
    svc = nics.nic_service(made["id"])
    got = svc.get()  # the SDK reads the entity made from JSON
    assert got.interface == types.NicInterface.E1000 and got.linked is False
    assert got.mac.address == made["mac"]["address"]
    assert conn.system_service().vms_service().vm_service(vm_id).get().status == types.VmStatus.UP
    with pytest.raises(sdk.Error) as err:  # a plugged NIC of a running VM keeps its type
        svc.update(types.Nic(interface=types.NicInterface.VIRTIO))
    assert err.value.code == 409
    svc.update(types.Nic(plugged=False))
    upd = svc.update(types.Nic(name="json-nic-2", interface=types.NicInterface.VIRTIO))
    assert upd.name == "json-nic-2" and upd.interface == types.NicInterface.VIRTIO
    assert upd.plugged is False
    # the MAC of another NIC is refused
    other = nics.list()[0]
    with pytest.raises(sdk.Error) as err:
        svc.update(types.Nic(mac=types.Mac(address=other.mac.address)))
    assert err.value.code == 409
    svc.remove()
    with pytest.raises(sdk.NotFoundError):
        svc.get()
    assert [n.name for n in nics.list()] == before
    # JSON bodies that are not valid: 400 as a JSON fault
    code, _, text = http(sandbox, "POST", f"/vms/{vm_id}/nics", '{"name": ',
                         {"Content-Type": "application/json", "Accept": "application/json"})
    assert code == 400 and "reason" in json.loads(text)


# --- follow -------------------------------------------------------------------------------------
def test_follow_inlines_links(conn, sandbox):
    vms = conn.system_service().vms_service()
    listed = {v.name: v for v in vms.list(follow="disk_attachments.disk,nics")}
    db = listed["db-primary"]
    assert len(db.disk_attachments) == 2
    aliases = {a.disk.alias for a in db.disk_attachments}
    assert None not in aliases and all(a.disk.provisioned_size for a in db.disk_attachments)
    assert len(listed["web-frontend"].nics) == 2 and listed["web-frontend"].nics[0].mac.address
    vm = vms.vm_service(sandbox.vm("legacy-erp")["id"]).get(follow="cluster,host,snapshots")
    assert vm.cluster.name == "Default" and vm.cluster.data_center.id
    assert [s.snapshot_type for s in vm.snapshots] == [types.SnapshotType.ACTIVE]
    # through JSON too
    j = get_json(sandbox, f"/vms/{vm.id}?follow=disk_attachments.disk")
    (att,) = j["disk_attachments"]["disk_attachment"]
    assert att["disk"]["format"] == "raw"
    code, _, _ = http(sandbox, "GET", f"/vms/{vm.id}?follow=no_such_thing")
    assert code == 400


# --- hosts, data centers, clusters as SDK helpers use them ------------------------------------------
def test_find_host_search_and_data_center_storage_domains(conn, sandbox):
    s = conn.system_service()
    dcs = s.data_centers_service().list(search="storage.name=data", case_sensitive=True)
    assert [d.name for d in dcs] == ["Default"]
    assert s.data_centers_service().list(search="storage.name=nope", case_sensitive=True) == []
    sds = s.data_centers_service().data_center_service(dcs[0].id).storage_domains_service().list()
    assert [sd.name for sd in sds] == ["data"]
    host = s.hosts_service().list()[0]
    hw = s.hosts_service().host_service(host.id).get().hardware_information.uuid
    found = s.hosts_service().list(search=f"hw_id={hw} and datacenter=Default and status=Up",
                                   case_sensitive=True)
    assert [h.id for h in found] == [host.id]
    assert s.clusters_service().cluster_service(host.cluster.id).get().name == "Default"
    # or, sortby, max
    names = [v.name for v in s.vms_service().list(search="name=web-* or name=legacy-* sortby name desc")]
    assert names == ["web-frontend", "legacy-erp"]
    assert len(s.vms_service().list(max=1)) == 1
    assert [v.name for v in s.vms_service().list(search="sortby name asc page 2", max=1)] == ["legacy-erp"]


# --- disks: update, extend, reduce ----------------------------------------------------------------
def test_disk_update_and_extend_seen_by_qemu(conn, sandbox, no_leftovers):
    disks = conn.system_service().disks_service()
    d = disks.add(types.Disk(name="fid-extend", format=types.DiskFormat.COW, sparse=True,
                             provisioned_size=64 * MiB, storage_domains=[types.StorageDomain(name="data")]))
    svc = disks.disk_service(d.id)
    try:
        wait(lambda: svc.get().status == types.DiskStatus.OK)
        upd = svc.update(types.Disk(alias="fid-extended", description="grown",
                                    provisioned_size=96 * MiB))
        assert upd.alias == "fid-extended"
        wait(lambda: svc.get().status == types.DiskStatus.OK and svc.get().provisioned_size == 96 * MiB)
        disk = svc.get()
        assert volume_info(sandbox, d.id, disk.image_id)["virtual-size"] == 96 * MiB
        with pytest.raises(sdk.Error) as err:  # shrinking is refused
            svc.update(types.Disk(provisioned_size=32 * MiB))
        assert err.value.code == 409
        with pytest.raises(sdk.Error) as err:  # reduce: block domains only
            svc.reduce()
        assert err.value.code == 409 and "file storage domains" in str(err.value)
        events = [ev.code for ev in conn.system_service().events_service().list(max=20)]
        assert 371 in events
        # extend through the attachment, the classic way, plus the attachment's own fields
        vm_id = sandbox.vm("web-frontend")["id"]
        atts = conn.system_service().vms_service().vm_service(vm_id).disk_attachments_service()
        atts.add(types.DiskAttachment(disk=types.Disk(id=d.id), interface=types.DiskInterface.VIRTIO,
                                      bootable=False, active=True))
        asvc = atts.attachment_service(d.id)
        with pytest.raises(sdk.Error) as err:  # the VM runs: unplug before changing the bus
            asvc.update(types.DiskAttachment(interface=types.DiskInterface.SATA))
        assert err.value.code == 409
        assert asvc.update(types.DiskAttachment(active=False)).active is False
        a = asvc.update(types.DiskAttachment(interface=types.DiskInterface.SATA,
                                             disk=types.Disk(provisioned_size=128 * MiB)))
        assert a.active is False and a.interface == types.DiskInterface.SATA
        wait(lambda: svc.get().status == types.DiskStatus.OK and svc.get().provisioned_size == 128 * MiB)
        assert volume_info(sandbox, d.id, svc.get().image_id)["virtual-size"] == 128 * MiB
        with pytest.raises(sdk.Error) as err:  # one bootable disk per VM
            asvc.update(types.DiskAttachment(bootable=True))
        assert err.value.code == 409
        asvc.remove()
    finally:
        wait(lambda: svc.get().status == types.DiskStatus.OK)
        svc.remove()


def test_raw_disk_extend(conn, sandbox, no_leftovers):
    disks = conn.system_service().disks_service()
    d = disks.add(types.Disk(name="fid-raw", format=types.DiskFormat.RAW, sparse=True,
                             provisioned_size=16 * MiB, storage_domains=[types.StorageDomain(name="data")]))
    svc = disks.disk_service(d.id)
    try:
        wait(lambda: svc.get().status == types.DiskStatus.OK)
        svc.update(types.Disk(provisioned_size=48 * MiB))
        wait(lambda: svc.get().status == types.DiskStatus.OK and svc.get().provisioned_size == 48 * MiB)
        info = volume_info(sandbox, d.id, svc.get().image_id)
        assert info["format"] == "raw" and info["virtual-size"] == 48 * MiB
        assert sandbox.admin("GET", f"/disks/{d.id}/digest")["size"] == 48 * MiB
    finally:
        wait(lambda: svc.get().status == types.DiskStatus.OK)
        svc.remove()


# --- snapshots: restore, OVF at snapshot time ------------------------------------------------------
def test_snapshot_restore_reverts_disks_and_configuration(conn, sandbox, no_leftovers):
    vm = sandbox.vm("legacy-erp")
    vms = conn.system_service().vms_service()
    vsvc = vms.vm_service(vm["id"])
    (_, disk), = vm_disks(conn, vm["id"])
    snaps = vsvc.snapshots_service()
    memory, was_up = vsvc.get().memory, vsvc.get().status == types.VmStatus.UP
    if was_up:
        vsvc.stop()
        wait(lambda: vsvc.get().status == types.VmStatus.DOWN)
    before = sandbox.digest(disk.id)
    snap = snaps.add(types.Snapshot(description="fid-restore", persist_memorystate=False))
    ssvc = snaps.snapshot_service(snap.id)
    wait(lambda: ssvc.get().snapshot_status == types.SnapshotStatus.OK)
    try:
        sandbox.write(vm["id"], 100 * MiB, 2 * MiB, pattern=0x3c)
        vsvc.update(types.Vm(memory=memory * 2))
        assert sandbox.digest(disk.id) != before
        # the VM configuration at snapshot time, as OVF
        # (SnapshotService.get has no all_content argument in the SDK: the query does it)
        full = ssvc.get(query={"all_content": "true"})
        listed = {x.id: x for x in snaps.list(all_content=True)}
        assert listed[snap.id].initialization.configuration.data == full.initialization.configuration.data
        assert full.initialization.configuration.type == types.ConfigurationType.OVF
        data = full.initialization.configuration.data
        (sdisk,) = ssvc.disks_service().list()
        assert f"{disk.id}/{sdisk.image_id}" in data and f">{memory >> 20}<" in data
        # a later snapshot is obsolete after the restore
        later = snaps.add(types.Snapshot(description="fid-later", persist_memorystate=False))
        wait(lambda: snaps.snapshot_service(later.id).get().snapshot_status == types.SnapshotStatus.OK)
        # refused while the VM runs
        vsvc.start()
        wait(lambda: vsvc.get().status == types.VmStatus.UP)
        with pytest.raises(sdk.Error) as err:
            ssvc.restore()
        assert err.value.code == 409
        vsvc.stop()
        wait(lambda: vsvc.get().status == types.VmStatus.DOWN)
        ssvc.restore()  # synchronous, like the engine's (it polls its own job)
        assert sandbox.digest(disk.id) == before
        assert vsvc.get().memory == memory
        assert [s.description for s in snaps.list()] == ["Active VM", "fid-restore"]
        new_top = conn.system_service().disks_service().disk_service(disk.id).get().image_id
        assert new_top != disk.image_id  # a new active layer on the snapshot volume
        info = volume_info(sandbox, disk.id, new_top)
        assert info["format"] == "qcow2" and info["backing-filename"] == sdisk.image_id
        codes = [ev.code for ev in conn.system_service().events_service().list(max=10)]
        assert 100 in codes
        sandbox.write(vm["id"], 10 * MiB, MiB, pattern=0x44)  # the restored VM is writable
    finally:
        if vsvc.get().status != types.VmStatus.DOWN:
            vsvc.stop()
            wait(lambda: vsvc.get().status == types.VmStatus.DOWN)
        for s in snaps.list():
            if s.snapshot_type != types.SnapshotType.ACTIVE:
                snaps.snapshot_service(s.id).remove()
                wait(lambda: s.id not in [x.id for x in snaps.list()], what="snapshot removed")
        vsvc.update(types.Vm(memory=memory))
        if was_up:
            vsvc.start()
            wait(lambda: vsvc.get().status == types.VmStatus.UP)


# --- VM actions ------------------------------------------------------------------------------------
def test_reboot_and_suspend(conn, sandbox, no_leftovers):
    vsvc = conn.system_service().vms_service().vm_service(sandbox.vm("web-frontend")["id"])
    was_up = vsvc.get().status == types.VmStatus.UP
    if not was_up:
        vsvc.start()
        wait(lambda: vsvc.get().status == types.VmStatus.UP)
    vsvc.reboot()
    assert vsvc.get().status == types.VmStatus.REBOOT_IN_PROGRESS
    wait(lambda: vsvc.get().status == types.VmStatus.UP)
    vsvc.suspend()
    wait(lambda: vsvc.get().status == types.VmStatus.SUSPENDED)
    with pytest.raises(sdk.Error) as err:
        vsvc.reboot()
    assert err.value.code == 409
    vsvc.start()
    wait(lambda: vsvc.get().status == types.VmStatus.UP)
    if not was_up:
        vsvc.stop()
        wait(lambda: vsvc.get().status == types.VmStatus.DOWN)


# --- robustness -------------------------------------------------------------------------------------
def test_malformed_and_unsupported_requests(sandbox, conn):
    vm_id = sandbox.vm("web-frontend")["id"]
    code, hdrs, text = http(sandbox, "POST", f"/vms/{vm_id}/nics", "<nic><name>x</nic>",
                            {"Content-Type": "application/xml"})
    assert code == 400 and "<fault>" in text
    code, _, text = http(sandbox, "POST", f"/vms/{vm_id}/nics", "name=x",
                         {"Content-Type": "application/x-www-form-urlencoded"})
    assert code == 415 and "<fault>" in text
    code, _, text = http(sandbox, "GET", "/vms", headers={"Version": "3"})
    assert code == 400 and "<vms>" not in text  # v3 was removed: a bare 400
    code, _, text = http(sandbox, "GET", "/v3/vms", headers={"Version": None})
    assert code == 400
    code, _, text = http(sandbox, "GET", "/v4/vms?search=name%3Dweb-frontend", headers={"Version": None})
    assert code == 200 and text.count("<vm ") == 1
    code, _, text = http(sandbox, "GET", "/vms?no_such_parameter=1&case_sensitive=false",
                         headers={"Prefer": "persistent-auth", "Filter": "true"})
    assert code == 200 and text.count("<vm ") == len(conn.system_service().vms_service().list())
    code, _, text = http(sandbox, "GET", "/vms", headers={"Accept": "text/plain"})
    assert code == 406
    code, _, text = http(sandbox, "GET", "/vms", headers={"Accept": "*/*"})
    assert code == 200 and text.lstrip().startswith("<?xml")
    for path in ("", "/"):
        code, _, text = http(sandbox, "GET", path)
        assert code == 200 and "<api>" in text
    code, _, text = http(sandbox, "GET", "/vms", auth=False)
    assert code == 401


def test_many_parallel_sdk_connections(sandbox):
    errors, counts = [], []

    def worker():
        c = sandbox.connect()
        try:
            s = c.system_service()
            for _ in range(5):
                vms = s.vms_service().list(follow="disk_attachments")
                counts.append(sum(len(v.disk_attachments) for v in vms))
                s.disks_service().list()
        except Exception as e:  # collected and asserted below
            errors.append(e)
        finally:
            c.close()
    threads = [threading.Thread(target=worker) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert len(counts) == 60 and len(set(counts)) == 1
