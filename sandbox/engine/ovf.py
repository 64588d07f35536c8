"""OVF documents of VMs, close to what ovirt-engine stores in its OVF_STORE and
returns in `initialization/configuration/data` with `all_content=true`.

Written and parsed here so that a VM can be created back from its OVF, the
way backup products restore a VM's configuration.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET

NS = {
    "ovf": "http://schemas.dmtf.org/ovf/envelope/1/",
    "rasd": "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData",
    "vssd": "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData",
    "xsi": "http://www.w3.org/2001/XMLSchema-instance",
}
for _p, _u in NS.items():
    ET.register_namespace(_p, _u)


def _q(prefix, tag):
    return f"{{{NS[prefix]}}}{tag}"


def build(vm, disks, nics, sd_id, volumes: dict | None = None, snapshot_id: str | None = None) -> str:
    """vm: state.Vm; disks: list of (attachment, disk); nics: list of Nic;
    volumes: disk id -> volume id, for a snapshot's OVF (default: the active volumes)."""
    volumes = volumes or {}

    def vol(d):
        return volumes.get(d.id) or d.image.top.id
    env = ET.Element(_q("ovf", "Envelope"), {_q("ovf", "version"): "4.4.0.0"})
    refs = ET.SubElement(env, "References")
    for att, d in disks:
        ET.SubElement(refs, "File", {_q("ovf", "href"): f"{d.id}/{vol(d)}",
                                     _q("ovf", "id"): vol(d),
                                     _q("ovf", "size"): str(d.provisioned_size),
                                     _q("ovf", "description"): d.description or ""})
    sec = ET.SubElement(env, "Section", {_q("xsi", "type"): "ovf:DiskSection_Type"})
    ET.SubElement(sec, "Info").text = "List of Virtual Disks"
    for att, d in disks:
        ET.SubElement(sec, "Disk", {
            _q("ovf", "diskId"): vol(d), _q("ovf", "size"): str(d.provisioned_size >> 30),
            _q("ovf", "actual_size"): "0", _q("ovf", "vm_snapshot_id"): snapshot_id or vm.active_snapshot_id,
            _q("ovf", "fileRef"): f"{d.id}/{vol(d)}",
            _q("ovf", "format"): "http://www.vmware.com/specifications/vmdk.html#sparse",
            _q("ovf", "volume-format"): "COW" if d.format == "cow" else "RAW",
            _q("ovf", "volume-type"): "Sparse" if d.sparse else "Preallocated",
            _q("ovf", "disk-interface"): {"virtio": "VirtIO", "virtio_scsi": "VirtIO_SCSI",
                                          "ide": "IDE", "sata": "SATA"}.get(att.interface, "VirtIO"),
            _q("ovf", "boot"): str(att.bootable).lower(),
            _q("ovf", "disk-alias"): d.alias, _q("ovf", "disk-description"): d.description or "",
            _q("ovf", "wipe-after-delete"): "false",
            _q("ovf", "disk-backup"): "Incremental" if d.backup == "incremental" else "None",
            _q("ovf", "disk-id"): d.id,  # not in real OVFs; eases matching on restore
            _q("ovf", "provisioned-size"): str(d.provisioned_size),
        })
    vs = ET.SubElement(env, "Content", {_q("ovf", "id"): "out", _q("xsi", "type"): "ovf:VirtualSystem_Type"})
    for tag, val in (("Name", vm.name), ("Description", vm.description or ""),
                     ("Comment", vm.comment or ""), ("TemplateId", vm.template_id),
                     ("OriginalTemplateId", vm.template_id), ("IsStateless", "false"),
                     ("VmType", "1" if vm.type == "server" else "0"),
                     ("ClusterCompatibilityVersion", "4.7"), ("BiosType", vm.bios_type),
                     ("MinAllocatedMem", str(vm.memory >> 20)),
                     ("ovault:MemoryBytes", str(vm.memory)),
                     ("ovault:OsType", vm.os_type), ("ovault:BootDevices", ",".join(vm.boot_devices)),
                     ("ovault:HighAvailability", str(vm.ha).lower())):
        ET.SubElement(vs, tag.replace("ovault:", "")).text = val
    hw = ET.SubElement(vs, "Section", {_q("xsi", "type"): "ovf:VirtualHardwareSection_Type"})
    ET.SubElement(hw, "Info").text = f"{vm.cpu_sockets * vm.cpu_cores * vm.cpu_threads} CPU, {vm.memory >> 20} Memory"
    cpu = ET.SubElement(hw, "Item")
    for tag, val in (("Caption", f"{vm.cpu_sockets * vm.cpu_cores * vm.cpu_threads} virtual cpu"),
                     ("ResourceType", "3"), ("num_of_sockets", str(vm.cpu_sockets)),
                     ("cpu_per_socket", str(vm.cpu_cores)), ("threads_per_cpu", str(vm.cpu_threads))):
        ET.SubElement(cpu, _q("rasd", tag)).text = val
    mem = ET.SubElement(hw, "Item")
    for tag, val in (("Caption", f"{vm.memory >> 20} MB of memory"), ("ResourceType", "4"),
                     ("AllocationUnits", "MegaBytes"), ("VirtualQuantity", str(vm.memory >> 20))):
        ET.SubElement(mem, _q("rasd", tag)).text = val
    for att, d in disks:
        it = ET.SubElement(hw, "Item")
        for tag, val in (("Caption", d.alias), ("InstanceId", vol(d)), ("ResourceType", "17"),
                         ("HostResource", f"{d.id}/{vol(d)}"), ("Parent", "00000000-0000-0000-0000-000000000000"),
                         ("StorageId", sd_id), ("StoragePoolId", "00000000-0000-0000-0000-000000000000")):
            ET.SubElement(it, _q("rasd", tag)).text = val
        ET.SubElement(it, "BootOrder").text = "1" if att.bootable else "0"
    for n in nics:
        it = ET.SubElement(hw, "Item")
        for tag, val in (("Caption", f"Ethernet adapter on {n.network}"), ("InstanceId", n.id),
                         ("ResourceType", "10"), ("ResourceSubType", {"virtio": "3", "e1000": "2", "rtl8139": "1"}.get(n.interface, "3")),
                         ("Connection", n.network), ("Name", n.name), ("MACAddress", n.mac)):
            ET.SubElement(it, _q("rasd", tag)).text = val
        ET.SubElement(it, "Type").text = "interface"
        ET.SubElement(it, "Device").text = "bridge"
        ET.SubElement(it, "linked").text = "true"
    return ET.tostring(env, encoding="unicode", xml_declaration=True)


def parse(data: str) -> dict:
    """The configuration held by an OVF: name, memory, cpu, os, disks, nics."""
    root = ET.fromstring(data)
    out = {"disks": [], "nics": []}
    content = root.find("Content")
    if content is None:
        raise ValueError("OVF has no Content section")

    def txt(tag, default=None):
        e = content.find(tag)
        return e.text if e is not None and e.text is not None else default
    out["name"] = txt("Name")
    out["description"] = txt("Description", "")
    out["comment"] = txt("Comment", "")
    out["type"] = "server" if txt("VmType", "1") == "1" else "desktop"
    out["bios_type"] = txt("BiosType", "q35_sea_bios")
    out["os_type"] = txt("OsType", "other")
    out["boot_devices"] = [b for b in (txt("BootDevices", "hd") or "hd").split(",") if b]
    out["ha"] = txt("HighAvailability", "false") == "true"
    mem = txt("MemoryBytes")
    if mem is None and txt("MinAllocatedMem"):
        mem = int(txt("MinAllocatedMem")) << 20
    out["memory"] = int(mem) if mem else None
    for it in content.iter("Item"):
        rt = it.findtext(_q("rasd", "ResourceType"))
        if rt == "3":
            out["cpu"] = (int(it.findtext(_q("rasd", "num_of_sockets")) or 1),
                          int(it.findtext(_q("rasd", "cpu_per_socket")) or 1),
                          int(it.findtext(_q("rasd", "threads_per_cpu")) or 1))
        elif rt == "10":
            out["nics"].append({"name": it.findtext(_q("rasd", "Name")),
                                "mac": it.findtext(_q("rasd", "MACAddress")),
                                "network": it.findtext(_q("rasd", "Connection")),
                                "interface": {"3": "virtio", "2": "e1000", "1": "rtl8139"}.get(
                                    it.findtext(_q("rasd", "ResourceSubType")), "virtio")})
    for d in root.iter("Disk"):
        a = {k.split("}")[-1]: v for k, v in d.attrib.items()}
        out["disks"].append({
            "disk_id": a.get("disk-id") or a.get("fileRef", "/").split("/")[0],
            "alias": a.get("disk-alias"), "bootable": a.get("boot") == "true",
            "interface": {"VirtIO": "virtio", "VirtIO_SCSI": "virtio_scsi", "IDE": "ide",
                          "SATA": "sata"}.get(a.get("disk-interface"), "virtio"),
            "format": "cow" if a.get("volume-format") == "COW" else "raw",
            "sparse": a.get("volume-type") == "Sparse",
            "backup": "incremental" if a.get("disk-backup") == "Incremental" else "none",
            "provisioned_size": int(a["provisioned-size"]) if a.get("provisioned-size") else int(a.get("size", "1")) << 30,
        })
    return out
