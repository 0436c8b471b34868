"""What an export storage domain holds, as the engine maps the OVFs it reads there."""

import datetime

import ovirtsdk4.types as types

from ovirtsim.ovf import OvfDisk, OvfVm
from ovirtsim.views.base import ZERO_UUID, ViewsCore, build, href, ref


def _time(value: str):
    try:
        return datetime.datetime.fromisoformat(value) if value else None
    except ValueError:
        return None  # an OVF written by another engine, in its own date format


class ExportDomainViews(ViewsCore):
    def exported_vm(self, sd: dict, vm: OvfVm) -> types.Vm:
        cluster = next((c for c in self.store["clusters"].values() if c["name"] == vm.cluster_name), None)
        return build(
            types.Vm,
            id=vm.id,
            href=href("storagedomains", sd["id"], "vms", vm.id),
            name=vm.name,
            description=vm.description,
            status=types.VmStatus.DOWN,
            memory=vm.memory,
            type=types.VmType.SERVER,
            cpu=build(
                types.Cpu, topology=build(types.CpuTopology, sockets=vm.sockets, cores=vm.cores, threads=vm.threads)
            ),
            os=build(types.OperatingSystem, type=vm.os_type),
            creation_time=_time(vm.creation_time),
            origin="ovirt",
            template=ref(types.Template, "templates", ZERO_UUID),
            cluster=ref(types.Cluster, "clusters", cluster["id"]) if cluster else None,
            storage_domain=ref(types.StorageDomain, "storagedomains", sd["id"]),
        )

    def exported_template(self, sd: dict, template: OvfVm) -> types.Template:
        return build(
            types.Template,
            id=template.id,
            href=href("storagedomains", sd["id"], "templates", template.id),
            name=template.name,
            description=template.description,
            memory=template.memory,
            os=build(types.OperatingSystem, type=template.os_type),
            creation_time=_time(template.creation_time),
            storage_domain=ref(types.StorageDomain, "storagedomains", sd["id"]),
        )

    def exported_disk(self, sd: dict, vm: OvfVm, disk: OvfDisk) -> types.Disk:
        return build(
            types.Disk,
            id=disk.disk_id,
            href=href("storagedomains", sd["id"], "vms", vm.id, "disks", disk.disk_id),
            name=disk.alias,
            alias=disk.alias,
            description=disk.description,
            provisioned_size=disk.provisioned_size,
            actual_size=disk.actual_size,
            format=build(types.DiskFormat, disk.format),
            sparse=disk.sparse,
            status=types.DiskStatus.OK,
            storage_type=types.DiskStorageType.IMAGE,
            image_id=disk.volume_id,
            backup=build(types.DiskBackup, disk.backup),
            storage_domains=[ref(types.StorageDomain, "storagedomains", sd["id"])],
        )
