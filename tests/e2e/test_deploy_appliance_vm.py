"""deploy/ansible/deploy_appliance_vm.yml against the sandbox engine, run as an
administrator runs it (ansible-playbook with the ovirt.ovirt collection of the
pinned `ansible` release): a small qcow2 stands in for the appliance image; the
playbook discovers an active host, its cluster and a data storage domain, uploads
the disk through imageio and creates and starts the VM. Checked through the SDK
and the lab's digests; a second run changes nothing."""
from __future__ import annotations

import json
import os
import re
import subprocess
import uuid

import pytest

from tests.e2e.ansible_lab import ROOT, ansible_venv
from tests.helpers import image_digest

pytestmark = pytest.mark.e2e
PLAYBOOK = ROOT / "deploy" / "ansible" / "deploy_appliance_vm.yml"


def _run(venv, workdir, extra: dict) -> str:
    (workdir / "vars.json").write_text(json.dumps(extra))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "PYTHON"))}
    env.update({"HOME": str(workdir), "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCAL_TEMP": str(workdir / "tmp"),
                "ANSIBLE_RETRY_FILES_ENABLED": "0", "ANSIBLE_DEPRECATION_WARNINGS": "0",
                "PATH": f"{venv / 'bin'}:{os.environ.get('PATH', '')}"})
    p = subprocess.run([str(venv / "bin" / "ansible-playbook"), "-i", "localhost,", str(PLAYBOOK),
                        "-e", f"@{workdir / 'vars.json'}",
                        "-e", f"ansible_python_interpreter={venv / 'bin' / 'python'}"],
                       capture_output=True, text=True, env=env, cwd=workdir, timeout=600)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-6000:]
    return out


def _recap(out: str) -> dict:
    m = re.search(r"localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", out)
    assert m, out[-3000:]
    return dict(zip(("ok", "changed", "unreachable", "failed"), map(int, m.groups())))


def test_deploy_appliance_vm_uploads_the_image_and_creates_the_vm(sandbox, conn, tmp_path):
    img = tmp_path / "ovault-appliance.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(img), "96M"], check=True)
    for off, pat in ((0, 0x5A), (7 << 20, 0x3C), (90 << 20, 0xA5)):
        subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -P {pat} {off} 1M", str(img)],
                       check=True, capture_output=True)
    e = sandbox.engine
    name = f"ovault-appl-{uuid.uuid4().hex[:6]}"
    extra = {"ovault_vm_engine_url": e["api"], "ovault_vm_username": e["username"],
             "ovault_vm_password": e["password"], "ovault_vm_ca_file": e["ca_file"],
             "ovault_vm_image": str(img), "ovault_vm_name": name, "ovault_vm_memory": "2GiB"}
    venv = ansible_venv()
    first = _recap(_run(venv, tmp_path, extra))
    assert first["failed"] == 0 and first["changed"] >= 3  # disk, VM, started

    s = conn.system_service()
    (vm,) = s.vms_service().list(search=f"name={name}")
    assert str(vm.status) == "up" and vm.memory == 2 << 30 and vm.cpu.topology.cores == 2
    assert vm.host is not None and vm.host.id in {h.id for h in s.hosts_service().list()}
    (att,) = s.vms_service().vm_service(vm.id).disk_attachments_service().list()
    assert att.bootable
    disk = s.disks_service().disk_service(att.disk.id).get()
    assert disk.name == f"{name}_disk" and disk.provisioned_size == 96 << 20
    sd = s.storage_domains_service().storage_domain_service(disk.storage_domains[0].id).get()
    assert str(sd.type) == "data"
    assert sandbox.digest(disk.id) == image_digest(img)  # the image, byte for byte

    out = _run(venv, tmp_path, extra)
    again = _recap(out)
    changed = [line for line in out.splitlines() if line.startswith("changed:")]
    assert again["changed"] == 0 and again["failed"] == 0, "\n".join(changed) + out[-4000:]
    assert [v.id for v in s.vms_service().list(search=f"name={name}")] == [vm.id]
    assert len(s.disks_service().list(search=f"name={name}_disk")) == 1

    vms = s.vms_service()
    vms.vm_service(vm.id).stop()
    from tests.helpers import wait
    wait(lambda: str(vms.vm_service(vm.id).get().status) == "down", timeout=60)
    vms.vm_service(vm.id).remove()
