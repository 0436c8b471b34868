"""Storage domains: their usage, from the real files in them."""

from ovirtsim.engine.core import DEFAULT_STORAGE_CAPACITY, EngineCore


class StorageDomains(EngineCore):
    def storage_usage(self, sd: dict) -> tuple[int, int, int]:
        """(available, used, committed) in bytes from the real files in the domain."""
        used = committed = 0
        for disk in self.store["disks"].values():
            if disk["sd_id"] == sd["id"]:
                committed += disk["provisioned_size"]
                used += sum(self.store_actual(disk, v["id"]) for v in disk["volumes"])
        capacity = sd.get("capacity", DEFAULT_STORAGE_CAPACITY)
        return max(0, capacity - used), used, committed
