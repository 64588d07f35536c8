#!/usr/bin/env python3
"""Packs the appliance's qcow2 into an OVA: a tar holding an OVF 1.0 descriptor first,
then the disk, then a manifest (.mf) with the SHA-256 of both (DMTF DSP0243).

The descriptor declares the VM the appliance wants (2 vCPUs, 4 GiB memory, one virtio
disk, one virtio NIC) and the disk as qcow2, in the format identifier oVirt uses for
qcow2 images. oVirt's "Import Virtual Machine" from a "Virtual Appliance (OVA)" reads
the first `.ovf` member of the tar; docs/appliance.md says how to import it.

    ova.py IMAGE.qcow2 OUT.ova [--name NAME] [--memory-mib N] [--cpus N]
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

NS = {
    "ovf": "http://schemas.dmtf.org/ovf/envelope/1",
    "rasd": "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData",
    "vssd": "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData",
    "xsi": "http://www.w3.org/2001/XMLSchema-instance",
}
QCOW2_FORMAT = "http://www.gnome.org/~markmc/qcow-image-format.html"
# CIM resource types (DSP1041 / DSP1043).
CPU, MEMORY, DISK, NIC = 3, 4, 17, 10


def q(ns: str, tag: str) -> str:
    return f"{{{NS[ns]}}}{tag}"


def descriptor(name: str, disk_file: str, disk_bytes: int, virtual_bytes: int, cpus: int,
               memory_mib: int) -> bytes:
    for prefix, uri in NS.items():
        ET.register_namespace(prefix, uri)
    env = ET.Element(q("ovf", "Envelope"), {q("ovf", "version"): "1.0"})
    refs = ET.SubElement(env, q("ovf", "References"))
    ET.SubElement(refs, q("ovf", "File"), {q("ovf", "id"): "file1", q("ovf", "href"): disk_file,
                                            q("ovf", "size"): str(disk_bytes)})
    disks = ET.SubElement(env, q("ovf", "DiskSection"))
    ET.SubElement(disks, q("ovf", "Info")).text = "The appliance's disk"
    ET.SubElement(disks, q("ovf", "Disk"), {
        q("ovf", "diskId"): "disk1", q("ovf", "fileRef"): "file1",
        q("ovf", "capacity"): str(virtual_bytes), q("ovf", "capacityAllocationUnits"): "byte",
        q("ovf", "format"): QCOW2_FORMAT})
    nets = ET.SubElement(env, q("ovf", "NetworkSection"))
    ET.SubElement(nets, q("ovf", "Info")).text = "The network the appliance's NIC attaches to"
    net = ET.SubElement(nets, q("ovf", "Network"), {q("ovf", "name"): "ovirtmgmt"})
    ET.SubElement(net, q("ovf", "Description")).text = "management network (choose at import)"
    vs = ET.SubElement(env, q("ovf", "VirtualSystem"), {q("ovf", "id"): name})
    ET.SubElement(vs, q("ovf", "Info")).text = "ovault backup appliance (Debian 12)"
    ET.SubElement(vs, q("ovf", "Name")).text = name
    os_s = ET.SubElement(vs, q("ovf", "OperatingSystemSection"), {q("ovf", "id"): "96"})
    ET.SubElement(os_s, q("ovf", "Info")).text = "Guest operating system"
    ET.SubElement(os_s, q("ovf", "Description")).text = "Debian 12 (64-bit)"
    hw = ET.SubElement(vs, q("ovf", "VirtualHardwareSection"))
    ET.SubElement(hw, q("ovf", "Info")).text = "Virtual hardware"
    system = ET.SubElement(hw, q("ovf", "System"))
    ET.SubElement(system, q("vssd", "ElementName")).text = "Virtual Hardware Family"
    ET.SubElement(system, q("vssd", "InstanceID")).text = "0"
    ET.SubElement(system, q("vssd", "VirtualSystemIdentifier")).text = name
    ET.SubElement(system, q("vssd", "VirtualSystemType")).text = "vmx-07"

    def item(instance: int, rtype: int, label: str, **extra: str) -> None:
        it = ET.SubElement(hw, q("ovf", "Item"))
        fields = {"ElementName": label, "InstanceID": str(instance), "ResourceType": str(rtype), **extra}
        for key in sorted(fields):  # CIM properties in alphabetical order, as DSP0243 asks
            ET.SubElement(it, q("rasd", key)).text = fields[key]

    item(1, CPU, f"{cpus} virtual CPUs", VirtualQuantity=str(cpus), AllocationUnits="hertz * 10^6")
    item(2, MEMORY, f"{memory_mib} MiB of memory", VirtualQuantity=str(memory_mib),
         AllocationUnits="byte * 2^20")
    item(3, DISK, "disk1", HostResource="ovf:/disk/disk1", ResourceSubType="virtio")
    item(4, NIC, "nic1", Connection="ovirtmgmt", ResourceSubType="virtio", AutomaticAllocation="true")
    ET.indent(env)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(env, encoding="utf-8") + b"\n"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def pack(image: Path, out: Path, name: str, cpus: int, memory_mib: int, mtime: int) -> None:
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(image)],
                                     check=True, capture_output=True, text=True).stdout)
    if info.get("format") != "qcow2":
        raise SystemExit(f"ova.py: {image} is {info.get('format')}, not qcow2")
    disk_file = f"{name}-disk1.qcow2"
    ovf_name = f"{name}.ovf"
    ovf = descriptor(name, disk_file, image.stat().st_size, int(info["virtual-size"]), cpus, memory_mib)
    mf = (f"SHA256({ovf_name})= {hashlib.sha256(ovf).hexdigest()}\n"
          f"SHA256({disk_file})= {sha256(image)}\n").encode()
    tmp = out.with_name(out.name + ".tmp")

    def member(n: str, size: int) -> tarfile.TarInfo:
        t = tarfile.TarInfo(n)
        t.size, t.mtime, t.mode, t.uname, t.gname = size, mtime, 0o644, "root", "root"
        return t
    # USTAR, as OVA requires; the descriptor first, the manifest last.
    with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        tar.addfile(member(ovf_name, len(ovf)), io.BytesIO(ovf))
        with image.open("rb") as f:
            tar.addfile(member(disk_file, image.stat().st_size), f)
        tar.addfile(member(f"{name}.mf", len(mf)), io.BytesIO(mf))
    tmp.replace(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("image", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--name", default="ovault-appliance")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--memory-mib", type=int, default=4096)
    ap.add_argument("--mtime", type=int, default=0, help="member mtime (reproducible archives)")
    a = ap.parse_args(argv)
    pack(a.image, a.out, a.name, a.cpus, a.memory_mib, a.mtime)
    print(f"appliance: {a.out} ({a.out.stat().st_size >> 20} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
