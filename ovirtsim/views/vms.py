"""VMs, their NICs and what their guest agent reports."""

import ovirtsdk4.types as types

from ovirtsim.views.base import ZERO_UUID, ViewsCore, build, check_follow, href, ref, timestamp


class VmViews(ViewsCore):
    def vm(self, vm: dict, follow: dict | None = None, *, all_content: bool = False) -> types.Vm:
        follow = follow or {}
        check_follow(follow, {"disk_attachments", "snapshots", "nics", "tags", "cluster", "host"}, "Vm")
        running = vm["status"] == "up"
        obj = build(
            types.Vm,
            id=vm["id"],
            href=href("vms", vm["id"]),
            name=vm["name"],
            description=vm["description"],
            status=build(types.VmStatus, vm["status"]),
            memory=vm["memory"],
            type=types.VmType.SERVER,
            stateless=False,
            cpu=build(
                types.Cpu,
                topology=build(types.CpuTopology, sockets=vm["sockets"], cores=vm["cores"], threads=vm["threads"]),
            ),
            os=build(types.OperatingSystem, type=vm["os_type"]),
            creation_time=timestamp(vm["creation_time"]),
            origin="ovirt",
            template=ref(types.Template, "templates", ZERO_UUID),
            original_template=ref(types.Template, "templates", ZERO_UUID),
            cluster=self._linked(follow, "cluster", "clusters", vm["cluster_id"]),
            host=self._linked(follow, "host", "hosts", vm["host_id"]),
            # A running guest agent is what makes the engine report the guest's OS, FQDN and time zone.
            guest_operating_system=build(
                types.GuestOperatingSystem,
                architecture="x86_64",
                family="Linux",
                distribution="Debian GNU/Linux",
                codename="bookworm",
                kernel=build(types.Kernel, version=build(types.Version, full_version="6.1.0-28-amd64")),
                version=build(types.Version, full_version="12", major=12),
            )
            if running and vm["guest_agent"]
            else None,
            fqdn=f"{vm['name']}.example.internal" if running and vm["guest_agent"] else None,
            guest_time_zone=build(types.TimeZone, name="UTC", utc_offset="+00:00")
            if running and vm["guest_agent"]
            else None,
            stop_time=None,
            virtio_scsi=build(types.VirtioScsi, enabled=vm.get("virtio_scsi", True)),
        )
        if all_content:
            obj.initialization = build(
                types.Initialization,
                configuration=build(types.Configuration, type=types.ConfigurationType.OVF, data=self.engine.vm_ovf(vm)),
            )
        if "disk_attachments" in follow:
            obj.disk_attachments = [
                self.disk_attachment(vm, a, follow["disk_attachments"]) for a in self.engine.vm_attachments(vm)
            ]
        if "snapshots" in follow:
            obj.snapshots = [self.snapshot(vm, s, follow["snapshots"]) for s in self.engine.vm_snapshots(vm["id"])]
        if "nics" in follow:
            obj.nics = [self.nic(vm, n) for n in vm["nics"]]
        if "tags" in follow:
            obj.tags = [self.tag(self.store["tags"][t]) for t in vm["tags"] if t in self.store["tags"]]
        return obj

    def nic(self, vm: dict, nic: dict) -> types.Nic:
        return build(
            types.Nic,
            id=nic["id"],
            href=href("vms", vm["id"], "nics", nic["id"]),
            name=nic["name"],
            interface=build(types.NicInterface, nic.get("interface", "virtio")),
            mac=build(types.Mac, address=nic["mac"]),
            plugged=True,
            linked=True,
            vm=ref(types.Vm, "vms", vm["id"]),
        )

    def reported_devices(self, vm: dict) -> list[types.ReportedDevice]:
        """What the guest agent reports: a network device per NIC with its addresses."""
        if vm["status"] != "up" or not vm["guest_agent"]:
            return []
        result = []
        for n, nic in enumerate(vm["nics"]):
            last = int(vm["id"].replace("-", "")[-2:], 16) % 250 + 2
            result.append(
                build(
                    types.ReportedDevice,
                    id=nic["id"],
                    href=href("vms", vm["id"], "reporteddevices", nic["id"]),
                    name=f"eth{n}",
                    description="guest reported data",
                    type=types.ReportedDeviceType.NETWORK,
                    mac=build(types.Mac, address=nic["mac"]),
                    ips=[
                        build(types.Ip, address=f"192.0.2.{last}", version=types.IpVersion.V4),
                        build(types.Ip, address=f"fe80::{last:x}", version=types.IpVersion.V6),
                    ],
                    vm=ref(types.Vm, "vms", vm["id"]),
                )
            )
        return result
