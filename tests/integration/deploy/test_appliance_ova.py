"""deploy/appliance/ova.py packs a qcow2 into an OVA: the descriptor first, the disk
byte-identical, a manifest whose digests match, and an OVF that declares the disk's
real capacity and format."""
from __future__ import annotations

import hashlib
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
OVF = "{http://schemas.dmtf.org/ovf/envelope/1}"
RASD = "{http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData}"


def test_ova_of_a_qcow2(tmp_path):
    img = tmp_path / "a.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(img), "3G"], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 1M 2M", str(img)], check=True,
                   capture_output=True)
    out = tmp_path / "a.ova"
    subprocess.run([sys.executable, str(REPO / "deploy/appliance/ova.py"), "--name", "vault1",
                    "--cpus", "4", "--memory-mib", "6144", "--mtime", "1700000000", str(img), str(out)],
                   check=True, capture_output=True)
    with tarfile.open(out) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["vault1.ovf", "vault1-disk1.qcow2", "vault1.mf"]
        assert all(m.mtime == 1700000000 for m in members)
        files = {m.name: tar.extractfile(m).read() for m in members}
    assert files["vault1-disk1.qcow2"] == img.read_bytes()
    mf = dict(line.split("= ") for line in files["vault1.mf"].decode().splitlines())
    assert mf == {f"SHA256({n})": hashlib.sha256(files[n]).hexdigest()
                  for n in ("vault1.ovf", "vault1-disk1.qcow2")}
    env = ET.fromstring(files["vault1.ovf"])
    (ref,) = env.iter(f"{OVF}File")
    assert ref.get(f"{OVF}href") == "vault1-disk1.qcow2"
    assert int(ref.get(f"{OVF}size")) == img.stat().st_size
    (disk,) = env.iter(f"{OVF}Disk")
    assert int(disk.get(f"{OVF}capacity")) == 3 << 30
    assert disk.get(f"{OVF}format") == "http://www.gnome.org/~markmc/qcow-image-format.html"
    items = {i.findtext(f"{RASD}ResourceType"): i for i in env.iter(f"{OVF}Item")}
    assert items["3"].findtext(f"{RASD}VirtualQuantity") == "4"
    assert items["4"].findtext(f"{RASD}VirtualQuantity") == "6144"
    assert items["17"].findtext(f"{RASD}HostResource") == "ovf:/disk/disk1"
    # The same inputs give the same archive (reproducible).
    again = tmp_path / "b.ova"
    subprocess.run([sys.executable, str(REPO / "deploy/appliance/ova.py"), "--name", "vault1",
                    "--cpus", "4", "--memory-mib", "6144", "--mtime", "1700000000", str(img), str(again)],
                   check=True, capture_output=True)
    assert again.read_bytes() == out.read_bytes()


def test_not_a_qcow2_is_refused(tmp_path):
    raw = tmp_path / "r.img"
    raw.write_bytes(b"\0" * 65536)
    r = subprocess.run([sys.executable, str(REPO / "deploy/appliance/ova.py"), str(raw), str(tmp_path / "x.ova")],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "is raw, not qcow2" in r.stderr
    assert not (tmp_path / "x.ova").exists()
