"""Sandbox VMs that run real guests (sandbox/guests/): booted through the SDK,
their workload writing checksummed records, files written through the admin
API (agent when up, a maintenance boot when down), power actions, and the
three root layouts (ext4, XFS, root on LVM).

One lab for the module (`--guests ext4,xfs,lvm`, one record-only VM beside
them); the ext4 guest is booted once and shared. The guest image is built
first when the cache lacks it (a few minutes, once per machine)."""
from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import ovirtsdk4 as sdk
import pytest

from sandbox.guests import records
from sandbox.guests.build import ensure_image
from sandbox.guests.runner import Guest, GuestError
from tests.helpers import Sandbox, wait

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.fixture(scope="module")
def guest_lab(tmp_path_factory):
    ensure_image()  # built once per machine (cached by its inputs)
    d = tmp_path_factory.mktemp("guest-lab")
    with open(d / "sandbox.log", "wb") as log:
        p = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "sandbox", "up", "--dir",
                              str(d), "--hosts", "1", "--vms", "1", "--no-nfs",
                              "--guests", "ext4,xfs,lvm"], cwd=ROOT, stdout=log, stderr=log,
                             start_new_session=True)
    deadline = time.monotonic() + 180
    while not (d / "sandbox.json").exists():
        if p.poll() is not None or time.monotonic() > deadline:
            p.kill()
            raise RuntimeError("sandbox did not start:\n" + (d / "sandbox.log").read_text()[-3000:])
        time.sleep(0.2)
    yield Sandbox(json.loads((d / "sandbox.json").read_text()), d)
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(60)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    left = subprocess.run(["pgrep", "-af", str(d)], capture_output=True, text=True).stdout
    assert not [x for x in left.splitlines() if "pgrep" not in x], left


@pytest.fixture(scope="module")
def conn(guest_lab):
    c = guest_lab.connect()
    yield c
    c.close()


def _vm(conn, name):
    return conn.system_service().vms_service().list(search=f"name={name}")[0]


def _status(conn, vm_id) -> str:
    return conn.system_service().vms_service().vm_service(vm_id).get().status.value


def _start(conn, vm_id, timeout=120):
    conn.system_service().vms_service().vm_service(vm_id).start()
    wait(lambda: _status(conn, vm_id) == "up", timeout, "guest up")


def _stop(conn, vm_id, graceful=False, timeout=60):
    svc = conn.system_service().vms_service().vm_service(vm_id)
    svc.shutdown() if graceful else svc.stop()
    wait(lambda: _status(conn, vm_id) == "down", timeout, "guest down")


def _guest(lab: Sandbox, vm_id) -> Guest:
    h = lab.admin("GET", f"/vms/{vm_id}/guest")
    g = Guest(h["vm_id"], h["name"], Path(h["qga"]).parent)
    assert _agent(g.agent_ready(60)), "the guest agent does not answer"
    return g


def _agent(coro):
    return asyncio.run(coro)


def _records(g: Guest, allow_torn=False) -> records.Verified:
    try:
        data = _agent(g.read_file(records.RECORDS_PATH))
    except (GuestError, asyncio.TimeoutError):  # not written yet, or the agent restarting
        data = b""
    return records.verify(data, allow_torn)


@pytest.fixture(scope="module")
def ext4_up(guest_lab, conn):
    """The ext4 guest, booted through the SDK; shared by the tests below."""
    vm = _vm(conn, "linux-ext4")
    t0 = time.monotonic()
    _start(conn, vm.id)
    print(f"linux-ext4 booted in {time.monotonic() - t0:.1f} s "
          f"({guest_lab.admin('GET', f'/vms/{vm.id}/guest')['accel']})")
    yield vm
    if _status(conn, vm.id) != "down":
        _stop(conn, vm.id)


def test_guest_vms_are_opt_in_and_start_down(guest_lab, conn):
    vms = {v.name: v for v in conn.system_service().vms_service().list()}
    assert {"linux-ext4", "linux-xfs", "linux-lvm", "db-primary"} <= set(vms)
    assert vms["db-primary"].status.value == "up"  # a record, as before
    assert vms["db-primary"].os.type != "debian_12"
    for n in ("linux-ext4", "linux-xfs", "linux-lvm"):
        assert vms[n].status.value == "down" and vms[n].os.type == "debian_12"
    # a record-only VM has no guest to write files into
    body = {"path": "/etc/motd", "content_b64": base64.b64encode(b"x").decode()}
    with pytest.raises(AssertionError, match="409"):
        guest_lab.admin("POST", f"/vms/{vms['db-primary'].id}/files", body)
    with pytest.raises(AssertionError, match="400"):
        guest_lab.admin("POST", f"/vms/{vms['linux-ext4'].id}/files",
                        {"path": "../etc/x", "content_b64": ""})


def test_running_guest_hostname_and_workload(guest_lab, ext4_up):
    g = _guest(guest_lab, ext4_up.id)
    h = guest_lab.admin("GET", f"/vms/{ext4_up.id}/guest")
    assert [d["node_name"] for d in h["disks"]] == ["disk-0"] and Path(h["qmp"]).exists()
    assert _agent(g.read_file("/etc/hostname")) == b"linux-ext4\n"
    first = _records(g)
    wait(lambda: _records(g).records
         >= first.records + 3, 60, "more records")
    v = _records(g)
    assert v.first_seq == 1 and v.last_seq == v.records and v.torn == 0


def test_files_endpoint_writes_into_running_guest(guest_lab, ext4_up):
    content = os.urandom(3000) + b"\nend\n"
    r = guest_lab.admin("POST", f"/vms/{ext4_up.id}/files",
                        {"path": "/srv/app/config.bin", "content_b64": base64.b64encode(content).decode()})
    assert r["via"] == "agent" and r["size"] == len(content)
    g = _guest(guest_lab, ext4_up.id)
    assert _agent(g.read_file("/srv/app/config.bin")) == content


def test_raw_writes_reach_the_running_disk(guest_lab, conn, ext4_up):
    # the gap before the first partition (1 MiB): below the file system, harmless to it
    r = guest_lab.write(ext4_up.id, 512 << 10, 64 << 10, pattern=0x5a)
    g = _guest(guest_lab, ext4_up.id)
    out = _agent(g.exec(["/bin/sh", "-c", "dd if=/dev/sda bs=64k skip=8 count=1 iflag=direct "
                                          "2>/dev/null | sha256sum"]))
    assert out["out"].split()[0] == hashlib.sha256(b"\x5a" * (64 << 10)).hexdigest(), out
    assert r["disk_id"]


def test_power_cut_offline_write_and_restart(guest_lab, conn, ext4_up):
    g = _guest(guest_lab, ext4_up.id)
    before = _records(g)
    _stop(conn, ext4_up.id)  # stop: a power cut
    assert not _qemu_running(guest_lab, ext4_up.id)
    r = guest_lab.admin("POST", f"/vms/{ext4_up.id}/files",
                        {"path": "/root/offline.txt",
                         "content_b64": base64.b64encode(b"written while down").decode()})
    assert r["via"] == "offline"
    _start(conn, ext4_up.id)
    g = _guest(guest_lab, ext4_up.id)
    assert _agent(g.read_file("/root/offline.txt")) == b"written while down"
    # every record is fsync'd before the next one is written: the cut lost none of those
    # read before it, and the sequence goes on after the boot
    wait(lambda: (_records(g, allow_torn=True).last_seq or 0) > (before.last_seq or 0) + 1, 90,
         "records after the restart")
    v = _records(g, allow_torn=True)
    assert v.first_seq == 1 and v.records + v.torn >= (before.last_seq or 0)


def test_reboot_through_the_engine(guest_lab, conn, ext4_up):
    console = guest_lab.dir / "guests" / ext4_up.id / "console.log"
    boots = console.read_text().count("OVAULT-RESULT up")
    g = _guest(guest_lab, ext4_up.id)
    before = _records(g, allow_torn=True)
    conn.system_service().vms_service().vm_service(ext4_up.id).reboot()
    wait(lambda: console.read_text().count("OVAULT-RESULT up") == boots + 1
         and _status(conn, ext4_up.id) == "up", 180, "the guest rebooted")
    assert "OVAULT-RESULT reboot" in console.read_text()  # a clean reboot by its init
    _agent(g.agent_ready(60))
    wait(lambda: (_records(g, allow_torn=True).last_seq or 0) > (before.last_seq or 0), 90,
         "records after the reboot")
    v = _records(g, allow_torn=True)
    assert v.torn == before.torn  # a clean reboot tears no record


def _qemu_running(lab, vm_id) -> bool:
    out = subprocess.run(["pgrep", "-af", f"{lab.dir}/guests/{vm_id}/"], capture_output=True,
                         text=True).stdout
    return any("qemu-system" in x for x in out.splitlines())


def test_xfs_and_lvm_guests_boot(guest_lab, conn, ext4_up):
    xfs, lvm = _vm(conn, "linux-xfs"), _vm(conn, "linux-lvm")
    _start(conn, xfs.id)
    try:
        # two guests run (ext4, xfs): a third is refused, as the machine has 2 cores
        with pytest.raises(sdk.Error, match="at most 2 guests"):
            conn.system_service().vms_service().vm_service(lvm.id).start()
        g = _guest(guest_lab, xfs.id)
        assert _agent(g.read_file("/etc/hostname")) == b"linux-xfs\n"
        mounts = _agent(g.read_file("/proc/mounts")).decode()
        assert any(line.split()[1:3] == ["/", "xfs"] for line in mounts.splitlines()), mounts
    finally:
        _stop(conn, xfs.id)
    _start(conn, lvm.id)
    try:
        g = _guest(guest_lab, lvm.id)
        assert _agent(g.read_file("/etc/hostname")) == b"linux-lvm\n"
        mounts = _agent(g.read_file("/proc/mounts")).decode()
        root = next(line.split() for line in mounts.splitlines() if line.split()[1] == "/")
        lvs = _agent(g.exec(["/sbin/lvm", "lvs", "--noheadings", "-o", "vg_name,lv_name"]))
        assert lvs["out"].split() == ["vg0", "root"] and root[0].startswith("/dev/")
        assert _records(g).records >= 1
    finally:
        _stop(conn, lvm.id, graceful=True)
    # shutdown: through the guest agent, the guest's init powered off cleanly
    assert "OVAULT-RESULT poweroff" in (guest_lab.dir / "guests" / lvm.id / "console.log").read_text()
