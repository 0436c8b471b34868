"""Storage domains, with their usage from the real files."""

import ovirtsdk4.types as types

from ovirtsim.views.base import ViewsCore, build, check_follow, href


class StorageDomainViews(ViewsCore):
    def storage_domain(self, sd: dict, follow: dict | None = None) -> types.StorageDomain:
        follow = follow or {}
        check_follow(follow, {"data_centers", "disks"}, "StorageDomain")
        available, used, committed = self.engine.storage_usage(sd)
        obj = build(
            types.StorageDomain,
            id=sd["id"],
            href=href("storagedomains", sd["id"]),
            name=sd["name"],
            description=sd.get("description", ""),
            type=build(types.StorageDomainType, sd["type"]),
            status=build(types.StorageDomainStatus, self.engine.domain_status(sd)),
            external_status=types.ExternalStatus.OK,
            master=bool(sd.get("master")),
            storage=build(
                types.HostStorage,
                type=build(types.StorageType, sd["storage_type"]),
                path=sd.get("export_path"),
                address=sd.get("address"),
                mount_options=sd.get("mount_options"),
                vfs_type=sd.get("vfs_type"),
                volume_group=build(types.VolumeGroup, id=sd["id"]) if sd["block"] else None,
            ),
            available=available,
            used=used,
            committed=committed,
            # The engine makes ISO and export domains with storage format V1 (AddStorageDomainCommand).
            storage_format=types.StorageFormat.V5 if sd["type"] == "data" else types.StorageFormat.V1,
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
