"""The engine's state as `ovirtsdk4.types` objects, written as the engine's XML.

XML goes through the SDK's own writers and readers, so whatever the real SDK can read it
reads here. The writers emit no `<link rel=...>` elements, so `add_links` adds the ones
the engine has, which `follow_link` and inlined lists (`follow=`) rely on.
"""

import datetime
import xml.etree.ElementTree as ET

import ovirtsdk4.readers
import ovirtsdk4.types as types
import ovirtsdk4.writers  # noqa: F401  (registers the writers)
from ovirtsdk4.reader import Reader
from ovirtsdk4.writer import Writer

from ovirtsim.errors import bad_request

API = "/ovirt-engine/api"
ZERO_UUID = "00000000-0000-0000-0000-000000000000"
SUPER_USER_ROLE = "00000000-0000-0000-0000-000000000001"  # the engine's predefined SuperUser role

# Sub-collections each entity links to: tag -> [(rel, path suffix)].
LINKS = {
    "vm": ["diskattachments", "snapshots", "nics", "tags", "permissions", "statistics", "reporteddevices"],
    "snapshot": ["disks"],
    "storage_domain": ["disks", "disksnapshots", "vms", "templates", "permissions"],
    "data_center": ["clusters", "storagedomains", "networks", "permissions"],
    "cluster": ["networks", "permissions"],
    "host": ["nics", "tags", "permissions", "statistics"],
    "disk": ["disksnapshots", "permissions", "statistics"],
}
# Collection -> (view method, SDK type) of entities other entities link to.
LINKED = {
    "datacenters": ("data_center", types.DataCenter),
    "clusters": ("cluster", types.Cluster),
    "hosts": ("host", types.Host),
    "storagedomains": ("storage_domain", types.StorageDomain),
    "disks": ("disk", types.Disk),
    "vms": ("vm", types.Vm),
}
# The element an inlined (followed) sub-collection appears as.
INLINE_TAG = {
    "diskattachments": "disk_attachments",
    "disksnapshots": "disk_snapshots",
    "storagedomains": "storage_domains",
}


def _t(cls, *args, href: str | None = None, **kwargs):
    """Build an SDK type; `href` is an attribute the constructors do not take."""
    obj = cls(*args, **kwargs)
    if href is not None:
        obj.href = href
    return obj


def _dt(value: str | None):
    return datetime.datetime.fromisoformat(value) if value else None


def href(*parts: str) -> str:
    return "/".join([API, *parts])


def to_xml(obj, root: str | None = None) -> bytes:
    text = Writer.write(obj, root=root)
    return add_links(text)


def add_links(text: str) -> bytes:
    tree = ET.fromstring(text)
    for el in tree.iter():
        rels = LINKS.get(el.tag)
        base = el.get("href")
        if not rels or not base or len(el) == 0:
            continue
        present = {child.tag for child in el}
        for rel in rels:
            if INLINE_TAG.get(rel, rel) in present:
                continue
            ET.SubElement(el, "link", {"href": f"{base}/{rel}", "rel": rel})
    return b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n' + ET.tostring(tree, encoding="utf-8")


def read_body(body: bytes, expected: type):
    if not body.strip():
        raise bad_request(f"The request body must be a {expected.__name__} XML document.")
    try:
        obj = Reader.read(body)
    except Exception as e:
        raise bad_request(f"Failed to parse the request body: {e}") from None
    if not isinstance(obj, expected):
        raise bad_request(f"The request body is a {type(obj).__name__}, expected {expected.__name__}.")
    return obj


def parse_follow(follow: str | None) -> dict:
    """'disk_attachments.disk,nics' -> {'disk_attachments': {'disk': {}}, 'nics': {}}"""
    tree: dict = {}
    for path in (follow or "").split(","):
        path = path.strip()
        if not path:
            continue
        node = tree
        for part in path.split("."):
            node = node.setdefault(part, {})
    return tree


def _check_follow(follow: dict, allowed: set[str], entity: str) -> None:
    for name in follow:
        if name not in allowed:
            raise bad_request(f"Link '{name}' isn't valid for entity of type '{entity}'.")


def _ref(cls, collection: str, ident: str | None):
    return _t(cls, id=ident, href=href(collection, ident)) if ident else None


class Views:
    """Builds SDK types for the engine's entities; `follow` inlines linked entities."""

    def __init__(self, engine):
        self.engine = engine

    @property
    def store(self):
        return self.engine.store

    def _linked(self, follow: dict, name: str, collection: str, ident: str | None):
        """A linked entity: inlined when the client follows `name` (and deeper, as it asked),
        otherwise a reference with its id and href."""
        view, cls = LINKED[collection]
        item = self.store[collection].get(ident) if ident else None
        if item is None:
            return _ref(cls, collection, ident)
        return getattr(self, view)(item, follow[name]) if name in follow else _ref(cls, collection, ident)

    def api(self) -> types.Api:
        vms = self.store["vms"].values()
        return _t(
            types.Api,
            product_info=_t(
                types.ProductInfo,
                name="oVirt Engine",
                vendor="ovirt.org",
                instance_id=self.store.meta.get("instance_id"),
                version=_t(types.Version, major=4, minor=5, build=6, revision=0, full_version="4.5.6-1.el9"),
            ),
            summary=_t(
                types.ApiSummary,
                vms=_t(types.ApiSummaryItem, total=len(vms), active=sum(v["status"] == "up" for v in vms)),
                hosts=_t(
                    types.ApiSummaryItem,
                    total=len(self.store["hosts"]),
                    active=sum(h["status"] == "up" for h in self.store["hosts"].values()),
                ),
                storage_domains=_t(
                    types.ApiSummaryItem,
                    total=len(self.store["storagedomains"]),
                    active=len(self.store["storagedomains"]),
                ),
                users=_t(types.ApiSummaryItem, total=1, active=1),
            ),
            authenticated_user=_t(
                types.User,
                id=self.store.meta.get("admin_id"),
                href=href("users", self.store.meta.get("admin_id", ZERO_UUID)),
            ),
            effective_user=_t(
                types.User,
                id=self.store.meta.get("admin_id"),
                href=href("users", self.store.meta.get("admin_id", ZERO_UUID)),
            ),
        )

    def version(self) -> types.Version:
        return _t(types.Version, major=4, minor=7)

    def data_center(self, dc: dict, follow: dict | None = None) -> types.DataCenter:
        follow = follow or {}
        _check_follow(follow, {"clusters", "storage_domains"}, "DataCenter")
        obj = _t(
            types.DataCenter,
            id=dc["id"],
            href=href("datacenters", dc["id"]),
            name=dc["name"],
            description=dc.get("description", ""),
            status=types.DataCenterStatus.UP,
            local=False,
            storage_format=types.StorageFormat.V5,
            version=self.version(),
            supported_versions=[self.version()],
        )
        if "clusters" in follow:
            obj.clusters = [
                self.cluster(c, follow["clusters"]) for c in self.store["clusters"].values() if c["dc_id"] == dc["id"]
            ]
        if "storage_domains" in follow:
            obj.storage_domains = [
                self.storage_domain(sd, follow["storage_domains"])
                for sd in self.store["storagedomains"].values()
                if sd["dc_id"] == dc["id"]
            ]
        return obj

    def cluster(self, cluster: dict, follow: dict | None = None) -> types.Cluster:
        follow = follow or {}
        _check_follow(follow, {"data_center"}, "Cluster")
        return _t(
            types.Cluster,
            id=cluster["id"],
            href=href("clusters", cluster["id"]),
            name=cluster["name"],
            description=cluster.get("description", ""),
            cpu=_t(
                types.Cpu,
                type=cluster.get("cpu_type", "Intel Cascadelake Server Family"),
                architecture=types.Architecture.X86_64,
            ),
            version=self.version(),
            data_center=self._linked(follow, "data_center", "datacenters", cluster["dc_id"]),
        )

    def host(self, host: dict, follow: dict | None = None) -> types.Host:
        follow = follow or {}
        _check_follow(follow, {"cluster"}, "Host")
        return _t(
            types.Host,
            id=host["id"],
            href=href("hosts", host["id"]),
            name=host["name"],
            address=host["address"],
            status=_t(types.HostStatus, host["status"]),
            type=types.HostType.RHEL,
            cluster=self._linked(follow, "cluster", "clusters", host["cluster_id"]),
            ssh=_t(types.Ssh, port=host.get("ssh_port", 22), fingerprint=host.get("ssh_fingerprint")),
            version=_t(types.Version, major=4, minor=5, build=5, revision=0, full_version="vdsm-4.50.5"),
            spm=_t(types.Spm, status=types.SpmStatus.SPM if host.get("spm") else types.SpmStatus.NONE),
            libvirt_version=_t(types.Version, full_version="libvirt-9.0.0"),
        )

    def storage_domain(self, sd: dict, follow: dict | None = None) -> types.StorageDomain:
        follow = follow or {}
        _check_follow(follow, {"data_centers", "disks"}, "StorageDomain")
        available, used, committed = self.engine.storage_usage(sd)
        obj = _t(
            types.StorageDomain,
            id=sd["id"],
            href=href("storagedomains", sd["id"]),
            name=sd["name"],
            description=sd.get("description", ""),
            type=_t(types.StorageDomainType, sd["type"]),
            status=types.StorageDomainStatus.ACTIVE if sd.get("dc_id") else types.StorageDomainStatus.UNATTACHED,
            external_status=types.ExternalStatus.OK,
            master=bool(sd.get("master")),
            storage=_t(
                types.HostStorage,
                type=_t(types.StorageType, sd["storage_type"]),
                path=sd.get("export_path"),
                address=sd.get("address"),
                volume_group=_t(types.VolumeGroup, id=sd["id"]) if sd["block"] else None,
            ),
            available=available,
            used=used,
            committed=committed,
            storage_format=types.StorageFormat.V5,
            block_size=512,
            backup=False,
            supports_discard=sd["block"],
            wipe_after_delete=False,
            data_centers=[self._linked(follow, "data_centers", "datacenters", sd["dc_id"])]
            if sd.get("dc_id")
            else None,
        )
        if "disks" in follow:
            obj.disks = [self.disk(d) for d in self.store["disks"].values() if d["sd_id"] == sd["id"]]
        return obj

    def disk(
        self, disk: dict, follow: dict | None = None, *, volume_id: str | None = None, base: str | None = None
    ) -> types.Disk:
        follow = follow or {}
        _check_follow(follow, {"storage_domains"}, "Disk")
        volume_id = volume_id or disk["volumes"][-1]["id"]
        fmt = next((v["format"] for v in disk["volumes"] if v["id"] == volume_id), disk["format"])
        actual = sum(self.engine.store_actual(disk, v["id"]) for v in disk["volumes"])
        vm = self.engine.vm_of_disk(disk["id"])
        return _t(
            types.Disk,
            id=disk["id"],
            href=base or href("disks", disk["id"]),
            name=disk["name"],
            alias=disk["name"],
            description=disk["description"],
            provisioned_size=disk["provisioned_size"],
            actual_size=actual,
            total_size=actual,
            format=_t(types.DiskFormat, fmt),
            sparse=disk["sparse"],
            status=_t(types.DiskStatus, disk["status"]),
            storage_type=types.DiskStorageType.IMAGE,
            content_type=_t(types.DiskContentType, disk["content_type"]),
            image_id=volume_id,
            backup=_t(types.DiskBackup, disk["backup"]),
            shareable=disk["shareable"],
            wipe_after_delete=disk["wipe_after_delete"],
            propagate_errors=False,
            qcow_version=types.QcowVersion.QCOW2_V3 if fmt == "cow" else None,
            storage_domains=[self._linked(follow, "storage_domains", "storagedomains", disk["sd_id"])],
            vms=[_ref(types.Vm, "vms", vm["id"])] if vm else None,
        )

    def disk_attachment(self, vm: dict, attachment: dict, follow: dict | None = None) -> types.DiskAttachment:
        follow = follow or {}
        _check_follow(follow, {"disk", "vm"}, "DiskAttachment")
        disk = self.store["disks"][attachment["disk_id"]]
        return _t(
            types.DiskAttachment,
            id=attachment["disk_id"],
            href=href("vms", vm["id"], "diskattachments", attachment["disk_id"]),
            interface=_t(types.DiskInterface, attachment["interface"]),
            bootable=attachment["bootable"],
            active=attachment["active"],
            pass_discard=attachment["pass_discard"],
            read_only=attachment["read_only"],
            uses_scsi_reservation=False,
            logical_name=attachment.get("logical_name"),
            disk=self._linked(follow, "disk", "disks", disk["id"]),
            vm=self._linked(follow, "vm", "vms", vm["id"]),
        )

    def nic(self, vm: dict, nic: dict) -> types.Nic:
        return _t(
            types.Nic,
            id=nic["id"],
            href=href("vms", vm["id"], "nics", nic["id"]),
            name=nic["name"],
            interface=_t(types.NicInterface, nic.get("interface", "virtio")),
            mac=_t(types.Mac, address=nic["mac"]),
            plugged=True,
            linked=True,
            vm=_ref(types.Vm, "vms", vm["id"]),
        )

    def blank_template(self) -> types.Template:
        """The Blank template every engine has, which VMs made from scratch point at."""
        return _t(
            types.Template,
            id=ZERO_UUID,
            href=href("templates", ZERO_UUID),
            name="Blank",
            description="Blank template",
            status=types.TemplateStatus.OK,
            memory=1024**3,
            os=_t(types.OperatingSystem, type="other"),
            cpu=_t(types.Cpu, topology=_t(types.CpuTopology, sockets=1, cores=1, threads=1)),
            type=types.VmType.SERVER,
            version=_t(types.TemplateVersion, version_number=1),
            creation_time=_dt("2008-04-01T00:00:00+00:00"),
        )

    def system_permission(self, kind: str, ident: str) -> types.Permission:
        """The admin's SuperUser permission, which every object inherits from the system."""
        admin = self.store.meta.get("admin_id", ZERO_UUID)
        owner = {
            "vms": ("vm", types.Vm),
            "hosts": ("host", types.Host),
            "clusters": ("cluster", types.Cluster),
            "datacenters": ("data_center", types.DataCenter),
            "storagedomains": ("storage_domain", types.StorageDomain),
            "disks": ("disk", types.Disk),
        }[kind]
        return _t(
            types.Permission,
            id=ZERO_UUID[:-12] + "0000000000aa",
            href=href(kind, ident, "permissions", ZERO_UUID[:-12] + "0000000000aa"),
            role=_ref(types.Role, "roles", SUPER_USER_ROLE),
            user=_ref(types.User, "users", admin),
            **{owner[0]: _ref(owner[1], kind, ident)},
        )

    def statistics(self, kind: str, ident: str, values: list[tuple[str, str, object]]) -> list[types.Statistic]:
        """Statistics as the engine lists them: (name, unit, value); gauges, integer or decimal."""
        owner = {"vms": ("vm", types.Vm), "hosts": ("host", types.Host), "disks": ("disk", types.Disk)}[kind]
        result = []
        for n, (name, unit, value) in enumerate(values):
            ident_n = f"{n:08x}-0000-0000-0000-000000000000"
            result.append(
                _t(
                    types.Statistic,
                    id=ident_n,
                    href=href(kind, ident, "statistics", ident_n),
                    name=name,
                    description=name.replace(".", " ").capitalize(),
                    kind=types.StatisticKind.GAUGE,
                    type=types.ValueType.DECIMAL if isinstance(value, float) else types.ValueType.INTEGER,
                    unit=_t(types.StatisticUnit, unit),
                    values=[_t(types.Value, datum=float(value))],
                    **{owner[0]: _ref(owner[1], kind, ident)},
                )
            )
        return result

    def reported_devices(self, vm: dict) -> list[types.ReportedDevice]:
        """What the guest agent reports: a network device per NIC with its addresses."""
        if vm["status"] != "up" or not vm["guest_agent"]:
            return []
        result = []
        for n, nic in enumerate(vm["nics"]):
            last = int(vm["id"].replace("-", "")[-2:], 16) % 250 + 2
            result.append(
                _t(
                    types.ReportedDevice,
                    id=nic["id"],
                    href=href("vms", vm["id"], "reporteddevices", nic["id"]),
                    name=f"eth{n}",
                    description="guest reported data",
                    type=types.ReportedDeviceType.NETWORK,
                    mac=_t(types.Mac, address=nic["mac"]),
                    ips=[
                        _t(types.Ip, address=f"192.0.2.{last}", version=types.IpVersion.V4),
                        _t(types.Ip, address=f"fe80::{last:x}", version=types.IpVersion.V6),
                    ],
                    vm=_ref(types.Vm, "vms", vm["id"]),
                )
            )
        return result

    def management_network(self, dc_id: str, *, under: str) -> types.Network:
        ident = dc_id[:-12] + "00000000e7e7"
        return _t(
            types.Network,
            id=ident,
            href=href(under, ident),
            name="ovirtmgmt",
            description="Management Network",
            mtu=0,
            stp=False,
            usages=[types.NetworkUsage.VM, types.NetworkUsage.MANAGEMENT],
            data_center=_ref(types.DataCenter, "datacenters", dc_id),
        )

    def host_nic(self, host: dict) -> types.HostNic:
        ident = host["id"][:-12] + "0000000000e0"
        return _t(
            types.HostNic,
            id=ident,
            href=href("hosts", host["id"], "nics", ident),
            name="eth0",
            boot_protocol=types.BootProtocol.DHCP,
            status=types.NicStatus.UP,
            speed=10_000_000_000,
            mtu=1500,
            host=_ref(types.Host, "hosts", host["id"]),
        )

    def tag(self, tag: dict, follow: dict | None = None) -> types.Tag:
        _check_follow(follow or {}, set(), "Tag")
        return _t(
            types.Tag,
            id=tag["id"],
            href=href("tags", tag["id"]),
            name=tag["name"],
            description=tag.get("description", ""),
            parent=_ref(types.Tag, "tags", tag.get("parent") or ZERO_UUID),
        )

    def vm(self, vm: dict, follow: dict | None = None, *, all_content: bool = False) -> types.Vm:
        follow = follow or {}
        _check_follow(follow, {"disk_attachments", "snapshots", "nics", "tags", "cluster", "host"}, "Vm")
        running = vm["status"] == "up"
        obj = _t(
            types.Vm,
            id=vm["id"],
            href=href("vms", vm["id"]),
            name=vm["name"],
            description=vm["description"],
            status=_t(types.VmStatus, vm["status"]),
            memory=vm["memory"],
            type=types.VmType.SERVER,
            stateless=False,
            cpu=_t(
                types.Cpu,
                topology=_t(types.CpuTopology, sockets=vm["sockets"], cores=vm["cores"], threads=vm["threads"]),
            ),
            os=_t(types.OperatingSystem, type=vm["os_type"]),
            creation_time=_dt(vm["creation_time"]),
            origin="ovirt",
            template=_ref(types.Template, "templates", ZERO_UUID),
            original_template=_ref(types.Template, "templates", ZERO_UUID),
            cluster=self._linked(follow, "cluster", "clusters", vm["cluster_id"]),
            host=self._linked(follow, "host", "hosts", vm["host_id"]),
            # A running guest agent is what makes the engine report the guest's OS, FQDN and time zone.
            guest_operating_system=_t(
                types.GuestOperatingSystem,
                architecture="x86_64",
                family="Linux",
                distribution="Debian GNU/Linux",
                codename="bookworm",
                kernel=_t(types.Kernel, version=_t(types.Version, full_version="6.1.0-28-amd64")),
                version=_t(types.Version, full_version="12", major=12),
            )
            if running and vm["guest_agent"]
            else None,
            fqdn=f"{vm['name']}.example.internal" if running and vm["guest_agent"] else None,
            guest_time_zone=_t(types.TimeZone, name="UTC", utc_offset="+00:00")
            if running and vm["guest_agent"]
            else None,
            stop_time=None,
        )
        if all_content:
            obj.initialization = _t(
                types.Initialization,
                configuration=_t(types.Configuration, type=types.ConfigurationType.OVF, data=self.engine.vm_ovf(vm)),
            )
        if "disk_attachments" in follow:
            obj.disk_attachments = [
                self.disk_attachment(vm, a, follow["disk_attachments"]) for a in vm["disk_attachments"]
            ]
        if "snapshots" in follow:
            obj.snapshots = [self.snapshot(vm, s, follow["snapshots"]) for s in self.engine.vm_snapshots(vm["id"])]
        if "nics" in follow:
            obj.nics = [self.nic(vm, n) for n in vm["nics"]]
        if "tags" in follow:
            obj.tags = [self.tag(self.store["tags"][t]) for t in vm["tags"] if t in self.store["tags"]]
        return obj

    def snapshot(self, vm: dict, snap: dict, follow: dict | None = None, *, all_content: bool = False):
        follow = follow or {}
        _check_follow(follow, {"disks", "vm"}, "Snapshot")
        obj = _t(
            types.Snapshot,
            id=snap["id"],
            href=href("vms", vm["id"], "snapshots", snap["id"]),
            description=snap["description"],
            snapshot_type=_t(types.SnapshotType, snap["type"]),
            snapshot_status=_t(types.SnapshotStatus, snap["status"]),
            date=_dt(snap["date"]),
            persist_memorystate=snap["persist_memorystate"],
            vm=self._linked(follow, "vm", "vms", vm["id"]),
        )
        if all_content and snap.get("ovf"):
            obj.initialization = _t(
                types.Initialization,
                configuration=_t(types.Configuration, type=types.ConfigurationType.OVF, data=snap["ovf"]),
            )
        if "disks" in follow:
            obj.disks = self.snapshot_disks(vm, snap)
        return obj

    def snapshot_disks(self, vm: dict, snap: dict) -> list[types.Disk]:
        result = []
        for disk_id, volume_id in snap["volumes"].items():
            disk = self.store["disks"].get(disk_id)
            if disk is None:
                continue
            if snap["type"] == "active":
                volume_id = disk["volumes"][-1]["id"]
            result.append(
                self.disk(
                    disk, volume_id=volume_id, base=href("vms", vm["id"], "snapshots", snap["id"], "disks", disk_id)
                )
            )
        return result

    def disk_snapshot(
        self, disk: dict, volume: dict, snap: dict | None, *, under: str | None = None
    ) -> types.DiskSnapshot:
        """A volume as a disk snapshot; `under` is the collection it is listed in (the storage
        domain's by default, or `disks/ID/disksnapshots`), which its href and parent's follow."""
        index = next(i for i, v in enumerate(disk["volumes"]) if v["id"] == volume["id"])
        parent = disk["volumes"][index - 1]["id"] if index else None
        under = under or f"storagedomains/{disk['sd_id']}/disksnapshots"
        actual = self.engine.store_actual(disk, volume["id"])
        return _t(
            types.DiskSnapshot,
            id=volume["id"],
            href=href(under, volume["id"]),
            name=disk["name"],
            alias=disk["name"],
            description=disk["description"],
            provisioned_size=disk["provisioned_size"],
            actual_size=actual,
            total_size=actual,
            format=_t(types.DiskFormat, volume["format"]),
            sparse=disk["sparse"],
            status=_t(types.DiskStatus, disk["status"]),
            content_type=_t(types.DiskContentType, disk["content_type"]),
            image_id=volume["id"],
            storage_type=types.DiskStorageType.IMAGE,
            disk=_ref(types.Disk, "disks", disk["id"]),
            snapshot=_ref(types.Snapshot, "snapshots", snap["id"]) if snap else None,
            parent=_ref(types.DiskSnapshot, under, parent) if parent else None,
            storage_domains=[_ref(types.StorageDomain, "storagedomains", disk["sd_id"])],
        )

    def image_transfer(self, transfer: dict) -> types.ImageTransfer:
        return _t(
            types.ImageTransfer,
            id=transfer["id"],
            href=href("imagetransfers", transfer["id"]),
            phase=_t(types.ImageTransferPhase, transfer["phase"]),
            direction=_t(types.ImageTransferDirection, transfer["direction"]),
            format=_t(types.DiskFormat, transfer["format"]),
            shallow=transfer["shallow"],
            transfer_url=transfer["transfer_url"],
            proxy_url=transfer["proxy_url"],
            inactivity_timeout=transfer["inactivity_timeout"],
            timeout_policy=_t(types.ImageTransferTimeoutPolicy, transfer["timeout_policy"]),
            transferred=transfer.get("transferred", 0),
            active=transfer.get("active", False),
            disk=_ref(types.Disk, "disks", transfer["disk_id"]),
            snapshot=_t(types.DiskSnapshot, id=transfer["snapshot_id"]) if transfer["snapshot_id"] else None,
            image=_t(types.Image, id=transfer["volume_id"]),
            host=_ref(types.Host, "hosts", transfer["host_id"]),
        )

    def event(self, event: dict) -> types.Event:
        return _t(
            types.Event,
            id=event["id"],
            href=href("events", event["id"]),
            time=_dt(event["time"]),
            code=event["code"],
            severity=_t(types.LogSeverity, event["severity"]),
            description=event["description"],
            origin=event.get("origin", "oVirt"),
            custom_id=event.get("custom_id", -1),
            vm=_ref(types.Vm, "vms", event.get("vm_id")),
        )

    def job(self, job: dict) -> types.Job:
        return _t(
            types.Job,
            id=job["id"],
            href=href("jobs", job["id"]),
            description=job["description"],
            status=_t(types.JobStatus, job["status"]),
            start_time=_dt(job["start_time"]),
            end_time=_dt(job["end_time"]),
            auto_cleared=True,
            external=False,
        )
