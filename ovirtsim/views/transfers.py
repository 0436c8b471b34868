"""Image transfers."""

import ovirtsdk4.types as types

from ovirtsim.views.base import ViewsCore, build, href, ref


class TransferViews(ViewsCore):
    def image_transfer(self, transfer: dict) -> types.ImageTransfer:
        return build(
            types.ImageTransfer,
            id=transfer["id"],
            href=href("imagetransfers", transfer["id"]),
            phase=build(types.ImageTransferPhase, transfer["phase"]),
            direction=build(types.ImageTransferDirection, transfer["direction"]),
            format=build(types.DiskFormat, transfer["format"]),
            shallow=transfer["shallow"],
            transfer_url=transfer["transfer_url"],
            proxy_url=transfer["proxy_url"],
            inactivity_timeout=transfer["inactivity_timeout"],
            timeout_policy=build(types.ImageTransferTimeoutPolicy, transfer["timeout_policy"]),
            transferred=transfer.get("transferred", 0),
            active=transfer.get("active", False),
            disk=ref(types.Disk, "disks", transfer["disk_id"]),
            snapshot=build(types.DiskSnapshot, id=transfer["snapshot_id"]) if transfer["snapshot_id"] else None,
            image=build(types.Image, id=transfer["volume_id"]),
            host=ref(types.Host, "hosts", transfer["host_id"]),
            backup=self._backup_ref(transfer.get("backup_id")),
        )

    def _backup_ref(self, backup_id: str | None):
        backup = self.store["backups"].get(backup_id) if backup_id else None
        if backup is None:
            return build(types.Backup, id=backup_id) if backup_id else None
        return build(types.Backup, id=backup_id, href=href("vms", backup["vm_id"], "backups", backup_id))
