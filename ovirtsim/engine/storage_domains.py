"""Storage domains: their usage, from the real files in them; block domains' volume groups."""

from ovirtsim.engine.core import DEFAULT_STORAGE_CAPACITY, EngineCore


class StorageDomains(EngineCore):
    def ensure_volume_groups(self) -> None:
        """A block domain is a VG named by its id (made on first start; kept across restarts)."""
        with self.store.lock:
            domains = [dict(sd) for sd in self.store["storagedomains"].values() if sd.get("lvm")]
        existing = set(self.lvm.vgs())
        for sd in domains:
            if sd["id"] not in existing:
                capacity = sd.get("capacity", DEFAULT_STORAGE_CAPACITY)
                self.lvm.create_vg(sd["id"], capacity, tags=("RHAT_storage_domain",))

    def storage_usage(self, sd: dict) -> tuple[int, int, int]:
        """(available, used, committed) in bytes from the real files in the domain."""
        if sd["type"] == "export":
            # No disk of the engine's lives there: what the share's exported images and OVFs occupy.
            used = self.export_usage(sd)
            return max(0, sd.get("capacity", DEFAULT_STORAGE_CAPACITY) - used), used, 0
        used = committed = 0
        for disk in self.store["disks"].values():
            if disk["sd_id"] == sd["id"]:
                committed += disk["provisioned_size"]
                used += sum(self.store_actual(disk, v["id"]) for v in disk["volumes"])
        capacity = sd.get("capacity", DEFAULT_STORAGE_CAPACITY)
        return max(0, capacity - used), used, committed
