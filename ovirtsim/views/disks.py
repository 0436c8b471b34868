"""Disks, disks as attached to a VM, and disk snapshots (volumes)."""

import ovirtsdk4.types as types

from ovirtsim.views.base import ViewsCore, build, check_follow, href, ref


class DiskViews(ViewsCore):
    def disk(
        self, disk: dict, follow: dict | None = None, *, volume_id: str | None = None, base: str | None = None
    ) -> types.Disk:
        follow = follow or {}
        check_follow(follow, {"storage_domains"}, "Disk")
        volume_id = volume_id or disk["volumes"][-1]["id"]
        fmt = next((v["format"] for v in disk["volumes"] if v["id"] == volume_id), disk["format"])
        sparse = self.engine.volume_sparse(disk, volume_id)
        actual = sum(self.engine.store_actual(disk, v["id"]) for v in disk["volumes"])
        vm = self.engine.vm_of_disk(disk["id"])
        # The engine marks a disk with its mode while a VM backup holds it, and clears it after.
        backup = self.engine.backup_of_disk(disk["id"])
        return build(
            types.Disk,
            id=disk["id"],
            href=base or href("disks", disk["id"]),
            name=disk["name"],
            alias=disk["name"],
            description=disk["description"],
            provisioned_size=disk["provisioned_size"],
            actual_size=actual,
            total_size=actual,
            format=build(types.DiskFormat, fmt),
            sparse=sparse,
            status=build(types.DiskStatus, disk["status"]),
            storage_type=types.DiskStorageType.IMAGE,
            content_type=build(types.DiskContentType, disk["content_type"]),
            image_id=volume_id,
            backup=build(types.DiskBackup, disk["backup"]),
            backup_mode=build(types.DiskBackupMode, backup["disks"][disk["id"]]) if backup else None,
            shareable=disk["shareable"],
            wipe_after_delete=disk["wipe_after_delete"],
            propagate_errors=False,
            qcow_version=types.QcowVersion.QCOW2_V3 if fmt == "cow" else None,
            storage_domains=[self._linked(follow, "storage_domains", "storagedomains", disk["sd_id"])],
            vms=[ref(types.Vm, "vms", vm["id"])] if vm else None,
        )

    def disk_attachment(self, vm: dict, attachment: dict, follow: dict | None = None) -> types.DiskAttachment:
        follow = follow or {}
        check_follow(follow, {"disk", "vm"}, "DiskAttachment")
        disk = self.store["disks"][attachment["disk_id"]]
        return build(
            types.DiskAttachment,
            id=attachment["disk_id"],
            href=href("vms", vm["id"], "diskattachments", attachment["disk_id"]),
            interface=build(types.DiskInterface, attachment["interface"]),
            bootable=attachment["bootable"],
            active=attachment["active"],
            pass_discard=attachment["pass_discard"],
            read_only=attachment["read_only"],
            uses_scsi_reservation=False,
            logical_name=attachment.get("logical_name"),
            disk=self._linked(follow, "disk", "disks", disk["id"]),
            vm=self._linked(follow, "vm", "vms", vm["id"]),
        )

    def disk_snapshot(
        self, disk: dict, volume: dict, snap: dict | None, *, under: str | None = None
    ) -> types.DiskSnapshot:
        """A volume as a disk snapshot; `under` is the collection it is listed in (the storage
        domain's by default, or `disks/ID/disksnapshots`), which its href and parent's follow."""
        index = next(i for i, v in enumerate(disk["volumes"]) if v["id"] == volume["id"])
        parent = disk["volumes"][index - 1]["id"] if index else None
        under = under or f"storagedomains/{disk['sd_id']}/disksnapshots"
        actual = self.engine.store_actual(disk, volume["id"])
        return build(
            types.DiskSnapshot,
            id=volume["id"],
            href=href(under, volume["id"]),
            name=disk["name"],
            alias=disk["name"],
            description=disk["description"],
            provisioned_size=disk["provisioned_size"],
            actual_size=actual,
            total_size=actual,
            format=build(types.DiskFormat, volume["format"]),
            sparse=self.engine.volume_sparse(disk, volume["id"]),
            status=build(types.DiskStatus, disk["status"]),
            content_type=build(types.DiskContentType, disk["content_type"]),
            image_id=volume["id"],
            storage_type=types.DiskStorageType.IMAGE,
            disk=ref(types.Disk, "disks", disk["id"]),
            snapshot=ref(types.Snapshot, "snapshots", snap["id"]) if snap else None,
            parent=ref(types.DiskSnapshot, under, parent) if parent else None,
            storage_domains=[ref(types.StorageDomain, "storagedomains", disk["sd_id"])],
        )
