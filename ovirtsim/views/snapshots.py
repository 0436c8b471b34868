"""VM snapshots and the disks they hold."""

import ovirtsdk4.types as types

from ovirtsim.views.base import ViewsCore, build, check_follow, href, timestamp


class SnapshotViews(ViewsCore):
    def snapshot(self, vm: dict, snap: dict, follow: dict | None = None, *, all_content: bool = False):
        follow = follow or {}
        check_follow(follow, {"disks", "vm"}, "Snapshot")
        obj = build(
            types.Snapshot,
            id=snap["id"],
            href=href("vms", vm["id"], "snapshots", snap["id"]),
            description=snap["description"],
            snapshot_type=build(types.SnapshotType, snap["type"]),
            snapshot_status=build(types.SnapshotStatus, snap["status"]),
            date=timestamp(snap["date"]),
            persist_memorystate=snap["persist_memorystate"],
            vm=self._linked(follow, "vm", "vms", vm["id"]),
        )
        if all_content and snap.get("ovf"):
            obj.initialization = build(
                types.Initialization,
                configuration=build(types.Configuration, type=types.ConfigurationType.OVF, data=snap["ovf"]),
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
