"""VM backups, checkpoints, and the disks of each."""

import ovirtsdk4.types as types

from ovirtsim.views.base import ViewsCore, build, href, ref, timestamp


class BackupViews(ViewsCore):
    def backup(self, backup: dict) -> types.Backup:
        return build(
            types.Backup,
            id=backup["id"],
            href=href("vms", backup["vm_id"], "backups", backup["id"]),
            phase=build(types.BackupPhase, backup["phase"]),
            from_checkpoint_id=backup["from_checkpoint_id"],
            to_checkpoint_id=backup["to_checkpoint_id"],
            description=backup["description"],
            creation_date=timestamp(backup["creation_date"]),
            modification_date=timestamp(backup["modification_date"]),
            vm=ref(types.Vm, "vms", backup["vm_id"]),
            host=ref(types.Host, "hosts", backup["host_id"]),
        )

    def backup_disks(self, backup: dict) -> list[types.Disk]:
        """The backup's disks as the engine lists them, each with its backup_mode."""
        result = []
        for disk_id, mode in backup["disks"].items():
            disk = self.store["disks"].get(disk_id)
            if disk is None:
                continue
            obj = self.disk(disk, base=href("vms", backup["vm_id"], "backups", backup["id"], "disks", disk_id))
            obj.backup_mode = build(types.DiskBackupMode, mode)
            result.append(obj)
        return result

    def checkpoint(self, checkpoint: dict) -> types.Checkpoint:
        return build(
            types.Checkpoint,
            id=checkpoint["id"],
            href=href("vms", checkpoint["vm_id"], "checkpoints", checkpoint["id"]),
            parent_id=checkpoint["parent_id"],
            creation_date=timestamp(checkpoint["creation_date"]),
            state=build(types.CheckpointState, checkpoint["state"]),
            description=checkpoint["description"],
            vm=ref(types.Vm, "vms", checkpoint["vm_id"]),
        )

    def checkpoint_disks(self, checkpoint: dict) -> list[types.Disk]:
        base = href("vms", checkpoint["vm_id"], "checkpoints", checkpoint["id"], "disks")
        return [
            self.disk(self.store["disks"][d], base=f"{base}/{d}")
            for d in checkpoint["disk_ids"]
            if d in self.store["disks"]
        ]
