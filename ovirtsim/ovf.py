"""OVF documents in the shape the engine writes them (ovf:Envelope, oVirt flavour).

`build_ovf` turns a VM and its disks into the OVF that `GET /vms/{id}?all_content=true`
returns in `initialization.configuration.data`; `parse_ovf` reads one back for
`POST /vms` with an OVF configuration. An export storage domain holds the same document, with
each disk's older volumes (`OvfDisk.chain`) and the VM's snapshots when they were exported
with it (`discard_snapshots=false`), as the engine's OvfVmWriter writes them.
"""

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

NS = {
    "ovf": "http://schemas.dmtf.org/ovf/envelope/1/",
    "rasd": "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData",
    "vssd": "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData",
    "xsi": "http://www.w3.org/2001/XMLSchema-instance",
}
for prefix, uri in NS.items():
    ET.register_namespace(prefix, uri)

GiB = 1024**3
QCOW_FORMAT_URI = "http://www.gnome.org/~markmc/qcow-image-format.html"
RAW_FORMAT_URI = "http://www.vmware.com/specifications/vmdk.html#sparse"
INTERFACES = {
    "virtio": "VirtIO",
    "virtio_scsi": "VirtIO_SCSI",
    "ide": "IDE",
    "sata": "SATA",
    "spapr_vscsi": "SPAPR_VSCSI",
}
ZERO_UUID = "00000000-0000-0000-0000-000000000000"


class OvfError(ValueError):
    pass


def _q(prefix: str, name: str) -> str:
    return f"{{{NS[prefix]}}}{name}"


# The disk attributes the engine spells with hyphens (OvfOvirtWriter.writeDisk); the rest keep
# their underscores (vm_snapshot_id, actual_size, disk_storage_type, ...).
HYPHENATED = {
    "volume_format",
    "volume_type",
    "disk_interface",
    "read_only",
    "pass_discard",
    "incremental_backup",
    "disk_alias",
    "disk_description",
    "wipe_after_delete",
}


def _sub(parent, prefix, name, text=None, **attrs):
    el = ET.SubElement(parent, _q(prefix, name) if prefix else name)
    for key, value in attrs.items():
        p, _, local = key.partition("__")
        if local in HYPHENATED:
            local = local.replace("_", "-")
        el.set(_q(p, local) if local else key, str(value))
    if text is not None:
        el.text = str(text)
    return el


@dataclass
class OvfVolume:
    """A volume below a disk's active one (a snapshot's image), base first in `OvfDisk.chain`."""

    volume_id: str
    format: str = "cow"  # cow | raw
    sparse: bool = True
    snapshot_id: str = ZERO_UUID
    actual_size: int = 0


@dataclass
class OvfDisk:
    disk_id: str
    volume_id: str
    alias: str
    provisioned_size: int
    actual_size: int = 0
    format: str = "cow"  # cow | raw
    sparse: bool = True
    interface: str = "virtio_scsi"
    bootable: bool = False
    active: bool = True
    storage_domain_id: str = ""
    description: str = ""
    backup: str = "none"
    # The snapshot the active volume belongs to (the Active VM's), and the volumes below it.
    snapshot_id: str = ZERO_UUID
    chain: list[OvfVolume] = field(default_factory=list)


@dataclass
class OvfSnapshot:
    id: str
    type: str = "REGULAR"  # REGULAR | ACTIVE, as the engine writes SnapshotType
    description: str = ""
    creation_date: str = ""


@dataclass
class OvfVm:
    id: str
    name: str
    description: str = ""
    memory: int = 1024**3
    sockets: int = 1
    cores: int = 1
    threads: int = 1
    os_type: str = "other"
    cluster_name: str = ""
    creation_time: str = ""
    disks: list[OvfDisk] = field(default_factory=list)
    nics: list[dict] = field(default_factory=list)
    snapshots: list[OvfSnapshot] = field(default_factory=list)


def _volumes(d: OvfDisk) -> list[tuple[OvfVolume, str]]:
    """Every volume of a disk, base first, each with its parent's volume id ("" for the base)."""
    leaf = OvfVolume(d.volume_id, d.format, d.sparse, d.snapshot_id, d.actual_size)
    volumes = [*d.chain, leaf]
    return [(v, volumes[i - 1].volume_id if i else "") for i, v in enumerate(volumes)]


def build_ovf(vm: OvfVm) -> str:
    env = ET.Element(_q("ovf", "Envelope"), {_q("ovf", "version"): "4.4"})
    refs = _sub(env, "", "References")
    for d in vm.disks:
        for v, _ in _volumes(d):
            _sub(
                refs,
                "",
                "File",
                ovf__href=f"{d.disk_id}/{v.volume_id}",
                ovf__id=v.volume_id,
                ovf__size=d.provisioned_size,
                ovf__description=d.description,
                ovf__disk_storage_type="IMAGE",
                ovf__cinder_volume_type="",
            )
    nets = ET.SubElement(env, "Section", {_q("xsi", "type"): "ovf:NetworkSection_Type"})
    _sub(nets, "", "Info", "List of networks")
    disks = ET.SubElement(env, "Section", {_q("xsi", "type"): "ovf:DiskSection_Type"})
    _sub(disks, "", "Info", "List of Virtual Disks")
    for d in vm.disks:
        for v, parent in _volumes(d):
            _sub(
                disks,
                "",
                "Disk",
                ovf__diskId=v.volume_id,
                ovf__size=max(1, -(-d.provisioned_size // GiB)),
                ovf__actual_size=-(-v.actual_size // GiB),
                ovf__vm_snapshot_id=v.snapshot_id,
                ovf__parentRef=f"{d.disk_id}/{parent}" if parent else "",
                ovf__fileRef=f"{d.disk_id}/{v.volume_id}",
                ovf__format=QCOW_FORMAT_URI if v.format == "cow" else RAW_FORMAT_URI,
                ovf__volume_format="COW" if v.format == "cow" else "RAW",
                ovf__volume_type="Sparse" if v.sparse else "Preallocated",
                ovf__disk_interface=INTERFACES.get(d.interface, d.interface),
                ovf__read_only="false",
                ovf__shareable="false",
                ovf__boot=str(d.bootable).lower(),
                ovf__pass_discard="false",
                ovf__incremental_backup=str(d.backup == "incremental").lower(),
                ovf__disk_alias=d.alias,
                ovf__disk_description=d.description,
                ovf__wipe_after_delete="false",
                ovf__disk_storage_type="IMAGE",
                ovf__cinder_volume_type="",
                ovf__size_bytes=d.provisioned_size,
            )
    content = ET.SubElement(env, "Content", {_q("ovf", "id"): "out", _q("xsi", "type"): "ovf:VirtualSystem_Type"})
    _sub(content, "", "Name", vm.name)
    _sub(content, "", "Description", vm.description)
    _sub(content, "", "TemplateId", ZERO_UUID)
    _sub(content, "", "TemplateName", "Blank")
    _sub(content, "", "CreationDate", vm.creation_time)
    _sub(content, "", "ClusterName", vm.cluster_name)
    _sub(content, "", "VmType", "1")
    _sub(content, "", "IsStateless", "false")
    _sub(content, "", "MinAllocatedMem", vm.memory // 1024**2)
    os_section = ET.SubElement(
        content,
        "Section",
        {_q("ovf", "id"): vm.id, _q("ovf", "required"): "false", _q("xsi", "type"): "ovf:OperatingSystemSection_Type"},
    )
    _sub(os_section, "", "Info", "Guest Operating System")
    _sub(os_section, "", "Description", vm.os_type)
    if vm.snapshots:
        snapshots = ET.SubElement(content, "Section", {_q("xsi", "type"): "ovf:SnapshotsSection_Type"})
        for snap in vm.snapshots:
            el = _sub(snapshots, "", "Snapshot", ovf__id=snap.id)
            _sub(el, "", "Type", snap.type)
            _sub(el, "", "Description", snap.description)
            _sub(el, "", "CreationDate", snap.creation_date)
    hw = ET.SubElement(content, "Section", {_q("xsi", "type"): "ovf:VirtualHardwareSection_Type"})
    _sub(hw, "", "Info", f"{vm.sockets * vm.cores * vm.threads} CPU, {vm.memory // 1024**2} Memory")
    system = _sub(hw, "", "System")
    _sub(system, "vssd", "VirtualSystemType", "ENGINE 4.5.0.0")
    cpu = _sub(hw, "", "Item")
    _sub(cpu, "rasd", "Caption", f"{vm.sockets * vm.cores * vm.threads} virtual cpu")
    _sub(cpu, "rasd", "Description", "Number of virtual CPU")
    _sub(cpu, "rasd", "InstanceId", "1")
    _sub(cpu, "rasd", "ResourceType", "3")
    _sub(cpu, "rasd", "num_of_sockets", vm.sockets)
    _sub(cpu, "rasd", "cpu_per_socket", vm.cores)
    _sub(cpu, "rasd", "threads_per_cpu", vm.threads)
    mem = _sub(hw, "", "Item")
    _sub(mem, "rasd", "Caption", f"{vm.memory // 1024**2} MB of memory")
    _sub(mem, "rasd", "Description", "Memory Size")
    _sub(mem, "rasd", "InstanceId", "2")
    _sub(mem, "rasd", "ResourceType", "4")
    _sub(mem, "rasd", "AllocationUnits", "MegaBytes")
    _sub(mem, "rasd", "VirtualQuantity", vm.memory // 1024**2)
    for order, d in enumerate(vm.disks, start=1):
        item = _sub(hw, "", "Item")
        _sub(item, "rasd", "Caption", d.alias)
        _sub(item, "rasd", "InstanceId", d.volume_id)
        _sub(item, "rasd", "ResourceType", "17")
        _sub(item, "rasd", "HostResource", f"{d.disk_id}/{d.volume_id}")
        _sub(item, "rasd", "Parent", ZERO_UUID)
        _sub(item, "rasd", "Template", ZERO_UUID)
        _sub(item, "rasd", "ApplicationList", "")
        _sub(item, "rasd", "StorageId", d.storage_domain_id)
        _sub(item, "rasd", "StoragePoolId", ZERO_UUID)
        _sub(item, "", "Type", "disk")
        _sub(item, "", "Device", "disk")
        _sub(item, "", "BootOrder", order if d.bootable else 0)
        _sub(item, "", "IsPlugged", str(d.active).lower())
        _sub(item, "", "IsReadOnly", "false")
        _sub(item, "", "Alias", "")
    for n, nic in enumerate(vm.nics):
        item = _sub(hw, "", "Item")
        _sub(item, "rasd", "Caption", f"Ethernet adapter on {nic.get('network', 'ovirtmgmt')}")
        _sub(item, "rasd", "InstanceId", nic["id"])
        _sub(item, "rasd", "ResourceType", "10")
        _sub(item, "rasd", "ResourceSubType", "3")
        _sub(item, "rasd", "Connection", nic.get("network", "ovirtmgmt"))
        _sub(item, "rasd", "Name", nic["name"])
        _sub(item, "rasd", "MACAddress", nic.get("mac", ""))
        _sub(item, "", "Type", "interface")
        _sub(item, "", "Device", "bridge")
        _sub(item, "", "IsPlugged", "true")
        _sub(item, "", "Alias", f"net{n}")
    return ET.tostring(env, encoding="unicode", xml_declaration=True)


def _attr(el, name, default=""):
    # OVFs this simulator wrote before it used the engine's hyphenated names are still read.
    return el.get(_q("ovf", name), el.get(_q("ovf", name.replace("-", "_")), default))


def parse_ovf(text: str) -> OvfVm:
    """Read an engine OVF; raises OvfError naming what is missing or malformed."""
    try:
        env = ET.fromstring(text)
    except ET.ParseError as e:
        raise OvfError(f"the OVF is not well-formed XML: {e}") from None
    if env.tag != _q("ovf", "Envelope"):
        raise OvfError("the OVF's root element is not ovf:Envelope")
    content = env.find("Content")
    if content is None:
        raise OvfError("the OVF has no Content (VirtualSystem) section")
    os_section = hw = None
    for section in content.findall("Section"):
        kind = section.get(_q("xsi", "type"), "")
        if kind.endswith("OperatingSystemSection_Type"):
            os_section = section
        elif kind.endswith("VirtualHardwareSection_Type"):
            hw = section
    if hw is None or os_section is None:
        raise OvfError("the OVF lacks its OperatingSystem or VirtualHardware section")
    vm = OvfVm(
        id=os_section.get(_q("ovf", "id"), ""),
        name=(content.findtext("Name") or "").strip(),
        description=content.findtext("Description") or "",
        os_type=os_section.findtext("Description") or "other",
        cluster_name=content.findtext("ClusterName") or "",
        creation_time=content.findtext("CreationDate") or "",
    )
    if not vm.id or not vm.name:
        raise OvfError("the OVF names no VM id or name")
    disk_items = {}
    for item in hw.findall("Item"):
        rtype = item.findtext(_q("rasd", "ResourceType"))
        try:
            if rtype == "3":
                vm.sockets = int(item.findtext(_q("rasd", "num_of_sockets")) or 1)
                vm.cores = int(item.findtext(_q("rasd", "cpu_per_socket")) or 1)
                vm.threads = int(item.findtext(_q("rasd", "threads_per_cpu")) or 1)
            elif rtype == "4":
                vm.memory = int(item.findtext(_q("rasd", "VirtualQuantity"))) * 1024**2
        except (TypeError, ValueError):
            raise OvfError("the OVF's CPU or memory item has a non-numeric value") from None
        if rtype == "17":
            disk_items[item.findtext(_q("rasd", "InstanceId"))] = item
        elif rtype == "10":
            vm.nics.append(
                {
                    "id": item.findtext(_q("rasd", "InstanceId")) or "",
                    "name": item.findtext(_q("rasd", "Name")) or "nic",
                    "mac": item.findtext(_q("rasd", "MACAddress")) or "",
                    "network": item.findtext(_q("rasd", "Connection")) or "",
                }
            )
    interfaces = {v: k for k, v in INTERFACES.items()}
    section = next(
        (s for s in env.findall("Section") if s.get(_q("xsi", "type"), "").endswith("DiskSection_Type")), None
    )
    # Every volume of every disk, grouped by disk: one per disk, or a disk's whole chain (parentRef).
    volumes: dict[str, list] = {}
    for disk in section.findall("Disk") if section is not None else []:
        file_ref = _attr(disk, "fileRef")
        disk_id, _, volume_id = file_ref.partition("/")
        if not disk_id or not volume_id:
            raise OvfError(f"the OVF disk {_attr(disk, 'disk-alias')!r} has no fileRef IMAGE/VOLUME")
        volumes.setdefault(disk_id, []).append(disk)
    for disk_id, elements in volumes.items():
        chain = _chain(disk_id, elements)
        disk = chain[-1]
        volume_id = _attr(disk, "fileRef").partition("/")[2]
        item = disk_items.get(volume_id)
        size_bytes = _attr(disk, "size_bytes")
        try:
            size = int(size_bytes) if size_bytes else int(_attr(disk, "size")) * GiB
        except ValueError:
            raise OvfError(f"the OVF disk {disk_id} has no valid size") from None
        incremental = _attr(disk, "incremental-backup")
        vm.disks.append(
            OvfDisk(
                disk_id=disk_id,
                volume_id=volume_id,
                alias=_attr(disk, "disk-alias") or disk_id,
                description=_attr(disk, "disk-description"),
                provisioned_size=size,
                format=_volume_format(disk),
                sparse=_attr(disk, "volume-type") == "Sparse",
                interface=interfaces.get(_attr(disk, "disk-interface"), "virtio_scsi"),
                bootable=_attr(disk, "boot") == "true",
                active=(item.findtext("IsPlugged") != "false") if item is not None else True,
                storage_domain_id=(item.findtext(_q("rasd", "StorageId")) or "") if item is not None else "",
                backup=("incremental" if incremental == "true" else "none")
                if incremental
                else _attr(disk, "backup") or "none",
                snapshot_id=_attr(disk, "vm_snapshot_id") or ZERO_UUID,
                chain=[
                    OvfVolume(
                        volume_id=_attr(v, "fileRef").partition("/")[2],
                        format=_volume_format(v),
                        sparse=_attr(v, "volume-type") == "Sparse",
                        snapshot_id=_attr(v, "vm_snapshot_id") or ZERO_UUID,
                    )
                    for v in chain[:-1]
                ],
            )
        )
    for section in content.findall("Section"):
        if section.get(_q("xsi", "type"), "").endswith("SnapshotsSection_Type"):
            vm.snapshots = [
                OvfSnapshot(
                    id=snap.get(_q("ovf", "id"), ""),
                    type=(snap.findtext("Type") or "REGULAR").upper(),
                    description=snap.findtext("Description") or "",
                    creation_date=snap.findtext("CreationDate") or "",
                )
                for snap in section.findall("Snapshot")
            ]
    return vm


def _volume_format(disk) -> str:
    return "cow" if _attr(disk, "volume-format").upper() == "COW" else "raw"


def _chain(disk_id: str, elements: list) -> list:
    """A disk's volumes base first, following each one's parentRef (IMAGE/PARENT_VOLUME)."""
    by_parent: dict[str, object] = {}
    for el in elements:
        parent = _attr(el, "parentRef").partition("/")[2]
        if parent in by_parent:
            raise OvfError(f"the OVF disk {disk_id} has two volumes on the same parent {parent or '(none)'}")
        by_parent[parent] = el
    chain = []
    parent = ""
    while parent in by_parent:
        el = by_parent.pop(parent)
        chain.append(el)
        parent = _attr(el, "fileRef").partition("/")[2]
    if by_parent or not chain:
        raise OvfError(f"the OVF disk {disk_id} has volumes whose parentRef leads nowhere")
    return chain
